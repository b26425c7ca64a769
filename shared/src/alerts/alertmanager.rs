//! Prometheus Alertmanager webhook payloads (version 4): one canonical alert per alert in the
//! notification group.
//!
//! The fingerprint is recomputed from the labels exactly as Alertmanager does rather than
//! trusted from the payload, so hand-written or replayed payloads dedup the same way as real
//! ones. `original` keeps the alert object plus the group fields that locate it in Alertmanager
//! (receiver, groupKey, externalURL, groupLabels); the common labels and annotations are
//! already inside every alert.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{first_of, invalid, unique_links, Fields};
use super::group::{self, GroupAlert};
use crate::body::alert::{CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "alertmanager";

/// The group fields copied into each alert's `original`.
const GROUP_FIELDS: &[&str] = &["receiver", "groupKey", "externalURL", "groupLabels"];

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let group = Fields::object(payload, "")?;
    if let Some(version) = group.opt_str("version")? {
        if version != "4" {
            return Err(invalid(
                "version",
                &format!("unsupported Alertmanager webhook version {version:?}; expected \"4\""),
            ));
        }
    }
    group::alerts(&group, GROUP_FIELDS)?
        .into_iter()
        .map(|alert| one(tenant, alert, received_at))
        .collect()
}

fn one(
    tenant: &str,
    alert: GroupAlert<'_>,
    received_at: DateTime<Utc>,
) -> Result<CanonicalAlert, ErrorBody> {
    let labels = &alert.labels;
    let fingerprint = alert.label_fingerprint();
    let severity = Severity::from_label(labels.get("severity").map_or("", String::as_str));
    let service = first_of(labels, &["service", "job", "app"]).unwrap_or("unknown");
    let resource = first_of(labels, &["instance", "pod", "host"]).map(str::to_string);
    let summary = alert.summary(&fingerprint);
    let starts_at = alert.fields.opt_time("startsAt")?.unwrap_or(received_at);
    let ends_at = alert.fields.opt_time("endsAt")?;
    let links = unique_links([
        alert.fields.opt_str("generatorURL")?,
        first_of(&alert.annotations, &["runbook_url"]),
    ]);
    Ok(CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint,
        status: alert.status,
        severity,
        service: service.to_string(),
        resource,
        summary,
        starts_at,
        ends_at,
        links,
        original: alert.original,
        labels: alert.labels,
        annotations: alert.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::alert::AlertStatus;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2024-05-14T09:15:00Z".parse().unwrap()
    }

    fn payload(alert: Value) -> Value {
        json!({"version": "4", "status": "firing", "receiver": "mcplane", "alerts": [alert]})
    }

    #[test]
    fn fingerprint_is_alertmanagers_label_set_fingerprint() {
        let p = payload(json!({
            "labels": {"name": "garland, briggs", "fear": "love is not enough"},
        }));
        let alerts = normalize("acme", &p, at()).unwrap();
        assert_eq!(alerts[0].fingerprint, "507a62d79ee76c9a");
        // Unknown service and resource, summary falls back to the fingerprint.
        assert_eq!(alerts[0].service, "unknown");
        assert_eq!(alerts[0].resource, None);
        assert_eq!(alerts[0].summary, "alert 507a62d79ee76c9a");
        assert_eq!(alerts[0].starts_at, at());
        assert_eq!(alerts[0].severity, Severity::Warning);
    }

    #[test]
    fn fields_fall_back_in_the_documented_order() {
        let p = payload(json!({
            "status": "resolved",
            "labels": {"alertname": "Down", "job": "api", "pod": "api-0", "severity": "page"},
            "annotations": {"description": "api is down", "runbook_url": "https://rb/down"},
            "startsAt": "2024-05-14T09:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://prom/graph",
        }));
        let a = &normalize("acme", &p, at()).unwrap()[0];
        assert_eq!(a.status, AlertStatus::Resolved);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.service, "api");
        assert_eq!(a.resource.as_deref(), Some("api-0"));
        assert_eq!(a.summary, "api is down");
        assert_eq!(a.ends_at, None);
        assert_eq!(a.links, vec!["https://prom/graph", "https://rb/down"]);
        assert_eq!(a.original["receiver"], "mcplane");
        assert_eq!(a.original["alert"]["labels"]["job"], "api");
    }

    #[test]
    fn invalid_payloads_name_the_bad_field() {
        let cases = [
            (json!([]), "payload:"),
            (json!({"alerts": []}), "alerts:"),
            (json!({"version": "3", "alerts": [{}]}), "version:"),
            (payload(json!("x")), "alerts[0]:"),
            (payload(json!({"labels": {}})), "alerts[0].labels:"),
            (payload(json!({"labels": {"a": 1}})), "alerts[0].labels.a:"),
            (
                payload(json!({"labels": {"a": "b"}, "status": "on"})),
                "alerts[0].status:",
            ),
            (
                json!({"alerts": [{"labels": {"a": "b"}}]}),
                "alerts[0].status:",
            ),
            (
                payload(json!({"labels": {"a": "b"}, "startsAt": "today"})),
                "alerts[0].startsAt:",
            ),
            (
                payload(json!({"labels": {"a": "b"}, "generatorURL": 5})),
                "alerts[0].generatorURL:",
            ),
        ];
        for (p, prefix) in cases {
            let e = normalize("acme", &p, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{p}: {}", e.message);
        }
    }
}
