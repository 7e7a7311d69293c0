//! Stops an attempt whose service has gone away. Each blob already retries
//! its transient faults with backoff; when many blobs in a row still end
//! unable to reach the service, the rest would only do the same (Azurite
//! killed under 1,500 blobs at `--parallel 4` took 8 minutes of retries,
//! blob by blob). The attempt fails instead, naming the cause, and `ferry
//! replay` (or the daemon's retry) continues it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::store::StoreError;

/// Blobs in a row, with no success between, that end unable to connect
/// before the attempt stops; at least the number of workers, so one wave of
/// in-flight copies cut by a blip is not enough.
const IN_A_ROW: u32 = 32;

pub(crate) struct Outage {
    threshold: u32,
    in_a_row: AtomicU32,
    /// The first cause that reached the threshold: the attempt's message.
    message: OnceLock<String>,
}

impl Outage {
    pub fn new(workers: usize) -> Self {
        Outage {
            threshold: IN_A_ROW.max(u32::try_from(workers).unwrap_or(u32::MAX)),
            in_a_row: AtomicU32::new(0),
            message: OnceLock::new(),
        }
    }

    /// Counts a blob's final result; true when the attempt should stop.
    pub fn observe<T>(&self, res: &Result<T, StoreError>) -> bool {
        match res {
            Err(e) if cannot_connect(e) => {
                let n = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.threshold {
                    let _ = self.message.set(format!(
                        "stopped after {n} blobs in a row could not reach the service, \
                         each after every retry (last: {e}); `ferry replay` continues once it \
                         answers again"
                    ));
                    return true;
                }
                false
            }
            _ => {
                self.in_a_row.store(0, Ordering::Relaxed);
                false
            }
        }
    }

    /// Why the attempt stopped, if it did.
    pub fn message(&self) -> Option<&str> {
        self.message.get().map(String::as_str)
    }
}

/// The connection itself failed: the service may be down or unreachable.
/// Answers from the service (even 503) are not: it is there.
fn cannot_connect(e: &StoreError) -> bool {
    use std::io::ErrorKind as K;
    let StoreError::Io { cause, .. } = e else {
        return false;
    };
    cause
        .get_ref()
        .is_some_and(|c| c.is::<crate::store::RetriedTransport>())
        || matches!(
            cause.kind(),
            K::ConnectionRefused
                | K::ConnectionAborted
                | K::ConnectionReset
                | K::TimedOut
                | K::UnexpectedEof
                | K::NotConnected
                | K::HostUnreachable
                | K::NetworkUnreachable
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), StoreError> {
        Err(StoreError::Io {
            what: "b: cannot connect to account \"dev\"".into(),
            cause: std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "refused"),
        })
    }

    #[test]
    fn given_blobs_that_cannot_connect_then_it_trips_at_the_threshold_only_in_a_row() {
        let o = Outage::new(4);
        for _ in 0..IN_A_ROW - 1 {
            assert!(!o.observe(&down()));
        }
        // A success in between starts the count again.
        assert!(!o.observe(&Ok(())));
        for _ in 0..IN_A_ROW - 1 {
            assert!(!o.observe(&down()));
        }
        assert!(o.message().is_none());
        assert!(o.observe(&down()));
        let m = o.message().unwrap();
        assert!(
            m.contains("could not reach the service") && m.contains("ferry replay"),
            "{m}"
        );
    }

    #[test]
    fn given_transport_failures_the_pipeline_already_retried_then_they_count() {
        let o = Outage::new(1);
        let retried: Result<(), StoreError> = Err(StoreError::Io {
            what: "b: cannot connect to account \"dev\"".into(),
            cause: std::io::Error::other(crate::store::RetriedTransport("refused".into())),
        });
        assert!(!retried.as_ref().unwrap_err().is_transient());
        for _ in 0..IN_A_ROW - 1 {
            assert!(!o.observe(&retried));
        }
        assert!(o.observe(&retried));
        // Any other error of kind Other (a local disk's) does not.
        let other = Outage::new(1);
        let disk: Result<(), StoreError> = Err(StoreError::Io {
            what: "f".into(),
            cause: std::io::Error::other("disk on fire"),
        });
        for _ in 0..100 {
            assert!(!other.observe(&disk));
        }
    }

    #[test]
    fn given_answers_from_the_service_then_it_never_trips() {
        let o = Outage::new(4);
        let busy: Result<(), StoreError> = Err(StoreError::Service {
            what: "b".into(),
            status: 503,
            code: "ServerBusy".into(),
            transient: true,
        });
        let gone: Result<(), StoreError> = Err(StoreError::NotFound { what: "b".into() });
        for _ in 0..100 {
            assert!(!o.observe(&busy));
            assert!(!o.observe(&gone));
        }
        // More workers than the default: the threshold follows them.
        let wide = Outage::new(100);
        for _ in 0..99 {
            assert!(!wide.observe(&down()));
        }
        assert!(wide.observe(&down()));
    }
}
