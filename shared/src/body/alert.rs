//! Alerts as monitoring tools send them, and in mcplane's canonical form.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{BodyKind, Kind};

/// An alert payload exactly as the monitoring tool sent it, with the source it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RawAlert {
    /// `alertmanager`, `datadog`, `pagerduty`, `cloudwatch`, `grafana` or `generic`.
    pub source: String,
    pub payload: serde_json::Value,
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
    pub starts_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// The provider payload this alert was normalised from.
    pub original: serde_json::Value,
}

impl BodyKind for CanonicalAlert {
    const KIND: Kind = Kind::Alert;
}
