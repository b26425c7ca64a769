//! `POST /v1/alerts/{source}`: monitoring webhooks onto `mcplane.alerts.in.<tenant>.<source>`.
//!
//! The payload is normalised here only to reject what the correlator could never use (a 422
//! now beats an alert silently dropped later); what is published is the payload exactly as
//! sent, so the correlator's normalisation stays the one source of truth. The tenant comes from
//! the credential, never from the payload or the URL.
//!
//! Two senders cannot set a bearer header: SNS (its subscription URL carries the key as Basic
//! auth, see `credential`) and PagerDuty Events API clients, whose `routing_key` is taken as the
//! key when no `Authorization` header is present. SNS subscription handshakes are answered
//! here (`sns`) and never reach the bus.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use mcplane_shared::alerts::{self, cloudwatch, pagerduty, SOURCES};
use mcplane_shared::bus::Publication;
use mcplane_shared::subjects::validate_token;
use mcplane_shared::{Envelope, ErrorCode, Principal, RawAlert};

use crate::credential;
use crate::error::ApiError;
use crate::observe::RequestContext;
use crate::routes::requests::STAGE;
use crate::routes::sns::{self, Handshake};
use crate::routes::{parse_json, read_body};
use crate::AppState;

/// `POST /v1/alerts/{source}`
pub async fn receive(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let source = path.map(|Path(s)| s).unwrap_or_default();
    if !alerts::is_known_source(&source) {
        return Err(ApiError::new(
            ErrorCode::UnknownSource,
            format!(
                "unknown alert source {source:?}; known sources: {}",
                SOURCES.join(", ")
            ),
        ));
    }
    let has_authorization = req.headers().contains_key(header::AUTHORIZATION);
    let bearer = if has_authorization || source != pagerduty::SOURCE {
        Some(credential::webhook(req.headers())?)
    } else {
        None
    };
    let body = read_body(req).await?;
    let payload: serde_json::Value = parse_json(&body, ErrorCode::InvalidAlert)?;
    // PagerDuty Events API senders authenticate with the event's routing_key alone.
    let bearer = match bearer {
        Some(b) => b,
        None => credential::from_text(
            payload
                .get("routing_key")
                .and_then(|k| k.as_str())
                .unwrap_or_default(),
        )
        .map_err(|_| {
            ApiError::unauthenticated(
                "missing Authorization: Bearer <key> header (or the key as routing_key)",
            )
        })?,
    };
    let principal = state.resolver.resolve(&bearer).await?;
    let tenant = tenant_of(&principal)?;

    if source == cloudwatch::SOURCE {
        if let Some(sns) = cloudwatch::sns(&payload).map_err(ApiError::from_body)? {
            if let Some(done) = sns::handshake(&state.config, &sns).await? {
                let outcome = match done {
                    Handshake::Confirmed => "confirmed",
                    Handshake::Unsubscribed => "unsubscribed",
                };
                metrics::counter!("mcplane_gateway_sns_handshakes_total", "outcome" => outcome)
                    .increment(1);
                return Ok((
                    StatusCode::OK,
                    Json(serde_json::json!({ "subscription": outcome, "topic": sns.topic_arn })),
                )
                    .into_response());
            }
        }
    }

    let now = Utc::now();
    let count = alerts::normalize(&source, &tenant, &payload, now)
        .map_err(ApiError::from_body)?
        .len();
    let raw = RawAlert {
        source: source.clone(),
        payload,
        received_at: now,
    };
    let mut env = Envelope::new_at(ctx.id, now, tenant.clone(), raw);
    env.trace = ctx.trace;
    env.principal = Some(principal);
    let publication =
        Publication::envelope(state.bus.subjects.alerts_in(&tenant, &source), &env, STAGE)
            .map_err(|e| ApiError::internal(format!("cannot encode the alert: {e}")))?;
    ApiError::unless_it_fits(&state.bus, &publication, env.id)?;
    if let Err(e) = state.bus.publish_all(&[publication]).await {
        tracing::warn!(error = %e, %tenant, %source, "cannot publish an alert");
        return Err(
            ApiError::unavailable("cannot publish the alert to the bus; try again")
                .for_request(env.id),
        );
    }
    metrics::counter!("mcplane_gateway_alerts_total", "source" => source.clone())
        .increment(count as u64);
    tracing::info!(%tenant, %source, alerts = count, "alert accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": env.id, "alerts": count })),
    )
        .into_response())
}

/// The tenant an alert belongs to. A service account acting for every tenant names none, and
/// a webhook has nowhere trustworthy to take one from, so it must publish on the bus instead.
fn tenant_of(principal: &Principal) -> Result<String, ApiError> {
    if validate_token(&principal.tenant).is_err() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this credential is not bound to one tenant; post alerts with a tenant key, or \
             publish them on mcplane.alerts.in.<tenant>.<source>",
        ));
    }
    Ok(principal.tenant.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::PrincipalKind;

    fn principal(tenant: &str) -> Principal {
        Principal {
            id: "k1".into(),
            tenant: tenant.into(),
            roles: vec![],
            kind: PrincipalKind::ServiceAccount,
        }
    }

    #[test]
    fn only_a_single_tenant_principal_may_post_alerts() {
        assert_eq!(tenant_of(&principal("acme")).unwrap(), "acme");
        let err = tenant_of(&principal("*")).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::Forbidden);
    }
}
