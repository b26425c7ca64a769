//! The streams and buckets mcplane needs, created idempotently by whichever service starts
//! first. Existing streams are left as they are, so an operator's tuning survives restarts.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use super::Bus;
use crate::error::ServiceError;
use crate::subjects::StreamKind;

impl Bus {
    /// Creates every stream and bucket that does not exist yet.
    pub async fn ensure(&self) -> Result<(), ServiceError> {
        for kind in StreamKind::ALL {
            self.ensure_stream(kind).await?;
        }
        self.ensure_bucket(
            &self.subjects.results_bucket(),
            Duration::from_secs(24 * 3600),
            1,
        )
        .await?;
        self.ensure_bucket(
            &self.subjects.claims_bucket(),
            Duration::from_secs(7 * 24 * 3600),
            1,
        )
        .await?;
        // A month's window must outlive the month; the config keeps every version pushed.
        self.ensure_bucket(
            &self.subjects.budgets_bucket(),
            Duration::from_secs(40 * 24 * 3600),
            1,
        )
        .await?;
        self.ensure_bucket(&self.subjects.config_bucket(), Duration::ZERO, 64)
            .await?;
        Ok(())
    }

    /// The redaction token vault, created if missing. Not part of [`Bus::ensure`]: it holds
    /// the originals of tokenised PII, so the generated NATS permissions deny every user but
    /// the redaction service its JetStream API, and only the redaction service creates it.
    /// Token originals outlive their request by far less than a day: an hour covers the
    /// slowest model call and its redeliveries, and bounds how long PII rests on disk.
    pub async fn ensure_vault_bucket(&self) -> Result<kv::Store, ServiceError> {
        self.ensure_bucket(
            &self.subjects.redaction_vault_bucket(),
            Duration::from_secs(3600),
            1,
        )
        .await
    }

    /// The API key bucket, created if missing. Not part of [`Bus::ensure`]: only the auth
    /// service and the `mcplane keys` admin may touch it (the generated NATS permissions deny
    /// every other service its JetStream API), so only they create it. A few versions per key
    /// are kept so an operator can see when a key was revoked; records never expire by age
    /// (a key's own `expires_at` does that).
    pub async fn ensure_keys_bucket(&self) -> Result<kv::Store, ServiceError> {
        self.ensure_bucket(&self.subjects.keys_bucket(), Duration::ZERO, 8)
            .await
    }

    fn stream_config(&self, kind: StreamKind) -> stream::Config {
        let day = Duration::from_secs(24 * 3600);
        let (retention, max_age) = match kind {
            // A hand-off is done once its stage acked it.
            StreamKind::Pipeline => (stream::RetentionPolicy::WorkQueue, day),
            // Kept so that a correlator replica can rebuild its state by replaying.
            StreamKind::Alerts => (stream::RetentionPolicy::Limits, 7 * day),
            StreamKind::Incidents | StreamKind::Summaries | StreamKind::Usage => {
                (stream::RetentionPolicy::Limits, 7 * day)
            }
            // The audit chain can be rebuilt from here; keep it for as long as it is needed.
            StreamKind::Audit => (stream::RetentionPolicy::Limits, 365 * day),
        };
        stream::Config {
            name: self.subjects.stream_name(kind),
            subjects: self.subjects.stream_subjects(kind),
            retention,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: self.config.stream_replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// One of mcplane's streams, created with its standard configuration if missing.
    pub async fn ensure_stream(&self, kind: StreamKind) -> Result<stream::Stream, ServiceError> {
        self.js
            .get_or_create_stream(self.stream_config(kind))
            .await
            .map_err(|e| {
                ServiceError::bus(format!("stream {}: {e}", self.subjects.stream_name(kind)))
            })
    }

    async fn ensure_bucket(
        &self,
        bucket: &str,
        max_age: Duration,
        history: i64,
    ) -> Result<kv::Store, ServiceError> {
        if let Ok(store) = self.js.get_key_value(bucket).await {
            return Ok(store);
        }
        self.js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: self.config.stream_replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ServiceError::bus(format!("kv bucket {bucket}: {e}")))
    }

    /// A KV bucket created by [`Bus::ensure`].
    pub async fn bucket(&self, bucket: &str) -> Result<kv::Store, ServiceError> {
        self.js
            .get_key_value(bucket)
            .await
            .map_err(|e| ServiceError::bus(format!("kv bucket {bucket}: {e}")))
    }

    /// A durable pull consumer on one of mcplane's streams, created or updated to `filters`.
    /// Replicas of a service share the durable, so each message goes to one of them.
    pub async fn durable_consumer(
        &self,
        kind: StreamKind,
        durable: &str,
        filters: Vec<String>,
    ) -> Result<consumer::PullConsumer, ServiceError> {
        let stream = self.ensure_stream(kind).await?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            filter_subjects: filters,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.config.ack_wait_secs),
            max_deliver: self.config.max_deliver,
            max_ack_pending: (self.config.batch_size as i64 * 8).max(1024),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        // create_consumer updates an existing durable whose config changed in an allowed way.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| ServiceError::bus(format!("consumer {durable}: {e}")))
    }

    /// The JetStream context, for callers that need the raw API.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
