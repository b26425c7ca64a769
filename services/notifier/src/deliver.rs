//! Posting one message to a webhook, with retries on the failures that can pass.
//!
//! Connect errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter
//! (honouring `Retry-After` up to a cap); any other status is permanent: retrying a 404 from a
//! deleted Slack channel only delays the error.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

/// Longest wait honoured from a webhook's `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What a delivery came to, recorded in the claim and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The webhook's identity: a hash of its URL (the URL itself is a secret).
    pub target: String,
    pub delivered: bool,
    /// The last HTTP status, when there was one.
    pub status: Option<u16>,
    pub attempts: u32,
    /// Why it was not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a failed delivery may be tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every attempt failed for a passing reason; the post did not happen.
    Retryable(Receipt),
    /// The webhook refused the message; trying again will not help.
    Permanent(Receipt),
}

/// A short, stable, non-secret name for a webhook URL.
pub fn target_id(url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(url.as_bytes())[..6])
}

/// Posts `body` to `url`, retrying up to `max_attempts` times in all.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    max_attempts: usize,
) -> Result<Receipt, Failure> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(max_attempts.saturating_sub(1))
        .with_jitter()
        .build();
    let mut receipt = Receipt {
        target: target_id(url),
        delivered: false,
        status: None,
        attempts: 0,
        error: None,
    };
    loop {
        receipt.attempts += 1;
        let (retryable, retry_after) = match http.post(url).json(body).send().await {
            Ok(resp) if resp.status().is_success() => {
                receipt.status = Some(resp.status().as_u16());
                receipt.delivered = true;
                receipt.error = None;
                return Ok(receipt);
            }
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                receipt.status = Some(status.as_u16());
                receipt.error = Some(format!("webhook answered {status}: {text}"));
                (
                    status.as_u16() == 429 || status.is_server_error(),
                    retry_after,
                )
            }
            Err(e) => {
                receipt.error = Some(format!("webhook unreachable: {e}"));
                (true, None)
            }
        };
        tracing::warn!(target = %receipt.target, attempt = receipt.attempts, error = ?receipt.error, retryable, "webhook post failed");
        if !retryable {
            return Err(Failure::Permanent(receipt));
        }
        match delays.next() {
            Some(d) => {
                let d = retry_after.map_or(d, |ra| ra.min(MAX_RETRY_AFTER).max(d));
                tokio::time::sleep(d).await;
            }
            None => return Err(Failure::Retryable(receipt)),
        }
    }
}
