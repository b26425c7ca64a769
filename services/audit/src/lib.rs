//! The audit service: appends every stage's audit event to its tenant's SHA-256 hash chain.
//!
//! It consumes `mcplane.audit.*` from the `MCPLANE_AUDIT` stream (kept a year, so the chain can
//! be rebuilt by replaying it) and appends each event once, in stream order, per tenant. The
//! chain in sled is a local materialisation: a replica that lost its disk replays the stream
//! from the start and arrives at the same chain. Run one replica: a chain has one writer.

pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod store;

use std::sync::Arc;

use mcplane_shared::bus::{run_batch_consumer, ConsumerSpec, Disposition};
use mcplane_shared::config::ServiceConfig;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{AuditEvent, Envelope, Service, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{Appended, ChainStore};

/// Runs the audit service until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-audit").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(&bus, mcplane_shared::Service::Audit, shutdown.child_token());
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Audit,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let store = Arc::new(ChainStore::open_with_cache(
        &store::chain_dir(&config.common.data_dir),
        config.service.cache_mib * 1024 * 1024,
    )?);
    let durable = bus.subjects.durable(Service::Audit, "");
    if config.service.rebuild_on_empty && store.is_empty() {
        // A fresh disk: whatever the consumer had acknowledged is not in this chain, so replay
        // the stream from its start (appends are idempotent by request id and stage).
        let stream = bus
            .js
            .get_stream(bus.subjects.stream_name(StreamKind::Audit))
            .await
            .map_err(ServiceError::bus)?;
        if stream.delete_consumer(&durable).await.is_ok() {
            tracing::warn!("empty audit chain: replaying the audit stream from its start");
        }
    }
    let key_file = config.service.signing_key_file.clone().unwrap_or_else(|| {
        config
            .common
            .service_dir(Service::Audit)
            .join("signing.key")
    });
    let signer = checkpoint::Signer::load_or_create(&key_file)?;
    tracing::info!(public_key = %signer.public_hex(), "audit service starting");
    let stop = shutdown.child_token();
    let checkpointing = tokio::spawn(checkpoints(
        bus.clone(),
        store.clone(),
        signer,
        std::time::Duration::from_secs(config.service.checkpoint_interval_secs),
        stop.clone(),
    ));
    let prefix = format!("{}.", bus.subjects.audit(""));
    let spec = ConsumerSpec {
        stream: StreamKind::Audit,
        durable,
        filters: vec![bus.subjects.audit_all()],
        linger: std::time::Duration::ZERO,
    };
    let handler_store = store.clone();
    // A pulled batch is appended whole: one transaction per tenant, not one per event.
    let result = run_batch_consumer(&bus, spec, Some(store.clone()), shutdown, move |batch| {
        let dispositions = append_batch(&handler_store, &prefix, &batch);
        std::future::ready(dispositions)
    })
    .await;
    stop.cancel();
    if let Err(e) = checkpointing.await {
        tracing::warn!(error = %e, "checkpoint task ended abnormally");
    }
    store.flush_all()?;
    result
}

/// Signs and publishes a checkpoint for every tenant whose chain grew, every `interval`, and
/// once more on the way out.
async fn checkpoints(
    bus: mcplane_shared::bus::Bus,
    store: Arc<ChainStore>,
    signer: checkpoint::Signer,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        for (tenant, size, head) in store.heads() {
            let done = store
                .latest_checkpoint(&tenant)
                .map_or(0, |cp| cp.tree_size);
            if size <= done {
                continue;
            }
            let cp = signer.sign(&tenant, size, &head, chrono::Utc::now());
            if let Err(e) = store.record_checkpoint(&cp) {
                tracing::error!(%tenant, error = %e, "cannot keep a checkpoint");
                continue;
            }
            let env = Envelope::new(tenant.clone(), cp);
            let published = mcplane_shared::bus::Publication::envelope(
                bus.subjects.audit_checkpoint(&tenant),
                &env,
                "checkpoint",
            )
            .map(|mut p| {
                p.msg_id = Some(format!("{tenant}:{size}:checkpoint"));
                p
            });
            match published {
                Ok(p) => match bus.publish_all(&[p]).await {
                    Ok(()) => {
                        metrics::counter!("mcplane_audit_checkpoints_total").increment(1);
                        tracing::debug!(%tenant, tree_size = size, "checkpoint published");
                    }
                    Err(e) => tracing::warn!(%tenant, error = %e, "cannot publish a checkpoint"),
                },
                Err(e) => tracing::error!(error = %e, "cannot encode a checkpoint"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Chains a pulled batch of audit events in stream order; one disposition per message.
fn append_batch(
    store: &ChainStore,
    prefix: &str,
    batch: &[async_nats::jetstream::Message],
) -> Vec<Disposition> {
    let mut dispositions = vec![Disposition::Ack; batch.len()];
    let mut events: Vec<(usize, Envelope<AuditEvent>)> = Vec::with_capacity(batch.len());
    for (i, msg) in batch.iter().enumerate() {
        let env = match Envelope::<AuditEvent>::from_slice(&msg.payload) {
            Ok(env) => env,
            Err(code) => {
                dispositions[i] = Disposition::Term(format!("{code}: not an audit event"));
                continue;
            }
        };
        // The subject's tenant is what NATS permissions isolate: an event must belong to the
        // tenant whose subject carried it.
        let subject_tenant = msg
            .subject
            .as_str()
            .strip_prefix(prefix.trim_end_matches('.'))
            .and_then(|s| s.strip_prefix('.'));
        if subject_tenant != Some(env.body.tenant.as_str()) {
            dispositions[i] = Disposition::Term(format!(
                "audit event for tenant {} arrived on {}",
                env.body.tenant, msg.subject
            ));
            continue;
        }
        events.push((i, env));
    }
    let bodies: Vec<&AuditEvent> = events.iter().map(|(_, env)| &env.body).collect();
    match store.append_all(&bodies) {
        Ok(appended) => {
            let (mut new, mut duplicate) = (0u64, 0u64);
            for ((_, env), a) in events.iter().zip(appended) {
                match a {
                    Appended::New(seq) => {
                        new += 1;
                        let e = &env.body;
                        tracing::debug!(tenant = %e.tenant, seq, request_id = %e.request_id, trace_id = %e.trace_id, stage = %e.stage, "chained");
                    }
                    Appended::Duplicate(_) => duplicate += 1,
                }
            }
            metrics::counter!("mcplane_audit_entries_total", "outcome" => "appended")
                .increment(new);
            metrics::counter!("mcplane_audit_entries_total", "outcome" => "duplicate")
                .increment(duplicate);
        }
        Err(e) => {
            tracing::error!(error = %e, events = events.len(), "cannot append to the audit chain; will retry");
            for (i, _) in &events {
                dispositions[*i] = Disposition::Nak(std::time::Duration::from_secs(1));
            }
        }
    }
    dispositions
}
