//! Model providers: the closed set mcplane can route to, as an enum rather than trait objects.
//!
//! Each provider turns one [`Exchange`] into an [`AiResponse`] or a [`ProviderError`] that says
//! what kind of failure it was; retries, breakers and fallback live in the stage, not here.

pub mod anthropic;
pub mod local;
pub mod openai;
pub mod sse;

use std::time::Duration;

use mcplane_shared::{AiResponse, Exchange};

use crate::config::{ProviderConfig, ProviderKind};

/// How a provider call failed, which decides what the stage does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connect errors, timeouts, 429, 5xx, a stream that broke before any content: retry,
    /// then fall back; counts against the provider's circuit.
    Retryable,
    /// The provider refused this request (other 4xx, an unreadable answer): fall back.
    Permanent,
    /// A stream broke off after content had begun: the request fails with
    /// `stream_interrupted` rather than pass a partial answer off as whole, or pay twice.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    pub kind: FailureKind,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            kind: FailureKind::Permanent,
            retry_after: None,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            kind: FailureKind::Retryable,
            retry_after: None,
        }
    }

    pub fn interrupted(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            kind: FailureKind::Interrupted,
            retry_after: None,
        }
    }

    /// Reads an error answer: 429 and 5xx may pass, other statuses will not.
    pub async fn from_response(provider: &str, response: reqwest::Response) -> Self {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let snippet: String = body.chars().take(200).collect();
        ProviderError {
            message: format!("provider {provider} answered {status}: {snippet}"),
            kind: if status.as_u16() == 429 || status.is_server_error() {
                FailureKind::Retryable
            } else {
                FailureKind::Permanent
            },
            retry_after,
        }
    }
}

/// One call to make: the exchange, the model to ask for, whether to stream.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub exchange: &'a Exchange,
    pub model: &'a str,
    pub stream: bool,
}

/// A configured provider, ready to call.
#[derive(Debug, Clone)]
pub enum Provider {
    Local(local::LocalProvider),
    OpenAi(openai::OpenAiProvider),
    Anthropic(anthropic::AnthropicProvider),
}

impl Provider {
    /// Builds a provider from its configuration (the HTTP client is shared by every provider).
    pub fn from_config(config: &ProviderConfig, http: &reqwest::Client) -> Self {
        match config.kind {
            ProviderKind::Local => Provider::Local(local::LocalProvider::new(config.name.clone())),
            ProviderKind::Openai => {
                Provider::OpenAi(openai::OpenAiProvider::new(config, http.clone()))
            }
            ProviderKind::Anthropic => {
                Provider::Anthropic(anthropic::AnthropicProvider::new(config, http.clone()))
            }
        }
    }

    pub async fn invoke(&self, call: Call<'_>) -> Result<AiResponse, ProviderError> {
        match self {
            Provider::Local(p) => Ok(p.invoke(call.exchange, call.model)),
            Provider::OpenAi(p) => p.invoke(call).await,
            Provider::Anthropic(p) => p.invoke(call).await,
        }
    }
}

/// Whether an answer is a server-sent-event stream (a server that ignores `stream` answers
/// with one JSON body instead, which is read as a plain answer).
pub fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A stream that stopped short: retryable while nothing has arrived, `Interrupted` after.
pub fn stream_broke(provider: &str, received: &str, why: &str) -> ProviderError {
    if received.is_empty() {
        ProviderError::retryable(format!(
            "provider {provider}: stream {why} before any content"
        ))
    } else {
        ProviderError::interrupted(format!(
            "provider {provider}: stream {why} after {} characters",
            received.chars().count()
        ))
    }
}

/// The API key from the environment variable a provider names, if it names one.
pub fn api_key(provider: &str, env: Option<&str>) -> Result<Option<String>, ProviderError> {
    match env {
        None => Ok(None),
        Some(var) => std::env::var(var).map(Some).map_err(|_| {
            ProviderError::permanent(format!(
                "provider {provider}: environment variable {var} is not set"
            ))
        }),
    }
}
