//! Alerts from real feeds: a real Prometheus Alertmanager delivering to the gateway's webhook,
//! and the same alerts arriving three ways — webhook, bus subject and a Kafka topic through the
//! kafka-bridge (against a real tansu broker) — giving identical incidents.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{alerts, Envelope, IncidentEvent, RawAlert, Service};
use mcplane_testkit::{Alertmanager, KafkaBroker};
use mcplane_tests::{
    alertmanager_payload, eventually, stored_messages, wait_consumer_idle, TestFleet,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// The latest event of every incident of `tenant`, by incident id.
async fn incidents(tf: &TestFleet, tenant: &str) -> BTreeMap<String, IncidentEvent> {
    let bus = tf.bus().await;
    let mut out = BTreeMap::new();
    for m in stored_messages(
        &bus,
        StreamKind::Incidents,
        bus.subjects.incidents(tenant, "*"),
    )
    .await
    {
        let event = Envelope::<IncidentEvent>::from_slice(&m)
            .expect("incident event")
            .body;
        let newer = out
            .get(&event.incident_id)
            .is_none_or(|old: &IncidentEvent| old.revision <= event.revision);
        if newer {
            out.insert(event.incident_id.clone(), event);
        }
    }
    out
}

/// Waits until `tenant`'s incidents hold `distinct` different alerts (repeats are counted
/// inside the correlator without an event of their own), then returns them.
async fn settled_incidents(
    tf: &TestFleet,
    tenant: &str,
    distinct: usize,
) -> BTreeMap<String, IncidentEvent> {
    let found = eventually(DEADLINE, || async {
        let incidents = incidents(tf, tenant).await;
        let alerts: usize = incidents.values().map(|i| i.alerts.len()).sum();
        (alerts >= distinct).then_some(incidents)
    })
    .await;
    match found {
        Some(incidents) => incidents,
        None => panic!(
            "{tenant}: incidents never held {distinct} alerts: {:#?}",
            shape(&incidents(tf, tenant).await)
        ),
    }
}

/// Waits until the correlator has handled everything on the alert stream.
async fn correlator_idle(tf: &TestFleet, partitions: u32) {
    let bus = tf.bus().await;
    let mut durables = vec!["correlator-ingest".to_string()];
    durables.extend((0..partitions).map(|p| format!("correlator-p{p}")));
    for d in durables {
        assert!(
            wait_consumer_idle(&bus, StreamKind::Alerts, &d, DEADLINE).await,
            "{d} never became idle"
        );
    }
}

/// An incident without what legitimately differs between two deliveries (ids, times,
/// revisions): its service, severity, title and alerts with their counts.
fn shape(incidents: &BTreeMap<String, IncidentEvent>) -> BTreeSet<String> {
    incidents
        .values()
        .map(|i| {
            let alerts: BTreeSet<String> = i
                .alerts
                .iter()
                .map(|a| {
                    format!(
                        "{} {} {} {:?} {:?} {:?} x{}",
                        a.fingerprint,
                        a.source,
                        a.service,
                        a.status,
                        a.severity,
                        a.summary,
                        a.count
                    )
                })
                .collect();
            format!(
                "{} {:?} {:?} {:?} {alerts:?}",
                i.service, i.event, i.severity, i.title
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_delivers_alerts_that_become_incidents_with_its_fingerprints() {
    let mut tf = TestFleet::start(
        &[Service::Gateway, Service::Auth, Service::Correlator],
        |_| {},
    )
    .await;
    let am = Alertmanager::start(&format!(
        r#"
route:
  receiver: mcplane
  group_by: ['service']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: mcplane
    webhook_configs:
      - url: {base}/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {key}
"#,
        base = tf.base(),
        key = tf.user_key
    ));

    // What Alertmanager sends to the webhook, as the gateway publishes it (payload untouched).
    let bus = tf.bus().await;
    let mut delivered = bus
        .client
        .subscribe(bus.subjects.alerts_in("acme", "alertmanager"))
        .await
        .unwrap();

    let now = chrono::Utc::now().to_rfc3339();
    let posted = json!([
        {"labels": {"alertname": "HighLatency", "service": "checkout", "severity": "critical", "instance": "checkout-0:9100"},
         "annotations": {"summary": "p99 latency above 2s"}, "startsAt": now},
        {"labels": {"alertname": "ErrorRate", "service": "checkout", "severity": "high", "instance": "checkout-1:9100"},
         "annotations": {"summary": "5xx above 5%"}, "startsAt": now},
        {"labels": {"alertname": "DiskFull", "service": "search", "severity": "warning", "instance": "search-0:9100"},
         "annotations": {"summary": "disk 95% full"}, "startsAt": now},
    ]);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&posted)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    // Alertmanager groups by service: two webhooks, three alerts, each with its fingerprint.
    let mut sent_fingerprints = BTreeMap::new();
    let collected = tokio::time::timeout(DEADLINE, async {
        while sent_fingerprints.len() < 3 {
            let Some(m) = delivered.next().await else {
                break;
            };
            let env = Envelope::<RawAlert>::from_slice(&m.payload).expect("raw alert envelope");
            let payload = &env.body.payload;
            assert_eq!(payload["version"], "4", "{payload:#}");
            // mcplane's own fingerprint of each alert equals the one Alertmanager sent.
            let canonical =
                alerts::normalize("alertmanager", "acme", payload, env.body.received_at).unwrap();
            for (sent, ours) in payload["alerts"].as_array().unwrap().iter().zip(&canonical) {
                let theirs = sent["fingerprint"].as_str().unwrap().to_string();
                assert_eq!(
                    ours.fingerprint, theirs,
                    "fingerprint of {}",
                    sent["labels"]
                );
                sent_fingerprints.insert(theirs, ours.service.clone());
            }
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "Alertmanager delivered {} of 3 alerts; its log:\n{}",
        sent_fingerprints.len(),
        am.log()
    );

    // They become one incident per service, holding exactly Alertmanager's fingerprints.
    settled_incidents(&tf, "acme", 3).await;
    correlator_idle(&tf, 4).await;
    let incidents = incidents(&tf, "acme").await;
    let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in incidents.values() {
        let fps = by_service.entry(i.service.clone()).or_default();
        assert!(fps.is_empty(), "one incident per service: {incidents:#?}");
        fps.extend(i.alerts.iter().map(|a| a.fingerprint.clone()));
    }
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (fp, service) in sent_fingerprints {
        expected.entry(service).or_default().insert(fp);
    }
    assert_eq!(by_service, expected);
    tf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_alerts_through_webhook_bus_and_kafka_give_identical_incidents() {
    let kafka = KafkaBroker::start();
    let topic = "alertmanager-initech";
    let mut tf = TestFleet::start(
        &[
            Service::Gateway,
            Service::Auth,
            Service::Correlator,
            Service::KafkaBridge,
        ],
        |doc| {
            let bridge: toml::Table = toml::from_str(&format!(
                r#"
brokers = "{}"
group_id = "mcplane-feeds-test"
kafka = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
[[topics]]
topic = "{topic}"
tenant = "initech"
source = "alertmanager"
"#,
                kafka.bootstrap()
            ))
            .unwrap();
            doc.set("kafka-bridge", toml::Value::Table(bridge));
        },
    )
    .await;

    // A burst as Alertmanager would send it: two services, repeats, several severities.
    let mut repeat = alertmanager_payload("checkout", "HighLatency", "critical");
    repeat["alerts"][0]["annotations"]["summary"] = json!("HighLatency on checkout");
    let payloads: Vec<Value> = vec![
        alertmanager_payload("checkout", "HighLatency", "critical"),
        alertmanager_payload("checkout", "ErrorRate", "high"),
        alertmanager_payload("search", "DiskFull", "warning"),
        repeat,
        alertmanager_payload("search", "DiskFull", "warning"),
    ];

    // 1. The gateway's webhook, tenant acme (the test key's tenant).
    let http = reqwest::Client::new();
    for p in &payloads {
        let resp = http
            .post(format!("{}/v1/alerts/alertmanager", tf.base()))
            .bearer_auth(&tf.user_key)
            .json(p)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    // 2. Straight onto the bus subject, as a bus-native tool does, tenant globex.
    let bus = tf.bus().await;
    for p in &payloads {
        bus.js
            .publish(
                bus.subjects.alerts_in("globex", "alertmanager"),
                p.to_string().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // 3. A Kafka topic the bridge moves onto the bus, tenant initech.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    for (i, p) in payloads.iter().enumerate() {
        let value = p.to_string();
        let key = format!("{i}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // Everything arrived (the Kafka records too) and the correlator is done with it.
    for tenant in ["acme", "globex", "initech"] {
        settled_incidents(&tf, tenant, 3).await;
    }
    let raw_from_kafka = eventually(DEADLINE, || async {
        let n = stored_messages(
            &bus,
            StreamKind::Alerts,
            bus.subjects.alerts_in("initech", "alertmanager"),
        )
        .await
        .len();
        (n >= payloads.len()).then_some(n)
    })
    .await;
    assert_eq!(
        raw_from_kafka,
        Some(payloads.len()),
        "every Kafka record, once"
    );
    correlator_idle(&tf, 4).await;
    let webhook = incidents(&tf, "acme").await;
    let subject = incidents(&tf, "globex").await;
    let kafka_fed = incidents(&tf, "initech").await;
    assert_eq!(webhook.len(), 2, "one incident per service: {webhook:#?}");
    let expected = shape(&webhook);
    assert_eq!(shape(&subject), expected, "bus subject vs webhook");
    assert_eq!(shape(&kafka_fed), expected, "kafka vs webhook");
    tf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_bridge_killed_mid_stream_loses_no_alert_and_duplicates_no_incident() {
    let kafka = KafkaBroker::start();
    let topic = "alertmanager-acme";
    let mut tf = TestFleet::start(&[Service::Correlator], |doc| {
        let bridge: toml::Table = toml::from_str(&format!(
            r#"
brokers = "{}"
group_id = "mcplane-crash-test"
max_in_flight = 8
commit_interval_ms = 20
kafka = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
[[topics]]
topic = "{topic}"
tenant = "acme"
source = "alertmanager"
"#,
            kafka.bootstrap()
        ))
        .unwrap();
        doc.set("kafka-bridge", toml::Value::Table(bridge));
    })
    .await;
    let config = || {
        tf.doc
            .service::<mcplane_kafka_bridge::config::Config>("kafka-bridge")
            .unwrap()
    };

    // 1500 distinct alerts over 15 services: 15 incidents of 100 alerts each.
    let (services, n) = (15, 1500);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (0..n).map(|i| {
        let producer = producer.clone();
        async move {
            let value =
                alertmanager_payload(&format!("svc-{}", i % services), &format!("A{i}"), "high")
                    .to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&format!("{i}")).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;

    let bus = tf.bus().await;
    let raw = || async {
        stored_messages(
            &bus,
            StreamKind::Alerts,
            bus.subjects.alerts_in("acme", "alertmanager"),
        )
        .await
        .len()
    };
    // Every publish the bridge makes (a core subscriber sees replays too): the kill lands
    // while it is publishing, the moment a fifth of the records went out.
    let mut publishes = bus
        .client
        .subscribe(bus.subjects.alerts_in("acme", "alertmanager"))
        .await
        .unwrap();
    let first = mcplane_testkit::Running::spawn({
        let cfg = config();
        |s| mcplane_kafka_bridge::run(cfg, s)
    });
    let mut seen = 0;
    let counted = tokio::time::timeout(DEADLINE, async {
        while seen < n / 5 {
            if publishes.next().await.is_none() {
                break;
            }
            seen += 1;
        }
    })
    .await;
    first.abort();
    assert!(
        counted.is_ok(),
        "the bridge never got going ({seen} publishes)"
    );
    drop(publishes);

    let second = mcplane_testkit::Running::spawn({
        let cfg = config();
        |s| mcplane_kafka_bridge::run(cfg, s)
    });
    settled_incidents(&tf, "acme", n).await;
    correlator_idle(&tf, 4).await;
    second.stop().await;

    assert_eq!(raw().await, n, "every record on the bus exactly once");
    let incidents = incidents(&tf, "acme").await;
    assert_eq!(
        incidents.len(),
        services,
        "one incident per service, none twice"
    );
    for i in incidents.values() {
        assert_eq!(i.alerts.len(), n / services, "{}", i.service);
        assert!(
            i.alerts.iter().all(|a| a.count == 1),
            "{}: an alert counted twice",
            i.service
        );
    }
    tf.stop().await;
}
