//! The policy in force, switched atomically when a new version is pushed.
//!
//! `mcplane config push policy FILE` validates the file and writes it to the `policy` key of
//! the config bucket; every replica of every deciding service watches that key and swaps its
//! engine in one step, so a decision is made wholly under one version (which it records). A
//! pushed text that does not validate here is refused with an error log and the version in
//! force stays.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use super::{PolicyEngine, PolicyError};
use crate::bus::{follow_config_key, push_config_key, read_config_key, Bus};
use crate::ServiceError;

/// The config bucket key holding the pushed policy text.
pub const KEY: &str = "policy";

/// The engine in force, swapped whole.
#[derive(Clone)]
pub struct LivePolicy(Arc<RwLock<Arc<PolicyEngine>>>);

impl LivePolicy {
    pub fn new(initial: PolicyEngine) -> Self {
        LivePolicy(Arc::new(RwLock::new(Arc::new(initial))))
    }

    /// The engine to decide with; hold it for the whole decision so one version decides it.
    pub fn current(&self) -> Arc<PolicyEngine> {
        match self.0.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, engine: PolicyEngine) {
        match self.0.write() {
            Ok(mut w) => *w = Arc::new(engine),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(engine),
        }
    }

    /// Applies a pushed text, or refuses it keeping the version in force.
    pub fn apply(&self, text: &[u8], service: &'static str) {
        let parsed = std::str::from_utf8(text)
            .map_err(|e| PolicyError::Parse(e.to_string()))
            .and_then(PolicyEngine::parse);
        match parsed {
            Ok(engine) => {
                tracing::info!(
                    version = engine.version(),
                    digest = engine.digest(),
                    "policy in force"
                );
                metrics::counter!("mcplane_policy_updates_total", "service" => service, "outcome" => "applied")
                    .increment(1);
                self.set(engine);
            }
            Err(e) => {
                metrics::counter!("mcplane_policy_updates_total", "service" => service, "outcome" => "refused")
                    .increment(1);
                tracing::error!(error = %e, version_in_force = self.current().version(), "pushed policy refused");
            }
        }
    }

    /// Applies the pushed policy if there is one, then follows every push until `stop`.
    pub async fn follow(
        self,
        bus: Bus,
        service: &'static str,
        stop: CancellationToken,
    ) -> Result<(), ServiceError> {
        follow_config_key(&bus, KEY, stop, |value| self.apply(value, service)).await
    }
}

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error(
        "version {0} is already in force with different text; give the new text a new version"
    )]
    VersionReused(String),
    #[error("{0}")]
    Bus(#[from] ServiceError),
}

/// Validates and pushes a policy text; returns the engine pushed and the bucket revision.
/// Re-pushing the exact text in force is allowed (idempotent); reusing its version for
/// different text is not, so a version names one text in every audit entry.
pub async fn push(bus: &Bus, text: &str) -> Result<(PolicyEngine, u64), PushError> {
    let engine = PolicyEngine::parse(text)?;
    let in_force = read_config_key(bus, KEY).await?;
    let in_force = in_force
        .as_deref()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| PolicyEngine::parse(t).ok());
    if let Some(current) = in_force {
        if current.version() == engine.version() && current.digest() != engine.digest() {
            return Err(PushError::VersionReused(engine.version().to_string()));
        }
    }
    let revision = push_config_key(bus, KEY, text.as_bytes()).await?;
    Ok((engine, revision))
}
