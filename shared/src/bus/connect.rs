//! Connecting with retry, and refusing servers too old for mcplane.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::Bus;
use crate::config::BusConfig;
use crate::error::ServiceError;

/// Connects to NATS, retrying with exponential backoff for up to `connect_timeout_ms`, checks
/// that the server is 2.10 or newer, and makes sure mcplane's streams and buckets exist.
pub async fn connect(config: &BusConfig, name: &str) -> Result<Bus, ServiceError> {
    connect_with_inbox(config, name, None).await
}

/// [`connect`], with replies to this connection's requests delivered under `inbox_prefix`
/// instead of `_INBOX` (see [`crate::subjects::Subjects::private_inbox`]).
pub async fn connect_with_inbox(
    config: &BusConfig,
    name: &str,
    inbox_prefix: Option<&str>,
) -> Result<Bus, ServiceError> {
    let deadline = Duration::from_millis(config.connect_timeout_ms.max(1));
    let (servers, userinfo) = split_userinfo(&config.url);
    // Logged and reported without the password.
    let url = servers.clone();
    let attempt = || async {
        let mut opts = match (&config.credentials_file, &userinfo) {
            (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| ServiceError::Connect {
                    url: url.clone(),
                    message: format!("credentials file {}: {e}", path.display()),
                })?,
            // async-nats ignores credentials in the URL (nats.rs issue 1623): apply them here.
            (None, Some((user, Some(password)))) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            (None, Some((token, None))) => async_nats::ConnectOptions::with_token(token.clone()),
            (None, None) => async_nats::ConnectOptions::new(),
        };
        if let Some(prefix) = inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
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
        async_nats::connect_with_options(servers.as_str(), opts)
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

/// Splits `nats://user:password@host:port[,nats://...]` into the server list without
/// credentials and the credentials of the first URL that has any (`user` alone is a token).
pub fn split_userinfo(urls: &str) -> (String, Option<(String, Option<String>)>) {
    let mut found = None;
    let servers: Vec<String> = urls
        .split(',')
        .map(|u| {
            let u = u.trim();
            let (scheme, rest) = match u.split_once("://") {
                Some((s, r)) => (format!("{s}://"), r),
                None => (String::new(), u),
            };
            match rest.rsplit_once('@') {
                Some((info, host)) => {
                    if found.is_none() {
                        found = Some(match info.split_once(':') {
                            Some((user, pass)) => (user.to_string(), Some(pass.to_string())),
                            None => (info.to_string(), None),
                        });
                    }
                    format!("{scheme}{host}")
                }
                None => u.to_string(),
            }
        })
        .collect();
    (servers.join(","), found)
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
    fn credentials_come_out_of_the_url() {
        use super::split_userinfo as split;
        assert_eq!(
            split("nats://svc:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            (
                "nats://10.0.0.1:4222,nats://10.0.0.2:4222".to_string(),
                Some(("svc".to_string(), Some("s3cret".to_string())))
            )
        );
        assert_eq!(
            split("nats://tok@h:1"),
            ("nats://h:1".to_string(), Some(("tok".to_string(), None)))
        );
        assert_eq!(split("nats://h:1"), ("nats://h:1".to_string(), None));
    }

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
