//! `GET /v1/capabilities`: what the caller may do — the request types it may submit and the
//! models it may have invoked — decided by the same policy checks that enforce them (the auth
//! stage for request types, the model stage for models), so nothing is listed that would then
//! be refused.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcplane_shared::body::catalog::{CatalogAnswer, CatalogQuery};
use mcplane_shared::policy::{Action, Resource};
use mcplane_shared::{Classification, Principal, RequestType};

use crate::credential;
use crate::error::ApiError;
use crate::AppState;

/// Every request type, in the order listed.
const REQUEST_TYPES: [RequestType; 4] = [
    RequestType::Summarize,
    RequestType::Answer,
    RequestType::Classify,
    RequestType::GenerateArticle,
];

/// `GET /v1/capabilities`
pub async fn capabilities(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bearer = credential::bearer(&headers)?;
    let principal = state.resolver.resolve(&bearer).await?;
    let policy = state.policy.current();
    let request_types: Vec<&str> = REQUEST_TYPES
        .iter()
        .filter(|t| {
            policy.allows(
                &principal,
                Action::Request,
                &Resource::RequestType(**t),
                Classification::default(),
            )
        })
        .map(|t| t.as_str())
        .collect();
    let catalog = catalog_for(&state, &principal).await?;
    Ok(Json(serde_json::json!({
        "tenant": principal.tenant,
        "roles": principal.roles,
        "request_types": request_types,
        "models": catalog.models,
        "policy_version": policy.version(),
        "models_policy_version": catalog.policy_version,
    }))
    .into_response())
}

/// The models `principal` may have invoked, as the model service's policy decides.
pub async fn catalog_for(
    state: &AppState,
    principal: &Principal,
) -> Result<CatalogAnswer, ApiError> {
    let query = serde_json::to_vec(&CatalogQuery {
        principal: principal.clone(),
    })
    .map_err(|e| ApiError::internal(format!("cannot encode the catalog query: {e}")))?;
    let ask = state
        .bus
        .client
        .request(state.bus.subjects.model_catalog(), query.into());
    let reply = match tokio::time::timeout(Duration::from_secs(3), ask).await {
        Ok(Ok(reply)) => reply,
        _ => {
            return Err(ApiError::unavailable(
                "no model service answered; try again",
            ))
        }
    };
    serde_json::from_slice(&reply.payload)
        .map_err(|e| ApiError::internal(format!("unreadable model catalog: {e}")))
}
