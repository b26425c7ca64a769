//! Answers `mcplane.model.catalog`: the models this fleet can route to, for `GET /v1/models`.
//!
//! The model service owns the provider list, so it answers for it; the gateway asks rather
//! than reading another service's configuration.

use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::ServiceError;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ProviderConfig;

/// One model in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    pub provider: String,
    pub boundary: String,
}

pub fn entries(providers: &[ProviderConfig]) -> Vec<CatalogEntry> {
    providers
        .iter()
        .flat_map(|p| {
            p.all_models().map(move |m| CatalogEntry {
                id: m.to_string(),
                provider: p.name.clone(),
                boundary: p.boundary().as_str().to_string(),
            })
        })
        .collect()
}

/// Serves catalog requests (queue group `model`, so one replica answers) until `stop`.
pub async fn serve(
    bus: Bus,
    providers: Vec<ProviderConfig>,
    stop: CancellationToken,
) -> Result<(), ServiceError> {
    let answer = serde_json::to_vec(&serde_json::json!({ "models": entries(&providers) }))
        .map_err(|e| ServiceError::Encode(e.to_string()))?;
    let mut sub = bus
        .client
        .queue_subscribe(bus.subjects.model_catalog(), "model".into())
        .await
        .map_err(ServiceError::bus)?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = sub.next() => match msg {
                Some(msg) => {
                    if let Some(reply) = msg.reply {
                        if let Err(e) = bus.client.publish(reply, answer.clone().into()).await {
                            tracing::warn!(error = %e, "cannot answer a catalog request");
                        }
                    }
                }
                None => return Ok(()),
            }
        }
    }
}
