//! Connecting with retry, and refusing servers too old for mcplane.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::Bus;
use crate::config::BusConfig;
use crate::error::ServiceError;

/// Connects to NATS, retrying with exponential backoff for up to `connect_timeout_ms`, checks
/// that the server is 2.10 or newer, and makes sure mcplane's streams and buckets exist.
pub async fn connect(config: &BusConfig, name: &str) -> Result<Bus, ServiceError> {
    let deadline = Duration::from_millis(config.connect_timeout_ms.max(1));
    let url = config.url.clone();
    let attempt = || async {
        let mut opts = match &config.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| ServiceError::Connect {
                    url: url.clone(),
                    message: format!("credentials file {}: {e}", path.display()),
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        opts = opts
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected | async_nats::Event::Closed => {
                        tracing::debug!(%event, "nats connection event")
                    }
                    _ => tracing::warn!(%event, "nats connection event"),
                }
            });
        async_nats::connect_with_options(url.as_str(), opts)
            .await
            .map_err(|e| ServiceError::Connect {
                url: url.clone(),
                message: e.to_string(),
            })
    };
    let started = std::time::Instant::now();
    let client = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(usize::MAX)
                .with_jitter(),
        )
        .when(|e| {
            !matches!(e, ServiceError::Connect { message, .. } if message.starts_with("credentials file"))
                && started.elapsed() < deadline
        })
        .notify(|err, after| tracing::warn!(%err, ?after, "nats not reachable yet, retrying"))
        .await?;

    let version = client.server_info().version;
    if !version_at_least(&version, 2, 10) {
        return Err(ServiceError::ServerTooOld { found: version });
    }
    let bus = Bus::from_client(client, config.clone());
    bus.ensure().await?;
    Ok(bus)
}

/// Whether a server version string such as `2.10.4` or `v2.11.0-beta` is at least major.minor.
pub fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare() {
        use super::version_at_least as v;
        assert!(v("2.10.0", 2, 10));
        assert!(v("v2.15.1", 2, 10));
        assert!(v("3.0.0", 2, 10));
        assert!(!v("2.9.10", 2, 10));
        assert!(!v("", 2, 10));
    }
}
