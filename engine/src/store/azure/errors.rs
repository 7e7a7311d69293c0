//! The one place that maps Azure responses to retry-or-give-up. Messages are
//! built here from status and error code only: the SDK's own text can quote
//! request URLs, and so SAS tokens.

use std::io;

use crate::store::StoreError;

/// Whether a status/error code pair is worth retrying.
pub fn is_transient(status: u16, code: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(code, "ServerBusy" | "OperationTimedOut" | "InternalError")
}

/// Whether an answer says the service is shedding load (as opposed to a
/// fault of one request): what `--parallel auto` backs off from.
pub fn is_throttling(status: u16, code: &str) -> bool {
    matches!(status, 429 | 503) || code == "ServerBusy"
}

/// Maps an SDK error on `what` (e.g. `prod:photos/a.jpg`) of `account`
/// that came out of the request pipeline. The pipeline has already retried
/// it as far as the policy allows, so it is final: a blob's worker must not
/// retry it again (tries would multiply).
pub fn map(err: &azure_core::Error, what: &str, account: &str) -> StoreError {
    match map_body(err, what, account) {
        StoreError::Service {
            what,
            status,
            code,
            transient: true,
        } => StoreError::Service {
            what,
            status,
            code,
            transient: false,
        },
        StoreError::Io { what, cause } => StoreError::Io {
            what,
            cause: io::Error::other(crate::store::RetriedTransport(cause.to_string())),
        },
        e => e,
    }
}

/// The short cause a transport error is counted under.
pub fn io_cause(err: &azure_core::Error) -> String {
    if matches!(err.kind(), azure_core::error::ErrorKind::Connection) {
        return "cannot connect".into();
    }
    match io_kind(err) {
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "connection closed early",
        _ => "connection error",
    }
    .into()
}

/// Maps an error that broke off a response body being streamed: past the
/// pipeline, so still worth a retry of the whole blob if transient.
pub fn map_body(err: &azure_core::Error, what: &str, account: &str) -> StoreError {
    use azure_core::error::ErrorKind as K;
    match err.kind() {
        K::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = error_code.clone().unwrap_or_default();
            from_status(status, &code, what, account)
        }
        K::Io => StoreError::Io {
            what: format!("{what}: connection to account {account:?} failed"),
            cause: io::Error::new(io_kind(err), "I/O error talking to the storage service"),
        },
        K::Connection => StoreError::Io {
            what: format!("{what}: cannot connect to account {account:?}"),
            cause: io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection failed; is the endpoint right and reachable?",
            ),
        },
        K::Credential => StoreError::PermissionDenied {
            what: format!("{what}: no usable credential for account {account:?}"),
        },
        _ => StoreError::Io {
            what: format!("{what}: request to account {account:?} failed"),
            cause: io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the request did not complete",
            ),
        },
    }
}

fn io_kind(err: &azure_core::Error) -> io::ErrorKind {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(s) = source {
        if let Some(e) = s.downcast_ref::<io::Error>() {
            return e.kind();
        }
        // The client's read timeout (a body or answer that stalled).
        if s.downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.is_timeout())
        {
            return io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    io::ErrorKind::ConnectionReset
}

/// Status + code to an error a caller can act on.
pub fn from_status(status: u16, code: &str, what: &str, account: &str) -> StoreError {
    match (status, code) {
        (404, "ContainerNotFound") => StoreError::NotFound {
            what: format!("{what}: the container (account {account:?})"),
        },
        // A server-side copy whose source is gone: the request named the
        // destination, which was blamed for it.
        (404, "CannotVerifyCopySource") => StoreError::NotFound {
            what: format!("{what}: the source of the server-side copy (CannotVerifyCopySource)"),
        },
        (404, _) => StoreError::NotFound { what: what.to_string() },
        // Valid credentials without the permission: say which ones ferry uses.
        (403, "AuthorizationPermissionMismatch") => StoreError::PermissionDenied {
            what: format!(
                "{what}: account {account:?} refused the request (AuthorizationPermissionMismatch): its SAS lacks a permission this needs; a source needs read and list (sp=rl), a destination create, write and list (sp=cwl: ferry lists it to record what each copy replaced)"
            ),
        },
        // A server-side copy: the service, not this account, could not
        // read the source (the destination was blamed for it).
        (403 | 401, "CannotVerifyCopySource") => StoreError::PermissionDenied {
            what: format!(
                "{what}: the service could not read the source for a server-side copy (CannotVerifyCopySource); the source's SAS must allow read and list (sp=rl), or copy with --copy-method stream"
            ),
        },
        (403, _) | (401, _) => StoreError::PermissionDenied {
            what: format!(
                "{what}: account {account:?} refused the request ({}); check its key or SAS (expiry, permissions)",
                if code.is_empty() { status.to_string() } else { code.to_string() }
            ),
        },
        // A lease on the destination blob (or container): no retry gets in.
        (412, "LeaseIdMissing" | "LeaseIdMismatchWithBlobOperation" | "LeaseLost" | "LeaseNotPresentWithBlobOperation")
        | (409, "LeaseIdMissing" | "LeaseAlreadyPresent") => StoreError::Conflict {
            what: what.to_string(),
            why: format!("the blob is leased ({code}); it is written once its lease is released or broken"),
        },
        (412, _) => StoreError::SourceChanged { name: what.to_string() },
        // Most often blocks another tool staged and never committed (an
        // interrupted upload) with ids of another length: every run failed
        // with the bare code.
        (400, "InvalidBlobOrBlock") => StoreError::Conflict {
            what: what.to_string(),
            why: "the service refused a block (InvalidBlobOrBlock): if another tool left uncommitted blocks on this blob (an interrupted upload), they must go first: overwrite or delete the blob with that tool, or wait a week for the service to drop them".into(),
        },
        (409, _) => StoreError::Conflict { what: what.to_string(), why: format!("conflict ({code})") },
        _ => StoreError::Service {
            what: what.to_string(),
            status,
            code: code.to_string(),
            transient: is_transient(status, code),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ErrorKind;

    #[test]
    fn transient_and_permanent_statuses_are_told_apart() {
        for (s, c) in [
            (408, ""),
            (429, ""),
            (500, "InternalError"),
            (502, ""),
            (503, "ServerBusy"),
            (504, ""),
            (500, "OperationTimedOut"),
        ] {
            let e = from_status(s, c, "a:c/b", "a");
            assert!(e.is_transient(), "{s} {c}");
        }
        for (s, c, kind) in [
            (412, "LeaseIdMissing", ErrorKind::DestinationConflict),
            (400, "InvalidBlobOrBlock", ErrorKind::DestinationConflict),
            (412, "ConditionNotMet", ErrorKind::SourceChanged),
            (403, "AuthenticationFailed", ErrorKind::PermissionDenied),
            (404, "BlobNotFound", ErrorKind::NotFound),
            (404, "ContainerNotFound", ErrorKind::NotFound),
            (409, "BlobAlreadyExists", ErrorKind::DestinationConflict),
            (412, "ConditionNotMet", ErrorKind::SourceChanged),
            (400, "InvalidHeaderValue", ErrorKind::Service),
        ] {
            let e = from_status(s, c, "a:c/b", "a");
            assert_eq!(e.kind(), kind, "{s} {c}");
            if s != 412 {
                assert!(!e.is_transient(), "{s} {c}");
            }
        }
        for (s, c) in [
            (429, "TooManyRequests"),
            (503, "ServerBusy"),
            (503, ""),
            (500, "ServerBusy"),
        ] {
            assert!(is_throttling(s, c), "{s} {c}");
        }
        for (s, c) in [(500, "InternalError"), (408, ""), (504, ""), (200, "")] {
            assert!(!is_throttling(s, c), "{s} {c}");
        }
        // A server-side copy's source refused: not the destination's fault.
        let msg = from_status(403, "CannotVerifyCopySource", "copy of x", "dst").to_string();
        assert!(
            msg.contains("could not read the source") && !msg.contains("\"dst\""),
            "{msg}"
        );
        let msg = from_status(403, "AuthenticationFailed", "prod:photos", "prod").to_string();
        assert!(
            msg.contains("account \"prod\" refused") && msg.contains("check its key or SAS"),
            "{msg}"
        );
    }
}
