//! Alert formats: each monitoring tool's payload becomes canonical alerts in exactly one
//! function per format. The gateway calls [`normalize`] to reject malformed payloads at the
//! edge; the correlator calls it to normalise what arrives on `mcplane.alerts.in.>`.

use chrono::{DateTime, Utc};

use crate::body::alert::CanonicalAlert;
use crate::error::{ErrorBody, ErrorCode};

/// The sources mcplane accepts, as they appear in `POST /v1/alerts/{source}` and in
/// `mcplane.alerts.in.<tenant>.<source>`.
pub const SOURCES: &[&str] = &["alertmanager", "generic"];

/// Whether `source` is a known alert source.
pub fn is_known_source(source: &str) -> bool {
    SOURCES.contains(&source)
}

/// Normalises one payload from `source` into canonical alerts (a webhook may carry several).
pub fn normalize(
    source: &str,
    tenant: &str,
    payload: &serde_json::Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let _ = (tenant, payload, received_at);
    Err(ErrorBody::new(
        ErrorCode::UnknownSource,
        format!("unknown alert source {source:?}"),
    ))
}
