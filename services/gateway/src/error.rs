//! Every error the HTTP API answers, in the one shape clients match on:
//! `{"error": {"code": "...", "message": "..."}}` (plus the request `id` when there is one).
//!
//! The status follows from the stable [`ErrorCode`] except in the few places where HTTP has a
//! more precise word than the code (405 for a wrong method, 400 for a malformed id in a path),
//! so a client can branch on the code alone and still get a meaningful status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::{ErrorBody, ErrorCode};
use serde::Serialize;
use uuid::Uuid;

/// An error answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: ErrorBody,
    /// The request this error is about, when it has an id.
    pub id: Option<Uuid>,
}

#[derive(Serialize)]
struct Wire<'a> {
    error: &'a ErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
}

impl ApiError {
    /// An error whose status is the code's own.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::from_body(ErrorBody::new(code, message))
    }

    pub fn from_body(error: ErrorBody) -> Self {
        ApiError {
            status: status_of(error.code),
            error,
            id: None,
        }
    }

    /// An error with a status other than the code's own.
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: ErrorBody::new(code, message),
            id: None,
        }
    }

    pub fn for_request(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// Refuses a body the gateway accepted that, wrapped for the bus as `publication`, is more
    /// than the bus carries: the server would refuse it on every try, so the client is told
    /// now, not to retry.
    pub fn unless_it_fits(bus: &Bus, publication: &Publication, id: Uuid) -> Result<(), Self> {
        let bytes = publication.payload.len();
        if bus.fits(bytes) {
            return Ok(());
        }
        let max_payload = bus.max_payload();
        Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the body makes a {bytes}-byte message, more than the bus carries \
                 ({max_payload} bytes, nats-server max_payload); send less"
            ),
        )
        .for_request(id))
    }
}

/// The HTTP status of a code (500 for a status the code table could hold but HTTP cannot).
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Wire {
                error: &self.error,
                id: self.id,
            }),
        )
            .into_response();
        if let Some(secs) = self.error.retry_after_secs {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_code_unless_overridden() {
        assert_eq!(
            ApiError::new(ErrorCode::PayloadTooLarge, "x").status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::new(ErrorCode::InvalidRequest, "x").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::with_status(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, "x").status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_wire_shape_is_error_code_and_message() {
        let id = Uuid::now_v7();
        let e = ApiError::new(ErrorCode::Timeout, "late").for_request(id);
        let json = serde_json::to_value(Wire {
            error: &e.error,
            id: e.id,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "timeout", "message": "late"}, "id": id})
        );
    }
}
