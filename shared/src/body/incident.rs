//! Incidents: correlated groups of alerts, their lifecycle events and their summaries.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::body::alert::{AlertStatus, Severity};
use crate::envelope::{BodyKind, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentEventKind {
    Opened,
    Updated,
    Resolved,
}

impl IncidentEventKind {
    /// The last token of `mcplane.incidents.<tenant>.<event>`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentEventKind::Opened => "opened",
            IncidentEventKind::Updated => "updated",
            IncidentEventKind::Resolved => "resolved",
        }
    }
}

/// One distinct alert inside an incident (repeats are counted, not listed again).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct IncidentAlert {
    pub fingerprint: String,
    pub source: String,
    pub service: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub summary: String,
    /// How many times this alert has been received.
    pub count: u32,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub last_seen: DateTime<Utc>,
    /// Changing state too often to be told about each change (see the correlator's flap
    /// damping); its changes stop updating the incident until it settles.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
}

/// A change in an incident's life, published on `mcplane.incidents.<tenant>.<event>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentEvent {
    pub incident_id: String,
    pub tenant: String,
    pub event: IncidentEventKind,
    /// Increases with every material change; summaries and notifications are keyed by it.
    pub revision: u32,
    pub service: String,
    /// Every service with an alert in the incident (several when the CMDB topology joined
    /// alerts of dependent services), sorted.
    #[serde(default)]
    pub services: Vec<String>,
    /// The probable root cause: the deepest dependency, per the CMDB, that is alerting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    pub severity: Severity,
    pub title: String,
    /// The incident's alerts, all of them while they are few: past a hundred (or about
    /// 256 KiB of them), the headline alert and those seen most recently, in the incident's
    /// order. An alert storm must not make an event larger than the bus carries (NATS'
    /// `max_payload`, 1 MiB by default), nor each event cost as much as the whole storm.
    pub alerts: Vec<IncidentAlert>,
    /// How many distinct alerts the incident holds, listed in `alerts` or not. 0 in events
    /// written before this field existed: `alerts` held them all then.
    #[serde(default)]
    pub alert_count: u32,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub opened_at: DateTime<Utc>,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub updated_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub resolved_at: Option<DateTime<Utc>>,
}

impl BodyKind for IncidentEvent {
    const KIND: Kind = Kind::Incident;
}

/// An incident summary for the people on call, published on
/// `mcplane.summaries.<tenant>.<severity>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentSummary {
    pub incident_id: String,
    pub tenant: String,
    pub revision: u32,
    pub severity: Severity,
    pub service: String,
    pub title: String,
    /// The summary text (AI-written, or assembled without AI when `degraded`).
    pub summary: String,
    pub alert_count: u32,
    /// True when no model was available and the summary was assembled without AI.
    pub degraded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

impl BodyKind for IncidentSummary {
    const KIND: Kind = Kind::Summary;
}
