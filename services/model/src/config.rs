//! The `[model]` section: the providers a request may be routed to, in order of preference.
//!
//! The first provider that answers serves the request; the others are fallbacks. The built-in
//! local provider needs no network and no key, so the default fleet always has a model.

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long one provider call may take before it counts as failed.
    pub request_timeout_ms: u64,
    /// Attempts per provider on a retryable failure (connect error, 429, 5xx) before falling
    /// back to the next provider.
    pub max_attempts: usize,
    /// Providers in order of preference.
    pub providers: Vec<ProviderConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout_ms: 30_000,
            max_attempts: 3,
            providers: vec![ProviderConfig {
                name: "local".into(),
                kind: ProviderKind::Local,
                model: crate::providers::local::MODEL.into(),
                base_url: None,
                api_key_env: None,
            }],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The built-in deterministic provider (no network).
    Local,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
    /// llama.cpp server, LiteLLM).
    Openai,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name in audit entries, metrics and responses.
    pub name: String,
    pub kind: ProviderKind,
    pub model: String,
    /// `https://host/v1` for `openai`: `/chat/completions` is appended.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
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
            if p.kind == ProviderKind::Openai {
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
                            "is required for kind = \"openai\"",
                        ))
                    }
                }
            }
        }
        Ok(())
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
