//! Model providers: the closed set mcplane can route to, as an enum rather than trait objects.
//!
//! Each provider turns one [`Exchange`] into an [`AiResponse`] or a [`ProviderError`] that says
//! whether trying again could help; retries and fallback live in the stage, not here.

pub mod local;
pub mod openai;

use std::time::Duration;

use mcplane_shared::{AiResponse, Exchange};

use crate::config::{ProviderConfig, ProviderKind};

/// Why a provider call failed, and whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    /// Connect errors, timeouts, 429 and 5xx are retryable; 4xx and bad answers are not.
    pub retryable: bool,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

/// A configured provider, ready to call.
#[derive(Debug, Clone)]
pub enum Provider {
    Local(local::LocalProvider),
    OpenAi(openai::OpenAiProvider),
}

impl Provider {
    /// Builds a provider from its configuration (the HTTP client is shared by every provider).
    pub fn from_config(config: &ProviderConfig, http: &reqwest::Client) -> Self {
        match config.kind {
            ProviderKind::Local => Provider::Local(local::LocalProvider::new(
                config.name.clone(),
                config.model.clone(),
            )),
            ProviderKind::Openai => {
                Provider::OpenAi(openai::OpenAiProvider::new(config, http.clone()))
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Provider::Local(p) => &p.name,
            Provider::OpenAi(p) => &p.name,
        }
    }

    pub async fn invoke(&self, exchange: &Exchange) -> Result<AiResponse, ProviderError> {
        match self {
            Provider::Local(p) => Ok(p.invoke(exchange)),
            Provider::OpenAi(p) => p.invoke(exchange).await,
        }
    }
}
