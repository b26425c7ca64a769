//! Whether a worker can do its job right now, for orchestrators' probes: its NATS connection
//! is up, its consume loops are pulling, and its data folder took the last write.
//!
//! One [`Health`] lives in each [`crate::bus::Bus`] (every clone shares it), so the consume
//! loop reports into it without new parameters and each service of a one-process fleet keeps
//! its own. The storage signal is passive on purpose: the last failed ledger flush clears it
//! and the next successful one sets it back, so a probe never writes to a disk itself.
//! Readiness never stops a worker from consuming: a worker that is not ready keeps pulling and
//! recovers on its own; the probe only tells the operator (and Kubernetes) why it is stuck.

pub mod endpoint;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use endpoint::{reserve, serve, Reservation};

/// The live readiness facts of one service (cheap to clone; clones share the facts).
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    /// Consume loop name (the durable consumer) → why it is not pulling, `None` when it is.
    loops: Mutex<BTreeMap<String, Option<String>>>,
    /// Store name → the error of its last write, for stores whose last write failed.
    storage: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn new(client: async_nats::Client) -> Self {
        Health {
            inner: Arc::new(Inner {
                client,
                loops: Mutex::default(),
                storage: Mutex::default(),
            }),
        }
    }

    /// The loop `name` is pulling messages.
    pub fn loop_running(&self, name: &str) {
        self.set_loop(name, None);
    }

    /// The loop `name` exists but cannot pull right now (it keeps retrying).
    pub fn loop_failing(&self, name: &str, reason: impl Into<String>) {
        self.set_loop(name, Some(reason.into()));
    }

    /// The loop `name` ended (shutdown): it no longer counts either way.
    pub fn loop_stopped(&self, name: &str) {
        if let Ok(mut loops) = self.inner.loops.lock() {
            loops.remove(name);
        }
    }

    fn set_loop(&self, name: &str, state: Option<String>) {
        if let Ok(mut loops) = self.inner.loops.lock() {
            loops.insert(name.to_string(), state);
        }
    }

    /// A write to the store `name` (a ledger flush) succeeded.
    pub fn storage_ok(&self, name: &str) {
        if let Ok(mut storage) = self.inner.storage.lock() {
            storage.remove(name);
        }
    }

    /// A write to the store `name` failed with `error`.
    pub fn storage_failed(&self, name: &str, error: impl Into<String>) {
        if let Ok(mut storage) = self.inner.storage.lock() {
            storage.insert(name.to_string(), error.into());
        }
    }

    /// Why the service is not ready, one line per reason; empty when it is ready.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => {}
            other => reasons.push(format!("not connected to NATS ({other})")),
        }
        match self.inner.loops.lock() {
            Ok(loops) if loops.is_empty() => reasons.push("no consume loop running yet".into()),
            Ok(loops) => {
                reasons.extend(loops.iter().filter_map(|(name, why)| {
                    why.as_ref().map(|w| format!("consumer {name}: {w}"))
                }))
            }
            Err(_) => reasons.push("consume loop state poisoned".into()),
        }
        match self.inner.storage.lock() {
            Ok(storage) => reasons.extend(
                storage
                    .iter()
                    .map(|(name, error)| format!("store of {name}: last write failed: {error}")),
            ),
            Err(_) => reasons.push("storage state poisoned".into()),
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client to a server that is not there: it never connects, which the tests rely on.
    async fn unconnected_client() -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_failing_fact_is_a_reason_and_recovery_clears_it() {
        let health = Health::new(unconnected_client().await);
        let reasons = health.not_ready_reasons();
        assert!(reasons.iter().any(|r| r.contains("not connected to NATS")));
        assert!(reasons.iter().any(|r| r.contains("no consume loop")));

        health.loop_running("enrichment");
        health.loop_failing("enrichment-x", "cannot pull");
        health.storage_failed("enrichment", "File too large");
        let reasons = health.not_ready_reasons();
        assert!(!reasons.iter().any(|r| r.contains("no consume loop")));
        assert!(reasons.contains(&"consumer enrichment-x: cannot pull".to_string()));
        assert!(
            reasons.contains(&"store of enrichment: last write failed: File too large".to_string())
        );

        health.loop_stopped("enrichment-x");
        health.storage_ok("enrichment");
        assert_eq!(health.not_ready_reasons().len(), 1, "only NATS is left");
    }
}
