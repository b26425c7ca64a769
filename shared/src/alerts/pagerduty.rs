//! PagerDuty Events API v2 events (`trigger`, `acknowledge`, `resolve`), so any tool that can
//! send to PagerDuty (Alertmanager's `pagerduty_configs`, Datadog, CloudWatch via PagerDuty's
//! integrations, scripts) can send to mcplane by changing the URL.
//!
//! Identity is the `dedup_key`, exactly as PagerDuty uses it: an `acknowledge` or `resolve`
//! carries only the key, so it finds its alert by fingerprint (the correlator remembers which
//! service a key belongs to; see `ingest`). A `trigger` without a key gets a deterministic one
//! from what it is about, so a repeated trigger deduplicates. `acknowledge` keeps the alert
//! firing (a person is on it; the problem is not gone) and is recorded as a label.
//! The `routing_key` is an integration secret: it is checked for presence and then masked in
//! the kept original.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{invalid, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "pagerduty";

/// What the service of an `acknowledge`/`resolve` without a payload is until the correlator
/// looks up the key's trigger.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Label naming the Events API action that produced the alert.
pub const ACTION_LABEL: &str = "pagerduty_action";

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let event = Fields::object(payload, "")?;
    event.req_str("routing_key")?;
    let action = event.req_str("event_action")?;
    let status = match action {
        "trigger" | "acknowledge" => AlertStatus::Firing,
        "resolve" => AlertStatus::Resolved,
        _ => {
            return Err(invalid(
                "event_action",
                "must be \"trigger\", \"acknowledge\" or \"resolve\"",
            ))
        }
    };
    let dedup_key = event.opt_str("dedup_key")?.map(str::trim);
    let body = event.opt_object("payload")?;
    if action != "trigger" && dedup_key.is_none() {
        return Err(invalid(
            "dedup_key",
            &format!("is required for event_action {action:?}"),
        ));
    }
    let mut labels = BTreeMap::new();
    labels.insert(ACTION_LABEL.to_string(), action.to_string());
    let mut annotations = BTreeMap::new();
    let (summary, severity, service, resource, starts_at) = match &body {
        Some(p) => {
            let summary = p.req_str("summary")?.trim();
            let source = p.req_str("source")?.trim();
            let severity = match p.req_str("severity")? {
                s @ ("critical" | "error" | "warning" | "info") => Severity::from_label(s),
                _ => {
                    return Err(invalid(
                        "payload.severity",
                        "must be \"critical\", \"error\", \"warning\" or \"info\"",
                    ))
                }
            };
            let mut service = None;
            for name in ["component", "group", "class"] {
                if let Some(v) = p.opt_str(name)? {
                    labels.insert(name.to_string(), v.trim().to_string());
                }
            }
            if let Some(details) = p.opt_object("custom_details")? {
                for (k, v) in details.map {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    annotations.insert(k.clone(), text);
                }
                service = details.opt_str("service")?.map(|s| s.trim().to_string());
            }
            let service = service
                .or_else(|| labels.get("component").cloned())
                .or_else(|| labels.get("group").cloned())
                .unwrap_or_else(|| source.to_string());
            let starts_at = p.opt_time("timestamp")?.unwrap_or(received_at);
            (
                summary.to_string(),
                severity,
                service,
                Some(source.to_string()),
                starts_at,
            )
        }
        None if action == "trigger" => {
            return Err(invalid(
                "payload",
                "is required for event_action \"trigger\"",
            ))
        }
        None => (
            format!("{action} {}", dedup_key.unwrap_or_default()),
            Severity::Info,
            UNKNOWN_SERVICE.to_string(),
            None,
            received_at,
        ),
    };
    if let Some(client) = event.opt_str("client")? {
        labels.insert("client".to_string(), client.trim().to_string());
    }
    let fingerprint = match dedup_key {
        Some(k) => k.to_string(),
        None => fingerprint::to_hex(fingerprint::label_set([
            ("source", SOURCE),
            ("service", service.as_str()),
            ("resource", resource.as_deref().unwrap_or("")),
            ("summary", summary.as_str()),
        ])),
    };
    let mut links = Vec::new();
    if let Some(url) = event.opt_str("client_url")? {
        links.push(url.trim().to_string());
    }
    for (i, link) in event.opt_array("links")?.into_iter().flatten().enumerate() {
        let l = Fields::object(link, format!("links[{i}]"))?;
        let href = l.req_str("href")?.trim().to_string();
        if !links.contains(&href) {
            links.push(href);
        }
    }
    let mut original = payload.clone();
    if let Some(key) = original.get_mut("routing_key") {
        *key = Value::String("<redacted>".to_string());
    }

    Ok(vec![CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint,
        status,
        severity,
        service,
        resource,
        summary,
        labels,
        annotations,
        starts_at,
        ends_at: (status == AlertStatus::Resolved).then_some(received_at),
        links,
        original,
    }])
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
    fn resolve_with_only_a_key_targets_the_trigger() {
        let trigger = json!({"routing_key": "R0123456789abcdef0123456789abcdef",
            "event_action": "trigger", "dedup_key": "disk-7",
            "payload": {"summary": "disk", "source": "h1", "severity": "error",
                        "custom_details": {"service": "payments", "free_pct": 3}}});
        let resolve = json!({"routing_key": "R0123456789abcdef0123456789abcdef",
            "event_action": "resolve", "dedup_key": "disk-7"});
        let t = &normalize("acme", &trigger, at()).unwrap()[0];
        let r = &normalize("acme", &resolve, at()).unwrap()[0];
        assert_eq!(t.fingerprint, "disk-7");
        assert_eq!(r.fingerprint, "disk-7");
        assert_eq!(t.service, "payments");
        assert_eq!(t.severity, Severity::High);
        assert_eq!(t.annotations["free_pct"], "3");
        assert_eq!(r.service, UNKNOWN_SERVICE);
        assert_eq!(r.status, AlertStatus::Resolved);
        assert_eq!(t.original["routing_key"], "<redacted>");
    }

    #[test]
    fn a_trigger_without_a_key_gets_a_stable_one() {
        let p = json!({"routing_key": "r", "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "info"}});
        let a = normalize("acme", &p, at()).unwrap();
        let b = normalize("acme", &p, at()).unwrap();
        assert_eq!(a[0].fingerprint, b[0].fingerprint);
        assert_eq!(a[0].service, "h");
    }

    #[test]
    fn invalid_payloads_name_the_bad_field() {
        let p = |v: Value| v;
        for (payload, prefix) in [
            (json!([]), "payload:"),
            (json!({"event_action": "trigger"}), "routing_key:"),
            (p(json!({"routing_key": "r"})), "event_action:"),
            (
                json!({"routing_key": "r", "event_action": "snooze"}),
                "event_action:",
            ),
            (
                json!({"routing_key": "r", "event_action": "resolve"}),
                "dedup_key:",
            ),
            (
                json!({"routing_key": "r", "event_action": "trigger"}),
                "payload:",
            ),
            (
                json!({"routing_key": "r", "event_action": "trigger",
                       "payload": {"summary": "s", "source": "h", "severity": "bad"}}),
                "payload.severity:",
            ),
            (
                json!({"routing_key": "r", "event_action": "trigger",
                       "payload": {"source": "h", "severity": "info"}}),
                "payload.summary:",
            ),
            (
                json!({"routing_key": "r", "event_action": "resolve", "dedup_key": "k",
                       "links": [{"text": "x"}]}),
                "links[0].href:",
            ),
        ] {
            let e = normalize("acme", &payload, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{payload}: {}", e.message);
        }
    }
}
