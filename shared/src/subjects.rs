//! Every subject, stream and bucket name, defined once under a configurable prefix.
//!
//! The tenant is a subject token wherever data belongs to a tenant, so NATS permissions can
//! isolate tenants. Tenants and sources are therefore validated as single subject tokens.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// The worker services, by the name used in subjects, durable consumers and data folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Gateway,
    Auth,
    Enrichment,
    Redaction,
    Model,
    Audit,
    Correlator,
    Notifier,
    KafkaBridge,
}

impl Service {
    pub const ALL: [Service; 8] = [
        Service::Gateway,
        Service::Auth,
        Service::Enrichment,
        Service::Redaction,
        Service::Model,
        Service::Audit,
        Service::Correlator,
        Service::Notifier,
    ];

    /// Workers that run only where they are configured (the Kafka bridge needs brokers and
    /// topics); `mcplane up` starts them when their section says so.
    pub const OPTIONAL: [Service; 1] = [Service::KafkaBridge];

    /// Every worker, the always-on ones and the optional ones.
    pub fn every() -> impl Iterator<Item = Service> {
        Self::ALL.into_iter().chain(Self::OPTIONAL)
    }

    /// The service named `name` (as in `mcplane run <name>`).
    pub fn from_name(name: &str) -> Option<Service> {
        Self::every().find(|s| s.as_str() == name)
    }

    /// Whether the service answers its probes on the `[telemetry] listen` endpoint. The
    /// gateway does not: it answers `/healthz` and `/readyz` on its own HTTP address, and it
    /// has no consume loop for the endpoint's readiness to wait for.
    pub fn serves_worker_probes(self) -> bool {
        self != Service::Gateway
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::Enrichment => "enrichment",
            Service::Redaction => "redaction",
            Service::Model => "model",
            Service::Audit => "audit",
            Service::Correlator => "correlator",
            Service::Notifier => "notifier",
            Service::KafkaBridge => "kafka-bridge",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant id or alert source must be one subject token: 1 to 64 of `[a-z0-9_-]`.
pub fn validate_token(value: &str) -> Result<(), ErrorCode> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidRequest)
    }
}

/// The JetStream streams mcplane creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Requests and stage hand-offs (work queue: a message is gone once its stage acked it).
    Pipeline,
    /// Raw alerts in, partitioned canonical alerts, summary replies for the correlator.
    Alerts,
    /// Incident lifecycle events.
    Incidents,
    /// Incident summaries for chat integrations and the notifier.
    Summaries,
    /// Audit events from every stage: the source the audit chain can be rebuilt from.
    Audit,
    /// Budget alerts and other usage events, per tenant.
    Usage,
}

impl StreamKind {
    pub const ALL: [StreamKind; 6] = [
        StreamKind::Pipeline,
        StreamKind::Alerts,
        StreamKind::Incidents,
        StreamKind::Summaries,
        StreamKind::Audit,
        StreamKind::Usage,
    ];
}

/// Subject and resource names under one prefix (default `mcplane`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new(crate::DEFAULT_PREFIX)
    }
}

impl Subjects {
    /// `prefix` must be one token of `[a-z0-9_-]` (it also names streams and KV buckets);
    /// [`crate::config::BusConfig::validate`] checks it before this is called.
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    // ---- requests --------------------------------------------------------------------------

    /// Unauthenticated requests, from the gateway or a bus-native client, for the auth service.
    pub fn requests_submit(&self) -> String {
        format!("{}.requests.submit", self.prefix)
    }

    /// A stage's input for one tenant: `mcplane.stage.<service>.<tenant>`.
    pub fn stage(&self, service: Service, tenant: &str) -> String {
        format!("{}.stage.{}.{}", self.prefix, service, tenant)
    }

    /// A stage's input across tenants (a consumer filter).
    pub fn stage_all(&self, service: Service) -> String {
        format!("{}.stage.{}.*", self.prefix, service)
    }

    /// A service's own reply-inbox prefix (`_INBOX_mcplane-redaction`), outside `_INBOX.>`:
    /// replies to its requests (the token vault's KV reads) cannot be overheard by the other
    /// users, who may all subscribe to `_INBOX.>`.
    pub fn private_inbox(&self, service: Service) -> String {
        format!("_INBOX_{}-{}", self.prefix, service)
    }

    /// Core request/reply: resolve a bearer credential to a principal (used by the gateway for
    /// alert webhooks, answered by the auth service's queue group).
    pub fn auth_resolve(&self) -> String {
        format!("{}.auth.resolve", self.prefix)
    }

    /// Whether a reply subject is one of mcplane's own stream subjects (published durably
    /// through JetStream) rather than a client's core inbox.
    pub fn is_internal(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    // ---- alerts and incidents (user-facing names fixed by DESIGN.md) ------------------------

    /// `mcplane.alerts.in.<tenant>.<source>`: where monitoring tools publish.
    pub fn alerts_in(&self, tenant: &str, source: &str) -> String {
        format!("{}.alerts.in.{}.{}", self.prefix, tenant, source)
    }

    pub fn alerts_in_all(&self) -> String {
        format!("{}.alerts.in.>", self.prefix)
    }

    /// `mcplane.alerts.dead.<tenant>.<source>`: records a bridge could never turn into an alert
    /// (not JSON, not the source's format), with a coded error, for an operator to inspect.
    /// Outside `alerts.in`, so the correlator never consumes them.
    pub fn alerts_dead_letter(&self, tenant: &str, source: &str) -> String {
        format!("{}.alerts.dead.{}.{}", self.prefix, tenant, source)
    }

    pub fn alerts_dead_letter_all(&self) -> String {
        format!("{}.alerts.dead.>", self.prefix)
    }

    /// Canonical alerts keyed onto partition `n`: `mcplane.alerts.part.<n>.<tenant>`.
    pub fn alerts_partition(&self, partition: u32, tenant: &str) -> String {
        format!("{}.alerts.part.{}.{}", self.prefix, partition, tenant)
    }

    pub fn alerts_partition_all(&self, partition: u32) -> String {
        format!("{}.alerts.part.{}.*", self.prefix, partition)
    }

    /// Where a summary request's result comes back to the partition that asked for it.
    pub fn incident_summary_reply(&self, partition: u32, tenant: &str) -> String {
        format!("{}.alerts.summary.{}.{}", self.prefix, partition, tenant)
    }

    pub fn incident_summary_reply_all(&self, partition: u32) -> String {
        format!("{}.alerts.summary.{}.*", self.prefix, partition)
    }

    /// `mcplane.incidents.<tenant>.<event>`.
    pub fn incidents(&self, tenant: &str, event: &str) -> String {
        format!("{}.incidents.{}.{}", self.prefix, tenant, event)
    }

    /// `mcplane.summaries.<tenant>.<severity>`.
    pub fn summaries(&self, tenant: &str, severity: &str) -> String {
        format!("{}.summaries.{}.{}", self.prefix, tenant, severity)
    }

    pub fn summaries_all(&self) -> String {
        format!("{}.summaries.>", self.prefix)
    }

    // ---- audit -------------------------------------------------------------------------------

    /// `mcplane.audit.<tenant>`: every stage's audit events.
    pub fn audit(&self, tenant: &str) -> String {
        format!("{}.audit.{}", self.prefix, tenant)
    }

    /// `mcplane.audit.checkpoints.<tenant>`: signed checkpoints of a tenant's chain (kept in
    /// the audit stream, outside the `audit.*` events the audit service consumes).
    pub fn audit_checkpoint(&self, tenant: &str) -> String {
        format!("{}.audit.checkpoints.{}", self.prefix, tenant)
    }

    pub fn audit_all(&self) -> String {
        format!("{}.audit.*", self.prefix)
    }

    // ---- streams and buckets -----------------------------------------------------------------

    pub fn stream_name(&self, kind: StreamKind) -> String {
        let base = match kind {
            StreamKind::Pipeline => "PIPELINE",
            StreamKind::Alerts => "ALERTS",
            StreamKind::Incidents => "INCIDENTS",
            StreamKind::Summaries => "SUMMARIES",
            StreamKind::Audit => "AUDIT",
            StreamKind::Usage => "USAGE",
        };
        format!(
            "{}_{}",
            self.prefix.to_ascii_uppercase().replace('-', "_"),
            base
        )
    }

    pub fn stream_subjects(&self, kind: StreamKind) -> Vec<String> {
        let p = &self.prefix;
        match kind {
            StreamKind::Pipeline => vec![format!("{p}.requests.>"), format!("{p}.stage.>")],
            StreamKind::Alerts => vec![format!("{p}.alerts.>")],
            StreamKind::Incidents => vec![format!("{p}.incidents.>")],
            StreamKind::Summaries => vec![format!("{p}.summaries.>")],
            StreamKind::Audit => vec![format!("{p}.audit.>")],
            StreamKind::Usage => vec![format!("{p}.usage.>")],
        }
    }

    /// Versioned live configuration (routing rules, policies), by name: `mcplane config push`
    /// writes it, running services watch it and switch atomically.
    pub fn config_bucket(&self) -> String {
        format!("{}-config", self.prefix)
    }

    /// Model spend per tenant and window (`<tenant>.day.<date>`, `<tenant>.month.<yyyy-mm>`),
    /// reserved and settled with compare-and-set so replicas never overspend together.
    pub fn budgets_bucket(&self) -> String {
        format!("{}-budgets", self.prefix)
    }

    /// Core request/reply: the models the model service can route to (for `GET /v1/models`).
    pub fn model_catalog(&self) -> String {
        format!("{}.model.catalog", self.prefix)
    }

    /// `mcplane.svc.<service>.<endpoint>`: a worker's own endpoints on the bus (`status`,
    /// `metrics`), next to the standard `$SRV.*` micro-service API.
    pub fn service_endpoint(&self, service: Service, endpoint: &str) -> String {
        format!("{}.svc.{}.{}", self.prefix, service, endpoint)
    }

    /// `mcplane.usage.<tenant>.<event>`: budget alerts for a tenant's operators.
    pub fn usage(&self, tenant: &str, event: &str) -> String {
        format!("{}.usage.{}.{}", self.prefix, tenant, event)
    }

    /// Final results of requests, by request id, for `GET /v1/requests/{id}`.
    pub fn results_bucket(&self) -> String {
        format!("{}-results", self.prefix)
    }

    /// Originals of tokenised entities by `<tenant>.<request id>`, written by the redaction
    /// service on a request's way in and read (by any replica) on its way out; short-lived.
    pub fn redaction_vault_bucket(&self) -> String {
        format!("{}-redaction-vault", self.prefix)
    }

    /// API key records by key id (`key_<12 hex>`): digest, tenant, roles, expiry, revocation,
    /// never a key. `mcplane keys` writes it; every auth replica watches it into memory, so a
    /// key is valid, and a revocation felt, on every replica wherever it runs.
    pub fn keys_bucket(&self) -> String {
        format!("{}-keys", self.prefix)
    }

    /// Fleet-wide claims of once-only effects (model calls, Slack posts), keyed `<id>.<stage>`.
    pub fn claims_bucket(&self) -> String {
        format!("{}-claims", self.prefix)
    }

    /// The durable consumer name of a service (with a suffix such as a partition number).
    pub fn durable(&self, service: Service, suffix: &str) -> String {
        if suffix.is_empty() {
            service.as_str().to_string()
        } else {
            format!("{}-{}", service, suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_facing_subjects_match_the_design() {
        let s = Subjects::default();
        assert_eq!(
            s.alerts_in("acme", "alertmanager"),
            "mcplane.alerts.in.acme.alertmanager"
        );
        assert_eq!(
            s.incidents("acme", "opened"),
            "mcplane.incidents.acme.opened"
        );
        assert_eq!(
            s.summaries("acme", "critical"),
            "mcplane.summaries.acme.critical"
        );
        assert_eq!(
            s.alerts_dead_letter("acme", "generic"),
            "mcplane.alerts.dead.acme.generic"
        );
    }

    #[test]
    fn services_are_found_by_name() {
        assert_eq!(
            Service::from_name("kafka-bridge"),
            Some(Service::KafkaBridge)
        );
        assert_eq!(Service::from_name("notifier"), Some(Service::Notifier));
        assert_eq!(Service::from_name("kafka"), None);
        assert_eq!(Service::every().count(), 9);
    }

    #[test]
    fn prefix_changes_every_name() {
        let s = Subjects::new("mcp-test");
        assert_eq!(s.stage(Service::Model, "t1"), "mcp-test.stage.model.t1");
        assert_eq!(s.stream_name(StreamKind::Pipeline), "MCP_TEST_PIPELINE");
        assert_eq!(s.results_bucket(), "mcp-test-results");
        assert_eq!(s.keys_bucket(), "mcp-test-keys");
        assert!(s.is_internal("mcp-test.alerts.summary.0.t1"));
        assert!(!s.is_internal("mcp-testx.alerts"));
        assert!(!s.is_internal("_INBOX.abc"));
    }

    #[test]
    fn tokens_are_single_subject_tokens() {
        assert!(validate_token("acme-1_b").is_ok());
        for bad in ["", "a.b", "a*", ">", "A", "a b", &"x".repeat(65)] {
            assert!(validate_token(bad).is_err(), "{bad:?}");
        }
    }
}
