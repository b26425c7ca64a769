//! The redaction service: masks PII and secrets in a request before any model sees it and in
//! the response before the client does. It is on every request's itinerary twice, and the auth
//! service writes that itinerary, so no client can skip it.
//!
//! This is the hot path: the [`Redactor`] compiles its patterns once and leaves clean text
//! untouched and unallocated. Other crates (benchmarks, output policy) can use it directly.

pub mod actions;
pub mod config;
pub mod corpus;
pub mod detectors;
pub mod engine;
pub mod keywords;
pub mod stage;
pub mod vault;

use std::time::Duration;

use mcplane_shared::config::{ConfigError, ServiceConfig};
use mcplane_shared::ledger::{Durability, SledLedger};
use mcplane_shared::pipeline::run_stage;
use mcplane_shared::{Service, ServiceError};
use tokio_util::sync::CancellationToken;

pub use crate::detectors::{EntityType, Span};
pub use crate::engine::{Counts, Engine, Redactor, RedactorError};

use crate::config::Config;
use crate::stage::RedactStage;
use crate::vault::Vault;
use mcplane_shared::tenant_keys::TenantKeys;

/// How long a result stays in the ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Runs both redaction steps until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    // A private reply inbox: the vault's KV reads come back there, out of reach of the other
    // users' `_INBOX.>` subscriptions.
    let inbox = mcplane_shared::Subjects::new(config.common.bus.prefix.clone())
        .private_inbox(Service::Redaction);
    let bus = mcplane_shared::bus::connect_with_inbox(
        &config.common.bus,
        "mcplane-redaction",
        Some(&inbox),
    )
    .await?;
    let vault = Vault::open(&bus).await?;
    let mut stage = RedactStage::new(config.service.clone(), Some(vault))
        .map_err(|e| ConfigError::new(format!("{}.patterns", Service::Redaction), e.to_string()))?;
    if config.service.audit_payloads {
        let dir = config
            .service
            .audit_keys_dir
            .clone()
            .unwrap_or_else(|| TenantKeys::default_dir(&config.common.data_dir));
        tracing::info!(keys_dir = %dir.display(), "audit payloads sealed with per-tenant keys");
        stage.payload_keys = Some(TenantKeys::new(dir));
    }
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(
        &bus,
        mcplane_shared::Service::Redaction,
        shutdown.child_token(),
    );
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Redaction,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let ledger = std::sync::Arc::new(
        SledLedger::open(
            config.common.service_dir(Service::Redaction).join("ledger"),
            LEDGER_RETENTION,
        )?
        // No fsync per batch: outputs are deduplicated by Nats-Msg-Id (see `Durability`).
        .with_durability(Durability::Background),
    );
    tracing::info!(
        types = ?stage.redactor.types().map(|t| t.as_str()).collect::<Vec<_>>(),
        "redaction service starting"
    );
    let stage = &stage;
    run_stage(
        bus,
        Service::Redaction,
        ledger,
        shutdown,
        move |env, step| stage.handle(env, step),
    )
    .await
}
