//! OpenAI-compatible chat completions over HTTP: OpenAI, Azure OpenAI, vLLM, Ollama,
//! llama.cpp server, LiteLLM — anything that serves `POST {base_url}/chat/completions`.
//!
//! Streams are read to the end here: the answer still has to pass response redaction before
//! any client sees it. A stream that stops before its final chunk is a failure, never a short
//! success: retryable while nothing has arrived, `Interrupted` once content has.

use mcplane_shared::{AiResponse, Usage};
use serde::Deserialize;
use serde_json::json;

use super::{api_key, is_event_stream, sse, stream_broke, Call, ProviderError};
use crate::config::ProviderConfig;
use crate::prompt;

#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    pub name: String,
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
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
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
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            api_key_env: config.api_key_env.clone(),
            http,
        }
    }

    pub async fn invoke(&self, call: Call<'_>) -> Result<AiResponse, ProviderError> {
        let exchange = call.exchange;
        let mut body = json!({
            "model": call.model,
            "messages": [
                {"role": "system", "content": prompt::instruction(exchange.request.request_type)},
                {"role": "user", "content": prompt::user_message(exchange)},
            ],
        });
        if let Some(max) = exchange.request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if call.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = api_key(&self.name, self.api_key_env.as_deref())? {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::retryable(format!("provider {}: {e}", self.name)))?;
        if !response.status().is_success() {
            return Err(ProviderError::from_response(&self.name, response).await);
        }
        // A server that ignores `stream` answers with one JSON completion: read it as such.
        if call.stream && is_event_stream(&response) {
            return self.read_stream(response, call.model).await;
        }
        let completion: Completion = response.json().await.map_err(|e| {
            ProviderError::permanent(format!("provider {}: unreadable answer: {e}", self.name))
        })?;
        let text = completion
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message)
            .and_then(|m| m.content)
            .ok_or_else(|| {
                ProviderError::permanent(format!("provider {}: answer has no message", self.name))
            })?;
        Ok(self.response(text, completion.model, call.model, completion.usage))
    }

    fn response(
        &self,
        text: String,
        reported_model: Option<String>,
        asked_model: &str,
        usage: Option<CompletionUsage>,
    ) -> AiResponse {
        AiResponse {
            text,
            provider: self.name.clone(),
            model: reported_model.unwrap_or_else(|| asked_model.to_string()),
            usage: usage.map_or(Usage::default(), |u| Usage {
                input_tokens: u.prompt_tokens,
                output_tokens: u.completion_tokens,
                cost_micros: 0,
            }),
        }
    }

    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        asked_model: &str,
    ) -> Result<AiResponse, ProviderError> {
        let mut decoder = sse::Decoder::default();
        let mut text = String::new();
        let (mut model, mut usage, mut finished) = (None, None, false);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(stream_broke(&self.name, &text, &format!("broke off ({e})"))),
            };
            for event in decoder.push(&chunk) {
                if event.data.trim() == "[DONE]" {
                    finished = true;
                    continue;
                }
                let Ok(part) = serde_json::from_str::<Completion>(&event.data) else {
                    return Err(stream_broke(&self.name, &text, "sent an unreadable chunk"));
                };
                model = part.model.or(model);
                usage = part.usage.or(usage);
                for choice in part.choices {
                    if let Some(content) = choice.delta.and_then(|d| d.content) {
                        text.push_str(&content);
                    }
                    if choice.finish_reason.is_some() {
                        finished = true;
                    }
                }
            }
        }
        if !finished {
            return Err(stream_broke(
                &self.name,
                &text,
                "ended without its final chunk",
            ));
        }
        Ok(self.response(text, model, asked_model, usage))
    }
}
