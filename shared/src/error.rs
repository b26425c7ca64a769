//! Errors are data: stable codes a client can match on, and a message for humans.
//!
//! [`ErrorCode`] is the contract (it appears in HTTP bodies, bus replies and audit entries and
//! must never be renamed); [`ServiceError`] is what the shared machinery returns to a service.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Stable error codes. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No credential, or one that matches no principal.
    Unauthenticated,
    /// A bearer token whose `exp` has passed.
    TokenExpired,
    /// A bearer token whose `nbf` is still to come.
    TokenNotYetValid,
    /// A bearer token issued for another audience.
    BadAudience,
    /// A bearer token from an issuer this deployment does not trust.
    BadIssuer,
    /// A bearer token whose signature does not verify (or by a key that is not published).
    BadSignature,
    /// The principal may not do this.
    Forbidden,
    /// The request is well-formed JSON but not a valid request.
    InvalidRequest,
    /// The body is not JSON.
    InvalidJson,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// `POST /v1/alerts/{source}` with a source mcplane does not know.
    UnknownSource,
    /// The alert payload does not match its source's format.
    InvalidAlert,
    NotFound,
    RateLimited,
    /// A bus message that cannot be decoded as an envelope of the expected kind.
    InvalidEnvelope,
    /// A message arrived at a stage that is not next on its itinerary.
    Misrouted,
    /// Every model provider is unavailable; the reply carries no AI output.
    Degraded,
    /// A model provider failed.
    ProviderError,
    /// The result did not arrive in time (the request goes on; fetch it later).
    Timeout,
    /// The bus is unreachable.
    Unavailable,
    /// The model stage saw this request before but cannot tell whether the provider answered;
    /// it does not invoke twice.
    InvocationInDoubt,
    /// The output still carries data the client may not see.
    OutputBlocked,
    /// The tenant's hard model budget for the day or month is spent.
    BudgetExceeded,
    /// The provider's stream broke off after it had begun answering; the partial answer is
    /// not passed off as a complete one.
    StreamInterrupted,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::BadAudience => "bad_audience",
            ErrorCode::BadIssuer => "bad_issuer",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnknownSource => "unknown_source",
            ErrorCode::InvalidAlert => "invalid_alert",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidEnvelope => "invalid_envelope",
            ErrorCode::Misrouted => "misrouted",
            ErrorCode::Degraded => "degraded",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvocationInDoubt => "invocation_in_doubt",
            ErrorCode::OutputBlocked => "output_blocked",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::StreamInterrupted => "stream_interrupted",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the gateway answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::TokenNotYetValid
            | ErrorCode::BadAudience
            | ErrorCode::BadIssuer
            | ErrorCode::BadSignature => 401,
            ErrorCode::Forbidden | ErrorCode::OutputBlocked => 403,
            ErrorCode::NotFound | ErrorCode::UnknownSource => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidRequest | ErrorCode::InvalidAlert => 422,
            ErrorCode::InvalidJson | ErrorCode::InvalidEnvelope | ErrorCode::Misrouted => 400,
            ErrorCode::RateLimited | ErrorCode::BudgetExceeded => 429,
            ErrorCode::Degraded | ErrorCode::Unavailable => 503,
            ErrorCode::ProviderError
            | ErrorCode::InvocationInDoubt
            | ErrorCode::StreamInterrupted => 502,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coded error as it travels in replies: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// When trying again makes sense (`rate_limited`): after this many seconds. The gateway
    /// sends it as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

/// Failures of the shared machinery (bus, storage, configuration).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot reach NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("nats-server {found} is too old: mcplane needs 2.10 or newer (KV buckets and consumer filter_subjects)")]
    ServerTooOld { found: String },
    #[error("bus: {0}")]
    Bus(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("encode: {0}")]
    Encode(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl ServiceError {
    pub fn bus(e: impl std::fmt::Display) -> Self {
        ServiceError::Bus(e.to_string())
    }
    pub fn storage(e: impl std::fmt::Display) -> Self {
        ServiceError::Storage(e.to_string())
    }
}

impl From<sled::Error> for ServiceError {
    fn from(e: sled::Error) -> Self {
        ServiceError::Storage(e.to_string())
    }
}
