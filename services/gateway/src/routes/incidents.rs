//! `GET /v1/incidents` and `GET /v1/incidents/{id}`: the caller's tenant's incidents, as the
//! correlator last published them.
//!
//! The tenant is the credential's, never the caller's to choose: the read is a consumer filtered
//! on `mcplane.incidents.<own tenant>.*`, so another tenant's incidents are not filtered out
//! after the fact, they are never read. Asking for another tenant explicitly is refused; an
//! incident id of another tenant is indistinguishable from one that does not exist.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use mcplane_shared::policy::{Action, Resource};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Classification, Envelope, ErrorCode, IncidentEvent, Principal};
use serde::Deserialize;

use crate::credential;
use crate::error::ApiError;
use crate::AppState;

/// The data source name in policies.
pub const SOURCE: &str = "incidents";
/// Most incident events read for one listing; older ones are left out (the stream keeps them).
const MAX_EVENTS: usize = 10_000;
/// How long a listing may wait for the stream.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only for a service account acting for any tenant; anyone else may only name their own.
    tenant: Option<String>,
    /// `open` (default: all) or `resolved`.
    status: Option<String>,
}

/// `GET /v1/incidents`: the latest revision of each of the tenant's incidents, newest first.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (principal, tenant) = authorise(&state, &headers, query.tenant.as_deref()).await?;
    let mut incidents = latest(&state, &tenant).await?;
    incidents.sort_by_key(|i| std::cmp::Reverse(i.updated_at));
    if let Some(status) = &query.status {
        let want_resolved = match status.as_str() {
            "open" => false,
            "resolved" => true,
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("status {other:?} is not `open` or `resolved`"),
                ))
            }
        };
        incidents.retain(|i| i.resolved_at.is_some() == want_resolved);
    }
    tracing::debug!(principal = %principal.id, %tenant, count = incidents.len(), "incidents listed");
    Ok(Json(serde_json::json!({ "tenant": tenant, "incidents": incidents })).into_response())
}

/// `GET /v1/incidents/{id}`
pub async fn fetch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, tenant) = authorise(&state, &headers, None).await?;
    latest(&state, &tenant)
        .await?
        .into_iter()
        .find(|i| i.incident_id == id)
        .map(|i| Json(i).into_response())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no incident {id}")))
}

/// The caller, the tenant it reads, and the policy's leave to read incidents at all.
async fn authorise(
    state: &AppState,
    headers: &HeaderMap,
    asked: Option<&str>,
) -> Result<(Principal, String), ApiError> {
    let bearer = credential::bearer(headers)?;
    let principal = state.resolver.resolve(&bearer).await?;
    let any_tenant = principal.tenant == "*";
    let tenant = match (asked, any_tenant) {
        (Some(t), true) => t.to_string(),
        (None, true) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a service account for any tenant must name one: ?tenant=",
            ))
        }
        (Some(t), false) if t != principal.tenant => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "a principal reads only its own tenant's incidents",
            ))
        }
        _ => principal.tenant.clone(),
    };
    mcplane_shared::subjects::validate_token(&tenant)
        .map_err(|code| ApiError::new(code, "tenant must be 1-64 characters from [a-z0-9_-]"))?;
    let policy = state.policy.current();
    if !policy.allows(
        &principal,
        Action::Read,
        &Resource::DataSource(SOURCE),
        Classification::default(),
    ) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "policy {} does not permit this principal to read incidents",
                policy.version()
            ),
        ));
    }
    Ok((principal, tenant))
}

/// The latest revision of every incident of `tenant`, read from the incidents stream.
async fn latest(state: &AppState, tenant: &str) -> Result<Vec<IncidentEvent>, ApiError> {
    let unavailable = |e: String| {
        tracing::warn!(error = %e, "cannot read the incidents stream");
        ApiError::unavailable("the incidents stream cannot be read now; try again")
    };
    let stream = state
        .bus
        .ensure_stream(StreamKind::Incidents)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: state.bus.subjects.incidents(tenant, "*"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut remaining = consumer.cached_info().num_pending as usize;
    let mut by_id: BTreeMap<String, IncidentEvent> = BTreeMap::new();
    if remaining == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut read = 0;
    while remaining > 0 && read < MAX_EVENTS {
        let msg = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => return Err(unavailable(e.to_string())),
            Ok(None) | Err(_) => break,
        };
        read += 1;
        remaining = msg
            .info()
            .map(|i| i.pending as usize)
            .unwrap_or(remaining.saturating_sub(1));
        match Envelope::<IncidentEvent>::from_slice(&msg.payload) {
            // The subject already names the tenant; the body must agree or it is not shown.
            Ok(env) if env.body.tenant == tenant => {
                let event = env.body;
                let newer = by_id
                    .get(&event.incident_id)
                    .is_none_or(|seen| event.revision >= seen.revision);
                if newer {
                    by_id.insert(event.incident_id.clone(), event);
                }
            }
            Ok(_) => {
                tracing::warn!(subject = %msg.subject, "incident event whose tenant disagrees with its subject; skipped")
            }
            Err(code) => {
                tracing::warn!(subject = %msg.subject, %code, "unreadable incident event; skipped")
            }
        }
    }
    Ok(by_id.into_values().collect())
}
