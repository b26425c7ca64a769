//! The enrichment service: the stage after auth on every AI request, injecting the context a
//! principal may see (CMDB services, owners, dependencies) before anything is redacted or sent
//! to a model.
//!
//! Incident history (the `incidents` source) comes from a small sled index each replica fills
//! by following the incidents and summaries streams (`history`).
//!
//! The CMDB is loaded and validated once at start (a bad file stops the service with the entry
//! named); enriching is then a pure function of the request, so replicas need no coordination
//! and scale on the shared durable consumer.

pub mod cmdb;
pub mod config;
pub mod history;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::config::ServiceConfig;
use mcplane_shared::ledger::{Durability, SledLedger};
use mcplane_shared::pipeline::run_stage;
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::{Service, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::history::HistoryIndex;
use crate::stage::EnrichStage;

/// How long a result stays in the ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Runs the enrichment stage until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let cmdb = config.service.load_cmdb(Service::Enrichment.as_str())?;
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-enrichment").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(
        &bus,
        mcplane_shared::Service::Enrichment,
        shutdown.child_token(),
    );
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Enrichment,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let ledger = Arc::new(
        SledLedger::open(
            config
                .common
                .service_dir(Service::Enrichment)
                .join("ledger"),
            LEDGER_RETENTION,
        )?
        // No fsync per batch: outputs are deduplicated by Nats-Msg-Id (see `Durability`).
        .with_durability(Durability::Background),
    );
    tracing::info!(
        services = cmdb.len(),
        cmdb_file = ?config.service.cmdb_file,
        "enrichment service starting"
    );
    let policy = LivePolicy::new(config.common.policy_engine()?);
    let following = tokio::spawn(policy.clone().follow(
        bus.clone(),
        "enrichment",
        shutdown.child_token(),
    ));
    let history = match config.service.history_per_service {
        0 => None,
        n => {
            let index = Arc::new(HistoryIndex::open(
                &config
                    .common
                    .service_dir(Service::Enrichment)
                    .join("history"),
                n,
            )?);
            tokio::spawn(history::follow(
                bus.clone(),
                index.clone(),
                shutdown.child_token(),
            ));
            Some(index)
        }
    };
    let stage = EnrichStage {
        cmdb,
        policy,
        history: history.clone(),
    };
    let served = run_stage(
        bus,
        Service::Enrichment,
        ledger,
        shutdown.clone(),
        |env, step| std::future::ready(stage.handle(env, step)),
    )
    .await;
    following.abort();
    if let Some(index) = history {
        index.flush()?;
    }
    served
}
