//! The `[model]` section: providers, routing rules, circuit breakers and budgets.
//!
//! Providers are declared once with what routing needs to know about them: their models, where
//! their data goes (`boundary`), what they cost and how much concurrency they take. The routing
//! rules (`[model.routing]`) are the versioned part: file defaults here, replaced at run time by
//! `mcplane config push routing FILE` without a restart.

use std::collections::BTreeMap;

use mcplane_shared::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

use crate::routing::RoutingConfig;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long one provider call may take before it counts as failed (a provider's own
    /// `timeout_ms` wins).
    pub request_timeout_ms: u64,
    /// Attempts per provider on a retryable failure (connect error, 429, 5xx, timeout) before
    /// falling back to the next candidate.
    pub max_attempts: usize,
    /// How long a request waits for a provider's concurrency permit before falling back.
    pub queue_timeout_ms: u64,
    /// Output tokens assumed for a cost estimate when the request sets no `max_tokens`.
    pub default_output_tokens: u32,
    pub providers: Vec<ProviderConfig>,
    pub routing: RoutingConfig,
    pub breaker: BreakerConfig,
    /// Budgets by tenant; `"*"` applies to tenants without their own.
    pub budgets: BTreeMap<String, BudgetConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout_ms: 30_000,
            max_attempts: 3,
            queue_timeout_ms: 1_000,
            default_output_tokens: 512,
            providers: vec![ProviderConfig::local("local")],
            routing: RoutingConfig::default(),
            breaker: BreakerConfig::default(),
            budgets: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The built-in deterministic provider (no network).
    Local,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
    /// llama.cpp server, LiteLLM).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

/// Where a provider sends the data it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    /// Inside the organisation's boundary (the built-in provider, a self-hosted model).
    Private,
    /// A third party's cloud: never given restricted data.
    PublicCloud,
}

impl Boundary {
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Private => "private",
            Boundary::PublicCloud => "public_cloud",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name in rules, audit entries, metrics and responses.
    pub name: String,
    pub kind: ProviderKind,
    /// The model used unless the request names another of `models`.
    pub model: String,
    /// Further models this provider serves.
    #[serde(default)]
    pub models: Vec<String>,
    /// `https://host/v1`: `/chat/completions` (openai) or `/messages` (anthropic) is appended.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Defaults to `private` for `local`, `public_cloud` for the others.
    #[serde(default)]
    pub boundary: Option<Boundary>,
    /// US dollars per million input tokens.
    #[serde(default)]
    pub input_cost_per_mtok: f64,
    /// US dollars per million output tokens.
    #[serde(default)]
    pub output_cost_per_mtok: f64,
    /// This provider's call timeout (defaults to `model.request_timeout_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Calls in flight to this provider at most, across this replica.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

fn default_concurrency() -> usize {
    32
}

impl ProviderConfig {
    /// The built-in provider under `name`.
    pub fn local(name: &str) -> Self {
        ProviderConfig {
            name: name.into(),
            kind: ProviderKind::Local,
            model: crate::providers::local::MODEL.into(),
            models: Vec::new(),
            base_url: None,
            api_key_env: None,
            boundary: None,
            input_cost_per_mtok: 0.0,
            output_cost_per_mtok: 0.0,
            timeout_ms: None,
            max_concurrency: default_concurrency(),
        }
    }

    pub fn boundary(&self) -> Boundary {
        self.boundary.unwrap_or(match self.kind {
            ProviderKind::Local => Boundary::Private,
            ProviderKind::Openai | ProviderKind::Anthropic => Boundary::PublicCloud,
        })
    }

    /// Every model this provider serves, its default first.
    pub fn all_models(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.model.as_str()).chain(self.models.iter().map(String::as_str))
    }

    /// Cost in millionths of a dollar of the given token counts.
    pub fn cost_micros(&self, input_tokens: u32, output_tokens: u32) -> u64 {
        let micros = f64::from(input_tokens) * self.input_cost_per_mtok
            + f64::from(output_tokens) * self.output_cost_per_mtok;
        micros.ceil() as u64
    }
}

/// When a provider's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls (after retries) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before letting one probe through.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

/// A tenant's spending limits in US dollars.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    /// The share of a limit at which operators are alerted (once per window).
    pub soft_ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            daily_usd: None,
            monthly_usd: None,
            soft_ratio: 0.8,
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let positive = [
            ("request_timeout_ms", self.request_timeout_ms),
            ("queue_timeout_ms", self.queue_timeout_ms),
            ("breaker.open_ms", self.breaker.open_ms),
            (
                "default_output_tokens",
                u64::from(self.default_output_tokens),
            ),
            (
                "breaker.failure_threshold",
                u64::from(self.breaker.failure_threshold),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(format!("{section}.{key}"), "must be > 0"));
            }
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                format!("{section}.max_attempts"),
                "must be between 1 and 10",
            ));
        }
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                format!("{section}.providers"),
                "must list at least one provider (kind = \"local\" needs no network)",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |field: &str| format!("{section}.providers[{i}].{field}");
            if p.name.trim().is_empty() || !names.insert(p.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    "must be non-empty and unique",
                ));
            }
            if p.model.trim().is_empty() {
                return Err(ConfigError::new(key("model"), "must not be empty"));
            }
            if p.max_concurrency == 0 {
                return Err(ConfigError::new(key("max_concurrency"), "must be > 0"));
            }
            for (field, cost) in [
                ("input_cost_per_mtok", p.input_cost_per_mtok),
                ("output_cost_per_mtok", p.output_cost_per_mtok),
            ] {
                if !(cost.is_finite() && cost >= 0.0) {
                    return Err(ConfigError::new(key(field), "must be a number >= 0"));
                }
            }
            if p.kind != ProviderKind::Local {
                match &p.base_url {
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {}
                    Some(_) => {
                        return Err(ConfigError::new(
                            key("base_url"),
                            "must be an http:// or https:// URL",
                        ))
                    }
                    None => {
                        return Err(ConfigError::new(
                            key("base_url"),
                            "is required for this kind of provider",
                        ))
                    }
                }
            }
        }
        for (tenant, b) in &self.budgets {
            let key = |field: &str| format!("{section}.budgets.{tenant}.{field}");
            if tenant != "*" && mcplane_shared::subjects::validate_token(tenant).is_err() {
                return Err(ConfigError::new(
                    format!("{section}.budgets.{tenant}"),
                    "must be a tenant id or \"*\"",
                ));
            }
            for (field, v) in [("daily_usd", b.daily_usd), ("monthly_usd", b.monthly_usd)] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return Err(ConfigError::new(key(field), "must be a number >= 0"));
                }
            }
            if !(b.soft_ratio > 0.0 && b.soft_ratio <= 1.0) {
                return Err(ConfigError::new(key("soft_ratio"), "must be in (0, 1]"));
            }
        }
        self.routing
            .validate(&self.providers)
            .map_err(|(field, message)| {
                ConfigError::new(format!("{section}.routing.{field}"), message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn default_is_the_local_provider() {
        let cfg = Document::parse("")
            .unwrap()
            .section::<Config>("model")
            .unwrap();
        assert_eq!(cfg.providers.len(), 1);
        assert_eq!(cfg.providers[0].kind, ProviderKind::Local);
        assert_eq!(cfg.providers[0].boundary(), Boundary::Private);
    }

    #[test]
    fn costs_are_per_million_tokens_in_micro_dollars() {
        let mut p = ProviderConfig::local("x");
        p.input_cost_per_mtok = 0.15;
        p.output_cost_per_mtok = 0.60;
        // 1000 in, 500 out: $0.00015 + $0.0003 = 450 micro-dollars.
        assert_eq!(p.cost_micros(1000, 500), 450);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[model]\nrequest_timeout_ms = 0\n",
                "model.request_timeout_ms",
            ),
            ("[model]\nproviders = []\n", "model.providers"),
            (
                "[[model.providers]]\nname = \"a\"\nkind = \"openai\"\nmodel = \"m\"\n",
                "model.providers[0].base_url",
            ),
            (
                "[[model.providers]]\nname = \"a\"\nkind = \"local\"\nmodel = \"m\"\n\
                 [[model.providers]]\nname = \"a\"\nkind = \"local\"\nmodel = \"m\"\n",
                "model.providers[1].name",
            ),
            (
                "[model.budgets.acme]\nsoft_ratio = 2.0\n",
                "model.budgets.acme.soft_ratio",
            ),
            (
                "[[model.routing.rules]]\nname = \"r\"\nproviders = [\"nope\"]\n",
                "model.routing.rules[0].providers",
            ),
        ];
        for (text, key) in cases {
            let err = Document::parse(text)
                .unwrap()
                .section::<Config>("model")
                .unwrap_err();
            assert_eq!(err.key, key, "{text}");
        }
    }
}
