//! Datadog monitor notifications sent by the Datadog Webhooks integration.
//!
//! Datadog's webhook payload is a template the user writes from `$VARIABLES`; mcplane expects
//! the template documented in the README (one JSON object per notification):
//!
//! ```json
//! {
//!   "id": "$ID", "title": "$EVENT_TITLE", "body": "$EVENT_MSG", "date": "$DATE",
//!   "last_updated": "$LAST_UPDATED", "event_type": "$EVENT_TYPE",
//!   "alert_id": "$ALERT_ID", "alert_transition": "$ALERT_TRANSITION",
//!   "alert_type": "$ALERT_TYPE", "alert_priority": "$ALERT_PRIORITY",
//!   "alert_scope": "$ALERT_SCOPE", "alert_cycle_key": "$ALERT_CYCLE_KEY",
//!   "hostname": "$HOSTNAME", "tags": "$TAGS", "link": "$LINK", "snapshot": "$SNAPSHOT",
//!   "org": {"id": "$ORG_ID", "name": "$ORG_NAME"}
//! }
//! ```
//!
//! Only `title` is required, so a trimmed template still works. Identity is the monitor and
//! its scope (`alert_id` + `alert_scope`), which is what stays the same between "Triggered",
//! "Re-Triggered", "Renotify" and "Recovered" for one monitor group.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{first_of, invalid, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "datadog";

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let event = Fields::object(payload, "")?;
    let title = event.req_str("title")?;
    let transition = event.opt_str("alert_transition")?;
    let alert_type = event.opt_str("alert_type")?;
    let recovered = matches!(transition, Some(t) if t.eq_ignore_ascii_case("recovered"))
        || matches!(alert_type, Some(t) if t.eq_ignore_ascii_case("success"));
    let status = if recovered {
        AlertStatus::Resolved
    } else {
        AlertStatus::Firing
    };

    let mut labels = tags(&event)?;
    let monitor = text_or_number(&event, "alert_id")?;
    let scope = event.opt_str("alert_scope")?;
    for (name, value) in [
        ("monitor_id", monitor.as_deref()),
        ("alert_scope", scope),
        ("alert_transition", transition),
        ("alert_type", alert_type),
        ("event_type", event.opt_str("event_type")?),
    ] {
        if let Some(v) = value {
            labels.insert(name.to_string(), v.to_string());
        }
    }
    if let Some(org) = event.opt_object("org")? {
        if let Some(name) = org.opt_str("name")? {
            labels.insert("org".to_string(), name.to_string());
        }
    }

    let severity = match event.opt_str("alert_priority")? {
        Some(p) => Severity::from_label(p),
        None => match alert_type.map(str::to_ascii_lowercase).as_deref() {
            Some("error") => Severity::High,
            Some("info") | Some("success") => Severity::Info,
            _ => Severity::Warning,
        },
    };
    let hostname = event.opt_str("hostname")?;
    let service = first_of(&labels, &["service", "app"])
        .or(hostname)
        .unwrap_or("unknown")
        .to_string();
    let resource = hostname
        .or_else(|| first_of(&labels, &["host", "pod_name", "kube_deployment"]))
        .map(str::to_string);
    let fingerprint = match (&monitor, scope) {
        (Some(m), scope) => fingerprint::to_hex(fingerprint::label_set([
            ("source", SOURCE),
            ("monitor_id", m.as_str()),
            ("alert_scope", scope.unwrap_or("")),
        ])),
        (None, _) => {
            let key = event.opt_str("aggreg_key")?.unwrap_or(strip_state(title));
            fingerprint::to_hex(fingerprint::label_set([
                ("source", SOURCE),
                ("key", key),
                ("service", service.as_str()),
            ]))
        }
    };
    let mut annotations = BTreeMap::new();
    if let Some(body) = event.opt_str("body")? {
        annotations.insert("description".to_string(), body.trim().to_string());
    }
    let mut links = Vec::new();
    for name in ["link", "snapshot"] {
        if let Some(l) = event.opt_str(name)? {
            links.push(l.trim().to_string());
        }
    }
    let starts_at = event
        .opt_epoch_ms_or_time("date")?
        .or(event.opt_epoch_ms_or_time("last_updated")?)
        .unwrap_or(received_at);
    let ends_at = match status {
        AlertStatus::Resolved => Some(
            event
                .opt_epoch_ms_or_time("last_updated")?
                .unwrap_or(starts_at),
        ),
        AlertStatus::Firing => None,
    };

    Ok(vec![CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint,
        status,
        severity,
        service,
        resource,
        summary: strip_state(title).to_string(),
        labels,
        annotations,
        starts_at,
        ends_at,
        links,
        original: payload.clone(),
    }])
}

/// `"[Triggered on {host:web-1}] CPU high"` → `"CPU high"`: the state prefix changes with every
/// transition, so it belongs in `alert_transition`, not in the summary.
fn strip_state(title: &str) -> &str {
    let t = title.trim();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            return rest[end + 2..].trim();
        }
    }
    t
}

/// `$ALERT_ID` is a number in some templates and a string in others.
fn text_or_number(event: &Fields<'_>, name: &str) -> Result<Option<String>, ErrorBody> {
    match event.map.get(name) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => Ok(event.opt_str(name)?.map(|s| s.trim().to_string())),
    }
}

/// `$TAGS` (`"env:prod,service:checkout,team:commerce"`, or an array of such strings) as labels;
/// a tag without a value becomes a label with an empty value.
fn tags(event: &Fields<'_>) -> Result<BTreeMap<String, String>, ErrorBody> {
    let list: Vec<&str> = match event.map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| invalid(&format!("tags[{i}]"), "must be a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                "tags",
                "must be a comma-separated string or an array of strings",
            ))
        }
    };
    Ok(list
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (t.to_string(), String::new()),
        })
        .collect())
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
    fn trigger_and_recovery_of_one_monitor_group_share_a_fingerprint() {
        let fire = json!({"title": "[Triggered on {host:a}] CPU high", "alert_id": 42,
            "alert_scope": "host:a", "alert_transition": "Triggered", "tags": "service:api"});
        let ok = json!({"title": "[Recovered on {host:a}] CPU high", "alert_id": "42",
            "alert_scope": "host:a", "alert_transition": "Recovered", "tags": ["service:api"]});
        let f = &normalize("acme", &fire, at()).unwrap()[0];
        let r = &normalize("acme", &ok, at()).unwrap()[0];
        assert_eq!(f.fingerprint, r.fingerprint);
        assert_eq!(
            (f.status, r.status),
            (AlertStatus::Firing, AlertStatus::Resolved)
        );
        assert_eq!(f.summary, "CPU high");
        assert_eq!(f.service, "api");
        assert_eq!(r.ends_at, Some(at()));
    }

    #[test]
    fn invalid_payloads_name_the_bad_field() {
        for (p, prefix) in [
            (json!([]), "payload:"),
            (json!({"body": "x"}), "title:"),
            (json!({"title": "t", "tags": 5}), "tags:"),
            (json!({"title": "t", "tags": ["a", 1]}), "tags[1]:"),
            (json!({"title": "t", "date": "yesterday"}), "date:"),
            (json!({"title": "t", "org": "x"}), "org:"),
        ] {
            let e = normalize("acme", &p, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{p}: {}", e.message);
        }
    }
}
