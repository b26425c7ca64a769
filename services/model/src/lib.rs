//! The model service: routes each cleaned request to a provider and invokes it exactly once.
//!
//! Routing rules ([`routing`]) pick and order the candidate providers — restricted data only
//! to private ones, open circuits skipped — and are replaced at run time without a restart
//! ([`live`]). The stage ([`stage`]) claims each request fleet-wide, holds its estimated cost
//! against the tenant's budget ([`budget`]), tries the candidates in order with retries, and
//! records the outcome in the claim so that a redelivery never calls a model twice. When every
//! candidate fails the request is answered with a coded `degraded` error, which the incident
//! pipeline turns into a summary assembled without AI.

pub mod breaker;
pub mod budget;
pub mod catalog;
pub mod config;
pub mod health;
pub mod live;
pub mod prompt;
pub mod providers;
pub mod routing;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::bus::{Bus, Claims};
use mcplane_shared::config::ServiceConfig;
use mcplane_shared::ledger::{Durability, SledLedger};
use mcplane_shared::pipeline::run_stage;
use mcplane_shared::{Service, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::budget::Budgets;
use crate::config::Config;
use crate::live::LiveRouting;
use crate::stage::{InvokeStage, Upstream};
use mcplane_shared::policy::live::LivePolicy;

/// How long a result stays in the ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Builds the invoke stage on a connected bus (the service, the dry run and the benchmarks).
pub async fn stage(
    bus: &Bus,
    config: &Config,
    policy: LivePolicy,
) -> Result<InvokeStage, ServiceError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServiceError::Other(format!("http client: {e}")))?;
    Ok(InvokeStage {
        bus: bus.clone(),
        upstreams: config
            .providers
            .iter()
            .map(|p| Upstream::new(config, p, &http))
            .collect(),
        routing: LiveRouting::new(config.routing.clone()),
        policy,
        claims: Claims::open(bus).await?,
        budgets: Budgets::new(
            bus.bucket(&bus.subjects.budgets_bucket()).await?,
            config.budgets.clone(),
        ),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_attempts: config.max_attempts,
        queue_timeout: Duration::from_millis(config.queue_timeout_ms),
        default_output_tokens: config.default_output_tokens,
    })
}

/// Runs the invoke step until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-model").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(&bus, mcplane_shared::Service::Model, shutdown.child_token());
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Model,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let ledger = Arc::new(
        SledLedger::open(
            config.common.service_dir(Service::Model).join("ledger"),
            LEDGER_RETENTION,
        )?
        // No fsync per batch: outputs are deduplicated by Nats-Msg-Id (see `Durability`).
        .with_durability(Durability::Background),
    );
    let policy = LivePolicy::new(config.common.policy_engine()?);
    let stage = stage(&bus, &config.service, policy.clone()).await?;
    tracing::info!(
        providers = ?config.service.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        routing_version = %config.service.routing.version,
        "model service starting"
    );
    let stop = shutdown.child_token();
    let following = tokio::spawn(live::follow(
        bus.clone(),
        config.service.providers.clone(),
        stage.routing.clone(),
        stop.clone(),
    ));
    let cataloguing = tokio::spawn(catalog::serve(
        bus.clone(),
        config.service.providers.clone(),
        policy.clone(),
        stop.clone(),
    ));
    let policing = tokio::spawn(policy.follow(bus.clone(), "model", stop.clone()));
    let stage = &stage;
    let consumed = run_stage(bus, Service::Model, ledger, shutdown, move |env, step| {
        stage.handle(env, step)
    })
    .await;
    stop.cancel();
    for task in [following, cataloguing, policing] {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "model side task failed"),
            Err(e) => tracing::warn!(error = %e, "model side task panicked"),
            Ok(Ok(())) => {}
        }
    }
    consumed
}
