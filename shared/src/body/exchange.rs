//! The AI request as it moves through the governed pipeline.
//!
//! One body type for the whole itinerary: each stage adds to it (context, redaction counts,
//! the response) rather than translating it, so the result delivered to the client and stored
//! for `GET /v1/requests/{id}` is the full record of what happened.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::body::audit::SealedPayload;
use crate::envelope::{BodyKind, Classification, Kind};
use crate::error::ErrorBody;

/// What the client wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Summarize,
    Answer,
    Classify,
    GenerateArticle,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Summarize => "summarize",
            RequestType::Answer => "answer",
            RequestType::Classify => "classify",
            RequestType::GenerateArticle => "generate_article",
        }
    }
}

/// The client's request as accepted by `POST /v1/requests` (and carried on the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRequest {
    #[serde(rename = "type")]
    pub request_type: RequestType,
    /// The text to work on: a question, an incident description, a ticket.
    pub input: String,
    /// Services the request is about; enrichment injects their CMDB context.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// A model the client asks for; routing may still choose another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// How sensitive the input is, as the client judges it. It can raise the envelope's
    /// classification (restricted data is routed only to private providers), never lower what
    /// the pipeline itself finds (restricted CMDB fields raise it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// The latency the client needs; routing rules can match on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u32>,
    /// The client reads the answer as a stream (`/v1/chat/completions` with `stream: true`);
    /// the model stage then asks the provider for a stream too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

impl AiRequest {
    /// A request of `request_type` about `input`, every option left to its default.
    pub fn new(request_type: RequestType, input: impl Into<String>) -> Self {
        AiRequest {
            request_type,
            input: input.into(),
            services: Vec::new(),
            model: None,
            max_tokens: None,
            classification: None,
            max_latency_ms: None,
            stream: false,
        }
    }
}

/// A piece of context injected by the enrichment service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContextItem {
    /// Data source, e.g. `cmdb`.
    pub source: String,
    /// What the item is about, e.g. the service name.
    pub subject: String,
    pub data: serde_json::Value,
}

/// Token counts as the provider reported them (estimated for the built-in provider), and what
/// they cost at the provider's configured prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Cost in millionths of a US dollar (integers, so budgets add up exactly).
    #[serde(default)]
    pub cost_micros: u64,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AiResponse {
    pub text: String,
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub usage: Usage,
}

/// Counts of redacted entities by type, for each direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RedactionCounts {
    #[serde(default)]
    pub request: BTreeMap<String, u32>,
    #[serde(default)]
    pub response: BTreeMap<String, u32>,
}

/// The pipeline's body: the request and everything the stages add to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Exchange {
    pub request: AiRequest,
    /// SHA-256 (hex) of the credential that submitted the request, set by the gateway so that
    /// only the same caller can fetch the result later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextItem>,
    #[serde(default)]
    pub redactions: RedactionCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AiResponse>,
    /// Set when the request was denied or failed; the result is delivered at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// What the request's redaction tokens stand for, sealed by the inbound redaction step with
    /// a key only the redaction service can read (and which expires within the hour); the
    /// outbound step opens and removes it. Never part of a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<SealedPayload>,
}

impl Exchange {
    pub fn new(request: AiRequest) -> Self {
        Exchange {
            request,
            requester_digest: None,
            context: Vec::new(),
            redactions: RedactionCounts::default(),
            response: None,
            error: None,
            vault: None,
        }
    }
}

impl BodyKind for Exchange {
    const KIND: Kind = Kind::Exchange;
}
