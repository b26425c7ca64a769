//! The Kafka side: a consumer-group member with manual commits, and the rebalance hook that
//! commits a revoked partition's acknowledged offsets before it moves to another member.
//!
//! `enable.auto.commit` and `enable.auto.offset.store` are off: librdkafka would otherwise
//! commit what was *read*, and a crash between read and JetStream ack would lose records.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::offsets::OffsetTracker;
use crate::record::{KafkaRecord, SOURCE_HEADER, TENANT_HEADER, TRACEPARENT_HEADER};

/// The consumer's context: shares the offset tracker with the bridge loop.
pub struct BridgeContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for BridgeContext {}

impl ConsumerContext for BridgeContext {
    /// Runs inside the consumer's poll, before the partitions go: commit what is acked so the
    /// next owner starts there (not further back, which would only replay duplicates).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let mut commits = TopicPartitionList::new();
                if let Ok(mut tracker) = self.tracker.lock() {
                    for el in list.elements() {
                        if let Some(next) = tracker.revoke(el.topic(), el.partition()) {
                            let _ = commits.add_partition_offset(
                                el.topic(),
                                el.partition(),
                                Offset::Offset(next),
                            );
                        }
                    }
                }
                tracing::info!(partitions = list.count(), "kafka partitions revoked");
                metrics::counter!("mcplane_kafka_bridge_rebalances_total", "kind" => "revoke")
                    .increment(1);
                if commits.count() > 0 {
                    if let Err(e) = consumer.commit(&commits, CommitMode::Sync) {
                        tracing::warn!(error = %e, "cannot commit revoked partitions; their acked records will be replayed (and deduplicated)");
                    }
                }
            }
            Rebalance::Assign(list) => {
                tracing::info!(partitions = list.count(), "kafka partitions assigned");
                metrics::counter!("mcplane_kafka_bridge_rebalances_total", "kind" => "assign")
                    .increment(1);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }
}

/// The librdkafka configuration for `config`.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.kafka {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "mcplane-kafka-bridge")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", config.auto_offset_reset.as_str());
    c
}

/// Copies what the bridge needs out of the consumer's buffer.
pub fn record_of(m: &BorrowedMessage<'_>) -> KafkaRecord {
    let mut headers = Vec::new();
    if let Some(h) = m.headers() {
        for header in h.iter() {
            let wanted = [TENANT_HEADER, SOURCE_HEADER, TRACEPARENT_HEADER]
                .iter()
                .any(|w| header.key.eq_ignore_ascii_case(w));
            if let (true, Some(value)) = (wanted, header.value) {
                headers.push((
                    header.key.to_string(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
        }
    }
    KafkaRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}
