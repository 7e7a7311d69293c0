//! The checksum line that ends an export archive (format 2): the SHA-256 of
//! every byte before it. Why: an archive is kept for years or carried to
//! another machine, and a flipped byte in a name or a count still parses;
//! without a sum such an archive imported and verified as if it were true.

use sha2::{Digest, Sha256};

/// Key of the archive's last line, `{"ferry_export_sha256":"<hex>"}`.
pub const SUM_KEY: &str = "ferry_export_sha256";

/// The running sum of an archive's lines, as written or as read back.
#[derive(Default)]
pub struct ArchiveSum(Sha256);

impl ArchiveSum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes as they are written (lines with their `\n`).
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Adds one line as read back without its end (written with `\n`).
    pub fn update_line(&mut self, line: &str) {
        self.0.update(line.as_bytes());
        self.0.update(b"\n");
    }

    /// The sum as lowercase hex.
    pub fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }

    /// The archive's last line (without its `\n`).
    pub fn line(self) -> String {
        format!("{{\"{SUM_KEY}\":\"{}\"}}", self.hex())
    }

    /// Whether `line` is a checksum line (else it is a record).
    pub fn is_sum_line(line: &str) -> bool {
        line.trim_start()
            .strip_prefix('{')
            .is_some_and(|rest| rest.trim_start().starts_with(&format!("\"{SUM_KEY}\"")))
    }

    /// The hex sum a checksum line holds.
    pub fn parse_line(line: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let hex = value.get(SUM_KEY)?.as_str()?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hex.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_written_is_read_back_and_a_changed_byte_changes_the_sum() {
        let mut written = ArchiveSum::new();
        written.update(b"{\"ferry_export\":2}\n{\"seq\":0}\n");
        let line = written.line();
        assert!(ArchiveSum::is_sum_line(&line), "{line}");
        assert!(!ArchiveSum::is_sum_line("{\"v\":3,\"seq\":0}"));

        let mut read = ArchiveSum::new();
        read.update_line("{\"ferry_export\":2}");
        read.update_line("{\"seq\":0}");
        assert_eq!(ArchiveSum::parse_line(&line), Some(read.hex()));

        let mut changed = ArchiveSum::new();
        changed.update_line("{\"ferry_export\":2}");
        changed.update_line("{\"seq\":1}");
        assert_ne!(ArchiveSum::parse_line(&line), Some(changed.hex()));
        assert_eq!(
            ArchiveSum::parse_line("{\"ferry_export_sha256\":\"zz\"}"),
            None
        );
    }
}
