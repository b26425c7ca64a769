//! Alert formats: each monitoring tool's payload becomes canonical alerts in exactly one
//! function per format. The gateway calls [`normalize`] to reject malformed payloads at the
//! edge; the correlator calls it to normalise what arrives on `mcplane.alerts.in.>`.
//!
//! Formats are a closed set, so they are a `match` on the source name rather than a trait:
//! adding one means a module here, a line in [`SOURCES`] and its golden files.

pub mod alertmanager;
pub mod cloudwatch;
pub mod datadog;
mod fields;
pub mod fingerprint;
pub mod generic;
#[cfg(test)]
mod golden;
pub mod grafana;
mod group;
pub mod pagerduty;

use chrono::{DateTime, Utc};

use crate::body::alert::CanonicalAlert;
use crate::error::{ErrorBody, ErrorCode};

/// The sources mcplane accepts, as they appear in `POST /v1/alerts/{source}` and in
/// `mcplane.alerts.in.<tenant>.<source>`.
pub const SOURCES: &[&str] = &[
    alertmanager::SOURCE,
    datadog::SOURCE,
    pagerduty::SOURCE,
    cloudwatch::SOURCE,
    grafana::SOURCE,
    generic::SOURCE,
];

/// Whether `source` is a known alert source.
pub fn is_known_source(source: &str) -> bool {
    SOURCES.contains(&source)
}

/// Normalises one payload from `source` into canonical alerts (a webhook may carry several).
/// A payload that does not match its format is an `invalid_alert` error naming the field.
pub fn normalize(
    source: &str,
    tenant: &str,
    payload: &serde_json::Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    match source {
        alertmanager::SOURCE => alertmanager::normalize(tenant, payload, received_at),
        datadog::SOURCE => datadog::normalize(tenant, payload, received_at),
        pagerduty::SOURCE => pagerduty::normalize(tenant, payload, received_at),
        cloudwatch::SOURCE => cloudwatch::normalize(tenant, payload, received_at),
        grafana::SOURCE => grafana::normalize(tenant, payload, received_at),
        generic::SOURCE => generic::normalize(tenant, payload, received_at),
        _ => Err(ErrorBody::new(
            ErrorCode::UnknownSource,
            format!(
                "unknown alert source {source:?}; known sources: {}",
                SOURCES.join(", ")
            ),
        )),
    }
}
