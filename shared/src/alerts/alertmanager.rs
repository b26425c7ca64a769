//! Prometheus Alertmanager webhook payloads (version 4): one canonical alert per alert in the
//! notification group.
//!
//! The fingerprint is recomputed from the labels exactly as Alertmanager does rather than
//! trusted from the payload, so hand-written or replayed payloads dedup the same way as real
//! ones. `original` keeps the alert object plus the group fields that locate it in Alertmanager
//! (receiver, groupKey, externalURL, groupLabels); the common labels and annotations are
//! already inside every alert.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::fields::{first_of, invalid, unique_links, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
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
    let group_status = group.opt_str("status")?;
    let alerts = group
        .opt_array("alerts")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("alerts", "is required and must hold at least one alert"))?;
    let mut context = Map::new();
    for name in GROUP_FIELDS {
        if let Some(v) = group.map.get(*name).filter(|v| !v.is_null()) {
            context.insert((*name).to_string(), v.clone());
        }
    }
    alerts
        .iter()
        .enumerate()
        .map(|(i, alert)| {
            let fields = Fields::object(alert, format!("alerts[{i}]"))?;
            one(tenant, &fields, group_status, &context, received_at)
        })
        .collect()
}

fn one(
    tenant: &str,
    alert: &Fields<'_>,
    group_status: Option<&str>,
    context: &Map<String, Value>,
    received_at: DateTime<Utc>,
) -> Result<CanonicalAlert, ErrorBody> {
    let labels = alert.string_map("labels")?;
    if labels.is_empty() {
        return Err(invalid(
            &alert.path_of("labels"),
            "is required and must hold at least one label",
        ));
    }
    let annotations = alert.string_map("annotations")?;
    let status_field = if alert.opt_str("status")?.is_some() {
        alert.path_of("status")
    } else {
        "status".to_string()
    };
    let status = match alert.opt_str("status")?.or(group_status) {
        Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        Some(_) => return Err(invalid(&status_field, "must be \"firing\" or \"resolved\"")),
        None => {
            return Err(invalid(
                &alert.path_of("status"),
                "is required (\"firing\" or \"resolved\")",
            ))
        }
    };
    let fingerprint = fingerprint::to_hex(fingerprint::label_set(
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ));
    let severity = Severity::from_label(labels.get("severity").map_or("", String::as_str));
    let service = first_of(&labels, &["service", "job", "app"]).unwrap_or("unknown");
    let resource = first_of(&labels, &["instance", "pod", "host"]).map(str::to_string);
    let summary = first_of(&annotations, &["summary", "description"])
        .or_else(|| first_of(&labels, &["alertname"]))
        .map(str::to_string)
        .unwrap_or_else(|| format!("alert {fingerprint}"));
    let starts_at = alert.opt_time("startsAt")?.unwrap_or(received_at);
    let ends_at = alert.opt_time("endsAt")?;
    let links = unique_links([
        alert.opt_str("generatorURL")?,
        first_of(&annotations, &["runbook_url"]),
    ]);
    let mut original = context.clone();
    original.insert("alert".to_string(), Value::Object(alert.map.clone()));

    Ok(CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint,
        status,
        severity,
        service: service.to_string(),
        resource,
        summary,
        labels,
        annotations,
        starts_at,
        ends_at,
        links,
        original: Value::Object(original),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
