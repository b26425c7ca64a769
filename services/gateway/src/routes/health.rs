//! Liveness, readiness and metrics for orchestrators and scrapers.
//!
//! Liveness only says the process answers HTTP; readiness also needs the NATS connection, so a
//! load balancer stops sending traffic to a replica that could not publish it anyway, without
//! the orchestrator restarting a process that will reconnect by itself.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

/// `GET /healthz`
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.bus.client.connection_state() {
        async_nats::connection::State::Connected => Ok(Json(json!({ "status": "ready" }))),
        other => Err(ApiError::unavailable(format!(
            "not connected to NATS ({other})"
        ))),
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        mcplane_shared::telemetry::metrics().render(),
    )
        .into_response()
}
