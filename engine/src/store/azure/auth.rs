//! Shared Key request signing and service SAS signing, which the
//! `azure_storage_blob` 1.x crate does not provide. Kept small and tested
//! against the string-to-sign formats in Microsoft's "Authorize with Shared
//! Key" and "Create a service SAS" documentation.
//!
//! The account key never leaves this module: `AccountKey` prints as
//! `<redacted>` and signatures are only ever placed in request headers or
//! in-memory URLs, never in events or messages.

use std::fmt;
use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Service version ferry signs SAS tokens for (the 2020-12-06 string-to-sign).
pub const SAS_VERSION: &str = "2020-12-06";

/// A decoded storage account key.
#[derive(Clone)]
pub struct AccountKey(Arc<Vec<u8>>);

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(<redacted>)")
    }
}

impl AccountKey {
    /// Decodes a base64 account key. The error never contains the key.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map(|k| AccountKey(Arc::new(k)))
            .map_err(|_| "the account key is not valid base64".to_string())
    }

    /// base64(HMAC-SHA256(key, data)).
    pub fn sign(&self, data: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(data.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// The parts of a request that Shared Key signs.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub url: &'a url::Url,
    /// Lower-case header names with their values.
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
}

/// The Shared Key string-to-sign for the Blob service (version 2015-02-21+).
pub fn string_to_sign(account: &str, req: &SignedRequest<'_>) -> String {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    // An empty string, not "0", for a zero-length body.
    let length = match req.content_length {
        Some(0) | None => String::new(),
        Some(n) => n.to_string(),
    };
    let mut s = String::with_capacity(256);
    for part in [
        req.method,
        header("content-encoding"),
        header("content-language"),
        &length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        s.push_str(part);
        s.push('\n');
    }
    s.push_str(&canonicalized_headers(&req.headers));
    s.push_str(&canonicalized_resource(account, req.url));
    s
}

/// `x-ms-*` headers, lower-cased, sorted, `name:value\n` each, values unfolded.
pub fn canonicalized_headers(headers: &[(String, String)]) -> String {
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort();
    ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// `/account/path` plus each query parameter, lower-cased and sorted,
/// as `\nname:v1,v2` (values decoded and sorted).
pub fn canonicalized_resource(account: &str, url: &url::Url) -> String {
    let mut s = format!("/{account}{}", url.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in url.query_pairs() {
        let k = k.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vals)) => vals.push(v.into_owned()),
            None => params.push((k, vec![v.into_owned()])),
        }
    }
    params.sort();
    for (k, mut vals) in params {
        vals.sort();
        s.push_str(&format!("\n{k}:{}", vals.join(",")));
    }
    s
}

/// Signs each try of a request with Shared Key (a per-try pipeline policy).
#[derive(Clone)]
pub struct SharedKeyPolicy {
    pub account: String,
    pub key: AccountKey,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedKeyPolicy({})", self.account)
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        request.insert_header("x-ms-date", date);
        let headers = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_ascii_lowercase(), v.as_str().to_string()))
            .collect();
        let method = request.method().to_string();
        let signed = SignedRequest {
            method: &method,
            url: request.url(),
            headers,
            content_length: request.body().len(),
        };
        let sig = self.key.sign(&string_to_sign(&self.account, &signed));
        request.insert_header("authorization", format!("SharedKey {}:{sig}", self.account));
        super::forward(ctx, request, next).await
    }
}

/// What a service SAS grants.
pub struct ServiceSas<'a> {
    pub account: &'a str,
    pub container: &'a str,
    /// `None` for a container SAS (`sr=c`).
    pub blob: Option<&'a str>,
    /// e.g. "r", "racwdl".
    pub permissions: &'a str,
    pub start: Option<DateTime<Utc>>,
    pub expiry: DateTime<Utc>,
    /// "https" or "https,http".
    pub protocol: Option<&'a str>,
}

impl ServiceSas<'_> {
    fn resource(&self) -> &'static str {
        if self.blob.is_some() {
            "b"
        } else {
            "c"
        }
    }

    /// The 2020-12-06 service SAS string-to-sign.
    pub fn string_to_sign(&self) -> String {
        let canonical = match self.blob {
            Some(b) => format!("/blob/{}/{}/{}", self.account, self.container, b),
            None => format!("/blob/{}/{}", self.account, self.container),
        };
        let t = |d: &Option<DateTime<Utc>>| d.map(sas_time).unwrap_or_default();
        [
            self.permissions,
            &t(&self.start),
            &sas_time(self.expiry),
            &canonical,
            "", // signed identifier
            "", // signed IP
            self.protocol.unwrap_or(""),
            SAS_VERSION,
            self.resource(),
            "", // snapshot time
            "", // encryption scope
            "", // rscc
            "", // rscd
            "", // rsce
            "", // rscl
            "", // rsct
        ]
        .join("\n")
    }

    /// The SAS query string (without `?`), signed with `key`.
    pub fn token(&self, key: &AccountKey) -> String {
        let sig = key.sign(&self.string_to_sign());
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("sv", SAS_VERSION);
        q.append_pair("sr", self.resource());
        q.append_pair("sp", self.permissions);
        if let Some(st) = self.start {
            q.append_pair("st", &sas_time(st));
        }
        q.append_pair("se", &sas_time(self.expiry));
        if let Some(p) = self.protocol {
            q.append_pair("spr", p);
        }
        q.append_pair("sig", &sig);
        q.finish()
    }
}

fn sas_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    // The canonicalized resource examples of "Authorize with Shared Key".
    #[test]
    fn canonicalized_resource_matches_the_documented_examples() {
        assert_eq!(
            canonicalized_resource("myaccount", &url("http://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata")),
            "/myaccount/mycontainer\ncomp:metadata\nrestype:container"
        );
        assert_eq!(
            canonicalized_resource(
                "myaccount",
                &url("http://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list&include=snapshots&include=metadata&include=uncommittedblobs")
            ),
            "/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\nrestype:container"
        );
        assert_eq!(
            canonicalized_resource(
                "myaccount",
                &url("https://myaccount-secondary.blob.core.windows.net/mycontainer/myblob")
            ),
            "/myaccount/mycontainer/myblob"
        );
        // The emulator's path-style URL repeats the account.
        assert_eq!(
            canonicalized_resource(
                "devstoreaccount1",
                &url("http://127.0.0.1:10000/devstoreaccount1/c/a%20b")
            ),
            "/devstoreaccount1/devstoreaccount1/c/a%20b"
        );
    }

    // The Blob service example string-to-sign of "Authorize with Shared Key".
    #[test]
    fn string_to_sign_matches_the_documented_example() {
        let req = SignedRequest {
            method: "GET",
            url: &url("http://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata&timeout=20"),
            headers: vec![
                ("x-ms-version".into(), "2009-09-19".into()),
                ("x-ms-date".into(), "Sun, 11 Oct 2009 21:49:13 GMT".into()),
            ],
            content_length: Some(0),
        };
        assert_eq!(
            string_to_sign("myaccount", &req),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-version:2009-09-19\n/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20"
        );
    }

    #[test]
    fn canonicalized_headers_are_sorted_lowercased_and_unfolded() {
        let h = vec![
            ("x-ms-meta-b".to_string(), "two  words".to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
            ("x-ms-date".to_string(), "d".to_string()),
        ];
        assert_eq!(
            canonicalized_headers(&h),
            "x-ms-date:d\nx-ms-meta-b:two words\n"
        );
    }

    // HMAC-SHA256 test case 2 of RFC 4231 (key "Jefe"), base64-encoded.
    #[test]
    fn signing_is_base64_hmac_sha256() {
        let key =
            AccountKey::from_base64(&base64::engine::general_purpose::STANDARD.encode(b"Jefe"))
                .unwrap();
        assert_eq!(
            key.sign("what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
        assert_eq!(format!("{key:?}"), "AccountKey(<redacted>)");
        assert!(AccountKey::from_base64("not base64!")
            .unwrap_err()
            .contains("not valid base64"));
    }

    // Field order of the 2020-12-06 service SAS ("Create a service SAS").
    #[test]
    fn service_sas_string_to_sign_has_the_documented_fields_in_order() {
        let sas = ServiceSas {
            account: "myaccount",
            container: "sascontainer",
            blob: Some("sasblob.txt"),
            permissions: "rw",
            start: Some(Utc.with_ymd_and_hms(2019, 4, 29, 22, 18, 26).unwrap()),
            expiry: Utc.with_ymd_and_hms(2019, 4, 30, 2, 23, 26).unwrap(),
            protocol: Some("https"),
        };
        assert_eq!(
            sas.string_to_sign(),
            "rw\n2019-04-29T22:18:26Z\n2019-04-30T02:23:26Z\n/blob/myaccount/sascontainer/sasblob.txt\n\n\nhttps\n2020-12-06\nb\n\n\n\n\n\n\n"
        );
        let key = AccountKey::from_base64("a2V5").unwrap();
        let token = sas.token(&key);
        assert!(token.starts_with("sv=2020-12-06&sr=b&sp=rw&st=2019-04-29T22%3A18%3A26Z&se=2019-04-30T02%3A23%3A26Z&spr=https&sig="), "{token}");
        let sig = token.rsplit("sig=").next().unwrap();
        let decoded: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        assert_eq!(decoded, key.sign(&sas.string_to_sign()));
    }
}
