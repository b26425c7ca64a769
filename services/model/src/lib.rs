//! The model service: routes each cleaned request to a provider and invokes it exactly once.
//!
//! Providers are tried in the configured order (the first is preferred, the rest are
//! fallbacks); retryable failures are retried with backoff and jitter; when every provider
//! fails the request is answered with a coded `degraded` error, which the incident pipeline
//! turns into a summary assembled without AI. A fleet-wide claim per request keeps a
//! redelivery from ever invoking a model twice (see [`stage`]).

pub mod config;
pub mod prompt;
pub mod providers;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::bus::Claims;
use mcplane_shared::config::ServiceConfig;
use mcplane_shared::ledger::SledLedger;
use mcplane_shared::pipeline::run_stage;
use mcplane_shared::{Service, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::providers::Provider;
use crate::stage::InvokeStage;

/// How long a result stays in the ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Runs the invoke step until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-model").await?;
    let ledger = Arc::new(SledLedger::open(
        config.common.service_dir(Service::Model).join("ledger"),
        LEDGER_RETENTION,
    )?);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServiceError::Other(format!("http client: {e}")))?;
    let providers: Vec<Provider> = config
        .service
        .providers
        .iter()
        .map(|p| Provider::from_config(p, &http))
        .collect();
    tracing::info!(
        providers = ?providers.iter().map(Provider::name).collect::<Vec<_>>(),
        "model service starting"
    );
    let stage = InvokeStage {
        providers,
        claims: Claims::open(&bus).await?,
        request_timeout: Duration::from_millis(config.service.request_timeout_ms),
        max_attempts: config.service.max_attempts,
    };
    let stage = &stage;
    run_stage(bus, Service::Model, ledger, shutdown, move |env, step| {
        stage.handle(env, step)
    })
    .await
}
