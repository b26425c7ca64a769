//! The gateway: mcplane's HTTP edge. It turns AI requests into envelopes on
//! `mcplane.requests.submit` and waits for their results on its own inbox, turns alert webhooks
//! into raw alerts on `mcplane.alerts.in.<tenant>.<source>`, and answers health and metrics.
//!
//! It is stateless on purpose: it authenticates nothing itself (the credential travels to the
//! auth stage, or is resolved by auth for webhooks), keeps no disk state, and any replica can
//! serve any `GET /v1/requests/{id}` from the results bucket, so replicas scale behind any load
//! balancer without affinity.

pub mod config;
pub mod credential;
pub mod error;
pub mod observe;
pub mod replies;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::bus::{self, Bus, ResultStore};
use mcplane_shared::config::{Common, ServiceConfig};
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::ServiceError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::credential::Resolver;
use crate::replies::Replies;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub results: ResultStore,
    pub replies: Replies,
    pub resolver: Arc<Resolver>,
    pub config: Arc<Config>,
    /// The policy in force, for listings and reads the gateway answers itself.
    pub policy: LivePolicy,
    /// Cancelled when the gateway begins to shut down; waiting requests answer 202 at once.
    pub shutdown: CancellationToken,
}

/// Connects to NATS, listens on `gateway.http_addr` and serves until `shutdown`; requests in
/// flight are finished before it returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let Some(bus) = connect(&config.common, &shutdown).await? else {
        return Ok(());
    };
    let addr = config.service.http_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Other(format!("cannot listen on {addr}: {e}")))?;
    let policy = LivePolicy::new(config.common.policy_engine()?);
    serve_on(bus, config.service, policy, listener, shutdown).await
}

/// Like [`run`], on a listener the caller has bound already (tests and the CLI bind port 0 and
/// read the address back).
pub async fn serve(
    config: ServiceConfig<Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let Some(bus) = connect(&config.common, &shutdown).await? else {
        return Ok(());
    };
    let policy = LivePolicy::new(config.common.policy_engine()?);
    serve_on(bus, config.service, policy, listener, shutdown).await
}

/// Connects, unless asked to stop first (`None`).
async fn connect(
    common: &Common,
    shutdown: &CancellationToken,
) -> Result<Option<Bus>, ServiceError> {
    tokio::select! {
        _ = shutdown.cancelled() => Ok(None),
        bus = bus::connect(&common.bus, "mcplane-gateway") => bus.map(Some),
    }
}

async fn serve_on(
    bus: Bus,
    config: Config,
    policy: LivePolicy,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    // Install the recorder before the first request so nothing counted is lost.
    mcplane_shared::telemetry::metrics();
    mcplane_shared::bus::announce(
        &bus,
        mcplane_shared::Service::Gateway,
        shutdown.child_token(),
    );
    let results = ResultStore::open(&bus).await?;
    let (replies, subscriber) = Replies::subscribe(&bus.client).await?;
    let stop_replies = CancellationToken::new();
    let dispatcher = {
        let (replies, stop) = (replies.clone(), stop_replies.clone());
        tokio::spawn(async move { replies.dispatch(subscriber, stop).await })
    };
    let resolver = Resolver::new(
        bus.client.clone(),
        bus.subjects.auth_resolve(),
        Duration::from_secs(config.auth_cache_ttl_secs),
    );
    let following = tokio::spawn(policy.clone().follow(
        bus.clone(),
        "gateway",
        shutdown.child_token(),
    ));
    let state = AppState {
        policy,
        bus,
        results,
        replies,
        resolver: Arc::new(resolver),
        config: Arc::new(config),
        shutdown: shutdown.clone(),
    };
    let app = routes::router(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    stop_replies.cancel();
    following.abort();
    if let Err(e) = dispatcher.await {
        tracing::warn!(error = %e, "reply dispatcher ended abnormally");
    }
    served?;
    tracing::info!(%addr, "gateway stopped");
    Ok(())
}
