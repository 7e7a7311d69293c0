//! `protect_prefix`: an overwrite policy that never overwrites names under
//! any of the configured prefixes, and otherwise lets the newer copy win.
//!
//! Config: `prefixes` = comma-separated list, e.g. `legal/,hr/` (required;
//! may be given more than once, the lists add up). Matching is a plain
//! string prefix on the blob's `/`-separated name relative to the job root:
//! `legal/` protects `legal/x.pdf` but not `legal-old/x.pdf`; `legal`
//! protects both.

wit_bindgen::generate!({ path: "../../wit", world: "overwrite-policy-batched" });

#[path = "../../common/config.rs"]
mod config;

use std::cell::RefCell;

use exports::ferry::plugin::policy::Guest;
use exports::ferry::plugin::policy_batch::Guest as BatchGuest;
use ferry::plugin::host::Level;
use ferry::plugin::types::{BlobInfo, Decision, JobContext};

const NAME: &str = "protect_prefix";

thread_local! {
    /// Set once by `configure`; an instance serves one job.
    static PREFIXES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let prefixes = parse(&config)?;
        log(
            Level::Info,
            &format!(
                "protecting {} prefix(es): {}",
                prefixes.len(),
                prefixes.join(", ")
            ),
        );
        PREFIXES.with(|p| *p.borrow_mut() = prefixes);
        Ok(())
    }

    fn decide(src: BlobInfo, dst: BlobInfo, _ctx: JobContext) -> Decision {
        PREFIXES.with(|p| decide(&p.borrow(), &src, &dst))
    }
}

impl BatchGuest for Plugin {
    fn decide_batch(pairs: Vec<(BlobInfo, BlobInfo)>, _ctx: JobContext) -> Vec<Decision> {
        PREFIXES.with(|p| {
            let prefixes = p.borrow();
            pairs
                .iter()
                .map(|(src, dst)| decide(&prefixes, src, dst))
                .collect()
        })
    }
}

fn parse(config: &[(String, String)]) -> Result<Vec<String>, String> {
    config::reject_unknown(NAME, config, &["prefixes"])?;
    let mut prefixes: Vec<String> = Vec::new();
    for (_, value) in config.iter().filter(|(k, _)| k == "prefixes") {
        for p in value.split(',') {
            // Names are relative to the job root: a leading `/` never matches.
            let p = p.trim().trim_start_matches('/');
            if !p.is_empty() && !prefixes.iter().any(|q| q == p) {
                prefixes.push(p.to_string());
            }
        }
    }
    if prefixes.is_empty() {
        return Err(format!(
            "{NAME}: config key `prefixes` is required and must list at least one prefix, \
             e.g. --plugin-config prefixes=legal/,hr/"
        ));
    }
    Ok(prefixes)
}

fn decide(prefixes: &[String], src: &BlobInfo, dst: &BlobInfo) -> Decision {
    if let Some(p) = prefixes.iter().find(|p| src.name.starts_with(p.as_str())) {
        return Decision::Skip(format!("protected by prefix {p}"));
    }
    if src.last_modified_ns > dst.last_modified_ns {
        Decision::Overwrite("source newer".into())
    } else {
        Decision::Skip("destination not older".into())
    }
}

/// The host's log; a no-op in native unit tests, where there is no host.
fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    ferry::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(name: &str, ns: i64) -> BlobInfo {
        BlobInfo {
            name: name.into(),
            size: 1,
            last_modified_ns: ns,
            etag: "e".into(),
            content_md5: None,
            content_type: None,
            metadata: vec![],
        }
    }

    fn show(d: Decision) -> String {
        match d {
            Decision::Overwrite(r) => format!("overwrite: {r}"),
            Decision::Skip(r) => format!("skip: {r}"),
        }
    }

    fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config() {
        assert_eq!(
            parse(&cfg(&[("prefixes", "legal/, hr/,,/legal/")])).unwrap(),
            ["legal/", "hr/"]
        );
        assert_eq!(
            parse(&cfg(&[("prefixes", "a/"), ("prefixes", "b/")])).unwrap(),
            ["a/", "b/"]
        );
        let missing = parse(&[]).unwrap_err();
        assert!(missing.contains("`prefixes` is required"), "{missing}");
        let empty = parse(&cfg(&[("prefixes", " , ")])).unwrap_err();
        assert!(empty.contains("`prefixes` is required"), "{empty}");
        let unknown = parse(&cfg(&[("prefixes", "a/"), ("prefix", "b/")])).unwrap_err();
        assert!(unknown.contains("`prefix`"), "{unknown}");
    }

    #[test]
    fn decisions() {
        let p = parse(&cfg(&[("prefixes", "legal/,hr/")])).unwrap();
        let d = |name: &str, s, t| show(decide(&p, &blob(name, s), &blob(name, t)));
        assert_eq!(
            d("legal/contract.pdf", 2, 1),
            "skip: protected by prefix legal/"
        );
        assert_eq!(d("hr/x", 2, 1), "skip: protected by prefix hr/");
        assert_eq!(d("legal-old/x", 2, 1), "overwrite: source newer");
        assert_eq!(d("docs/legal/x", 2, 1), "overwrite: source newer");
        assert_eq!(d("docs/x", 1, 1), "skip: destination not older");
        assert_eq!(d("docs/x", 1, 2), "skip: destination not older");
    }
}
