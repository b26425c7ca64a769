//! The `[gateway]` section: where the HTTP API listens, how large a body it accepts, how long a
//! request may wait for its result, and how long a resolved credential is trusted.
//!
//! Every limit has a range so that a typo (a timeout in seconds where milliseconds are meant)
//! fails at start-up with the key named, rather than as a gateway that answers nothing in time.

use std::net::SocketAddr;

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

/// The smallest body limit accepted: below this no real alert webhook fits.
pub const MIN_BODY_LIMIT: usize = 1024;
/// The largest body limit accepted.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// The longest a `POST /v1/requests` may be held open.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;
/// The longest a resolved credential may be trusted without asking auth again.
pub const MAX_AUTH_CACHE_TTL_SECS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The largest request body accepted; larger ones get 413 `payload_too_large`.
    pub body_limit_bytes: usize,
    /// How long `POST /v1/requests` waits for the result before answering 202 with its id.
    pub request_timeout_ms: u64,
    /// How long a credential resolved for an alert webhook is trusted; 0 asks auth every time.
    pub auth_cache_ttl_secs: u64,
    /// Hosts (and their subdomains) whose `SubscribeURL` the gateway GETs to confirm an SNS
    /// subscription to `POST /v1/alerts/cloudwatch`; anything else is refused.
    pub sns_confirm_hosts: Vec<String>,
    /// Only confirm SNS subscriptions over https (turn off only for tests against a local
    /// stand-in).
    pub sns_confirm_https_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            auth_cache_ttl_secs: 30,
            sns_confirm_hosts: vec!["amazonaws.com".to_string()],
            sns_confirm_https_only: true,
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if !(MIN_BODY_LIMIT..=MAX_BODY_LIMIT).contains(&self.body_limit_bytes) {
            return Err(ConfigError::new(
                key("body_limit_bytes"),
                format!("must be between {MIN_BODY_LIMIT} and {MAX_BODY_LIMIT}"),
            ));
        }
        if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&self.request_timeout_ms) {
            return Err(ConfigError::new(
                key("request_timeout_ms"),
                format!("must be between 1 and {MAX_REQUEST_TIMEOUT_MS}"),
            ));
        }
        if self.auth_cache_ttl_secs > MAX_AUTH_CACHE_TTL_SECS {
            return Err(ConfigError::new(
                key("auth_cache_ttl_secs"),
                format!("must be at most {MAX_AUTH_CACHE_TTL_SECS} (0 disables the cache)"),
            ));
        }
        if let Some(bad) = self
            .sns_confirm_hosts
            .iter()
            .find(|h| h.trim().is_empty() || h.contains(['/', ':', '@', ' ']))
        {
            return Err(ConfigError::new(
                key("sns_confirm_hosts"),
                format!("{bad:?} is not a host name"),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Whether the gateway may GET `url` to confirm an SNS subscription.
    pub fn may_confirm_sns(&self, url: &str) -> bool {
        use mcplane_shared::alerts::cloudwatch::url_host;
        let host = match url_host(url, "https") {
            Some(h) => h,
            None if !self.sns_confirm_https_only => match url_host(url, "http") {
                Some(h) => h,
                None => return false,
            },
            None => return false,
        };
        let host = host.to_ascii_lowercase();
        self.sns_confirm_hosts.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            host == allowed || host.ends_with(&format!(".{allowed}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn defaults_apply_when_the_section_is_absent() {
        let doc = Document::parse("").unwrap();
        let cfg = doc.section::<Config>("gateway").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn values_parse_from_toml() {
        let doc = Document::parse(
            "[gateway]\nhttp_addr = \"0.0.0.0:9000\"\nbody_limit_bytes = 2048\nrequest_timeout_ms = 500\nauth_cache_ttl_secs = 0\n",
        )
        .unwrap();
        let cfg = doc.section::<Config>("gateway").unwrap();
        assert_eq!(cfg.http_addr.port(), 9000);
        assert_eq!(cfg.body_limit_bytes, 2048);
        assert_eq!(cfg.request_timeout_ms, 500);
        assert_eq!(cfg.auth_cache_ttl_secs, 0);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("http_addr = \"nowhere\"", "gateway.http_addr"),
            ("body_limit_bytes = 10", "gateway.body_limit_bytes"),
            ("request_timeout_ms = 0", "gateway.request_timeout_ms"),
            ("auth_cache_ttl_secs = 99999", "gateway.auth_cache_ttl_secs"),
            ("sns_confirm_hosts = [\"a/b\"]", "gateway.sns_confirm_hosts"),
        ] {
            let doc = Document::parse(&format!("[gateway]\n{text}\n")).unwrap();
            assert_eq!(
                doc.section::<Config>("gateway").unwrap_err().key,
                key,
                "{text}"
            );
        }
        let doc = Document::parse("[gateway]\nhttp_adr = \"x\"\n").unwrap();
        assert!(doc
            .section::<Config>("gateway")
            .unwrap_err()
            .to_string()
            .contains("http_adr"));
    }

    #[test]
    fn only_allowed_hosts_are_confirmed() {
        let c = Config::default();
        assert!(c.may_confirm_sns(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
        ));
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
            "https://sns.eu-west-1.amazonaws.com.evil.net/",
            "https://evilamazonaws.com/",
            "https://user@sns.amazonaws.com/",
            "ftp://sns.amazonaws.com/",
        ] {
            assert!(!c.may_confirm_sns(bad), "{bad}");
        }
        let local = Config {
            sns_confirm_hosts: vec!["127.0.0.1".into()],
            sns_confirm_https_only: false,
            ..Config::default()
        };
        assert!(local.may_confirm_sns("http://127.0.0.1:4321/confirm?Token=t"));
        assert!(!local.may_confirm_sns("http://10.0.0.1/confirm"));
    }
}
