//! `POST /v1/requests` and `GET /v1/requests/{id}`: AI requests into the governed pipeline and
//! their results back out.
//!
//! A POST holds the connection open for up to `request_timeout_ms` waiting for the result on this
//! replica's inbox, which gives simple clients a synchronous API; past that it answers 202 with
//! the id, and the request goes on regardless. Results are served only to the credential that
//! asked (compared by digest, in constant time), and a result belonging to someone else is
//! indistinguishable from no result at all.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use mcplane_shared::body::exchange::RedactionCounts;
use mcplane_shared::bus::Publication;
use mcplane_shared::{
    AiRequest, AiResponse, ContextItem, Envelope, ErrorCode, Exchange, RequestType,
};
use serde::Serialize;
use uuid::Uuid;

use crate::credential::{self, constant_time_eq, Bearer};
use crate::error::ApiError;
use crate::observe::RequestContext;
use crate::routes::{parse_json, read_body};
use crate::AppState;

/// The stage name in this gateway's `Nats-Msg-Id`s (`<id>:gateway`).
pub const STAGE: &str = "gateway";

/// What a client sees of a finished request: never the credential or its digest.
#[derive(Debug, Serialize)]
struct ResultView<'a> {
    id: Uuid,
    status: &'static str,
    #[serde(rename = "type")]
    request_type: RequestType,
    response: Option<&'a AiResponse>,
    context: &'a [ContextItem],
    redactions: &'a RedactionCounts,
}

/// `POST /v1/requests`
pub async fn submit(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    req: Request,
) -> Result<Response, ApiError> {
    let bearer = credential::bearer(req.headers())?;
    let body = read_body(req).await?;
    let request: AiRequest = parse_json(&body, ErrorCode::InvalidRequest)?;
    let id = ctx.id;
    Ok(
        match through_pipeline(&state, ctx, &bearer, request).await? {
            Some(result) => result_response(&result),
            None => pending(id),
        },
    )
}

/// Submits `request` into the governed pipeline as `bearer` and waits for its result up to
/// `gateway.request_timeout_ms`; `None` when it did not come in time (the request goes on).
pub async fn through_pipeline(
    state: &AppState,
    ctx: RequestContext,
    bearer: &Bearer,
    request: AiRequest,
) -> Result<Option<Envelope<Exchange>>, ApiError> {
    // The tenant stays empty: only the auth stage may say whose request this is.
    let mut env = Envelope::new_at(ctx.id, Utc::now(), "", Exchange::new(request));
    env.trace = ctx.trace;
    env.credential = Some(bearer.as_str().to_string());
    env.body.requester_digest = Some(bearer.digest());
    env.reply_to = Some(state.replies.reply_to(env.id));

    // Registered before publishing: a fast pipeline must not answer before anyone listens.
    let mut waiter = state.replies.wait_for(env.id);
    let publication = Publication::envelope(state.bus.subjects.requests_submit(), &env, STAGE)
        .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
    ApiError::unless_it_fits(&state.bus, &publication, env.id)?;
    if let Err(e) = state.bus.publish_all(&[publication]).await {
        tracing::warn!(error = %e, "cannot submit a request");
        return Err(
            ApiError::unavailable("cannot submit the request to the bus; try again")
                .for_request(env.id),
        );
    }
    metrics::counter!("mcplane_gateway_requests_submitted_total").increment(1);

    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    Ok(tokio::select! {
        result = waiter.result() => result,
        _ = tokio::time::sleep(timeout) => None,
        // On shutdown a waiting client is told where to fetch the result instead of being cut off.
        _ = state.shutdown.cancelled() => None,
    })
}

/// `GET /v1/requests/{id}`
pub async fn fetch(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bearer = credential::bearer(&headers)?;
    let bad_id = || {
        ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the request id must be a UUID",
        )
    };
    let Path(raw) = path.map_err(|_| bad_id())?;
    let id = Uuid::parse_str(&raw).map_err(|_| bad_id())?;
    let not_found =
        || ApiError::new(ErrorCode::NotFound, "no result for this id yet").for_request(id);

    let stored = state.results.get(&id).await.map_err(|e| {
        tracing::warn!(request_id = %id, error = %e, "cannot read a stored result");
        ApiError::unavailable("cannot read results right now; try again").for_request(id)
    })?;
    let Some(result) = stored else {
        return Err(not_found());
    };
    let caller = bearer.digest();
    let owned = result
        .body
        .requester_digest
        .as_deref()
        .is_some_and(|digest| constant_time_eq(digest.as_bytes(), caller.as_bytes()));
    if !owned {
        return Err(not_found());
    }
    Ok(result_response(&result))
}

/// 200 with the client view of a result, or the result's error with its status.
pub fn result_response(result: &Envelope<Exchange>) -> Response {
    if let Some(error) = &result.body.error {
        return ApiError::from_body(error.clone())
            .for_request(result.id)
            .into_response();
    }
    let view = ResultView {
        id: result.id,
        status: "completed",
        request_type: result.body.request.request_type,
        response: result.body.response.as_ref(),
        context: &result.body.context,
        redactions: &result.body.redactions,
    };
    (StatusCode::OK, Json(view)).into_response()
}

/// 202: the request goes on; fetch it at `Location`.
fn pending(id: Uuid) -> Response {
    let location = format!("/v1/requests/{id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "status": "pending", "location": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::ErrorBody;

    fn finished() -> Envelope<Exchange> {
        let request = AiRequest::new(RequestType::Answer, "why");
        let mut env = Envelope::new("acme", Exchange::new(request));
        env.credential = Some("mcp_secret".into());
        env.body.requester_digest = Some(credential::digest("mcp_secret"));
        env.body.response = Some(AiResponse {
            text: "because".into(),
            provider: "local".into(),
            model: "echo".into(),
            usage: Default::default(),
        });
        env
    }

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_view_shows_the_response_and_hides_the_credential_and_digest() {
        let env = finished();
        let response = result_response(&env);
        assert_eq!(response.status(), StatusCode::OK);
        let json = body_of(response).await;
        assert_eq!(json["status"], "completed");
        assert_eq!(json["type"], "answer");
        assert_eq!(json["response"]["text"], "because");
        let text = json.to_string();
        assert!(!text.contains("mcp_secret"));
        assert!(!text.contains("requester_digest"));
        assert!(!text.contains(&credential::digest("mcp_secret")));
    }

    #[tokio::test]
    async fn a_failed_result_answers_with_its_error_status() {
        let mut env = finished();
        env.body.response = None;
        env.body.error = Some(ErrorBody::new(ErrorCode::Forbidden, "no"));
        let response = result_response(&env);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let json = body_of(response).await;
        assert_eq!(json["error"]["code"], "forbidden");
        assert_eq!(json["id"], env.id.to_string());
    }
}
