//! The generic JSON alert format, for anything that can POST JSON: one object or an array.
//!
//! ```json
//! {
//!   "title": "Disk almost full",            // required
//!   "service": "search",                    // required
//!   "severity": "warning",                  // critical|high|warning|info (and common synonyms); default warning
//!   "status": "firing",                     // firing|resolved; default firing
//!   "fingerprint": "disk-search-1",         // optional; default: FNV-1a 64 of source, service and title
//!   "resource": "search-1",                 // optional; default: labels instance|pod|host
//!   "description": "92% used on /var",      // optional; kept as annotation `description`
//!   "labels": {"team": "search"},           // optional, string values
//!   "annotations": {"runbook_url": "..."},  // optional, string values
//!   "starts_at": "2024-05-14T09:00:00Z",    // optional RFC 3339; default: when received
//!   "ends_at": null,                        // optional RFC 3339
//!   "links": ["https://..."]                // optional
//! }
//! ```
//!
//! Unknown fields are rejected rather than ignored: a misspelt `sevrity` silently becoming
//! `warning` is worse than a 422 that names it. Extra facts belong in `labels` or `annotations`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{first_of, invalid, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "generic";

/// Every field the format knows.
pub const FIELDS: &[&str] = &[
    "title",
    "service",
    "severity",
    "status",
    "fingerprint",
    "resource",
    "description",
    "labels",
    "annotations",
    "starts_at",
    "ends_at",
    "links",
];

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    match payload {
        Value::Array(items) if items.is_empty() => Err(invalid(
            "",
            "an array of alerts must hold at least one alert",
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                one(
                    tenant,
                    &Fields::object(item, format!("[{i}]"))?,
                    received_at,
                )
            })
            .collect(),
        other => Ok(vec![one(tenant, &Fields::object(other, "")?, received_at)?]),
    }
}

fn one(
    tenant: &str,
    alert: &Fields<'_>,
    received_at: DateTime<Utc>,
) -> Result<CanonicalAlert, ErrorBody> {
    alert.deny_unknown(FIELDS)?;
    let title = alert.req_str("title")?.trim();
    let service = alert.req_str("service")?.trim();
    let severity = alert
        .opt_str("severity")?
        .map_or(Severity::Warning, Severity::from_label);
    let status = match alert.opt_str("status")? {
        None | Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        Some(_) => {
            return Err(invalid(
                &alert.path_of("status"),
                "must be \"firing\" or \"resolved\"",
            ))
        }
    };
    let labels = alert.string_map("labels")?;
    let mut annotations = alert.string_map("annotations")?;
    if let Some(description) = alert.opt_str("description")? {
        annotations
            .entry("description".to_string())
            .or_insert_with(|| description.to_string());
    }
    let fingerprint = match alert.opt_str("fingerprint")? {
        Some(f) => f.trim().to_string(),
        None => fingerprint::to_hex(fingerprint::label_set([
            ("source", SOURCE),
            ("service", service),
            ("title", title),
        ])),
    };
    let resource = match alert.opt_str("resource")? {
        Some(r) => Some(r.trim().to_string()),
        None => first_of(&labels, &["instance", "pod", "host"]).map(str::to_string),
    };
    let starts_at = alert.opt_time("starts_at")?.unwrap_or(received_at);
    let ends_at = alert.opt_time("ends_at")?;
    let mut links: Vec<String> = Vec::new();
    for (i, link) in alert.opt_array("links")?.into_iter().flatten().enumerate() {
        match link {
            Value::String(s) if !s.trim().is_empty() => links.push(s.trim().to_string()),
            _ => {
                return Err(invalid(
                    &format!("{}[{i}]", alert.path_of("links")),
                    "must be a non-empty string",
                ))
            }
        }
    }
    if let Some(runbook) = first_of(&annotations, &["runbook_url"]) {
        if !links.iter().any(|l| l == runbook) {
            links.push(runbook.to_string());
        }
    }

    Ok(CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint,
        status,
        severity,
        service: service.to_string(),
        resource,
        summary: title.to_string(),
        labels,
        annotations,
        starts_at,
        ends_at,
        links,
        original: Value::Object(alert.map.clone()),
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
    fn minimal_alert_gets_the_documented_defaults() {
        let a = &normalize(
            "acme",
            &json!({"title": "Disk full", "service": "search"}),
            at(),
        )
        .unwrap()[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.severity, Severity::Warning);
        assert_eq!(a.starts_at, at());
        assert_eq!(a.summary, "Disk full");
        let expected = fingerprint::label_set([
            ("service", "search"),
            ("source", "generic"),
            ("title", "Disk full"),
        ]);
        assert_eq!(a.fingerprint, fingerprint::to_hex(expected));
    }

    #[test]
    fn an_array_gives_one_alert_each_and_errors_carry_the_index() {
        let ok = json!([{"title": "a", "service": "s"}, {"title": "b", "service": "s", "fingerprint": "fp-b"}]);
        let alerts = normalize("acme", &ok, at()).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[1].fingerprint, "fp-b");

        let bad = json!([{"title": "a", "service": "s"}, {"title": "b"}]);
        let e = normalize("acme", &bad, at()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAlert);
        assert!(e.message.starts_with("[1].service:"), "{}", e.message);
    }

    #[test]
    fn invalid_payloads_name_the_bad_field() {
        let cases = [
            (json!("text"), "payload:"),
            (json!([]), "payload:"),
            (json!({"service": "s"}), "title:"),
            (json!({"title": "t", "service": ""}), "service:"),
            (
                json!({"title": "t", "service": "s", "sevrity": "high"}),
                "sevrity:",
            ),
            (
                json!({"title": "t", "service": "s", "status": "open"}),
                "status:",
            ),
            (
                json!({"title": "t", "service": "s", "labels": {"x": 1}}),
                "labels.x:",
            ),
            (
                json!({"title": "t", "service": "s", "starts_at": "soon"}),
                "starts_at:",
            ),
            (
                json!({"title": "t", "service": "s", "links": ["ok", 3]}),
                "links[1]:",
            ),
        ];
        for (p, prefix) in cases {
            let e = normalize("acme", &p, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{p}: {}", e.message);
        }
    }
}
