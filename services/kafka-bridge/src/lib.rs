//! The Kafka bridge: moves monitoring feeds from Kafka topics onto
//! `mcplane.alerts.in.<tenant>.<source>`, exactly as the gateway's webhook publishes them.
//!
//! A consumer-group member reads the configured topics and publishes each record through
//! JetStream, many at a time. An offset is committed to Kafka only once JetStream has
//! acknowledged that record and every record before it on its partition
//! ([`offsets::OffsetTracker`]), so a crash loses nothing: the records after the last commit
//! are read again, and their replays carry the same `Nats-Msg-Id`
//! (`kafka:<topic>:<partition>:<offset>`), which JetStream drops. A record that can never be
//! an alert goes to `mcplane.alerts.dead.<tenant>.<source>` with a coded error and is then
//! committed like any other, so it cannot stall its partition.

pub mod config;
pub mod consumer;
pub mod offsets;
pub mod record;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::config::{ConfigError, ServiceConfig};
use mcplane_shared::{Service, ServiceError};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{client_config, record_of, BridgeContext};
use crate::offsets::OffsetTracker;
use crate::record::KafkaRecord;

/// Runs the bridge until `shutdown`, then waits (up to `drain_timeout_ms`) for the publishes
/// in flight, commits what was acknowledged and leaves the consumer group.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let cfg = config.service;
    if !cfg.is_configured() {
        return Err(ServiceError::Config(ConfigError::new(
            "kafka-bridge.topics",
            "no topics to bridge; add a [[kafka-bridge.topics]] entry",
        )));
    }
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-kafka-bridge").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(&bus, Service::KafkaBridge, shutdown.child_token());
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::KafkaBridge,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    tracing::info!(
        brokers = %cfg.brokers,
        group = %cfg.group_id,
        topics = ?cfg.topics.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(),
        "kafka bridge starting"
    );
    Bridge { bus, config: cfg }.run(shutdown).await
}

/// The name the Kafka consume loop reports its state under.
const KAFKA_LOOP: &str = "kafka-consumer";
/// How long after its last consume error the loop counts as failing. A quiet topic delivers
/// nothing that would clear the state, so it clears itself once the errors stop.
const ERROR_QUIET: Duration = Duration::from_secs(5);

struct Bridge {
    bus: Bus,
    config: Config,
}

/// A finished publish: the record's position, and whether JetStream acknowledged it.
struct Settled {
    topic: String,
    partition: i32,
    offset: i64,
    epoch: u64,
    acked: bool,
}

impl Bridge {
    async fn run(&self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let consumer: StreamConsumer<BridgeContext> = client_config(&self.config)
            .create_with_context(BridgeContext {
                tracker: tracker.clone(),
            })
            .map_err(|e| ServiceError::Other(format!("kafka consumer: {e}")))?;
        let topics: Vec<&str> = self
            .config
            .topics
            .iter()
            .map(|t| t.topic.as_str())
            .collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ServiceError::Other(format!("kafka subscribe {topics:?}: {e}")))?;
        // The bridge's consume loop, for `/readyz` (it has no JetStream consumer).
        let health = &self.bus.health;
        health.loop_running(KAFKA_LOOP);
        // When the last consume error happened, while it still counts.
        let mut failing: Option<Instant> = None;

        // Cancelled when draining gives up: publishes still retrying stop, uncommitted.
        let give_up = CancellationToken::new();
        let mut in_flight = FuturesUnordered::new();
        let mut commit_tick =
            tokio::time::interval(Duration::from_millis(self.config.commit_interval_ms));
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(settled) = in_flight.next() => settle(&tracker, settled),
                _ = commit_tick.tick() => {
                    commit(&consumer, &tracker, CommitMode::Async);
                    if failing.is_some_and(|at| at.elapsed() > ERROR_QUIET) {
                        failing = None;
                        health.loop_running(KAFKA_LOOP);
                    }
                }
                received = consumer.recv(), if in_flight.len() < self.config.max_in_flight => {
                    match received {
                        Ok(message) => {
                            if failing.take().is_some() {
                                health.loop_running(KAFKA_LOOP);
                            }
                            let record = record_of(&message);
                            let epoch = match tracker.lock() {
                                Ok(mut t) => t.track(&record.topic, record.partition, record.offset),
                                Err(_) => return Err(ServiceError::Other("offset tracker poisoned".into())),
                            };
                            in_flight.push(self.publish(record, epoch, &give_up));
                        }
                        Err(e) => {
                            metrics::counter!("mcplane_kafka_bridge_consume_errors_total").increment(1);
                            tracing::warn!(error = %e, "kafka consume error");
                            failing = Some(Instant::now());
                            health.loop_failing(KAFKA_LOOP, format!("kafka consume error: {e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            metrics::gauge!("mcplane_kafka_bridge_in_flight").set(in_flight.len() as f64);
        }

        health.loop_stopped(KAFKA_LOOP);
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        let drained = tokio::time::timeout(drain, async {
            while let Some(settled) = in_flight.next().await {
                settle(&tracker, settled);
            }
        })
        .await;
        if drained.is_err() {
            give_up.cancel();
            tracing::warn!(
                left = in_flight.len(),
                "publishes still unacknowledged after the drain timeout; they will be read again"
            );
        }
        drop(in_flight);
        commit(&consumer, &tracker, CommitMode::Sync);
        consumer.unsubscribe();
        tracing::info!("kafka bridge stopped");
        Ok(())
    }

    /// Publishes one record (or its dead letter) until JetStream acknowledges it, retrying
    /// with backoff while the bus is unreachable.
    async fn publish(
        &self,
        record: KafkaRecord,
        epoch: u64,
        give_up: &CancellationToken,
    ) -> Settled {
        let now = chrono::Utc::now();
        let outcome;
        let publication = match record::to_alert(&record, &self.config, &self.bus.subjects, now) {
            Ok(p) => {
                outcome = "published";
                Some(p)
            }
            Err(rejection) => {
                outcome = "dead_lettered";
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    code = %rejection.code, reason = %rejection.message,
                    "record is not an alert; sending it to the dead-letter subject"
                );
                match record::to_dead_letter(&record, rejection, &self.bus.subjects, now) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a dead letter; skipping the record");
                        None
                    }
                }
            }
        };
        let mut settled = Settled {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            epoch,
            acked: false,
        };
        let Some(publication) = publication else {
            settled.acked = true;
            return settled;
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .bus
                .publish_all(std::slice::from_ref(&publication))
                .await
            {
                Ok(()) => {
                    metrics::counter!("mcplane_kafka_bridge_records_total", "outcome" => outcome)
                        .increment(1);
                    settled.acked = true;
                    return settled;
                }
                Err(e) => {
                    metrics::counter!("mcplane_kafka_bridge_publish_retries_total").increment(1);
                    tracing::warn!(error = %e, subject = %publication.subject, ?delay, "publish not acknowledged; retrying");
                    tokio::select! {
                        _ = give_up.cancelled() => return settled,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn settle(tracker: &Mutex<OffsetTracker>, s: Settled) {
    if !s.acked {
        return;
    }
    if let Ok(mut t) = tracker.lock() {
        t.ack(&s.topic, s.partition, s.offset, s.epoch);
    }
}

/// Commits every partition whose acknowledged prefix moved.
fn commit(
    consumer: &StreamConsumer<BridgeContext>,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
) {
    let moved = match tracker.lock() {
        Ok(mut t) => t.take_commits(),
        Err(_) => return,
    };
    if moved.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, next) in &moved {
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(error = %e, %topic, partition, "bad offset to commit");
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => {
            metrics::counter!("mcplane_kafka_bridge_commits_total").increment(1);
            tracing::debug!(partitions = moved.len(), "offsets committed");
        }
        Err(e) => {
            // A later commit covers these offsets; until then a crash replays (deduplicated).
            metrics::counter!("mcplane_kafka_bridge_commit_errors_total").increment(1);
            tracing::warn!(error = %e, "cannot commit offsets");
        }
    }
}
