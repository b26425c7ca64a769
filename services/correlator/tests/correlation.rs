//! Correlation through the running correlator against a real nats-server: provider payloads
//! (the shared fixtures) published on `mcplane.alerts.in.<tenant>.<source>` become incidents on
//! `mcplane.incidents.<tenant>.<event>`. Cross-source (Datadog, CloudWatch via SNS and
//! PagerDuty about one service), CMDB topology (dependent services, root named), flapping
//! (detected, damped, settled) and resolution (every alert resolved resolves the incident).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use mcplane_correlator::config::Config;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::config::{BusConfig, Common, ServiceConfig};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AlertBatch, AlertSegment, AlertStatus, BatchedAlert, Envelope, IncidentEvent,
    IncidentEventKind, IncidentSummary, RawAlert, ServiceError,
};
use mcplane_testkit::NatsServer;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";
const DEADLINE: Duration = Duration::from_secs(30);

struct Harness {
    _nats: NatsServer,
    _data: tempfile::TempDir,
    bus: Bus,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServiceError>>,
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn fixture(name: &str) -> Value {
    let path = repo("shared/tests/fixtures/alerts").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl Harness {
    async fn start(tune: impl FnOnce(&mut Config)) -> Harness {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().unwrap();
        let bus_config = BusConfig {
            url: nats.url(),
            ack_wait_secs: 2,
            ..Default::default()
        };
        let mut service = Config {
            partitions: 4,
            group_wait_ms: 300,
            group_interval_secs: 1,
            ..Default::default()
        };
        tune(&mut service);
        let config = ServiceConfig {
            common: Common {
                bus: bus_config.clone(),
                data_dir: data.path().to_path_buf(),
                ..Default::default()
            },
            service,
        };
        let bus = mcplane_shared::bus::connect(&bus_config, "test")
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mcplane_correlator::run(config, shutdown.clone()));
        Harness {
            _nats: nats,
            _data: data,
            bus,
            shutdown,
            task,
        }
    }

    async fn send(&self, source: &str, payload: Value) {
        let env = Envelope::new(
            TENANT,
            RawAlert {
                source: source.into(),
                payload,
                received_at: chrono::Utc::now(),
            },
        );
        self.bus
            .publish_envelope(self.bus.subjects.alerts_in(TENANT, source), &env, "gateway")
            .await
            .unwrap();
    }

    /// Every message on `filter` in `kind`'s stream so far, in order.
    async fn read<B: mcplane_shared::envelope::BodyKind>(
        &self,
        kind: StreamKind,
        filter: String,
    ) -> Vec<B> {
        let stream = self
            .bus
            .js
            .get_stream(self.bus.subjects.stream_name(kind))
            .await
            .unwrap();
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.info().await.unwrap().num_pending as usize;
        let mut out = Vec::with_capacity(pending);
        if pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(pending)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                out.push(Envelope::<B>::from_slice(&m.unwrap().payload).unwrap().body);
            }
        }
        out
    }

    /// The incident events so far, by revision: a partition owner publishes the events of
    /// one batch of alerts concurrently, so stream order is not revision order.
    async fn events(&self) -> Vec<IncidentEvent> {
        let filter = format!("{}.incidents.{TENANT}.*", self.bus.subjects.prefix());
        let mut events: Vec<IncidentEvent> = self.read(StreamKind::Incidents, filter).await;
        events.sort_by_key(|e| e.revision);
        events
    }

    async fn summaries(&self) -> Vec<IncidentSummary> {
        self.read(StreamKind::Summaries, self.bus.subjects.summaries_all())
            .await
    }

    /// Polls the incident events until `done` holds for them.
    async fn events_until(
        &self,
        what: &str,
        done: impl Fn(&[IncidentEvent]) -> bool,
    ) -> Vec<IncidentEvent> {
        let started = Instant::now();
        loop {
            let events = self.events().await;
            if done(&events) {
                return events;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

fn opened(events: &[IncidentEvent]) -> Vec<&IncidentEvent> {
    events
        .iter()
        .filter(|e| e.event == IncidentEventKind::Opened)
        .collect()
}

fn generic(service: &str, title: &str, status: &str) -> Value {
    json!({"title": title, "service": service, "severity": "critical", "status": status})
}

/// A generic payload of firing alerts `Shard <n> unassigned <padding>` about `search`, one per
/// number.
fn shards(numbers: std::ops::Range<usize>, padding: &str) -> Value {
    numbers
        .map(|n| {
            generic(
                "search",
                &format!("Shard {n} unassigned {padding}"),
                "firing",
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datadog_monitor_a_cloudwatch_alarm_and_a_pagerduty_event_about_one_service_are_one_incident(
) {
    let h = Harness::start(|_| {}).await;
    h.send("datadog", fixture("checkout-p99-latency.datadog.json"))
        .await;
    h.send(
        "cloudwatch",
        fixture("checkout-ecs-cpu-high.cloudwatch.json"),
    )
    .await;
    h.send(
        "pagerduty",
        fixture("checkout-card-declines.pagerduty.json"),
    )
    .await;
    // A repeat of the Datadog notification is counted, not a fourth alert.
    h.send("datadog", fixture("checkout-p99-latency.datadog.json"))
        .await;

    let events = h
        .events_until("three sources in one incident", |e| {
            e.last().is_some_and(|l| l.alerts.len() == 3)
        })
        .await;
    assert_eq!(opened(&events).len(), 1, "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last.service, "checkout");
    let mut sources: Vec<&str> = last.alerts.iter().map(|a| a.source.as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["cloudwatch", "datadog", "pagerduty"]);

    // The PagerDuty resolve carries only its dedup_key, yet resolves its alert; Datadog
    // recovers too; the CloudWatch alarm still fires, so the incident stays open.
    h.send(
        "pagerduty",
        fixture("checkout-card-declines-resolve.pagerduty.json"),
    )
    .await;
    h.send(
        "datadog",
        fixture("checkout-p99-latency-recovered.datadog.json"),
    )
    .await;
    let events = h
        .events_until("two alerts resolved", |e| {
            e.last().is_some_and(|l| {
                l.alerts
                    .iter()
                    .filter(|a| a.status == AlertStatus::Resolved)
                    .count()
                    == 2
            })
        })
        .await;
    let last = events.last().unwrap();
    assert_eq!(last.event, IncidentEventKind::Updated);
    let pd = last
        .alerts
        .iter()
        .find(|a| a.source == "pagerduty")
        .unwrap();
    assert_eq!(
        pd.summary, "Card declines above 20% on checkout (eu-west-1)",
        "kept"
    );
    let dd = last.alerts.iter().find(|a| a.source == "datadog").unwrap();
    assert_eq!(dd.count, 3, "trigger, its repeat and the recovery");
    assert_eq!(opened(&events).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_on_dependent_services_join_one_incident_that_names_the_root_service() {
    let h = Harness::start(|c| c.cmdb_file = Some(repo("examples/cmdb.toml"))).await;
    h.send(
        "generic",
        generic("checkout", "Checkout 5xx above 5%", "firing"),
    )
    .await;
    h.send(
        "generic",
        generic("payments", "Payment authorisations timing out", "firing"),
    )
    .await;
    // An RDS alarm from CloudWatch: the service is the DBInstanceIdentifier dimension.
    let mut rds = fixture("payments-db-connections-ok.cloudwatch.json");
    let message = rds["Message"]
        .as_str()
        .unwrap()
        .replace("\"NewStateValue\":\"OK\"", "\"NewStateValue\":\"ALARM\"");
    rds["Message"] = json!(message);
    h.send("cloudwatch", rds).await;
    // search is in the CMDB but neither depends on nor is a dependency of those three.
    h.send("generic", generic("search", "Search latency", "firing"))
        .await;

    let events = h
        .events_until("the root named", |e| {
            e.iter()
                .any(|e| e.root_service.as_deref() == Some("payments-db") && e.alerts.len() == 3)
        })
        .await;
    let incidents = opened(&events);
    assert_eq!(incidents.len(), 2, "{events:#?}");
    let joined = events
        .iter()
        .rev()
        .find(|e| e.root_service.is_some())
        .unwrap();
    assert_eq!(joined.services, ["checkout", "payments", "payments-db"]);
    assert!(events
        .iter()
        .any(|e| e.service == "search" && e.alerts.len() == 1));

    // Without a service account key the summary is assembled, and names the root too.
    let started = Instant::now();
    let summary = loop {
        let found = h
            .summaries()
            .await
            .into_iter()
            .find(|s| s.incident_id == joined.incident_id);
        if let Some(s) = found.filter(|s| s.alert_count == 3) {
            break s;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no summary of the joined incident"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        summary
            .summary
            .contains("Probable root service: payments-db"),
        "{}",
        summary.summary
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_alert_is_damped_then_settles_and_the_incident_resolves() {
    let h = Harness::start(|c| {
        c.flap_threshold = 3;
        c.flap_window_secs = 2;
    })
    .await;
    for i in 0..12 {
        let status = if i % 2 == 0 { "firing" } else { "resolved" };
        h.send("generic", generic("inventory", "WMS sync flapping", status))
            .await;
    }
    // opened, resolved, updated (fired again), updated (flapping, told once), then nothing
    // per flap; the last state (resolved) is told once the alert was quiet for the window.
    // When the fired-again alert and the one that made it flapping share a pulled batch, the
    // first `updated` is superseded by the second within the batch and not sent (revision 3
    // is skipped); nothing else is ever skipped.
    let events = h
        .events_until("the settled resolve", |e| {
            e.last().is_some_and(|l| {
                l.event == IncidentEventKind::Resolved
                    && !l.alerts[0].flapping
                    && l.alerts[0].count == 12
            })
        })
        .await;
    let kinds: Vec<(IncidentEventKind, u32)> =
        events.iter().map(|e| (e.event, e.revision)).collect();
    use IncidentEventKind::{Opened, Resolved, Updated};
    let told = [
        (Opened, 1),
        (Resolved, 2),
        (Updated, 3),
        (Updated, 4),
        (Resolved, 5),
    ];
    let superseded = [told[0], told[1], told[3], told[4]];
    assert!(kinds == told || kinds == superseded, "{events:#?}");
    let flapping = events.iter().find(|e| e.revision == 4).unwrap();
    assert!(flapping.alerts[0].flapping, "the flapping update says so");
    assert_eq!(
        opened(&events).len(),
        1,
        "flaps never open a second incident"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_resolves_when_all_its_alerts_have_and_the_resolution_is_summarised() {
    let h = Harness::start(|_| {}).await;
    h.send(
        "generic",
        generic("payments-db", "Replication lag", "firing"),
    )
    .await;
    h.send(
        "generic",
        generic("payments-db", "Connections near max", "firing"),
    )
    .await;
    h.events_until("both alerts", |e| {
        e.last().is_some_and(|l| l.alerts.len() == 2)
    })
    .await;
    // Told of the firing alerts first (Alertmanager tells nobody of alerts that fired and
    // resolved between two flushes).
    let started = Instant::now();
    while h.summaries().await.is_empty() {
        assert!(started.elapsed() < DEADLINE, "no first summary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.send(
        "generic",
        generic("payments-db", "Replication lag", "resolved"),
    )
    .await;
    let events = h
        .events_until("one resolved", |e| {
            e.last()
                .is_some_and(|l| l.alerts.iter().any(|a| a.status == AlertStatus::Resolved))
        })
        .await;
    assert_eq!(events.last().unwrap().event, IncidentEventKind::Updated);
    assert!(events.last().unwrap().resolved_at.is_none());
    h.send(
        "generic",
        generic("payments-db", "Connections near max", "resolved"),
    )
    .await;
    let events = h
        .events_until("the incident resolved", |e| {
            e.last()
                .is_some_and(|l| l.event == IncidentEventKind::Resolved)
        })
        .await;
    assert!(events.last().unwrap().resolved_at.is_some());
    assert_eq!(opened(&events).len(), 1);
    // send_resolved (the default): the resolution gets its summary at the next flush.
    let started = Instant::now();
    loop {
        let summaries = h.summaries().await;
        if summaries.iter().any(|s| s.summary.contains("resolved")) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no summary of the resolution: {summaries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_sent_together_are_one_partition_message_and_their_incident_is_told_twice_not_five_times_as_it_stood(
) {
    let h = Harness::start(|_| {}).await;
    // One generic array of five alerts about one service: ingest publishes them to their
    // partition as one batch, so the owner applies them in one step.
    let mut alerts: Vec<Value> = (0..5)
        .map(|i| generic("search", &format!("Shard {i} unassigned"), "firing"))
        .collect();
    // And a repeat of the first, after the last join: counted without an event of its own,
    // and not in the event of revision 5 either, which tells the incident as it stood then.
    alerts.push(alerts[0].clone());
    h.send("generic", Value::Array(alerts)).await;
    let events = h
        .events_until("all five alerts", |e| {
            e.last().is_some_and(|l| l.alerts.len() == 5)
        })
        .await;
    // Opened with the first alert; the four joins are one `updated` (revision 5) holding all
    // five, the three it superseded never sent.
    let told: Vec<(IncidentEventKind, u32, usize)> = events
        .iter()
        .map(|e| (e.event, e.revision, e.alerts.len()))
        .collect();
    assert_eq!(
        told,
        [
            (IncidentEventKind::Opened, 1, 1),
            (IncidentEventKind::Updated, 5, 5)
        ]
    );
    let counts: Vec<u32> = events[1].alerts.iter().map(|a| a.count).collect();
    assert_eq!(counts, [1, 1, 1, 1, 1], "{:#?}", events[1]);
    // One message on the partitions for the six alerts.
    let stored = stored_batches(&h).await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let titles: Vec<&str> = stored[0]
        .alerts
        .iter()
        .map(|a| a.alert.summary.as_str())
        .collect();
    assert_eq!(titles.len(), 6, "in the order sent: {titles:?}");
    assert!(
        titles[0].contains("Shard 0") && titles[4].contains("Shard 4"),
        "{titles:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_storm_in_one_incident_is_counted_whole_and_told_in_events_the_bus_carries() {
    let h = Harness::start(|_| {}).await;
    // 3,000 distinct alerts about one service, a hundred per payload, each with a long summary:
    // listed whole, the last events would be about 1.7 MB, past NATS' 1 MiB `max_payload`.
    const STORM: usize = 3000;
    let padding = "x".repeat(300);
    for payload in 0..STORM / 100 {
        h.send(
            "generic",
            shards(payload * 100..payload * 100 + 100, &padding),
        )
        .await;
    }
    counted(&h, STORM as u32).await;
    let events = h.events().await;
    // One incident, counted whole, its count growing with each event.
    assert!(events
        .iter()
        .all(|e| e.incident_id == events[0].incident_id));
    let counts: Vec<u32> = events.iter().map(|e| e.alert_count).collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    // Every event lists at most a hundred alerts, all of them while there were no more.
    for e in &events {
        let listed = e.alerts.len();
        assert_eq!(
            listed,
            (e.alert_count as usize).min(100),
            "revision {}",
            e.revision
        );
        let distinct: std::collections::BTreeSet<&str> =
            e.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        assert_eq!(distinct.len(), listed, "revision {}", e.revision);
    }
    // The last names the headline (the first alert: all are critical and it came first) and
    // the title counts the rest.
    let last = events.last().unwrap();
    assert!(
        last.alerts[0].summary.starts_with("Shard 0 unassigned"),
        "{}",
        last.alerts[0].summary
    );
    assert!(last.title.contains("(+2999 more)"), "{}", last.title);
    h.stop().await;
}

/// The canonical alerts stored on the partitions so far.
async fn stored_batches(h: &Harness) -> Vec<AlertBatch> {
    stored_by_partition(h)
        .await
        .into_iter()
        .map(|(_, batch)| batch)
        .collect()
}

/// The canonical alerts stored on the partitions so far, each message with its partition.
async fn stored_by_partition(h: &Harness) -> Vec<(u32, AlertBatch)> {
    let mut stored = Vec::new();
    for partition in 0..4 {
        let batches = h
            .read::<AlertBatch>(
                StreamKind::Alerts,
                h.bus.subjects.alerts_partition_all(partition),
            )
            .await;
        stored.extend(batches.into_iter().map(|b| (partition, b)));
    }
    stored
}

/// Polls until the incident events count `count` alerts in one incident.
async fn counted(h: &Harness, count: u32) {
    let started = Instant::now();
    loop {
        let events = h.events().await;
        if events.iter().any(|e| e.alert_count == count) {
            return;
        }
        let counts: Vec<u32> = events.iter().map(|e| e.alert_count).collect();
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for {count} alerts; counts so far: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_too_large_for_one_partition_message_is_split_and_nothing_is_lost() {
    let h = Harness::start(|_| {}).await;
    // A thousand alerts about one service in one payload (an Alertmanager group in an outage),
    // ~770 KB: as canonical alerts, each with its original beside it, about twice that, past
    // NATS' 1 MiB `max_payload` for one partition message.
    let padding = "y".repeat(700);
    h.send("generic", shards(0..1000, &padding)).await;
    counted(&h, 1000).await;
    let stored = stored_batches(&h).await;
    assert!(
        stored.len() > 1,
        "one message of {} alerts",
        stored[0].alerts.len()
    );
    let titles: Vec<String> = stored
        .iter()
        .flat_map(|b| &b.alerts)
        .map(|a| {
            a.alert
                .summary
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let expected: Vec<String> = (0..1000).map(|n| format!("Shard {n}")).collect();
    assert_eq!(titles, expected, "every alert once, in order");
    assert!(stored
        .iter()
        .flat_map(|b| &b.alerts)
        .all(|a| !a.alert.original.is_null()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_too_large_for_the_bus_with_its_original_goes_without_it() {
    let h = Harness::start(|_| {}).await;
    // ~600 KB of summary: with the original beside it, over 1 MiB.
    let huge = "z".repeat(600_000);
    h.send(
        "generic",
        generic("search", &format!("Disk full {huge}"), "firing"),
    )
    .await;
    counted(&h, 1).await;
    let stored = stored_batches(&h).await;
    assert_eq!(stored.len(), 1);
    let alert = &stored[0].alerts[0].alert;
    assert!(alert.summary.starts_with("Disk full zzz"));
    assert!(alert.original.is_null());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_messages_arriving_together_share_partition_messages_and_a_segment_seen_again_is_not_counted_twice(
) {
    // A long linger, so that the burst below is one pulled batch whatever the machine's load.
    let h = Harness::start(|c| c.linger_ms = 500).await;
    // Twenty raw messages about one service, published together, one alert each.
    const RAW: usize = 20;
    let envelopes: Vec<Envelope<RawAlert>> = (0..RAW)
        .map(|i| {
            Envelope::new(
                TENANT,
                RawAlert {
                    source: "generic".into(),
                    payload: generic("search", &format!("Shard {i} unassigned"), "firing"),
                    received_at: chrono::Utc::now(),
                },
            )
        })
        .collect();
    let subject = h.bus.subjects.alerts_in(TENANT, "generic");
    let pubs: Vec<Publication> = envelopes
        .iter()
        .map(|env| Publication::envelope(subject.clone(), env, "gateway").unwrap())
        .collect();
    h.bus.publish_all(&pubs).await.unwrap();
    counted(&h, RAW as u32).await;
    // Fewer partition messages than raw messages: gathered, each raw message a segment.
    let stored = stored_by_partition(&h).await;
    assert!(stored.len() < RAW, "{} partition messages", stored.len());
    let (partition, gathered) = stored
        .iter()
        .find(|(_, b)| b.segments.len() > 1)
        .cloned()
        .expect("a message gathering several raw messages");
    let mut titles: Vec<&str> = stored
        .iter()
        .flat_map(|(_, b)| &b.alerts)
        .map(|a| a.alert.summary.as_str())
        .collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(titles.len(), RAW, "every alert once: {titles:?}");
    let segment_traces: Vec<&str> = gathered
        .segments
        .iter()
        .map(|s| s.trace.trace_id.as_str())
        .collect();
    for env in &envelopes {
        let named = gathered
            .segments
            .iter()
            .any(|s| s.key.starts_with(&env.id.to_string()));
        if named {
            assert!(
                segment_traces.contains(&env.trace.trace_id.as_str()),
                "a segment keeps its raw message's trace"
            );
        }
    }

    // The gathered message's first segment stored again in another gathering (a raw message
    // delivered again after ingest published part of its batch), beside a new one, under a
    // msg id the server has not seen: the owner applies the new segment only.
    let old = &gathered.segments[0];
    let partition_subject = h.bus.subjects.alerts_partition(partition, TENANT);
    let new_alert = mcplane_shared::alerts::normalize(
        "generic",
        TENANT,
        &generic("search", "Shard 99 unassigned", "firing"),
        chrono::Utc::now(),
    )
    .unwrap()
    .remove(0);
    let mut alerts: Vec<BatchedAlert> = gathered.alerts[..old.alerts].to_vec();
    alerts.push(BatchedAlert {
        id: uuid::Uuid::now_v7(),
        alert: new_alert,
    });
    let again = Envelope::new(
        TENANT,
        AlertBatch {
            alerts,
            segments: vec![
                old.clone(),
                AlertSegment {
                    key: format!("raw-new:p{partition}:normalize"),
                    alerts: 1,
                    trace: mcplane_shared::envelope::TraceContext::new_root(),
                },
            ],
        },
    );
    let mut p = Publication::envelope(partition_subject, &again, "normalize").unwrap();
    p.msg_id = Some(format!("regathered:p{partition}:normalize"));
    h.bus.publish_all(&[p]).await.unwrap();
    counted(&h, RAW as u32 + 1).await;
    let events = h.events().await;
    let last = events.last().unwrap();
    assert_eq!(last.alert_count, RAW as u32 + 1);
    let counts: Vec<u32> = last.alerts.iter().map(|a| a.count).collect();
    assert!(
        counts.iter().all(|&c| c == 1),
        "no alert counted twice: {counts:?}"
    );
    h.stop().await;
}
