//! The `[notifier]` section: where each tenant's summaries are posted, and how hard to try.
//!
//! A tenant's own webhook wins over the default one; a tenant with neither is skipped (its
//! summaries are still on `mcplane.summaries.<tenant>.*` for any other integration).

use std::collections::BTreeMap;

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Slack incoming-webhook URL for tenants without their own.
    pub slack_webhook_url: Option<String>,
    /// Per-tenant Slack incoming-webhook URLs.
    pub tenant_webhooks: BTreeMap<String, String>,
    /// How long one post may take.
    pub request_timeout_ms: u64,
    /// Attempts per summary on a retryable failure (connect error, 429, 5xx) before the
    /// message is handed back to JetStream for a later redelivery.
    pub max_attempts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slack_webhook_url: None,
            tenant_webhooks: BTreeMap::new(),
            request_timeout_ms: 10_000,
            max_attempts: 4,
        }
    }
}

impl Config {
    /// The webhook a tenant's summaries go to, if any.
    pub fn webhook_for(&self, tenant: &str) -> Option<&str> {
        self.tenant_webhooks
            .get(tenant)
            .or(self.slack_webhook_url.as_ref())
            .map(String::as_str)
    }
}

fn check_url(key: String, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(ConfigError::new(key, "must be an http:// or https:// URL"))
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if let Some(url) = &self.slack_webhook_url {
            check_url(format!("{section}.slack_webhook_url"), url)?;
        }
        for (tenant, url) in &self.tenant_webhooks {
            check_url(format!("{section}.tenant_webhooks.{tenant}"), url)?;
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::new(
                format!("{section}.request_timeout_ms"),
                "must be > 0",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                format!("{section}.max_attempts"),
                "must be between 1 and 10",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn a_tenant_webhook_wins_over_the_default() {
        let doc = Document::parse(
            "[notifier]\nslack_webhook_url = \"https://hooks.example/all\"\n\
             tenant_webhooks = { acme = \"https://hooks.example/acme\" }\n",
        )
        .unwrap();
        let cfg = doc.section::<Config>("notifier").unwrap();
        assert_eq!(cfg.webhook_for("acme"), Some("https://hooks.example/acme"));
        assert_eq!(cfg.webhook_for("other"), Some("https://hooks.example/all"));
        assert_eq!(Config::default().webhook_for("acme"), None);
    }

    #[test]
    fn errors_name_the_key() {
        let doc =
            Document::parse("[notifier]\ntenant_webhooks = { acme = \"ftp://x\" }\n").unwrap();
        assert_eq!(
            doc.section::<Config>("notifier").unwrap_err().key,
            "notifier.tenant_webhooks.acme"
        );
        let doc = Document::parse("[notifier]\nmax_attempts = 0\n").unwrap();
        assert_eq!(
            doc.section::<Config>("notifier").unwrap_err().key,
            "notifier.max_attempts"
        );
    }
}
