//! The consume loop every worker runs: pull a batch, handle its messages concurrently, make the
//! ledger durable once for the batch, then ack, nak with a delay, or terminate each message.
//! A stage whose work gains from seeing the whole batch at once (a partition owner writing its
//! state once per batch) takes the batch with [`run_batch_consumer`] instead; the request
//! stages, whose messages are independent, run the flowing loop of [`super::flow`].
//!
//! Acking only after the ledger flush is what makes a crash safe: a message acked is a message
//! whose effects are on disk, and a message not acked is redelivered and answered from the
//! ledger. One flush per batch keeps the fsync off the per-message path.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::Bus;
use crate::error::ServiceError;
use crate::ledger::Ledger;
use crate::subjects::StreamKind;

/// What to do with a message once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (its effects are recorded): never deliver again.
    Ack,
    /// Failed for a passing reason: deliver again after the delay.
    Nak(Duration),
    /// Can never succeed (a poison message): drop it, with the reason logged.
    Term(String),
}

/// Which durable consumer to run.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: StreamKind,
    pub durable: String,
    pub filters: Vec<String>,
    /// How long [`run_batch_consumer`] waits for more messages when the batch in hand is not
    /// full, as Kafka's `linger.ms` does: fewer, larger batches under load for a stage whose
    /// cost is per batch (a partition owner's sled write and flush), at most this much added
    /// to a message's way through. Zero (the request stages) hands each batch over as it is.
    pub linger: Duration,
}

/// Runs `handler` over the consumer's messages until `shutdown` is cancelled, then finishes the
/// batch in hand (drain) and returns. `ledger`, when given, is flushed before each batch's acks.
pub async fn run_consumer<H, F>(
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
    run_batch_consumer(bus, spec, ledger, shutdown, |chunk| {
        futures::future::join_all(chunk.into_iter().map(&handler))
    })
    .await
}

/// Like [`run_consumer`], but `handler` gets each pulled batch whole and answers one
/// disposition per message, in the batch's order.
pub async fn run_batch_consumer<H, F>(
    bus: &Bus,
    spec: ConsumerSpec,
    ledger: Option<Arc<dyn Ledger>>,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), ServiceError>
where
    H: Fn(Vec<jetstream::Message>) -> F + Send + Sync,
    F: Future<Output = Vec<Disposition>> + Send,
{
    let consumer = bus
        .durable_consumer(spec.stream, &spec.durable, spec.filters.clone())
        .await?;
    let batch = bus.config.batch_size;
    let name = spec.durable.clone();
    tracing::info!(consumer = %name, filters = ?spec.filters, "consuming");
    let mut last_upkeep = Instant::now();

    'reconnect: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(batch)
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
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'reconnect,
                next = messages.next() => next,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    pull_error(&name, &e);
                    // Heartbeat and transient errors do not end the stream; a closed one
                    // ends with None.
                    continue;
                }
                None => {
                    stream_ended(bus, &name);
                    continue 'reconnect;
                }
            };
            let mut chunk = vec![first];
            let ended = gather(
                &mut messages,
                &mut chunk,
                batch,
                spec.linger,
                &shutdown,
                &name,
            )
            .await;
            handle_chunk(
                bus,
                &name,
                chunk,
                ledger.as_deref(),
                &handler,
                bus.config.max_deliver,
            )
            .await;
            if let Some(ledger) = &ledger {
                if last_upkeep.elapsed() > Duration::from_secs(60) {
                    last_upkeep = Instant::now();
                    if let Err(e) = ledger.maintain() {
                        tracing::warn!(consumer = %name, error = %e, "ledger upkeep failed");
                    }
                }
            }
            if ended {
                stream_ended(bus, &name);
                continue 'reconnect;
            }
        }
    }
    bus.health.loop_stopped(&name);
    tracing::info!(consumer = %name, "consumer drained and stopped");
    Ok(())
}

/// Adds to `chunk` the messages already received, then, with a `linger`, what arrives within
/// it, until the chunk holds `batch` messages or shutdown begins (the chunk in hand is then
/// handled at once: drain, not linger). Returns whether the message stream ended, which the
/// caller answers by re-subscribing once it has handled the chunk.
async fn gather(
    messages: &mut jetstream::consumer::pull::Stream,
    chunk: &mut Vec<jetstream::Message>,
    batch: usize,
    linger: Duration,
    shutdown: &CancellationToken,
    name: &str,
) -> bool {
    while chunk.len() < batch {
        match messages.next().now_or_never() {
            Some(Some(Ok(m))) => chunk.push(m),
            Some(Some(Err(e))) => pull_error(name, &e),
            Some(None) => return true,
            None => break,
        }
    }
    if linger.is_zero() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + linger;
    while chunk.len() < batch {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            next = tokio::time::timeout_at(deadline, messages.next()) => next,
        };
        match next {
            Ok(Some(Ok(m))) => chunk.push(m),
            Ok(Some(Err(e))) => pull_error(name, &e),
            Ok(None) => return true,
            // The linger is over.
            Err(_) => return false,
        }
    }
    false
}

fn pull_error(name: &str, e: &impl std::fmt::Display) {
    tracing::warn!(consumer = %name, error = %e, "pull error");
    metrics::counter!("mcplane_pull_errors_total", "consumer" => name.to_string()).increment(1);
}

fn stream_ended(bus: &Bus, name: &str) {
    tracing::warn!(consumer = %name, "message stream ended, re-subscribing");
    bus.health
        .loop_failing(name, "message stream ended, re-subscribing");
}

async fn handle_chunk<H, F>(
    bus: &Bus,
    name: &str,
    chunk: Vec<jetstream::Message>,
    ledger: Option<&dyn Ledger>,
    handler: &H,
    max_deliver: i64,
) where
    H: Fn(Vec<jetstream::Message>) -> F + Send + Sync,
    F: Future<Output = Vec<Disposition>> + Send,
{
    let started = Instant::now();
    metrics::histogram!("mcplane_batch_messages", "consumer" => name.to_string())
        .record(chunk.len() as f64);
    let redelivered = chunk
        .iter()
        .filter(|m| m.info().map(|i| i.delivered > 1).unwrap_or(false))
        .count();
    if redelivered > 0 {
        metrics::counter!("mcplane_redeliveries_total", "consumer" => name.to_string())
            .increment(redelivered as u64);
    }
    let mut outcomes = handler(chunk.clone()).await;
    if outcomes.len() != chunk.len() {
        // A handler bug, not the messages' fault: let them all come again.
        tracing::error!(consumer = %name, messages = chunk.len(), outcomes = outcomes.len(), "batch handler answered the wrong number of dispositions");
        outcomes = vec![Disposition::Nak(Duration::from_secs(1)); chunk.len()];
    }

    settle(
        bus,
        name,
        chunk.into_iter().zip(outcomes),
        ledger,
        max_deliver,
    )
    .await;
    metrics::histogram!("mcplane_batch_seconds", "consumer" => name.to_string())
        .record(started.elapsed().as_secs_f64());
}

/// Makes the ledger durable once for `handled`, then acks, naks or terminates each message
/// (or, when the flush fails, naks them all: nothing may be acked without a durable ledger).
pub(super) async fn settle(
    bus: &Bus,
    name: &str,
    handled: impl IntoIterator<Item = (jetstream::Message, Disposition)>,
    ledger: Option<&dyn Ledger>,
    max_deliver: i64,
) {
    let handled: Vec<_> = handled.into_iter().collect();
    if let Some(ledger) = ledger {
        let flushed = ledger.flush();
        // Readiness follows the last flush: a full or read-only disk shows in `/readyz`.
        match &flushed {
            Ok(()) => bus.health.storage_ok(name),
            Err(e) => bus.health.storage_failed(name, e.to_string()),
        }
        if let Err(e) = flushed {
            // Without a durable ledger nothing may be acked: let every message come again.
            tracing::error!(consumer = %name, error = %e, "ledger flush failed; batch will be redelivered");
            metrics::counter!("mcplane_ledger_errors_total", "consumer" => name.to_string())
                .increment(1);
            for (m, _) in &handled {
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            return;
        }
    }

    for (m, outcome) in handled {
        let delivered = m.info().map(|i| i.delivered).unwrap_or(1);
        let (kind, label) = match outcome {
            Disposition::Ack => (AckKind::Ack, "ack"),
            Disposition::Nak(_) if delivered >= max_deliver => {
                tracing::error!(consumer = %name, subject = %m.subject, delivered, "giving up on message after max deliveries");
                (AckKind::Term, "gave_up")
            }
            Disposition::Nak(delay) => (AckKind::Nak(Some(delay)), "nak"),
            Disposition::Term(reason) => {
                tracing::error!(consumer = %name, subject = %m.subject, %reason, "poison message dropped");
                (AckKind::Term, "term")
            }
        };
        metrics::counter!("mcplane_messages_total", "consumer" => name.to_string(), "outcome" => label)
            .increment(1);
        if let Err(e) = m.ack_with(kind).await {
            tracing::warn!(consumer = %name, error = %e, "ack failed; message will be redelivered");
        }
    }
}
