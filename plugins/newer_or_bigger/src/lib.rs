//! `newer_or_bigger`: an overwrite policy. Overwrites when the source is
//! newer; at the same age, when the size differs; at the same age and size,
//! when both MD5s are known and differ. Skips otherwise. Takes no config.

wit_bindgen::generate!({ path: "../../wit", world: "overwrite-policy-batched" });

#[path = "../../common/config.rs"]
mod config;

use exports::ferry::plugin::policy::Guest;
use exports::ferry::plugin::policy_batch::Guest as BatchGuest;
use ferry::plugin::types::{BlobInfo, Decision, JobContext};

const NAME: &str = "newer_or_bigger";

struct Plugin;

impl Guest for Plugin {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        config::reject_unknown(NAME, &config, &[])
    }

    fn decide(src: BlobInfo, dst: BlobInfo, _ctx: JobContext) -> Decision {
        decide(&src, &dst)
    }
}

impl BatchGuest for Plugin {
    fn decide_batch(pairs: Vec<(BlobInfo, BlobInfo)>, _ctx: JobContext) -> Vec<Decision> {
        pairs.iter().map(|(src, dst)| decide(src, dst)).collect()
    }
}

fn decide(src: &BlobInfo, dst: &BlobInfo) -> Decision {
    use std::cmp::Ordering::*;
    match src.last_modified_ns.cmp(&dst.last_modified_ns) {
        Greater => Decision::Overwrite("source newer".into()),
        Less => Decision::Skip("destination newer".into()),
        Equal if src.size != dst.size => Decision::Overwrite("same age, size differs".into()),
        Equal => match (&src.content_md5, &dst.content_md5) {
            (Some(a), Some(b)) if a != b => {
                Decision::Overwrite("same age and size, MD5 differs".into())
            }
            _ => Decision::Skip("same age and size".into()),
        },
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(ns: i64, size: u64, md5: Option<u8>) -> BlobInfo {
        BlobInfo {
            name: "a/b.txt".into(),
            size,
            last_modified_ns: ns,
            etag: "e".into(),
            content_md5: md5.map(|b| vec![b; 16]),
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

    #[test]
    fn decisions() {
        let d = |s, t| show(decide(&s, &t));
        assert_eq!(
            d(blob(2, 1, None), blob(1, 1, None)),
            "overwrite: source newer"
        );
        assert_eq!(
            d(blob(1, 1, None), blob(2, 9, None)),
            "skip: destination newer"
        );
        assert_eq!(
            d(blob(1, 1, None), blob(1, 2, None)),
            "overwrite: same age, size differs"
        );
        assert_eq!(
            d(blob(1, 1, Some(1)), blob(1, 1, Some(2))),
            "overwrite: same age and size, MD5 differs"
        );
        assert_eq!(
            d(blob(1, 1, Some(1)), blob(1, 1, Some(1))),
            "skip: same age and size"
        );
        assert_eq!(
            d(blob(1, 1, Some(1)), blob(1, 1, None)),
            "skip: same age and size"
        );
        assert_eq!(
            d(blob(1, 1, None), blob(1, 1, None)),
            "skip: same age and size"
        );
    }

    #[test]
    fn config() {
        assert!(Plugin::configure(vec![]).is_ok());
        let err = Plugin::configure(vec![("colour".into(), "red".into())]).unwrap_err();
        assert!(err.contains("`colour`"), "{err}");
    }
}
