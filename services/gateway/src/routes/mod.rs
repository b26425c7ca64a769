//! The HTTP API's routes, and the edge rules every route shares: bodies read under the size
//! limit, JSON parsed by hand so that every rejection (too large, not JSON, wrong shape, no such
//! route, wrong method) answers in the one coded error shape instead of axum's plain text.

pub mod alerts;
pub mod capabilities;
pub mod health;
pub mod incidents;
pub mod openai;
pub mod requests;
pub mod sns;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use mcplane_shared::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::{observe, AppState};

/// The gateway's router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit_bytes;
    Router::new()
        .route("/v1/requests", post(requests::submit))
        .route("/v1/requests/{id}", get(requests::fetch))
        .route("/v1/alerts/{source}", post(alerts::receive))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/capabilities", get(capabilities::capabilities))
        .route("/v1/incidents", get(incidents::list))
        .route("/v1/incidents/{id}", get(incidents::fetch))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    // No error code names a wrong method; the status says it, the code says the request is bad.
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        format!(
            "method {method} is not allowed on {} (see the Allow header)",
            uri.path()
        ),
    )
}

/// The whole body, under the configured limit (413 `payload_too_large` past it).
pub async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the body is larger than the gateway accepts (gateway.body_limit_bytes)",
            )
        } else {
            ApiError::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("cannot read the body: {}", rejection.body_text()),
            )
        }
    })
}

/// Parses JSON: a body that is not JSON is 400 `invalid_json`; valid JSON of the wrong shape is
/// `shape`. Parsed in two steps because serde reports some shape errors (an array where an
/// object belongs) as syntax errors.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], shape: ErrorCode) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::new(shape, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::AiRequest;

    #[test]
    fn syntax_errors_are_invalid_json_and_shape_errors_are_the_given_code() {
        for bad in [&b"{not json"[..], b"", b"{\"type\": \"answer\""] {
            let err = parse_json::<AiRequest>(bad, ErrorCode::InvalidRequest).unwrap_err();
            assert_eq!(err.error.code, ErrorCode::InvalidJson);
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
        for wrong in [
            &br#"{"type": "answer"}"#[..],
            br#"{"type": "dance", "input": "x"}"#,
            br#"{"type": "answer", "input": "x", "extra": 1}"#,
            br#"[1, 2]"#,
        ] {
            let err = parse_json::<AiRequest>(wrong, ErrorCode::InvalidRequest).unwrap_err();
            assert_eq!(err.error.code, ErrorCode::InvalidRequest);
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        assert!(parse_json::<AiRequest>(
            br#"{"type":"answer","input":"x"}"#,
            ErrorCode::InvalidRequest
        )
        .is_ok());
    }
}
