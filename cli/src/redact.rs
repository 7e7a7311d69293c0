//! Masks credentials in text ferry prints: every log line (a redacting
//! writer under tracing), every error line, the panic hook's message.
//!
//! The engine keeps secrets out of what it builds (errors from status and
//! code only, SAS added at send time) and azure_core masks its own request
//! logs; this is the last line for text ferry does not build itself: clap
//! quoting a stray argument that is a SAS, serde quoting a config value that
//! is a connection string, a dependency logging a URL, a panic message.

use std::io::{self, Write};

/// What replaces a secret.
pub const MASK: &str = "<redacted>";

/// Whether a byte can be part of a secret value.
type ValueChar = fn(u8) -> bool;

/// Keys whose value is a secret, matched case-insensitively; the value runs
/// to the first byte that cannot be part of it.
const KEYED: [(&str, ValueChar); 5] = [
    // A SAS signature, in a query (`&sig=`) or percent-encoded inside
    // another URL (`sig%3D`).
    ("sig=", sas_char),
    ("sig%3d", sas_char),
    // Connection string fields.
    ("accountkey=", conn_char),
    ("sharedaccesssignature=", conn_char),
    // An Authorization header: `SharedKey account:signature`.
    ("sharedkey ", shared_key_char),
];

fn sas_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"%+/=-_".contains(&b)
}

/// Up to the next `;` (a SAS inside a connection string keeps its `&`s).
fn conn_char(b: u8) -> bool {
    !(b == b';' || b == b'"' || b == b'\'' || b == b'`' || b.is_ascii_whitespace())
}

fn shared_key_char(b: u8) -> bool {
    sas_char(b) || b == b':'
}

fn base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Shortest unkeyed base64 run ending in `=` that is masked: a bare account
/// key (64 bytes: 88 characters) or SAS signature (32 bytes: 44).
const MIN_BARE_BASE64: usize = 43;

/// `text` with every credential replaced by [`MASK`].
pub fn redact(text: &str) -> String {
    String::from_utf8(redact_bytes(text.as_bytes()))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Byte version of [`redact`]: only ASCII runs are replaced, so valid UTF-8
/// stays valid.
pub fn redact_bytes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        for (key, value_char) in KEYED {
            let end = i + key.len();
            if end <= text.len() && text[i..end].eq_ignore_ascii_case(key.as_bytes()) {
                let mut v = end;
                if key == "sharedkey " {
                    // Keep the account name, mask the signature after `:`.
                    while v < text.len() && sas_char(text[v]) && text[v] != b'=' {
                        v += 1;
                    }
                    if v < text.len() && text[v] == b':' {
                        v += 1;
                    } else {
                        break;
                    }
                }
                let mut stop = v;
                while stop < text.len() && value_char(text[stop]) {
                    stop += 1;
                }
                if stop > v {
                    out.extend_from_slice(&text[i..v]);
                    out.extend_from_slice(MASK.as_bytes());
                    i = stop;
                    continue 'scan;
                }
            }
        }
        // A bare key or signature: a long base64 run ending in `=`.
        if base64_char(text[i]) && (i == 0 || !base64_char(text[i - 1])) {
            let mut stop = i;
            while stop < text.len() && base64_char(text[stop]) {
                stop += 1;
            }
            let mut pad = stop;
            while pad < text.len() && pad - stop < 2 && text[pad] == b'=' {
                pad += 1;
            }
            if stop - i >= MIN_BARE_BASE64 && pad > stop {
                out.extend_from_slice(MASK.as_bytes());
                i = pad;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// A `MakeWriter` for tracing: each event is formatted into a buffer, which
/// is masked and written to stderr in one piece when the event ends.
pub struct RedactingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = io::stderr().lock().write_all(&redact_bytes(&self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn sas_signatures_are_masked_in_every_encoding() {
        let sas = "sv=2020-12-06&sr=c&sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=KxE5nKRl8MC5OX%2Fb4A%2FfTgiDRFY%3D";
        let line = format!("unexpected argument 'http://h/c?{sas}' found");
        let r = redact(&line);
        assert!(!r.contains("KxE5"), "{r}");
        assert!(
            r.contains("sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=<redacted>' found"),
            "{r}"
        );
        // Inside another URL, and decoded.
        let r =
            redact("x-ms-copy-source=http%3A%2F%2Fh%2Fc%3Fsv%3D1%26sig%3DKxE5nKRl8MC5OX%252F&x=1");
        assert!(
            !r.contains("KxE5") && r.ends_with("sig%3D<redacted>&x=1"),
            "{r}"
        );
        let r = redact("SIG=KxE5nKRl8MC5OX/b4A/fTgiDRFY= and");
        assert_eq!(r, "SIG=<redacted> and");
        let r = redact("copy-source%3Dhttp%3A%2F%2Fh%2Fc%3Fsv%3D1%26sig%3DKxE5nKRl8MC5OX");
        assert!(r.ends_with("%26sig%3D<redacted>"), "{r}");
    }

    #[test]
    fn connection_strings_keys_and_authorization_headers_are_masked() {
        let cs = format!(
            "AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1"
        );
        let r = redact(&format!("invalid type: string \"{cs}\", expected struct"));
        assert_eq!(
            r,
            "invalid type: string \"AccountName=devstoreaccount1;AccountKey=<redacted>;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1\", expected struct"
        );
        let r = redact("BlobEndpoint=http://h;SharedAccessSignature=sv=1&sr=c&sig=abc%2B;x=1");
        assert_eq!(
            r,
            "BlobEndpoint=http://h;SharedAccessSignature=<redacted>;x=1"
        );
        let r = redact("authorization: SharedKey devstoreaccount1:9FhJ2k+/abc= x-ms-date");
        assert_eq!(
            r,
            "authorization: SharedKey devstoreaccount1:<redacted> x-ms-date"
        );
        // A bare key, e.g. quoted by a parser.
        let r = redact(&format!("value \"{KEY}\" is not"));
        assert_eq!(r, "value \"<redacted>\" is not");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for s in [
            "job 01a2 attempt 1: succeeded: copied 3 files (2.95 KiB), skipped 0, failed 0",
            "url: http://h/c/f?blockid=ZmVycnktMDAwMDAwMDAwMDAw&comp=block&sig=REDACTED",
            "sig= nothing",
            "SharedKey policy",
            "ünïcødé/日本語.txt: not found",
            "content-md5: 1B2M2Y8AsgTpgAmY7PhCfg==",
            "",
        ] {
            let r = redact(s);
            // azure_core's own marker is masked again, harmlessly.
            if s.contains("sig=REDACTED") {
                assert!(r.ends_with("sig=<redacted>"), "{r}");
            } else {
                assert_eq!(r, s);
            }
        }
    }

    #[test]
    fn the_redacting_writer_masks_whole_events() {
        let got = redact_bytes(b"DEBUG sending request 'http://h/c?sv=1&sig=abcd%2Befgh'\n");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "DEBUG sending request 'http://h/c?sv=1&sig=<redacted>'\n"
        );
    }
}
