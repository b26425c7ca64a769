//! The OpenAI-compatible front door: `POST /v1/chat/completions` (plain and streamed) and
//! `GET /v1/models`, so an existing OpenAI client points at mcplane unchanged and gains
//! authentication, context, redaction, routing and audit.
//!
//! A chat call becomes an ordinary `answer` request on the governed pipeline; nothing here
//! bypasses a stage. Streaming is honest about the pipeline: the answer must pass response
//! redaction before a client may see any of it, so the stream opens at once (keep-alives while
//! the pipeline works), then carries the redacted answer in chunks, or a coded error event —
//! never a silent, truncated success.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use mcplane_shared::{AiRequest, Envelope, ErrorBody, ErrorCode, Exchange, RequestType};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::credential;
use crate::error::ApiError;
use crate::observe::RequestContext;
use crate::routes::requests::through_pipeline;
use crate::routes::{parse_json, read_body};
use crate::AppState;

/// Model names that leave the choice to mcplane's routing.
const AUTO_MODELS: [&str; 2] = ["auto", "mcplane"];
/// Characters of the answer per streamed chunk.
const CHUNK_CHARS: usize = 64;

/// The parts of an OpenAI chat request mcplane uses; other fields (temperature, top_p, user,
/// ...) are accepted and left to the provider's defaults.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string, or a list of parts of which the text ones are used.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The pipeline request for a chat call: one message is the input as it is; a conversation
/// becomes `role: text` paragraphs, so the model sees the whole exchange.
pub fn to_ai_request(chat: &ChatRequest) -> Result<AiRequest, ApiError> {
    let texts: Vec<(String, String)> = chat
        .messages
        .iter()
        .filter_map(|m| m.content.as_ref().map(|c| (m.role.clone(), c.text())))
        .filter(|(_, t)| !t.trim().is_empty())
        .collect();
    let input = match texts.as_slice() {
        [] => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "messages must hold at least one message with text",
            ))
        }
        [(_, only)] => only.clone(),
        many => many
            .iter()
            .map(|(role, text)| format!("{role}: {text}"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    Ok(AiRequest {
        request_type: RequestType::Answer,
        input,
        services: Vec::new(),
        model: chat
            .model
            .clone()
            .filter(|m| !AUTO_MODELS.contains(&m.as_str())),
        max_tokens: chat.max_completion_tokens.or(chat.max_tokens),
        classification: None,
        max_latency_ms: None,
        stream: chat.stream,
    })
}

fn completion_id(env: &Envelope<Exchange>) -> String {
    format!("chatcmpl-{}", env.id.simple())
}

/// The `chat.completion` object for a finished request.
fn completion(env: &Envelope<Exchange>) -> Value {
    let response = env.body.response.as_ref();
    let usage = response.map(|r| r.usage).unwrap_or_default();
    json!({
        "id": completion_id(env),
        "object": "chat.completion",
        "created": env.time.timestamp(),
        "model": response.map(|r| r.model.as_str()).unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": response.map(|r| r.text.as_str()).unwrap_or_default()},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
        "mcplane": {"request_id": env.id, "provider": response.map(|r| r.provider.as_str())},
    })
}

/// The `chat.completion.chunk` events for a finished request.
fn chunks(env: &Envelope<Exchange>) -> Vec<Value> {
    let (id, created) = (completion_id(env), env.time.timestamp());
    let response = env.body.response.as_ref();
    let model = response.map(|r| r.model.clone()).unwrap_or_default();
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let text: Vec<char> = response
        .map(|r| r.text.chars().collect())
        .unwrap_or_default();
    for piece in text.chunks(CHUNK_CHARS) {
        out.push(chunk(
            json!({"content": piece.iter().collect::<String>()}),
            None,
        ));
    }
    let mut last = chunk(json!({}), Some("stop"));
    if let Some(r) = response {
        last["usage"] = json!({
            "prompt_tokens": r.usage.input_tokens,
            "completion_tokens": r.usage.output_tokens,
            "total_tokens": r.usage.input_tokens + r.usage.output_tokens,
        });
    }
    out.push(last);
    out
}

/// An error as OpenAI clients read it inside a stream.
fn error_event(error: &ErrorBody, request_id: uuid::Uuid) -> Value {
    json!({"error": {
        "message": error.message,
        "type": error.code.as_str(),
        "code": error.code.as_str(),
        "request_id": request_id,
    }})
}

fn timeout_error(id: uuid::Uuid) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Timeout,
        format!("the answer did not arrive within gateway.request_timeout_ms; it will be at /v1/requests/{id}"),
    )
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    req: Request,
) -> Result<Response, ApiError> {
    let bearer = credential::bearer(req.headers())?;
    let body = read_body(req).await?;
    let chat: ChatRequest = parse_json(&body, ErrorCode::InvalidRequest)?;
    let request = to_ai_request(&chat)?;
    let id = ctx.id;
    if !chat.stream {
        return match through_pipeline(&state, ctx, &bearer, request).await? {
            Some(env) => match &env.body.error {
                Some(error) => Err(ApiError::from_body(error.clone()).for_request(id)),
                None => Ok(Json(completion(&env)).into_response()),
            },
            None => Err(ApiError::from_body(timeout_error(id)).for_request(id)),
        };
    }
    // A bad key must be a plain 401, not an error inside a stream that already said 200.
    state.resolver.resolve(&bearer).await?;
    let (tx, rx) = mpsc::channel::<Event>(32);
    tokio::spawn(async move {
        let events: Vec<Value> = match through_pipeline(&state, ctx, &bearer, request).await {
            Ok(Some(env)) => match &env.body.error {
                Some(error) => vec![error_event(error, id)],
                None => chunks(&env),
            },
            Ok(None) => vec![error_event(&timeout_error(id), id)],
            Err(api) => vec![error_event(&api.error, id)],
        };
        for value in events {
            if tx
                .send(Event::default().data(value.to_string()))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response())
}

/// `GET /v1/models`: the models the caller may use, exactly as the policy in force allows
/// (the model service answers with the check its invoke step makes).
pub async fn models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bearer = credential::bearer(&headers)?;
    let principal = state.resolver.resolve(&bearer).await?;
    let catalog = crate::routes::capabilities::catalog_for(&state, &principal).await?;
    let created = Utc::now().timestamp();
    let data: Vec<Value> = catalog
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "object": "model", "created": created,
                "owned_by": m.provider, "boundary": m.boundary,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> ChatRequest {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn one_message_is_the_input_and_a_conversation_keeps_its_roles() {
        let r = to_ai_request(&chat(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Why is checkout slow?"}],"temperature":0.2}"#,
        ))
        .unwrap();
        assert_eq!(r.input, "Why is checkout slow?");
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        let r = to_ai_request(&chat(
            r#"{"model":"auto","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#,
        ))
        .unwrap();
        assert_eq!(r.input, "system: Be brief.\n\nuser: Hi");
        assert_eq!(r.model, None);
        assert!(r.stream);
        assert!(to_ai_request(&chat(r#"{"messages":[]}"#)).is_err());
    }

    #[test]
    fn a_streamed_answer_is_role_then_content_then_stop() {
        let mut env = Envelope::new(
            "acme",
            Exchange::new(
                to_ai_request(&chat(r#"{"messages":[{"role":"user","content":"x"}]}"#)).unwrap(),
            ),
        );
        env.body.response = Some(mcplane_shared::AiResponse {
            text: "a".repeat(100),
            provider: "local".into(),
            model: "m".into(),
            usage: Default::default(),
        });
        let c = chunks(&env);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = c[1..3]
            .iter()
            .map(|v| v["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "a".repeat(100));
        assert_eq!(c[3]["choices"][0]["finish_reason"], "stop");
    }
}
