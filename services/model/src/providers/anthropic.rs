//! Anthropic's Messages API (`POST {base_url}/messages`), plain and streamed.
//!
//! A stream is complete only with its `message_stop` event; one that stops short is retryable
//! while no text has arrived and `Interrupted` after, as for the OpenAI-compatible provider.

use mcplane_shared::{AiResponse, Usage};
use serde::Deserialize;
use serde_json::json;

use super::{api_key, is_event_stream, sse, stream_broke, Call, ProviderError};
use crate::config::ProviderConfig;
use crate::prompt;

/// The API version this client speaks.
const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    pub name: String,
    url: String,
    api_key_env: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    usage: Option<MessageUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct MessageUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

/// The stream events this client reads (others are ignored).
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    usage: Option<MessageUsage>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    text: Option<String>,
}

impl AnthropicProvider {
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Self {
        let base = config.base_url.clone().unwrap_or_default();
        AnthropicProvider {
            name: config.name.clone(),
            url: format!("{}/messages", base.trim_end_matches('/')),
            api_key_env: config.api_key_env.clone(),
            http,
        }
    }

    pub async fn invoke(&self, call: Call<'_>) -> Result<AiResponse, ProviderError> {
        let exchange = call.exchange;
        let mut body = json!({
            "model": call.model,
            "max_tokens": exchange.request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "system": prompt::instruction(exchange.request.request_type),
            "messages": [{"role": "user", "content": prompt::user_message(exchange)}],
        });
        if call.stream {
            body["stream"] = json!(true);
        }
        let mut request = self
            .http
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = api_key(&self.name, self.api_key_env.as_deref())? {
            request = request.header("x-api-key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::retryable(format!("provider {}: {e}", self.name)))?;
        if !response.status().is_success() {
            return Err(ProviderError::from_response(&self.name, response).await);
        }
        if call.stream && is_event_stream(&response) {
            return self.read_stream(response, call.model).await;
        }
        let message: Message = response.json().await.map_err(|e| {
            ProviderError::permanent(format!("provider {}: unreadable answer: {e}", self.name))
        })?;
        let text: String = message
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        if text.is_empty() {
            return Err(ProviderError::permanent(format!(
                "provider {}: answer has no text",
                self.name
            )));
        }
        Ok(self.response(
            text,
            message.model,
            call.model,
            message.usage.unwrap_or_default(),
        ))
    }

    fn response(
        &self,
        text: String,
        reported_model: Option<String>,
        asked_model: &str,
        usage: MessageUsage,
    ) -> AiResponse {
        AiResponse {
            text,
            provider: self.name.clone(),
            model: reported_model.unwrap_or_else(|| asked_model.to_string()),
            usage: Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost_micros: 0,
            },
        }
    }

    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        asked_model: &str,
    ) -> Result<AiResponse, ProviderError> {
        let mut decoder = sse::Decoder::default();
        let mut text = String::new();
        let mut model = None;
        let mut usage = MessageUsage::default();
        let mut finished = false;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(stream_broke(&self.name, &text, &format!("broke off ({e})"))),
            };
            for event in decoder.push(&chunk) {
                let Ok(ev) = serde_json::from_str::<StreamEvent>(&event.data) else {
                    return Err(stream_broke(&self.name, &text, "sent an unreadable event"));
                };
                match ev.kind.as_str() {
                    "message_start" => {
                        if let Some(m) = ev.message {
                            model = m.model;
                            usage.input_tokens = m.usage.unwrap_or_default().input_tokens;
                        }
                    }
                    "content_block_delta" => {
                        if let Some(t) = ev.delta.and_then(|d| d.text) {
                            text.push_str(&t);
                        }
                    }
                    "message_delta" => {
                        if let Some(u) = ev.usage {
                            usage.output_tokens = u.output_tokens;
                        }
                    }
                    "message_stop" => finished = true,
                    "error" => return Err(stream_broke(&self.name, &text, "reported an error")),
                    _ => {}
                }
            }
        }
        if !finished {
            return Err(stream_broke(
                &self.name,
                &text,
                "ended without message_stop",
            ));
        }
        Ok(self.response(text, model, asked_model, usage))
    }
}
