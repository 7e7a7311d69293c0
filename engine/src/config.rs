//! Accounts: the TOML config that names storage accounts, and the
//! credentials behind each name. Jobs (and so the log) only ever hold account
//! *names*; keys, SAS tokens and connection strings live here, in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::EngineError;
use crate::retry::RetryPolicy;
use crate::store::azure::auth::AccountKey;

/// Azurite's well-known development account (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// The implicit account backed by `AZURE_STORAGE_CONNECTION_STRING`.
pub const DEFAULT_ACCOUNT: &str = "default";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    accounts: BTreeMap<String, AccountEntry>,
    #[serde(default)]
    retry: RetrySection,
}

/// `[retry]`: every field optional, defaults from [`RetryPolicy`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySection {
    max_tries: Option<u32>,
    base_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
    try_timeout_secs: Option<u64>,
    max_elapsed_secs: Option<u64>,
}

impl RetrySection {
    fn policy(&self, file: &Path) -> Result<RetryPolicy, EngineError> {
        let d = RetryPolicy::default();
        let p = RetryPolicy {
            max_tries: self.max_tries.unwrap_or(d.max_tries),
            base: self
                .base_delay_ms
                .map(Duration::from_millis)
                .unwrap_or(d.base),
            cap: self
                .max_delay_ms
                .map(Duration::from_millis)
                .unwrap_or(d.cap),
            try_timeout: self
                .try_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.try_timeout),
            max_elapsed: self
                .max_elapsed_secs
                .map(Duration::from_secs)
                .unwrap_or(d.max_elapsed),
        };
        p.check().map_err(|e| {
            EngineError::InvalidInput(format!("config {}: [retry] {e}", file.display()))
        })?;
        Ok(p)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    connection_string: Option<String>,
    connection_string_env: Option<String>,
    sas_url_env: Option<String>,
    sas_url: Option<String>,
    local: Option<PathBuf>,
}

/// How requests to an Azure account are authorised.
#[derive(Clone)]
pub enum Auth {
    SharedKey(AccountKey),
    /// A SAS query string (without `?`), appended to every request.
    Sas(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::SharedKey(_) => "SharedKey(<redacted>)",
            Auth::Sas(_) => "Sas(<redacted>)",
        })
    }
}

/// An Azure Blob account ferry can talk to.
#[derive(Clone, Debug)]
pub struct AzureAccount {
    /// The config's name for it (what the log records).
    pub name: String,
    /// The storage account's own name (signs requests).
    pub account: String,
    /// Blob service URL without a trailing slash, e.g.
    /// `https://acct.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: url::Url,
    pub auth: Auth,
}

/// What an account name stands for.
#[derive(Clone, Debug)]
pub enum Account {
    Azure(AzureAccount),
    Local(PathBuf),
}

/// The accounts of one process, resolved from the config and environment.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    accounts: BTreeMap<String, Account>,
    /// Errors of accounts that could not be resolved (e.g. a missing env
    /// var), reported only when a job names them.
    broken: BTreeMap<String, String>,
    /// SAS tokens for raw container URLs, by URL without query: given on
    /// the command line, never logged.
    url_sas: BTreeMap<String, String>,
    /// The config's `[retry]` section (defaults without one).
    retry: RetryPolicy,
}

impl Accounts {
    /// Loads `path` (if given) and the environment. A config that does not
    /// parse is an error naming the file and the problem; an account whose
    /// secret is missing is an error only when a job uses it.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, EngineError> {
        let mut out = Accounts::default();
        if let Some(cs) = env("AZURE_STORAGE_CONNECTION_STRING") {
            match parse_connection_string(DEFAULT_ACCOUNT, &cs) {
                Ok(a) => {
                    out.accounts
                        .insert(DEFAULT_ACCOUNT.into(), Account::Azure(a));
                }
                Err(e) => {
                    let msg = format!("AZURE_STORAGE_CONNECTION_STRING: {e}");
                    out.broken.insert(DEFAULT_ACCOUNT.into(), msg);
                }
            }
        }
        let Some(path) = path else { return Ok(out) };
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::InvalidInput(format!("cannot read config {}: {e}", path.display()))
        })?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            // The message and where, not toml's Display: that quotes the
            // line, which may hold a key.
            let msg = e.message().replace('\n', " ");
            let at = e.span().map_or(String::new(), |s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" (line {line}, column {col})")
            });
            EngineError::InvalidInput(format!("config {} is not valid: {msg}{at}", path.display()))
        })?;
        out.retry = file.retry.policy(path)?;
        for (name, entry) in file.accounts {
            if !valid_account_name(&name) {
                return Err(EngineError::InvalidInput(format!(
                    "config {}: account name {name:?} must be ASCII letters, digits, '-' or '_'",
                    path.display()
                )));
            }
            match resolve(&name, &entry, env) {
                Ok(a) => {
                    out.accounts.insert(name, a);
                }
                Err(e) => {
                    out.broken.insert(name, e);
                }
            }
        }
        Ok(out)
    }

    /// The account called `name`, or an error saying what to fix.
    pub fn get(&self, name: &str) -> Result<&Account, EngineError> {
        if let Some(a) = self.accounts.get(name) {
            return Ok(a);
        }
        if let Some(e) = self.broken.get(name) {
            return Err(EngineError::InvalidInput(format!("account {name:?}: {e}")));
        }
        let known: Vec<&str> = self.accounts.keys().map(|s| s.as_str()).collect();
        Err(EngineError::InvalidInput(format!(
            "unknown account {name:?}; configure it in ferry.toml (--config or FERRY_CONFIG){}",
            if known.is_empty() {
                String::new()
            } else {
                format!(" (known: {})", known.join(", "))
            }
        )))
    }

    /// How remote requests are retried, per the config.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.accounts.contains_key(name) || self.broken.contains_key(name)
    }

    /// Remembers the SAS for a raw container URL (held in memory only).
    pub fn set_url_sas(&mut self, url_without_query: &str, sas: &str) {
        self.url_sas.insert(
            url_without_query.to_string(),
            sas.trim_start_matches('?').to_string(),
        );
    }

    pub fn url_sas(&self, url_without_query: &str) -> Option<&str> {
        self.url_sas.get(url_without_query).map(|s| s.as_str())
    }
}

pub(crate) fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn resolve(
    name: &str,
    e: &AccountEntry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Account, String> {
    let set = [
        e.connection_string.is_some(),
        e.connection_string_env.is_some(),
        e.sas_url_env.is_some(),
        e.sas_url.is_some(),
        e.local.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(
            "give exactly one of connection_string, connection_string_env, sas_url, sas_url_env, local"
                .into(),
        );
    }
    let from_env =
        |var: &str| env(var).ok_or_else(|| format!("environment variable {var} is not set"));
    if let Some(p) = &e.local {
        // Read as written: "~/x" and "$HOME/x" made folders named "~" and
        // "$HOME", and a relative root moved with the working directory.
        if !p.is_absolute() {
            return Err(format!(
                "local = {:?} must be an absolute path (ferry expands neither ~ nor $VARIABLES)",
                p.display().to_string()
            ));
        }
        return Ok(Account::Local(p.clone()));
    }
    if let Some(cs) = &e.connection_string {
        return parse_connection_string(name, cs).map(Account::Azure);
    }
    if let Some(var) = &e.connection_string_env {
        return parse_connection_string(name, &from_env(var)?)
            .map(Account::Azure)
            .map_err(|m| format!("{var}: {m}"));
    }
    let (sas_url, var) = match (&e.sas_url, &e.sas_url_env) {
        (Some(u), _) => (u.clone(), "sas_url".to_string()),
        (_, Some(var)) => (from_env(var)?, var.clone()),
        (None, None) => return Err("no credential given".into()),
    };
    parse_sas_url(name, &sas_url)
        .map(Account::Azure)
        .map_err(|m| format!("{var}: {m}"))
}

/// Parses `Key=Value;...` connection strings (and `UseDevelopmentStorage=true`).
/// Messages never quote the string itself: it holds the key.
pub fn parse_connection_string(name: &str, cs: &str) -> Result<AzureAccount, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(
                "malformed connection string (expected Key=Value pairs separated by ';')".into(),
            );
        };
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    if fields
        .get("usedevelopmentstorage")
        .map(|v| v.eq_ignore_ascii_case("true"))
        == Some(true)
    {
        let endpoint = fields
            .get("developmentstorageproxyuri")
            .map(|p| format!("{}/{DEV_ACCOUNT}", p.trim_end_matches('/')))
            .unwrap_or_else(|| DEV_ENDPOINT.to_string());
        return Ok(AzureAccount {
            name: name.into(),
            account: DEV_ACCOUNT.into(),
            endpoint: parse_endpoint(&endpoint)?,
            auth: Auth::SharedKey(AccountKey::from_base64(DEV_KEY)?),
        });
    }
    let account = fields.get("accountname").cloned();
    let endpoint = match (fields.get("blobendpoint"), &account) {
        (Some(e), _) => e.clone(),
        (None, Some(a)) => {
            let proto = fields
                .get("defaultendpointsprotocol")
                .map(|s| s.as_str())
                .unwrap_or("https");
            let suffix = fields
                .get("endpointsuffix")
                .map(|s| s.as_str())
                .unwrap_or("core.windows.net");
            format!("{proto}://{a}.blob.{suffix}")
        }
        (None, None) => {
            return Err("connection string has neither AccountName nor BlobEndpoint".into())
        }
    };
    let endpoint = parse_endpoint(&endpoint)?;
    let account = match account {
        Some(a) => a,
        None => account_from_endpoint(&endpoint).ok_or("connection string has no AccountName")?,
    };
    let auth = match (
        fields.get("accountkey"),
        fields.get("sharedaccesssignature"),
    ) {
        (Some(k), _) => Auth::SharedKey(AccountKey::from_base64(k)?),
        (None, Some(sas)) => {
            crate::job::check_sas_expiry(endpoint.as_str(), sas).map_err(|e| e.to_string())?;
            Auth::Sas(sas.trim_start_matches('?').to_string())
        }
        (None, None) => {
            return Err("connection string has neither AccountKey nor SharedAccessSignature".into())
        }
    };
    Ok(AzureAccount {
        name: name.into(),
        account,
        endpoint,
        auth,
    })
}

/// A SAS URL for an account (`https://acct.blob.core.windows.net/?sv=...`).
fn parse_sas_url(name: &str, s: &str) -> Result<AzureAccount, String> {
    let url = url::Url::parse(s).map_err(|_| "not a valid SAS URL".to_string())?;
    let sas = url
        .query()
        .filter(|q| q.contains("sig="))
        .ok_or("the SAS URL has no signature (sig=)")?
        .to_string();
    let mut endpoint = url.clone();
    endpoint.set_query(None);
    let endpoint = parse_endpoint(endpoint.as_str())?;
    crate::job::check_sas_expiry(endpoint.as_str(), &sas).map_err(|e| e.to_string())?;
    let account =
        account_from_endpoint(&endpoint).ok_or("cannot tell the account name from the SAS URL")?;
    // A container's URL with its SAS (`sr=c`, or a blob's, `sr=b`) here
    // would be taken for the account's endpoint, and every request would go
    // to a container inside that container. (A container SAS on the
    // account's URL is fine: it serves that one container.) The account's
    // own URL has no path on `*.blob.*` hosts and one segment, the account,
    // on an emulator's.
    let scoped = url::form_urlencoded::parse(sas.as_bytes())
        .any(|(k, v)| k == "sr" && (v == "c" || v == "b"));
    let segments = endpoint
        .path_segments()
        .map_or(0, |p| p.filter(|s| !s.is_empty()).count());
    let account_segments = if endpoint.host_str().is_some_and(|h| h.contains(".blob.")) {
        0
    } else {
        1
    };
    if scoped && segments > account_segments {
        return Err(
            "the SAS URL names a container; give the account's URL (https://ACCOUNT.blob.core.windows.net/?SAS), \
             or use the container's URL with its SAS as SRC or DST"
                .into(),
        );
    }
    Ok(AzureAccount {
        name: name.into(),
        account,
        endpoint,
        auth: Auth::Sas(sas),
    })
}

fn parse_endpoint(s: &str) -> Result<url::Url, String> {
    let trimmed = s.trim_end_matches('/');
    let url =
        url::Url::parse(trimmed).map_err(|_| "the blob endpoint is not a valid URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the blob endpoint must be http or https".into());
    }
    Ok(url)
}

/// `acct` from `https://acct.blob.core.windows.net`, or the first path
/// segment of an emulator's path-style URL (`http://127.0.0.1:10000/acct`).
pub fn account_from_endpoint(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let path_style = url
        .host()
        .is_some_and(|h| matches!(h, url::Host::Ipv4(_) | url::Host::Ipv6(_)))
        || host == "localhost";
    if path_style {
        url.path_segments()?
            .find(|s| !s.is_empty())
            .map(str::to_string)
    } else {
        host.split('.').next().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sas_url_must_be_the_accounts_not_a_containers() {
        let sas = "sv=2020-12-06&sr=c&sp=rl&se=2999-01-01T00%3A00%3A00Z&sig=AAAA";
        for bad in [
            format!("https://acct.blob.core.windows.net/photos?{sas}"),
            format!("http://127.0.0.1:10000/devstoreaccount1/photos?{sas}"),
        ] {
            let err = parse_sas_url("a", &bad).unwrap_err();
            assert!(err.contains("names a container"), "{bad}: {err}");
        }
        // A container's SAS on the account's URL serves that container.
        for ok in [
            format!("https://acct.blob.core.windows.net/?{sas}"),
            format!("http://127.0.0.1:10000/devstoreaccount1?{sas}"),
            "https://acct.blob.core.windows.net/?sv=2020-12-06&ss=b&srt=sco&sp=rl&sig=AAAA".into(),
        ] {
            parse_sas_url("a", &ok).unwrap();
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn connection_strings_of_every_shape_resolve() {
        let a = parse_connection_string("p", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net").unwrap();
        assert_eq!(
            (a.account.as_str(), a.endpoint.as_str()),
            ("acct", "https://acct.blob.core.windows.net/")
        );
        let d = parse_connection_string("d", "UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            d.endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        let e = parse_connection_string("e", "AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1234/devstoreaccount1/").unwrap();
        assert_eq!(
            e.endpoint.as_str(),
            "http://127.0.0.1:1234/devstoreaccount1"
        );
        let s = parse_connection_string(
            "s",
            "BlobEndpoint=https://x.blob.core.windows.net;SharedAccessSignature=sv=1&sig=abc",
        )
        .unwrap();
        assert!(matches!(s.auth, Auth::Sas(ref q) if q == "sv=1&sig=abc"));
        assert_eq!(s.account, "x");
    }

    #[test]
    fn bad_connection_strings_say_what_is_wrong_without_quoting_the_secret() {
        for (cs, want) in [
            ("AccountName=a;AccountKey=%%%notbase64", "not valid base64"),
            ("garbage-without-equals", "malformed"),
            ("AccountName=a", "neither AccountKey"),
            ("AccountKey=c2VjcmV0", "neither AccountName"),
        ] {
            let err = parse_connection_string("x", cs).unwrap_err();
            assert!(err.contains(want), "{cs}: {err}");
            assert!(
                !err.contains("notbase64") && !err.contains("c2VjcmV0"),
                "{err}"
            );
        }
    }

    #[test]
    fn config_accounts_resolve_and_missing_env_vars_fail_only_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n\
             [accounts.prod]\nconnection_string_env = \"PROD_CS\"\n\
             [accounts.nas]\nlocal = \"/mnt/nas\"\n",
        )
        .unwrap();
        let accounts = Accounts::load(Some(&path), &no_env).unwrap();
        assert!(matches!(accounts.get("dev").unwrap(), Account::Azure(_)));
        assert!(matches!(accounts.get("nas").unwrap(), Account::Local(_)));
        let err = accounts.get("prod").unwrap_err().to_string();
        assert!(err.contains("PROD_CS is not set"), "{err}");
        let err = accounts.get("nope").unwrap_err().to_string();
        assert!(err.contains("unknown account \"nope\""), "{err}");
    }

    #[test]
    fn azure_storage_connection_string_is_the_implicit_default_account() {
        let env = |k: &str| {
            (k == "AZURE_STORAGE_CONNECTION_STRING")
                .then(|| "UseDevelopmentStorage=true".to_string())
        };
        let accounts = Accounts::load(None, &env).unwrap();
        match accounts.get(DEFAULT_ACCOUNT).unwrap() {
            Account::Azure(a) => assert_eq!(a.account, DEV_ACCOUNT),
            other => panic!("{other:?}"),
        }
        let bad =
            |k: &str| (k == "AZURE_STORAGE_CONNECTION_STRING").then(|| "nonsense".to_string());
        let err = Accounts::load(None, &bad)
            .unwrap()
            .get(DEFAULT_ACCOUNT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AZURE_STORAGE_CONNECTION_STRING") && err.contains("malformed"),
            "{err}"
        );
    }

    #[test]
    fn a_local_root_must_be_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        for root in ["~/backups", "$HOME/x", "nasroot", ""] {
            std::fs::write(&path, format!("[accounts.nas]\nlocal = {root:?}\n")).unwrap();
            let accounts = Accounts::load(Some(&path), &no_env).unwrap();
            let err = accounts.get("nas").unwrap_err().to_string();
            assert!(err.contains("must be an absolute path"), "{root}: {err}");
        }
    }

    #[test]
    fn malformed_toml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "[accounts.a\nbroken").unwrap();
        let err = Accounts::load(Some(&path), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ferry.toml is not valid"), "{err}");
        assert!(err.contains("(line 1, column"), "{err}");
        // Where, but not the line itself: it may hold a key.
        std::fs::write(
            &path,
            "[a]\nx = 1\n[accounts.b]\nconnection_string = \"AccountKey=s3cret\n",
        )
        .unwrap();
        let err = Accounts::load(Some(&path), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(line 4, column") && !err.contains("s3cret"),
            "{err}"
        );
        std::fs::write(&path, "[accounts.a]\nkey = \"x\"\n").unwrap();
        let err = Accounts::load(Some(&path), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn emulator_and_cloud_endpoints_name_their_account() {
        let u = |s| url::Url::parse(s).unwrap();
        assert_eq!(
            account_from_endpoint(&u("http://127.0.0.1:10000/devstoreaccount1")).as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_from_endpoint(&u("https://prod.blob.core.windows.net")).as_deref(),
            Some("prod")
        );
    }
}
