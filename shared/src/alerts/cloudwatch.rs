//! AWS CloudWatch alarm state changes, delivered by an SNS topic's HTTPS subscription (or the
//! bare alarm message, for tools that unwrap SNS before publishing on the bus).
//!
//! The SNS envelope is checked structurally: its type, ids, topic ARN, signature version,
//! base64 signature and a signing-certificate URL on an `amazonaws.com` host over HTTPS. The
//! signature itself is not verified cryptographically (that needs the certificate fetched and
//! an X.509 stack); the SNS fields are kept in `original.sns` so a verifier can do it later.
//! A `SubscriptionConfirmation` is not an alert: the gateway confirms it (see [`Sns`]).
//!
//! Identity is the alarm ARN. `ALARM` fires, `OK` resolves, `INSUFFICIENT_DATA` fires at `info`.
//! CloudWatch has no severity, so an alarm is `high` unless its description carries a
//! `severity=<word>` token. The service is the `ServiceName`/`Service`/`service` dimension,
//! else the Lambda `FunctionName`, else the RDS instance or cluster.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::fields::{invalid, Fields};
use super::fingerprint;
use crate::body::alert::{AlertStatus, CanonicalAlert, Severity};
use crate::error::ErrorBody;

pub const SOURCE: &str = "cloudwatch";

/// Dimensions naming the service, in order of preference.
const SERVICE_DIMENSIONS: &[&str] = &[
    "ServiceName",
    "Service",
    "service",
    "FunctionName",
    "DBInstanceIdentifier",
    "DBClusterIdentifier",
];
/// Dimensions naming the resource within the service, in order of preference.
const RESOURCE_DIMENSIONS: &[&str] = &[
    "InstanceId",
    "DBInstanceIdentifier",
    "LoadBalancer",
    "TargetGroup",
    "ClusterName",
    "QueueName",
    "TableName",
    "AutoScalingGroupName",
];
/// The SNS fields kept in `original.sns`.
const SNS_FIELDS: &[&str] = &[
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
    "SubscribeURL",
    "Token",
];

/// The kind of SNS message a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// A structurally valid SNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sns {
    pub kind: SnsType,
    pub message_id: String,
    pub topic_arn: String,
    /// The URL to GET to confirm a subscription (`SubscriptionConfirmation` only).
    pub subscribe_url: Option<String>,
    pub message: String,
}

/// Parses `payload` as an SNS message: `Ok(None)` when it is not one (no `Type` and no
/// `TopicArn`), an `invalid_alert` naming the field when it claims to be one but is malformed.
pub fn sns(payload: &Value) -> Result<Option<Sns>, ErrorBody> {
    let f = Fields::object(payload, "")?;
    if !f.map.contains_key("Type") && !f.map.contains_key("TopicArn") {
        return Ok(None);
    }
    let kind = match f.req_str("Type")? {
        "Notification" => SnsType::Notification,
        "SubscriptionConfirmation" => SnsType::SubscriptionConfirmation,
        "UnsubscribeConfirmation" => SnsType::UnsubscribeConfirmation,
        _ => {
            return Err(invalid(
                "Type",
                "must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
            ))
        }
    };
    let message_id = f.req_str("MessageId")?.to_string();
    let topic_arn = f.req_str("TopicArn")?.to_string();
    if !topic_arn.starts_with("arn:aws:sns:") && !topic_arn.starts_with("arn:aws-") {
        return Err(invalid(
            "TopicArn",
            "must be an SNS topic ARN (arn:aws:sns:...)",
        ));
    }
    f.req_str("Timestamp")?;
    f.opt_time("Timestamp")?;
    if !matches!(f.req_str("SignatureVersion")?, "1" | "2") {
        return Err(invalid("SignatureVersion", "must be \"1\" or \"2\""));
    }
    let signature = f.req_str("Signature")?;
    if !is_base64(signature) {
        return Err(invalid("Signature", "must be base64"));
    }
    let cert = f.req_str("SigningCertURL")?;
    if !is_aws_https(cert) || !cert.ends_with(".pem") {
        return Err(invalid(
            "SigningCertURL",
            "must be an https URL of a .pem on an amazonaws.com host",
        ));
    }
    let subscribe_url = f.opt_str("SubscribeURL")?.map(str::to_string);
    if kind == SnsType::SubscriptionConfirmation {
        f.req_str("SubscribeURL")?;
        f.req_str("Token")?;
    }
    let message = f.req_str("Message")?.to_string();
    Ok(Some(Sns {
        kind,
        message_id,
        topic_arn,
        subscribe_url,
        message,
    }))
}

/// Whether `url` is `https://<something>.amazonaws.com[:port]/...`.
pub fn is_aws_https(url: &str) -> bool {
    url_host(url, "https").is_some_and(|h| h.ends_with(".amazonaws.com"))
}

/// The host of `url` when its scheme is `scheme` (no user info allowed).
pub fn url_host<'u>(url: &'u str, scheme: &str) -> Option<&'u str> {
    let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    Some(host)
}

fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

pub fn normalize(
    tenant: &str,
    payload: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<CanonicalAlert>, ErrorBody> {
    let (alarm_value, sns_fields) = match sns(payload)? {
        Some(s) if s.kind != SnsType::Notification => {
            return Err(invalid(
                "Type",
                "an SNS subscription message carries no alarm; the gateway confirms it",
            ))
        }
        Some(s) => {
            let alarm: Value = serde_json::from_str(&s.message)
                .map_err(|_| invalid("Message", "must be a CloudWatch alarm as JSON text"))?;
            let mut kept = Map::new();
            for name in SNS_FIELDS {
                if let Some(v) = payload.get(*name) {
                    kept.insert((*name).to_string(), v.clone());
                }
            }
            (alarm, Some(kept))
        }
        None => (payload.clone(), None),
    };
    let path = if sns_fields.is_some() { "Message" } else { "" };
    let alarm = Fields::object(&alarm_value, path)?;
    let name = alarm.req_str("AlarmName")?.trim();
    let arn = alarm.req_str("AlarmArn")?.trim();
    let state = alarm.req_str("NewStateValue")?;
    let (status, default_severity) = match state {
        "ALARM" => (AlertStatus::Firing, Severity::High),
        "OK" => (AlertStatus::Resolved, Severity::High),
        "INSUFFICIENT_DATA" => (AlertStatus::Firing, Severity::Info),
        _ => {
            return Err(invalid(
                &alarm.path_of("NewStateValue"),
                "must be ALARM, OK or INSUFFICIENT_DATA",
            ))
        }
    };
    let description = alarm.opt_str("AlarmDescription")?.map(str::trim);
    let severity = description
        .and_then(|d| {
            d.split_whitespace()
                .find_map(|w| w.strip_prefix("severity="))
                .map(|w| Severity::from_label(w.trim_matches(|c: char| !c.is_alphanumeric())))
        })
        .unwrap_or(default_severity);

    let mut labels = BTreeMap::new();
    labels.insert("alarm_name".to_string(), name.to_string());
    labels.insert("state".to_string(), state.to_string());
    if let Some(old) = alarm.opt_str("OldStateValue")? {
        labels.insert("old_state".to_string(), old.to_string());
    }
    if let Some(account) = alarm.opt_str("AWSAccountId")? {
        labels.insert("account_id".to_string(), account.to_string());
    }
    // arn:aws:cloudwatch:<region>:<account>:alarm:<name>
    let region = arn.split(':').nth(3).filter(|r| !r.is_empty());
    if let Some(r) = region {
        labels.insert("region".to_string(), r.to_string());
    }
    let mut dimensions = BTreeMap::new();
    if let Some(trigger) = alarm.opt_object("Trigger")? {
        for (field, label) in [("Namespace", "namespace"), ("MetricName", "metric_name")] {
            if let Some(v) = trigger.opt_str(field)? {
                labels.insert(label.to_string(), v.to_string());
            }
        }
        for (i, d) in trigger
            .opt_array("Dimensions")?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let d = Fields::object(d, format!("{}[{i}]", trigger.path_of("Dimensions")))?;
            let value = d.req_str("value")?.to_string();
            dimensions.insert(d.req_str("name")?.to_string(), value);
        }
    }
    let pick = |names: &[&str]| names.iter().find_map(|n| dimensions.get(*n).cloned());
    let service = pick(SERVICE_DIMENSIONS).unwrap_or_else(|| "unknown".to_string());
    let resource = RESOURCE_DIMENSIONS
        .iter()
        .filter_map(|n| dimensions.get(*n))
        .find(|v| **v != service)
        .cloned();
    for (k, v) in &dimensions {
        labels.insert(format!("dimension_{k}"), v.clone());
    }

    let mut annotations = BTreeMap::new();
    if let Some(d) = description {
        annotations.insert("description".to_string(), d.to_string());
    }
    if let Some(reason) = alarm.opt_str("NewStateReason")? {
        annotations.insert("reason".to_string(), reason.trim().to_string());
    }
    let changed_at = alarm.opt_time("StateChangeTime")?.unwrap_or(received_at);
    let links = region
        .map(|r| {
            vec![format!(
                "https://{r}.console.aws.amazon.com/cloudwatch/home?region={r}#alarmsV2:alarm/{}",
                percent_encode(name)
            )]
        })
        .unwrap_or_default();
    let mut original = Map::new();
    original.insert("alarm".to_string(), alarm_value.clone());
    if let Some(s) = sns_fields {
        original.insert("sns".to_string(), Value::Object(s));
    }

    Ok(vec![CanonicalAlert {
        source: SOURCE.to_string(),
        tenant: tenant.to_string(),
        fingerprint: fingerprint::to_hex(fingerprint::label_set([
            ("source", SOURCE),
            ("alarm_arn", arn),
        ])),
        status,
        severity,
        service,
        resource,
        summary: description
            .filter(|d| !d.is_empty())
            .map_or_else(|| name.to_string(), |d| format!("{name}: {d}")),
        labels,
        annotations,
        starts_at: changed_at,
        ends_at: (status == AlertStatus::Resolved).then_some(changed_at),
        links,
        original: Value::Object(original),
    }])
}

/// Percent-encodes everything but unreserved characters (alarm names may hold spaces).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2024-05-14T09:15:00Z".parse().unwrap()
    }

    fn alarm(state: &str) -> Value {
        json!({"AlarmName": "checkout 5xx", "AlarmArn": "arn:aws:cloudwatch:eu-west-1:1:alarm:checkout 5xx",
               "NewStateValue": state, "StateChangeTime": "2024-05-14T09:10:12.345+0000",
               "Trigger": {"Dimensions": [{"name": "ServiceName", "value": "checkout"},
                                          {"name": "ClusterName", "value": "prod"}]}})
    }

    fn envelope(kind: &str, message: &Value) -> Value {
        json!({"Type": kind, "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-1:1:alarms",
               "Timestamp": "2024-05-14T09:10:13.001Z", "SignatureVersion": "1",
               "Signature": "c2lnbmF0dXJl", "Message": message.to_string(),
               "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
               "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
               "Token": "t"})
    }

    #[test]
    fn alarm_and_ok_share_the_arn_fingerprint_with_or_without_sns() {
        let fire = &normalize("acme", &envelope("Notification", &alarm("ALARM")), at()).unwrap()[0];
        let ok = &normalize("acme", &alarm("OK"), at()).unwrap()[0];
        assert_eq!(fire.fingerprint, ok.fingerprint);
        assert_eq!(fire.status, AlertStatus::Firing);
        assert_eq!(ok.status, AlertStatus::Resolved);
        assert_eq!(fire.service, "checkout");
        assert_eq!(fire.resource.as_deref(), Some("prod"));
        assert_eq!(fire.original["sns"]["MessageId"], "m-1");
        assert!(ok.original.get("sns").is_none());
        assert!(
            fire.links[0].ends_with("alarm/checkout%205xx"),
            "{:?}",
            fire.links
        );
    }

    #[test]
    fn sns_envelopes_are_checked_structurally() {
        let good = envelope("SubscriptionConfirmation", &json!("hello"));
        let s = sns(&good).unwrap().unwrap();
        assert_eq!(s.kind, SnsType::SubscriptionConfirmation);
        assert!(s.subscribe_url.unwrap().contains("ConfirmSubscription"));
        assert!(normalize("acme", &good, at()).is_err());
        assert_eq!(sns(&alarm("OK")).unwrap(), None);
        for (field, value, prefix) in [
            ("Type", json!("Spam"), "Type:"),
            ("TopicArn", json!("topic"), "TopicArn:"),
            ("SignatureVersion", json!("3"), "SignatureVersion:"),
            ("Signature", json!("not base64!"), "Signature:"),
            (
                "SigningCertURL",
                json!("http://sns.eu-west-1.amazonaws.com/x.pem"),
                "SigningCertURL:",
            ),
            (
                "SigningCertURL",
                json!("https://evil.example.com/x.pem"),
                "SigningCertURL:",
            ),
            (
                "SigningCertURL",
                json!("https://a@sns.amazonaws.com/x.pem"),
                "SigningCertURL:",
            ),
            ("Timestamp", json!("noon"), "Timestamp:"),
            ("MessageId", Value::Null, "MessageId:"),
        ] {
            let mut bad = envelope("Notification", &alarm("ALARM"));
            bad[field] = value;
            let e = normalize("acme", &bad, at()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAlert);
            assert!(e.message.starts_with(prefix), "{field}: {}", e.message);
        }
        let mut bad = envelope("Notification", &alarm("ALARM"));
        bad["Message"] = json!("{not json");
        assert!(normalize("acme", &bad, at())
            .unwrap_err()
            .message
            .starts_with("Message:"));
        let mut bad = alarm("MAYBE");
        assert!(normalize("acme", &bad, at())
            .unwrap_err()
            .message
            .starts_with("NewStateValue:"));
        bad = envelope("Notification", &json!({"AlarmName": "x"}));
        assert!(normalize("acme", &bad, at())
            .unwrap_err()
            .message
            .starts_with("Message.AlarmArn:"));
    }

    #[test]
    fn hosts_are_parsed_strictly() {
        assert_eq!(
            url_host("https://sns.us-east-1.amazonaws.com/?a=b", "https"),
            Some("sns.us-east-1.amazonaws.com")
        );
        assert_eq!(
            url_host("http://127.0.0.1:8080/confirm", "http"),
            Some("127.0.0.1")
        );
        assert_eq!(
            url_host("https://x.amazonaws.com.evil.net/", "https"),
            Some("x.amazonaws.com.evil.net")
        );
        assert!(!is_aws_https("https://x.amazonaws.com.evil.net/"));
        assert!(!is_aws_https("https://amazonaws.com@evil.net/"));
    }
}
