//! One realistic payload per provider format (written from each provider's public webhook
//! documentation, in `tests/fixtures/alerts/<name>.<source>.json`) mapped to the canonical
//! alert, field by field. The golden files cover whole payloads; these state the mapping.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use mcplane_shared::alerts::{self, cloudwatch, fingerprint};
use mcplane_shared::{AlertStatus, CanonicalAlert, Severity};
use serde_json::Value;

const RECEIVED: &str = "2024-05-14T09:15:00Z";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn normalize(name: &str) -> Vec<CanonicalAlert> {
    let source = name.trim_end_matches(".json").rsplit('.').next().unwrap();
    alerts::normalize(
        source,
        "acme",
        &fixture(&format!("alerts/{name}")),
        time(RECEIVED),
    )
    .unwrap_or_else(|e| panic!("{name}: {}", e.message))
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_fixture_source_is_covered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts");
    let mut seen: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .map(|n| {
            n.trim_end_matches(".json")
                .rsplit('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    seen.sort();
    seen.dedup();
    let mut known: Vec<String> = alerts::SOURCES.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(seen, known);
}

#[test]
fn alertmanager_webhook_maps_field_by_field() {
    let alerts = normalize("checkout-errors-and-latency.alertmanager.json");
    assert_eq!(alerts.len(), 2);
    let a = &alerts[0];
    assert_eq!(a.source, "alertmanager");
    assert_eq!(a.tenant, "acme");
    // Alertmanager's own fingerprint for this label set, as it sent it.
    assert_eq!(a.fingerprint, "0e84718984ed7030");
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.service, "checkout");
    assert_eq!(a.resource.as_deref(), Some("10.42.3.17:8080"));
    assert_eq!(a.summary, "Checkout 5xx error rate is 7.3% (threshold 5%)");
    assert_eq!(a.labels["alertname"], "CheckoutHighErrorRate");
    assert_eq!(a.labels.len(), 10);
    assert_eq!(
        a.annotations["runbook_url"],
        "https://runbooks.example.com/checkout/high-error-rate"
    );
    assert_eq!(a.starts_at, time("2024-05-14T09:12:03.417Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(a.links.len(), 2);
    assert!(a.links[0].starts_with("https://prometheus.prod.example.com/graph"));
    assert_eq!(a.original["receiver"], "mcplane");
    assert_eq!(
        a.original["alert"]["labels"]["alertname"],
        "CheckoutHighErrorRate"
    );
}

#[test]
fn datadog_monitor_trigger_maps_field_by_field() {
    let [a] = &normalize("checkout-p99-latency.datadog.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.source, "datadog");
    assert_eq!(a.tenant, "acme");
    let expected = fingerprint::label_set([
        ("source", "datadog"),
        ("monitor_id", "148812093"),
        ("alert_scope", "env:prod,service:checkout"),
    ]);
    assert_eq!(a.fingerprint, fingerprint::to_hex(expected));
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.severity, Severity::High, "P2");
    assert_eq!(a.service, "checkout");
    assert_eq!(a.resource, None, "no hostname in a service-scoped monitor");
    assert_eq!(a.summary, "Checkout p99 latency above 1.5s");
    assert_eq!(
        a.labels,
        map(&[
            ("env", "prod"),
            ("monitor", ""),
            ("service", "checkout"),
            ("team", "commerce"),
            ("monitor_id", "148812093"),
            ("alert_scope", "env:prod,service:checkout"),
            ("alert_transition", "Triggered"),
            ("alert_type", "error"),
            ("event_type", "query_alert_monitor"),
            ("org", "Example Retail"),
        ])
    );
    assert!(a.annotations["description"].contains("p99 latency of `trace.http.request`"));
    assert_eq!(a.starts_at, time("2024-05-14T09:10:12Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(
        a.links,
        vec![
            "https://app.datadoghq.com/event/event?id=7316218914812345678",
            "https://p.datadoghq.com/snapshot/view/dd-snapshots-prod/org_12345/2024-05-14/abc123.png"
        ]
    );
    assert_eq!(a.original["alert_cycle_key"], "7316218914812345001");
}

#[test]
fn datadog_recovery_resolves_the_same_fingerprint() {
    let fired = &normalize("checkout-p99-latency.datadog.json")[0];
    let [a] = &normalize("checkout-p99-latency-recovered.datadog.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.fingerprint, fired.fingerprint);
    assert_eq!(a.status, AlertStatus::Resolved);
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.service, "checkout");
    assert_eq!(a.labels["alert_transition"], "Recovered");
    assert_eq!(a.starts_at, time("2024-05-14T09:30:12Z"));
    assert_eq!(a.ends_at, Some(time("2024-05-14T09:30:12Z")));
}

#[test]
fn pagerduty_trigger_maps_field_by_field() {
    let [a] = &normalize("checkout-card-declines.pagerduty.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.source, "pagerduty");
    assert_eq!(a.tenant, "acme");
    assert_eq!(a.fingerprint, "checkout-card-declines-eu", "the dedup_key");
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.service, "checkout");
    assert_eq!(a.resource.as_deref(), Some("checkout-7d9f8b6c5-x2k4p"));
    assert_eq!(a.summary, "Card declines above 20% on checkout (eu-west-1)");
    assert_eq!(
        a.labels,
        map(&[
            ("pagerduty_action", "trigger"),
            ("component", "checkout"),
            ("group", "commerce-prod"),
            ("class", "payment-errors"),
            ("client", "Sentry"),
        ])
    );
    assert_eq!(
        a.annotations,
        map(&[
            ("decline_rate", "0.23"),
            ("region", "eu-west-1"),
            ("psp", "adyen"),
            ("service", "checkout"),
        ])
    );
    assert_eq!(a.starts_at, time("2024-05-14T09:11:30.412Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(
        a.links,
        vec![
            "https://sentry.example.com/organizations/example/issues/4512/",
            "https://runbooks.example.com/commerce/checkout#card-declines",
        ]
    );
    assert_eq!(a.original["routing_key"], "<redacted>");
    assert_eq!(a.original["payload"]["class"], "payment-errors");
}

#[test]
fn pagerduty_acknowledge_and_resolve_carry_only_the_key() {
    let [ack] = &normalize("checkout-card-declines-acknowledge.pagerduty.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(ack.fingerprint, "checkout-card-declines-eu");
    assert_eq!(
        ack.status,
        AlertStatus::Firing,
        "acknowledged is still happening"
    );
    assert_eq!(ack.labels["pagerduty_action"], "acknowledge");
    assert_eq!(ack.service, "unknown", "looked up by the correlator");
    assert_eq!(ack.starts_at, time(RECEIVED));
    let [res] = &normalize("checkout-card-declines-resolve.pagerduty.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(res.fingerprint, "checkout-card-declines-eu");
    assert_eq!(res.status, AlertStatus::Resolved);
    assert_eq!(res.summary, "resolve checkout-card-declines-eu");
    assert_eq!(res.ends_at, Some(time(RECEIVED)));
    assert!(res.links.is_empty());
}

#[test]
fn cloudwatch_alarm_via_sns_maps_field_by_field() {
    let [a] = &normalize("checkout-ecs-cpu-high.cloudwatch.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.source, "cloudwatch");
    assert_eq!(a.tenant, "acme");
    let expected = fingerprint::label_set([
        ("source", "cloudwatch"),
        (
            "alarm_arn",
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:checkout-ecs-cpu-high",
        ),
    ]);
    assert_eq!(a.fingerprint, fingerprint::to_hex(expected));
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(
        a.severity,
        Severity::Critical,
        "severity=critical in the description"
    );
    assert_eq!(a.service, "checkout", "the ECS ServiceName dimension");
    assert_eq!(
        a.resource.as_deref(),
        Some("prod-commerce"),
        "the ClusterName dimension"
    );
    assert_eq!(
        a.summary,
        "checkout-ecs-cpu-high: Checkout tasks above 85% CPU for 3 minutes. severity=critical"
    );
    assert_eq!(
        a.labels,
        map(&[
            ("alarm_name", "checkout-ecs-cpu-high"),
            ("state", "ALARM"),
            ("old_state", "OK"),
            ("account_id", "123456789012"),
            ("region", "eu-west-1"),
            ("namespace", "AWS/ECS"),
            ("metric_name", "CPUUtilization"),
            ("dimension_ClusterName", "prod-commerce"),
            ("dimension_ServiceName", "checkout"),
        ])
    );
    assert!(a.annotations["reason"].starts_with("Threshold Crossed: 3 out of the last 3"));
    assert_eq!(a.starts_at, time("2024-05-14T09:10:12.345Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(
        a.links,
        vec!["https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#alarmsV2:alarm/checkout-ecs-cpu-high"]
    );
    let sns = &a.original["sns"];
    assert_eq!(sns["Type"], "Notification");
    assert_eq!(sns["MessageId"], "5e2c1f0a-7c8b-5d1e-9f3a-1b2c3d4e5f60");
    assert_eq!(sns["SignatureVersion"], "1");
    assert!(sns["SigningCertURL"].as_str().unwrap().ends_with(".pem"));
    assert_eq!(a.original["alarm"]["Trigger"]["Threshold"], 85.0);
}

#[test]
fn cloudwatch_ok_resolves_an_rds_alarm() {
    let [a] = &normalize("payments-db-connections-ok.cloudwatch.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.status, AlertStatus::Resolved);
    assert_eq!(a.severity, Severity::High);
    assert_eq!(
        a.service, "payments-db",
        "the DBInstanceIdentifier dimension"
    );
    assert_eq!(
        a.resource, None,
        "the only dimension already names the service"
    );
    assert_eq!(a.ends_at, Some(time("2024-05-14T09:31:05.007Z")));
}

#[test]
fn sns_subscription_confirmation_is_recognised_not_normalised() {
    let payload = fixture("sns/subscription-confirmation.json");
    let sns = cloudwatch::sns(&payload).unwrap().unwrap();
    assert_eq!(sns.kind, cloudwatch::SnsType::SubscriptionConfirmation);
    assert_eq!(
        sns.topic_arn,
        "arn:aws:sns:eu-west-1:123456789012:mcplane-alarms"
    );
    assert!(cloudwatch::is_aws_https(&sns.subscribe_url.unwrap()));
    let e = alerts::normalize("cloudwatch", "acme", &payload, time(RECEIVED)).unwrap_err();
    assert!(e.message.starts_with("Type:"), "{}", e.message);
}

#[test]
fn grafana_alerting_webhook_maps_field_by_field() {
    let [a] = &normalize("inventory-sync-lag.grafana.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.source, "grafana");
    assert_eq!(a.tenant, "acme");
    assert_eq!(
        a.fingerprint, "a3f1c5e9d2b74860",
        "Grafana's own fingerprint"
    );
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.severity, Severity::Warning);
    assert_eq!(a.service, "inventory");
    assert_eq!(a.resource, None);
    assert_eq!(a.summary, "Inventory sync lagging for ams-2");
    assert_eq!(
        a.labels,
        map(&[
            ("alertname", "InventorySyncLag"),
            ("grafana_folder", "Fulfilment"),
            ("service", "inventory"),
            ("severity", "warning"),
            ("warehouse", "ams-2"),
        ])
    );
    assert_eq!(a.annotations.len(), 3);
    assert_eq!(a.starts_at, time("2024-05-14T09:06:00Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(
        a.links,
        vec![
            "https://grafana.example.com/d/inv-sync?orgId=1",
            "https://grafana.example.com/d/inv-sync?orgId=1&viewPanel=4",
            "https://grafana.example.com/alerting/grafana/edz3x0ab1cdefa/view?orgId=1",
            "https://runbooks.example.com/fulfilment/inventory#sync-lag",
        ]
    );
    assert_eq!(a.original["orgId"], 1);
    assert_eq!(a.original["alert"]["values"]["B"], 842.0);
}

#[test]
fn generic_json_maps_field_by_field() {
    let [a] = &normalize("search-disk-filling.generic.json")[..] else {
        panic!("one alert")
    };
    assert_eq!(a.source, "generic");
    assert_eq!(a.tenant, "acme");
    let expected = fingerprint::label_set([
        ("source", "generic"),
        ("service", "search"),
        (
            "title",
            "Disk /var/lib/elasticsearch 91% full on search-data-2",
        ),
    ]);
    assert_eq!(a.fingerprint, fingerprint::to_hex(expected));
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.service, "search");
    assert_eq!(a.resource.as_deref(), Some("search-data-2"));
    assert_eq!(
        a.summary,
        "Disk /var/lib/elasticsearch 91% full on search-data-2"
    );
    assert_eq!(
        a.labels,
        map(&[
            ("team", "search"),
            ("env", "prod"),
            ("volume", "/var/lib/elasticsearch")
        ])
    );
    assert!(a.annotations["description"].starts_with("At the current write rate"));
    assert_eq!(a.starts_at, time("2024-05-14T09:13:10Z"));
    assert_eq!(a.ends_at, None);
    assert_eq!(a.links.len(), 2);
    assert_eq!(a.original["severity"], "high");
}
