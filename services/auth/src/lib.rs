//! The auth service: the first stage of every AI request and the only place a credential
//! becomes a principal.
//!
//! It consumes `mcplane.requests.submit`, resolves the bearer key to a principal (tenant and
//! roles), removes the credential, validates the request and writes its itinerary, so no client
//! can skip redaction or audit; a denial is delivered at once as a coded error. It also answers
//! credential queries on `mcplane.auth.resolve` for the gateway. Keys live in the fleet's key
//! bucket, which every replica watches into memory (`fleet_keys`), and, for development and
//! offline use, in a local key file it re-reads when it changes; neither needs a restart.

pub mod authorize;
pub mod config;
pub mod credentials;
pub mod fleet_keys;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod resolve;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use mcplane_shared::config::ServiceConfig;
use mcplane_shared::ledger::{Durability, SledLedger};
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::{Service, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fleet_keys::FleetKeys;
use crate::keys::KeyStore;
use crate::stage::AuthorizeStage;

/// How long a decision stays in the ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often to check whether the ledger is due to start a new generation.
const ROTATE_CHECK: Duration = Duration::from_secs(60);

/// Runs the auth service until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-auth").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(&bus, mcplane_shared::Service::Auth, shutdown.child_token());
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Auth,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let keys_root = config
        .service
        .keys_dir
        .clone()
        .unwrap_or_else(|| config.common.data_dir.clone());
    let keys =
        Arc::new(KeyStore::open(&keys_root).map_err(|e| ServiceError::Storage(e.to_string()))?);
    let ledger = Arc::new(
        SledLedger::open(
            config.common.service_dir(Service::Auth).join("ledger"),
            LEDGER_RETENTION,
        )?
        // No fsync per batch: outputs are deduplicated by Nats-Msg-Id (see `Durability`).
        .with_durability(Durability::Background),
    );
    let jwt = match config.service.jwt.clone() {
        Some(jwt) => Some(
            jwt::JwtVerifier::new(jwt)
                .await
                .map_err(ServiceError::Other)?,
        ),
        None => None,
    };
    let policy = LivePolicy::new(config.common.policy_engine()?);
    tracing::info!(keys = %keys.path().display(), jwt = jwt.is_some(), policy = policy.current().version(), "auth service starting");

    // Everything stops when the caller asks, or when one part fails.
    let stop = shutdown.child_token();
    // The key bucket is followed for as long as the service runs. Until its first snapshot is
    // in, a key lookup waits for it (bounded) and then answers `unavailable`: never a guess.
    let fleet_keys = Arc::new(FleetKeys::new());
    let following_keys = {
        let (fleet_keys, bus, stop) = (fleet_keys.clone(), bus.clone(), stop.clone());
        tokio::spawn(async move { fleet_keys.follow(bus, stop).await })
    };
    let credentials = Arc::new(credentials::Credentials {
        keys: keys.clone(),
        fleet_keys: Some(fleet_keys),
        jwt,
    });
    let subscription = resolve::subscribe(&bus).await?;
    let resolving = {
        let (bus, credentials, stop) = (bus.clone(), credentials.clone(), stop.clone());
        tokio::spawn(async move {
            let served = resolve::serve(bus, credentials, subscription, stop.clone()).await;
            if served.is_err() {
                stop.cancel();
            }
            served
        })
    };
    let rotating = tokio::spawn(rotate_ledger(ledger.clone(), stop.clone()));
    let following = tokio::spawn(policy.clone().follow(bus.clone(), "auth", stop.clone()));

    let stage = AuthorizeStage {
        bus,
        credentials,
        limits: limits::Limits::new(&config.service.rate_limits),
        ledger,
        config: config.service,
        policy,
    };
    let consumed = stage.run(stop.clone()).await;
    stop.cancel();
    drop(stage);
    let _ = rotating.await;
    let _ = following.await;
    let _ = following_keys.await;
    let resolved = resolving
        .await
        .map_err(|e| ServiceError::Other(format!("auth resolve task: {e}")))?;
    consumed.and(resolved)
}

/// Starts a new ledger generation when the current one is older than the retention (sled has
/// no TTL; see `mcplane_shared::ledger`).
async fn rotate_ledger(ledger: Arc<SledLedger>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ROTATE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = ledger.rotate_if_due() {
                    tracing::error!(error = %e, "ledger rotation failed");
                }
            }
        }
    }
}
