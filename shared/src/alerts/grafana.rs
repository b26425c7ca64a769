//! Grafana (unified) alerting webhooks: the Alertmanager webhook shape with Grafana's
//! additions (`orgId`, `title`, `state`, per-alert `dashboardURL`, `panelURL`, `silenceURL`,
//! `values`, `valueString`), `version` "1".
//!
//! Grafana's alerts carry the fingerprint Grafana's embedded Alertmanager computed (the same
//! FNV-1a label-set hash); it is kept when present so fingerprints match Grafana's UI, and
//! recomputed from the labels otherwise. Field fallbacks match the Alertmanager format.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::fields::{first_of, invalid, unique_links, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "grafana";

/// The group fields copied into each alert's `original`.
const GROUP_FIELDS: &[&str] = &[
    "receiver",
    "groupKey",
    "externalURL",
    "groupLabels",
    "orgId",
    "title",
    "state",
];

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let group = Fields::object(payload, "")?;
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
    let status = match alert.opt_str("status")?.or(group_status) {
        Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        _ => {
            return Err(invalid(
                &alert.path_of("status"),
                "must be \"firing\" or \"resolved\"",
            ))
        }
    };
    let fingerprint = match alert.opt_str("fingerprint")? {
        Some(f) => f.trim().to_string(),
        None => fingerprint::to_hex(fingerprint::label_set(
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )),
    };
    let severity = Severity::from_label(first_of(&labels, &["severity", "priority"]).unwrap_or(""));
    let service =
        first_of(&labels, &["service", "job", "app", "grafana_folder"]).unwrap_or("unknown");
    let resource = first_of(&labels, &["instance", "pod", "host"]).map(str::to_string);
    let summary = first_of(&annotations, &["summary", "description"])
        .or_else(|| first_of(&labels, &["alertname"]))
        .map(str::to_string)
        .unwrap_or_else(|| format!("alert {fingerprint}"));
    let starts_at = alert.opt_time("startsAt")?.unwrap_or(received_at);
    let ends_at = match status {
        AlertStatus::Resolved => alert.opt_time("endsAt")?,
        AlertStatus::Firing => None,
    };
    let links = unique_links([
        alert.opt_str("dashboardURL")?,
        alert.opt_str("panelURL")?,
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

    #[test]
    fn without_grafanas_fingerprint_the_label_set_hash_is_used() {
        let p = json!({"status": "firing", "alerts": [{"labels": {"name": "garland, briggs", "fear": "love is not enough"}}]});
        assert_eq!(
            normalize("acme", &p, at()).unwrap()[0].fingerprint,
            "507a62d79ee76c9a"
        );
    }

    #[test]
    fn invalid_payloads_name_the_bad_field() {
        for (p, prefix) in [
            (json!(1), "payload:"),
            (json!({"alerts": []}), "alerts:"),
            (json!({"alerts": [{"labels": {}}]}), "alerts[0].labels:"),
            (
                json!({"alerts": [{"labels": {"a": "b"}}]}),
                "alerts[0].status:",
            ),
            (
                json!({"status": "firing", "alerts": [{"labels": {"a": "b"}, "panelURL": 1}]}),
                "alerts[0].panelURL:",
            ),
        ] {
            let e = normalize("acme", &p, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{p}: {}", e.message);
        }
    }
}
