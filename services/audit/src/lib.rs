//! The audit service: appends every stage's audit event to its tenant's SHA-256 hash chain.
//!
//! It consumes `mcplane.audit.*` from the `MCPLANE_AUDIT` stream (kept a year, so the chain can
//! be rebuilt by replaying it) and appends each event once, in stream order, per tenant. The
//! chain in sled is a local materialisation: a replica that lost its disk replays the stream
//! from the start and arrives at the same chain. Run one replica: a chain has one writer.

pub mod chain;
pub mod config;
pub mod store;

use std::sync::Arc;

use mcplane_shared::bus::{run_consumer, ConsumerSpec, Disposition};
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
    let store = Arc::new(ChainStore::open(&store::chain_dir(
        &config.common.data_dir,
    ))?);
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
    tracing::info!("audit service starting");
    let prefix = format!("{}.", bus.subjects.audit(""));
    let spec = ConsumerSpec {
        stream: StreamKind::Audit,
        durable,
        filters: vec![bus.subjects.audit_all()],
    };
    let handler_store = store.clone();
    let result = run_consumer(
        &bus,
        spec,
        Some(store.clone()),
        shutdown,
        move |msg| {
            let store = handler_store.clone();
            let prefix = prefix.clone();
            async move {
                let env = match Envelope::<AuditEvent>::from_slice(&msg.payload) {
                    Ok(env) => env,
                    Err(code) => return Disposition::Term(format!("{code}: not an audit event")),
                };
                // The subject's tenant is what NATS permissions isolate: an event must belong
                // to the tenant whose subject carried it.
                let subject_tenant = msg.subject.as_str().strip_prefix(prefix.trim_end_matches('.'));
                let subject_tenant = subject_tenant.and_then(|s| s.strip_prefix('.'));
                if subject_tenant != Some(env.body.tenant.as_str()) {
                    return Disposition::Term(format!(
                        "audit event for tenant {} arrived on {}",
                        env.body.tenant, msg.subject
                    ));
                }
                match store.append(&env.body) {
                    Ok(Appended::New(seq)) => {
                        metrics::counter!("mcplane_audit_entries_total", "outcome" => "appended")
                            .increment(1);
                        tracing::debug!(tenant = %env.body.tenant, seq, request_id = %env.body.request_id, trace_id = %env.body.trace_id, stage = %env.body.stage, "chained");
                        Disposition::Ack
                    }
                    Ok(Appended::Duplicate(_)) => {
                        metrics::counter!("mcplane_audit_entries_total", "outcome" => "duplicate")
                            .increment(1);
                        Disposition::Ack
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot append to the audit chain; will retry");
                        Disposition::Nak(std::time::Duration::from_secs(1))
                    }
                }
            }
        },
    )
    .await;
    store.flush_all()?;
    result
}
