//! Retries each HTTP request where it is sent, so a fault costs one request
//! again (one block, one listing page), not the whole blob. Replaces the
//! SDK's retry (switched off) because ferry needs full jitter, a per-try
//! timeout that catches stalls, a total time budget, and every retry counted
//! by cause in the blob's tally.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use chrono::{DateTime, Utc};

use super::errors;
use super::forward;
use crate::retry::{self, Fault, RetryPolicy};

#[derive(Debug)]
pub(crate) struct RetryRequests(pub RetryPolicy);

const ERROR_CODE: HeaderName = HeaderName::from_static("x-ms-error-code");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_MS_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");

#[async_trait::async_trait]
impl Policy for RetryRequests {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let p = &self.0;
        let start = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 1 {
                request.body_mut().reset().await?;
            }
            let sent = tokio::time::timeout(p.try_timeout, forward(ctx, request, next)).await;
            let (result, fault) = match sent {
                Err(_) => {
                    retry::record_request(false);
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no response within {} s", p.try_timeout.as_secs()),
                    );
                    let e = azure_core::Error::new(azure_core::error::ErrorKind::Io, e);
                    (Err(e), Fault::new("timeout"))
                }
                Ok(Ok(response)) => {
                    let status = u16::from(response.status());
                    let code = response
                        .headers()
                        .get_optional_str(&ERROR_CODE)
                        .unwrap_or_default()
                        .to_string();
                    // Every try's answer counts towards the attempt's
                    // throttled share (`--parallel auto`).
                    retry::record_request(errors::is_throttling(status, &code));
                    if !errors::is_transient(status, &code) {
                        return Ok(response);
                    }
                    let fault = Fault {
                        cause: format!("{status} {code}").trim_end().to_string(),
                        retry_after: retry_after(response.headers()),
                    };
                    (Ok(response), fault)
                }
                Ok(Err(e)) => {
                    retry::record_request(false);
                    match e.kind() {
                        azure_core::error::ErrorKind::Io
                        | azure_core::error::ErrorKind::Connection => {
                            let cause = errors::io_cause(&e);
                            (Err(e), Fault::new(cause))
                        }
                        _ => return Err(e),
                    }
                }
            };
            let Some(wait) = p.next_wait(tries, start.elapsed(), &fault) else {
                tracing::debug!(cause = %fault.cause, tries, "giving up on a request");
                return result;
            };
            tracing::debug!(cause = %fault.cause, tries, ?wait, "retrying a request");
            retry::record(&fault.cause);
            drop(result);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The server's wait: `retry-after-ms` / `x-ms-retry-after-ms` in
/// milliseconds, or `Retry-After` in seconds or as an HTTP date.
fn retry_after(h: &azure_core::http::headers::Headers) -> Option<Duration> {
    for name in [&RETRY_AFTER_MS, &X_MS_RETRY_AFTER_MS] {
        if let Some(ms) = h.get_optional_str(name).and_then(|v| v.trim().parse().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    parse_retry_after(h.get_optional_str(&RETRY_AFTER)?, Utc::now())
}

fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2021 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Thu, 31 Dec 2020 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
