//! OpenAI-compatible chat completions over HTTP: OpenAI, Azure OpenAI, vLLM, Ollama,
//! llama.cpp server, LiteLLM — anything that serves `POST {base_url}/chat/completions`.
//!
//! Failures are sorted here into retryable (connect errors, timeouts, 429, 5xx) and permanent
//! (other 4xx, an answer without a message), because only the provider knows its status codes.

use std::time::Duration;

use mcplane_shared::{AiResponse, Exchange, Usage};
use serde::Deserialize;
use serde_json::json;

use super::ProviderError;
use crate::config::ProviderConfig;
use crate::prompt;

#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    pub name: String,
    model: String,
    url: String,
    api_key_env: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl OpenAiProvider {
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Self {
        let base = config.base_url.clone().unwrap_or_default();
        OpenAiProvider {
            name: config.name.clone(),
            model: config.model.clone(),
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            api_key_env: config.api_key_env.clone(),
            http,
        }
    }

    pub async fn invoke(&self, exchange: &Exchange) -> Result<AiResponse, ProviderError> {
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt::instruction(exchange.request.request_type)},
                {"role": "user", "content": prompt::user_message(exchange)},
            ],
        });
        if let Some(max) = exchange.request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(var) = &self.api_key_env {
            match std::env::var(var) {
                Ok(key) => request = request.bearer_auth(key),
                Err(_) => {
                    return Err(ProviderError::permanent(format!(
                        "provider {}: environment variable {var} is not set",
                        self.name
                    )))
                }
            }
        }
        let response = request.send().await.map_err(|e| {
            // Connect errors and timeouts: the provider may be back in a moment.
            ProviderError::retryable(format!("provider {}: {e}", self.name))
        })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            let snippet: String = text.chars().take(200).collect();
            let message = format!("provider {} answered {status}: {snippet}", self.name);
            let retryable = status.as_u16() == 429 || status.is_server_error();
            return Err(ProviderError {
                message,
                retryable,
                retry_after,
            });
        }
        let completion: Completion = response.json().await.map_err(|e| {
            ProviderError::permanent(format!("provider {}: unreadable answer: {e}", self.name))
        })?;
        let text = completion
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| {
                ProviderError::permanent(format!("provider {}: answer has no message", self.name))
            })?;
        let usage = completion.usage.map_or(Usage::default(), |u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        });
        Ok(AiResponse {
            text,
            provider: self.name.clone(),
            model: completion.model.unwrap_or_else(|| self.model.clone()),
            usage,
        })
    }
}
