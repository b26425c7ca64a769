//! What every HTTP request gets before its handler runs: an id (which also becomes the envelope
//! id of what it publishes, so one id follows the request from the access log to the audit
//! chain), a trace context continued from the caller's `traceparent`, a tracing span naming
//! both, and the request counter and latency histogram.
//!
//! The route label is the matched route template (`/v1/requests/{id}`), never the raw path, so
//! a scanner probing random URLs cannot blow up the metric's cardinality.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use mcplane_shared::TraceContext;
use tracing::Instrument;
use uuid::Uuid;

/// The id and trace of one HTTP request, for handlers (as an `Extension`).
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// UUIDv7; the id of the envelope the request publishes, if any.
    pub id: Uuid,
    /// The caller's trace (from `traceparent`) with a new span for this hop, or a new trace.
    pub trace: TraceContext,
}

/// The trace to continue: the caller's when its `traceparent` is valid, else a new one.
pub fn trace_from(traceparent: Option<&str>) -> TraceContext {
    traceparent
        .and_then(TraceContext::from_traceparent)
        .map(|t| t.child())
        .unwrap_or_else(TraceContext::new_root)
}

/// The middleware: context, span, access log line and metrics.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let trace = trace_from(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let ctx = RequestContext {
        id: Uuid::now_v7(),
        trace,
    };
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        route = %route,
        request_id = %ctx.id,
        trace_id = %ctx.trace.trace_id,
    );
    let id = ctx.id;
    req.extensions_mut().insert(ctx);
    let mut response = next.run(req).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        "mcplane_http_requests_total",
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("mcplane_http_request_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if route.starts_with("/v1/") {
            tracing::info!(status, elapsed_ms, "http request");
        } else {
            tracing::debug!(status, elapsed_ms, "http request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let caller = TraceContext::new_root();
        let trace = trace_from(Some(&caller.traceparent()));
        assert_eq!(trace.trace_id, caller.trace_id);
        assert_ne!(trace.span_id, caller.span_id);
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        let trace = trace_from(Some("00-nonsense-01"));
        assert_eq!(trace.trace_id.len(), 32);
        assert_eq!(trace_from(None).trace_id.len(), 32);
    }
}
