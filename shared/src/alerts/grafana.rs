//! Grafana (unified) alerting webhooks: the Alertmanager webhook shape with Grafana's
//! additions (`orgId`, `title`, `state`, per-alert `dashboardURL`, `panelURL`, `silenceURL`,
//! `values`, `valueString`), `version` "1".
//!
//! Grafana's alerts carry the fingerprint Grafana's embedded Alertmanager computed (the same
//! FNV-1a label-set hash); it is kept when present so fingerprints match Grafana's UI, and
//! recomputed from the labels otherwise. Field fallbacks match the Alertmanager format.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{first_of, unique_links, Fields};
use super::group::{self, GroupAlert};
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
    let fingerprint = match alert.fields.opt_str("fingerprint")? {
        Some(f) => f.trim().to_string(),
        None => alert.label_fingerprint(),
    };
    let severity = Severity::from_label(first_of(labels, &["severity", "priority"]).unwrap_or(""));
    let service =
        first_of(labels, &["service", "job", "app", "grafana_folder"]).unwrap_or("unknown");
    let resource = first_of(labels, &["instance", "pod", "host"]).map(str::to_string);
    let summary = alert.summary(&fingerprint);
    let starts_at = alert.fields.opt_time("startsAt")?.unwrap_or(received_at);
    let ends_at = match alert.status {
        AlertStatus::Resolved => alert.fields.opt_time("endsAt")?,
        AlertStatus::Firing => None,
    };
    let links = unique_links([
        alert.fields.opt_str("dashboardURL")?,
        alert.fields.opt_str("panelURL")?,
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
