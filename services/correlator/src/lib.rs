//! The correlator: turns raw monitoring alerts into incidents and incident summaries.
//!
//! Two kinds of work, both on the ALERTS stream. Ingest (stateless, shared by all replicas)
//! normalises what arrives on `mcplane.alerts.in.<tenant>.<source>` and keys each canonical
//! alert onto a partition by tenant and service. Each partition has one owner (a replica that
//! lists it in `owned_partitions`) keeping its incidents in its own sled folder: it
//! deduplicates and groups alerts, publishes `mcplane.incidents.<tenant>.<event>`, asks the AI
//! pipeline for a summary once a burst has settled, and publishes
//! `mcplane.summaries.<tenant>.<severity>` exactly once per incident revision.

pub mod clock;
pub mod config;
pub mod escalation;
pub mod grouping;
pub mod incident;
pub mod ingest;
pub mod notify;
pub mod owner;
pub mod partition;
pub mod rebuild;
pub mod rules;
pub mod store;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::config::ServiceConfig;
use mcplane_shared::{Service, ServiceError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::grouping::Policy;
use crate::incident::Flapping;
use crate::ingest::Ingest;
use crate::owner::PartitionOwner;
use crate::rules::{GroupBy, Rules};
use crate::store::PartitionStore;
use mcplane_shared::topology::Topology;

impl Config {
    /// The grouping and summary timing this configuration asks for.
    pub fn policy(&self) -> Policy {
        Policy {
            window: Duration::from_secs(self.group_window_secs),
            group_wait: Duration::from_millis(self.group_wait_ms),
            group_interval: Duration::from_secs(self.group_interval_secs),
            repeat_interval: Duration::from_secs(self.repeat_interval_secs),
            send_resolved: self.send_resolved,
            flapping: Flapping {
                threshold: self.flap_threshold,
                window: Duration::from_secs(self.flap_window_secs),
            },
            escalation: self.escalation(),
            summary_timeout: Duration::from_secs(self.summary_timeout_secs),
        }
    }

    /// The grouping rules, with the CMDB topology read from `cmdb_file`.
    pub fn rules(&self) -> Result<Rules, ServiceError> {
        let topology = match &self.cmdb_file {
            Some(path) => Topology::load(path)
                .map_err(|e| ServiceError::Other(format!("correlator.cmdb_file: {e}")))?,
            None => Topology::default(),
        };
        Ok(Rules {
            group_by: GroupBy::from_config(&self.group_by),
            topology,
        })
    }
}

/// Runs the correlator until `shutdown`, then drains the batches in hand and returns.
///
/// Every part runs as a task of a `JoinSet` owned by this future, so dropping the future (an
/// aborted task, a crashed caller) stops them all and releases the partition folders.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-correlator").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(
        &bus,
        mcplane_shared::Service::Correlator,
        shutdown.child_token(),
    );
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Correlator,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let cfg = config.service;
    if cfg.service_account_key.is_none() {
        tracing::warn!(
            "correlator.service_account_key is not set: incident summaries will be assembled \
             without AI and marked degraded"
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dir = config.common.service_dir(Service::Correlator);
    let owned = cfg.owned();
    let rules = cfg.rules()?;
    tracing::info!(partitions = cfg.partitions, owned = ?owned, "correlator starting");

    let stop = shutdown.child_token();
    let mut tasks: JoinSet<Result<(), ServiceError>> = JoinSet::new();
    for partition in owned {
        let store = PartitionStore::open(&dir.join(format!("p{partition}"))).await?;
        // An empty folder of a partition consumed before: its state comes back from the stream.
        rebuild::rebuild_if_empty(&bus, partition, &store, &rules, &cfg.policy(), clock.now())
            .await?;
        let owner = PartitionOwner::open(
            partition,
            bus.clone(),
            store,
            rules.clone(),
            &cfg,
            clock.clone(),
        )
        .await?;
        tasks.spawn(owner.run(stop.clone()));
    }
    let ingest = Ingest {
        bus,
        partitions: cfg.partitions,
        rules,
        clock,
        linger: Duration::from_millis(cfg.linger_ms),
    };
    let ingest_stop = stop.clone();
    tasks.spawn(async move { ingest.run(ingest_stop).await });

    // Everything stops when the caller asks, or when one part fails.
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined
            .map_err(|e| ServiceError::Other(format!("correlator task: {e}")))
            .and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %e, "correlator part failed; stopping");
            stop.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
