//! The flowing consume loop of the request stages: up to `bus.batch_size` messages in hand at
//! once, each acked as soon as it is done, the next pulled as soon as a place is free.
//!
//! [`super::run_consumer`] handles a pulled batch whole before pulling the next, so one slow
//! message (a vault or claim round trip that met a busy server) holds up the whole batch and
//! nothing overlaps the batch's last round trips and acks: a stage's throughput is its batch
//! size over its slowest message, and every hop of a request waits for the batch it landed in.
//! Here nothing waits for anything but its own work. The guarantees are the batch loop's:
//! every message finished is settled by [`super::consume::settle`] (the ledger flushed once
//! for all messages finished together, then acked, nak'ed or terminated), so a message is
//! acked only after its ledger entry is as durable as the ledger promises.
//!
//! Meant for stages whose messages are independent of each other (the request pipeline's:
//! each request is its own ledger key), not for a partition owner whose state is written in
//! the order of the batch.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::consume::settle;
use super::{Bus, ConsumerSpec, Disposition};
use crate::error::ServiceError;
use crate::ledger::Ledger;

/// Runs `handler` over the consumer's messages, up to `bus.config.batch_size` at once, until
/// `shutdown` is cancelled; then finishes the messages in hand (drain) and returns.
pub async fn run_flowing_consumer<H, F>(
    bus: &Bus,
    spec: ConsumerSpec,
    ledger: Option<Arc<dyn Ledger>>,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), ServiceError>
where
    H: Fn(jetstream::Message) -> F + Send + Sync,
    F: Future<Output = Disposition> + Send,
{
    let consumer = bus
        .durable_consumer(spec.stream, &spec.durable, spec.filters.clone())
        .await?;
    let limit = bus.config.batch_size;
    let max_deliver = bus.config.max_deliver;
    let name = spec.durable.clone();
    tracing::info!(consumer = %name, filters = ?spec.filters, in_flight = limit, "consuming");
    let ledger = ledger.as_deref();
    let handler = &handler;
    let mut last_upkeep = Instant::now();
    let mut in_hand = FuturesUnordered::new();

    'reconnect: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(limit)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => {
                bus.health.loop_running(&name);
                m
            }
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "cannot start pulling, retrying");
                bus.health
                    .loop_failing(&name, format!("cannot start pulling: {e}"));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'reconnect,
                Some(done) = in_hand.next(), if !in_hand.is_empty() => {
                    // Everything else already finished is settled with it: one flush for all.
                    let mut finished = vec![done];
                    while let Some(Some(more)) = in_hand.next().now_or_never() {
                        finished.push(more);
                    }
                    settle(bus, &name, finished, ledger, max_deliver).await;
                    if let Some(ledger) = ledger {
                        if last_upkeep.elapsed() > Duration::from_secs(60) {
                            last_upkeep = Instant::now();
                            if let Err(e) = ledger.maintain() {
                                tracing::warn!(consumer = %name, error = %e, "ledger upkeep failed");
                            }
                        }
                    }
                }
                next = messages.next(), if in_hand.len() < limit => match next {
                    Some(Ok(m)) => {
                        if m.info().map(|i| i.delivered > 1).unwrap_or(false) {
                            metrics::counter!("mcplane_redeliveries_total", "consumer" => name.clone())
                                .increment(1);
                        }
                        in_hand.push(async move {
                            let disposition = handler(m.clone()).await;
                            (m, disposition)
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %name, error = %e, "pull error");
                        metrics::counter!("mcplane_pull_errors_total", "consumer" => name.clone())
                            .increment(1);
                        // Heartbeat and transient errors do not end the stream; a closed one
                        // ends with None.
                    }
                    None => {
                        tracing::warn!(consumer = %name, "message stream ended, re-subscribing");
                        bus.health
                            .loop_failing(&name, "message stream ended, re-subscribing");
                        // The messages in hand are finished on the next subscription's loop.
                        continue 'reconnect;
                    }
                },
            }
        }
    }
    // Drain: finish and settle what is in hand, pull nothing more.
    while let Some(done) = in_hand.next().await {
        settle(bus, &name, [done], ledger, max_deliver).await;
    }
    bus.health.loop_stopped(&name);
    tracing::info!(consumer = %name, "consumer drained and stopped");
    Ok(())
}
