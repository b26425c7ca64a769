//! Alerts as monitoring tools send them, and in mcplane's canonical form.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::envelope::{BodyKind, Envelope, Kind, TraceContext};

/// An alert payload exactly as the monitoring tool sent it, with the source it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RawAlert {
    /// `alertmanager`, `datadog`, `pagerduty`, `cloudwatch`, `grafana` or `generic`.
    pub source: String,
    pub payload: serde_json::Value,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub received_at: DateTime<Utc>,
}

impl BodyKind for RawAlert {
    const KIND: Kind = Kind::RawAlert;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Normalised severity, most severe first (so `Ord` sorts critical before info).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// Maps the severity words monitoring tools use; unknown words are `warning`.
    pub fn from_label(value: &str) -> Severity {
        match value.trim().to_ascii_lowercase().as_str() {
            "critical" | "crit" | "fatal" | "emergency" | "disaster" | "p1" | "sev1" | "page" => {
                Severity::Critical
            }
            "high" | "error" | "err" | "major" | "p2" | "sev2" => Severity::High,
            "info" | "informational" | "low" | "none" | "ok" | "p5" | "debug" => Severity::Info,
            _ => Severity::Warning,
        }
    }
}

/// An alert in mcplane's canonical form; the original payload is kept alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CanonicalAlert {
    pub source: String,
    pub tenant: String,
    /// Stable identity of the alert across repeats (for Prometheus alerts, the same FNV-1a 64
    /// fingerprint Alertmanager computes, as 16 hex digits).
    pub fingerprint: String,
    pub status: AlertStatus,
    pub severity: Severity,
    /// The service the alert is about (from a `service` label or the source's equivalent).
    pub service: String,
    /// The resource within the service (instance, host, pod), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub summary: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub starts_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// The provider payload this alert was normalised from.
    pub original: serde_json::Value,
}

impl BodyKind for CanonicalAlert {
    const KIND: Kind = Kind::Alert;
}

/// Canonical alerts that fall on one partition: what the correlator's ingest publishes on
/// `mcplane.alerts.part.<n>.<tenant>`. The alerts of one raw message, or, under load, those of
/// several raw messages pulled together, so that a source sending alerts together (an
/// Alertmanager group, a generic array) and many sources at once cost the bus and the partition
/// owner one message, one ack and one decode for many alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertBatch {
    /// At least one, in the order of the raw messages.
    pub alerts: Vec<BatchedAlert>,
    /// Empty when the alerts are those of one raw message (the message's `Nats-Msg-Id` names
    /// them). Otherwise each raw message's run of `alerts`, in order, together covering them
    /// all: the partition owner applies and records each on its own, so a raw message delivered
    /// again and gathered with others is still recognised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<AlertSegment>,
}

/// One raw message's run of alerts in an [`AlertBatch`] that gathers several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertSegment {
    /// The run's name, what its message's msg id would be were it alone
    /// (`<raw id or seq-N>:p<partition>[+<first alert>]:normalize`): the owner's ledger key.
    pub key: String,
    /// How many of the batch's alerts, following those of the segments before it (at least one).
    pub alerts: usize,
    /// The raw message's trace, which its alerts carry on.
    pub trace: TraceContext,
}

/// One alert of an [`AlertBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchedAlert {
    /// The alert's own id (UUIDv7): an incident it opens is named after it, as after a single
    /// alert's envelope id.
    pub id: Uuid,
    pub alert: CanonicalAlert,
}

impl BodyKind for AlertBatch {
    const KIND: Kind = Kind::AlertBatch;
}

impl Envelope<AlertBatch> {
    /// Each alert in an envelope of its own (the batch's tenant, trace and principal, the
    /// alert's id).
    pub fn into_alerts(self) -> impl Iterator<Item = Envelope<CanonicalAlert>> {
        let Envelope {
            id: _,
            tenant,
            kind: _,
            time,
            trace,
            principal,
            classification,
            itinerary,
            reply_to,
            credential,
            body,
        } = self;
        body.alerts.into_iter().map(move |a| Envelope {
            id: a.id,
            tenant: tenant.clone(),
            kind: Kind::Alert,
            time,
            trace: trace.clone(),
            principal: principal.clone(),
            classification,
            itinerary: itinerary.clone(),
            reply_to: reply_to.clone(),
            credential: credential.clone(),
            body: a.alert,
        })
    }
}
