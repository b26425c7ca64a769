//! Routing rules that change without a restart: `mcplane config push routing FILE` writes the
//! rules to the `routing` key of the config bucket; every replica watches it and swaps the rules
//! it decides with in one step. A pushed version that does not validate against this replica's
//! providers is refused with an error log, and the version in force stays.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::ServiceError;
use tokio_util::sync::CancellationToken;

use crate::config::ProviderConfig;
use crate::routing::RoutingConfig;

/// The config bucket key holding the routing rules.
pub const KEY: &str = "routing";

/// The rules in force, swapped whole.
#[derive(Clone)]
pub struct LiveRouting(Arc<RwLock<Arc<RoutingConfig>>>);

impl LiveRouting {
    pub fn new(initial: RoutingConfig) -> Self {
        LiveRouting(Arc::new(RwLock::new(Arc::new(initial))))
    }

    pub fn current(&self) -> Arc<RoutingConfig> {
        match self.0.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, rules: RoutingConfig) {
        match self.0.write() {
            Ok(mut w) => *w = Arc::new(rules),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(rules),
        }
    }
}

/// Parses and validates pushed rules (TOML: `version = "…"` and `[[rules]]`).
pub fn parse(text: &[u8], providers: &[ProviderConfig]) -> Result<RoutingConfig, String> {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let rules: RoutingConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    rules
        .validate(providers)
        .map_err(|(key, message)| format!("{key}: {message}"))?;
    Ok(rules)
}

fn apply(live: &LiveRouting, value: &[u8], providers: &[ProviderConfig]) {
    match parse(value, providers) {
        Ok(rules) => {
            tracing::info!(version = %rules.version, rules = rules.rules.len(), "routing rules in force");
            metrics::counter!("mcplane_model_routing_updates_total", "outcome" => "applied")
                .increment(1);
            live.set(rules);
        }
        Err(e) => {
            metrics::counter!("mcplane_model_routing_updates_total", "outcome" => "refused")
                .increment(1);
            tracing::error!(error = %e, version_in_force = %live.current().version, "pushed routing rules refused");
        }
    }
}

/// Applies the pushed rules if there are any, then follows every change until `stop`.
pub async fn follow(
    bus: Bus,
    providers: Vec<ProviderConfig>,
    live: LiveRouting,
    stop: CancellationToken,
) -> Result<(), ServiceError> {
    let kv = bus.bucket(&bus.subjects.config_bucket()).await?;
    // Watch first, then read: a push between the two is seen either way.
    let mut watch = kv.watch(KEY).await.map_err(ServiceError::bus)?;
    if let Ok(Some(value)) = kv.get(KEY).await {
        apply(&live, &value, &providers);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = watch.next() => match next {
                Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                    apply(&live, &entry.value, &providers);
                }
                Some(Ok(_)) => {
                    tracing::warn!("pushed routing rules deleted; the version in force stays");
                }
                Some(Err(e)) => tracing::warn!(error = %e, "routing watch error"),
                None => {
                    tracing::warn!("routing watch ended; re-watching");
                    watch = kv.watch(KEY).await.map_err(ServiceError::bus)?;
                }
            }
        }
    }
}

/// Pushes routing rules (used by `mcplane config push routing`); returns the KV revision.
pub async fn push(
    bus: &Bus,
    text: &str,
    providers: &[ProviderConfig],
) -> Result<(RoutingConfig, u64), String> {
    let rules = parse(text.as_bytes(), providers)?;
    let kv = bus
        .bucket(&bus.subjects.config_bucket())
        .await
        .map_err(|e| e.to_string())?;
    let revision = kv
        .put(KEY, text.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    Ok((rules, revision))
}
