//! The correlator against a real nats-server: a burst of duplicate alerts becomes one incident
//! and one summary per service, bare provider payloads on the subject work like gateway ones,
//! and a correlator killed mid-burst and restarted on the same folder loses and duplicates
//! nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use mcplane_correlator::config::Config;
use mcplane_shared::bus::{result_publications, Bus};
use mcplane_shared::config::{BusConfig, Common, ServiceConfig};
use mcplane_shared::envelope::BodyKind;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiResponse, Envelope, Exchange, IncidentEvent, IncidentSummary, RawAlert, ServiceError,
};
use mcplane_testkit::NatsServer;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";
const KEY: &str = "mcp_test_service_account";
const SERVICES: [&str; 5] = ["checkout", "payments-db", "search", "inventory", "identity"];
const SEVERITIES: [&str; 4] = ["critical", "high", "warning", "info"];
const DEADLINE: Duration = Duration::from_secs(30);

struct Harness {
    _nats: NatsServer,
    data: tempfile::TempDir,
    bus: Bus,
    bus_config: BusConfig,
    /// Summary requests the stub pipeline answered.
    requests: Arc<Mutex<Vec<Envelope<Exchange>>>>,
}

type Running = (CancellationToken, JoinHandle<Result<(), ServiceError>>);

impl Harness {
    async fn start() -> Harness {
        let nats = NatsServer::start();
        let bus_config = BusConfig {
            url: nats.url(),
            ack_wait_secs: 2,
            ..Default::default()
        };
        let bus = mcplane_shared::bus::connect(&bus_config, "test")
            .await
            .unwrap();
        let harness = Harness {
            _nats: nats,
            data: tempfile::tempdir().unwrap(),
            bus,
            bus_config,
            requests: Arc::default(),
        };
        harness.stub_pipeline().await;
        harness
    }

    fn config(&self, key: Option<&str>) -> ServiceConfig<Config> {
        ServiceConfig {
            common: Common {
                bus: self.bus_config.clone(),
                data_dir: self.data.path().to_path_buf(),
                ..Default::default()
            },
            service: Config {
                group_wait_ms: 1000,
                service_account_key: key.map(str::to_string),
                ..Default::default()
            },
        }
    }

    fn run(&self, key: Option<&str>) -> Running {
        self.run_with(self.config(key))
    }

    fn run_with(&self, config: ServiceConfig<Config>) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mcplane_correlator::run(config, shutdown.clone()));
        (shutdown, task)
    }

    /// Stands in for the whole AI pipeline: answers every summary request on
    /// `mcplane.requests.submit` with a finished exchange delivered to its `reply_to`.
    async fn stub_pipeline(&self) {
        let stream = self
            .bus
            .js
            .get_stream(self.bus.subjects.stream_name(StreamKind::Pipeline))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("stub-pipeline".into()),
                filter_subject: self.bus.subjects.requests_submit(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let (bus, requests) = (self.bus.clone(), self.requests.clone());
        tokio::spawn(async move {
            let mut messages = consumer.messages().await.unwrap();
            while let Some(Ok(m)) = messages.next().await {
                let mut env = Envelope::<Exchange>::from_slice(&m.payload).unwrap();
                assert_eq!(
                    env.credential.as_deref(),
                    Some(KEY),
                    "the service account key"
                );
                requests.lock().unwrap().push(env.clone());
                env.credential = None;
                let first_line = env
                    .body
                    .request
                    .input
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                env.body.response = Some(AiResponse {
                    text: format!("AI summary: {first_line}"),
                    provider: "stub".into(),
                    model: "stub-1".into(),
                    usage: Default::default(),
                });
                let pubs = result_publications(&bus, &env, "model").unwrap();
                bus.publish_all(&pubs).await.unwrap();
                m.ack().await.unwrap();
            }
        });
    }

    /// Every message on `filter` in the stream so far.
    async fn read<B: BodyKind>(&self, kind: StreamKind, filter: &str) -> Vec<Envelope<B>> {
        let stream = self
            .bus
            .js
            .get_stream(self.bus.subjects.stream_name(kind))
            .await
            .unwrap();
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter.to_string(),
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
                out.push(Envelope::<B>::from_slice(&m.unwrap().payload).unwrap());
            }
        }
        out
    }

    async fn opened(&self) -> Vec<Envelope<IncidentEvent>> {
        let filter = format!("{}.incidents.*.opened", self.bus.subjects.prefix());
        self.read(StreamKind::Incidents, &filter).await
    }

    async fn summaries(&self) -> Vec<Envelope<IncidentSummary>> {
        self.read(StreamKind::Summaries, &self.bus.subjects.summaries_all())
            .await
    }

    /// Polls until there are `incidents` opened incidents and as many summaries, then waits a
    /// little longer and checks that no extra one arrives.
    async fn expect_exactly(
        &self,
        incidents: usize,
        settle: Duration,
    ) -> (Vec<IncidentEvent>, Vec<IncidentSummary>) {
        let started = Instant::now();
        loop {
            let (o, s) = (self.opened().await.len(), self.summaries().await.len());
            if o >= incidents && s >= incidents {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out with {o} incidents opened and {s} summaries (expected {incidents})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(settle).await;
        let opened: Vec<IncidentEvent> = self.opened().await.into_iter().map(|e| e.body).collect();
        let summaries: Vec<IncidentSummary> =
            self.summaries().await.into_iter().map(|e| e.body).collect();
        assert_eq!(opened.len(), incidents, "incidents opened: {opened:#?}");
        assert_eq!(summaries.len(), incidents, "summaries: {summaries:#?}");
        let opened_ids: BTreeSet<&str> = opened.iter().map(|e| e.incident_id.as_str()).collect();
        let summarised: BTreeSet<&str> = summaries.iter().map(|s| s.incident_id.as_str()).collect();
        assert_eq!(opened_ids.len(), incidents, "incident ids are distinct");
        assert_eq!(opened_ids, summarised, "one summary for every incident");
        (opened, summaries)
    }

    async fn publish_raw(&self, env: &Envelope<RawAlert>) {
        self.bus
            .publish_envelope(
                self.bus.subjects.alerts_in(&env.tenant, &env.body.source),
                env,
                "gateway",
            )
            .await
            .unwrap();
    }
}

/// An Alertmanager webhook with one alert: the `n`th distinct alert of `service`.
fn webhook(service: &str, n: usize) -> Value {
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{service=\"{service}\"}}"),
        "status": "firing",
        "receiver": "mcplane",
        "groupLabels": {"service": service},
        "commonLabels": {"service": service},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": format!("Alert{n}"),
                "service": service,
                "severity": SEVERITIES[n % SEVERITIES.len()],
                "instance": format!("{service}-{n}:9100"),
            },
            "annotations": {"summary": format!("{service} symptom {n}")},
            "startsAt": "2024-05-14T09:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
        }],
    })
}

/// 5 services x 4 distinct alerts, each sent 5 times: 100 gateway envelopes, interleaved.
fn burst() -> Vec<Envelope<RawAlert>> {
    let mut out = Vec::new();
    for _round in 0..5 {
        for n in 0..4 {
            for service in SERVICES {
                out.push(Envelope::new(
                    TENANT,
                    RawAlert {
                        source: "alertmanager".into(),
                        payload: webhook(service, n),
                        received_at: chrono::Utc::now(),
                    },
                ));
            }
        }
    }
    out
}

fn check_summaries_are_ai_written(summaries: &[IncidentSummary]) {
    for s in summaries {
        assert!(!s.degraded, "{s:#?}");
        assert_eq!(s.provider.as_deref(), Some("stub"));
        assert!(s.summary.starts_with("AI summary: "), "{}", s.summary);
        assert_eq!(s.tenant, TENANT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_duplicate_alerts_becomes_one_incident_and_one_summary_per_service() {
    let h = Harness::start().await;
    let (shutdown, task) = h.run(Some(KEY));
    for env in burst() {
        h.publish_raw(&env).await;
    }
    let (opened, summaries) = h
        .expect_exactly(SERVICES.len(), Duration::from_millis(1500))
        .await;

    let services: BTreeSet<&str> = opened.iter().map(|e| e.service.as_str()).collect();
    assert_eq!(services, SERVICES.into_iter().collect());
    check_summaries_are_ai_written(&summaries);
    assert_eq!(
        h.requests.lock().unwrap().len(),
        SERVICES.len(),
        "one request per incident"
    );

    // Each incident ends with its four distinct alerts, each counted five times.
    let updated: Vec<Envelope<IncidentEvent>> = h
        .read(
            StreamKind::Incidents,
            &h.bus.subjects.incidents(TENANT, "updated"),
        )
        .await;
    // Three distinct alerts join each incident: revisions 2 to 4. An `updated` superseded
    // within one pulled batch is not sent, so each incident has one to three of them, and its
    // latest holds all four alerts.
    for service in SERVICES {
        let mine: Vec<&IncidentEvent> = updated
            .iter()
            .map(|e| &e.body)
            .filter(|e| e.service == service)
            .collect();
        assert!((1..=3).contains(&mine.len()), "{service}: {mine:#?}");
        let latest = mine.iter().max_by_key(|e| e.revision).unwrap();
        assert_eq!(
            latest.revision, 4,
            "{service}: three distinct alerts joined"
        );
        assert_eq!(latest.alerts.len(), 4, "{service}: {latest:#?}");
    }
    let requests = h.requests.lock().unwrap().clone();
    for r in &requests {
        assert_eq!(r.body.request.services.len(), 1);
        assert!(
            r.body.request.input.contains("\n- ["),
            "{}",
            r.body.request.input
        );
    }

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_payload_on_the_subject_is_handled_like_a_gateway_alert_and_poison_is_dropped() {
    let h = Harness::start().await;
    // No service account key: the summary is assembled without AI and marked degraded.
    let (shutdown, task) = h.run(None);
    let js = &h.bus.js;
    let subjects = &h.bus.subjects;
    for (subject, body) in [
        (subjects.alerts_in("globex", "nagios"), "{}".to_string()),
        (
            subjects.alerts_in("globex", "generic"),
            r#"{"service": "x"}"#.to_string(),
        ),
        (
            subjects.alerts_in("globex", "alertmanager"),
            "not json".to_string(),
        ),
    ] {
        js.publish(subject, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut payload = webhook("search", 0);
    let second = webhook("search", 1)["alerts"][0].clone();
    payload["alerts"].as_array_mut().unwrap().push(second);
    js.publish(
        subjects.alerts_in("globex", "alertmanager"),
        serde_json::to_vec(&payload).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let (opened, summaries) = h.expect_exactly(1, Duration::from_millis(1500)).await;
    assert_eq!(opened[0].tenant, "globex");
    assert_eq!(opened[0].service, "search");
    let s = &summaries[0];
    assert_eq!(s.tenant, "globex");
    assert!(s.degraded, "{s:#?}");
    assert_eq!(s.provider, None);
    assert_eq!(
        s.alert_count, 2,
        "both alerts of the webhook joined before the summary"
    );
    assert!(s.summary.contains("search symptom 0"), "{}", s.summary);
    assert!(
        h.requests.lock().unwrap().is_empty(),
        "no key, no AI request"
    );
    let on_subject = h
        .read::<IncidentSummary>(
            StreamKind::Summaries,
            &subjects.summaries("globex", "critical"),
        )
        .await;
    assert_eq!(
        on_subject.len(),
        1,
        "published under the tenant and severity"
    );

    // The poison messages were terminated, not left to be redelivered.
    let started = Instant::now();
    loop {
        let mut consumer = js
            .get_consumer_from_stream::<pull::Config, _, _>(
                "correlator-ingest",
                subjects.stream_name(StreamKind::Alerts),
            )
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "ingest still holds messages: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlator_killed_mid_burst_and_restarted_loses_nothing_and_duplicates_nothing() {
    let h = Harness::start().await;
    let (_first_shutdown, first) = h.run(Some(KEY));

    let publisher = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            for env in burst() {
                bus.publish_envelope(
                    bus.subjects.alerts_in(TENANT, "alertmanager"),
                    &env,
                    "gateway",
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Kill (no drain) once the correlator is visibly in the middle of the burst.
    let started = Instant::now();
    while h.opened().await.len() < 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "no incident opened before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    let (shutdown, second) = h.run(Some(KEY));
    publisher.await.unwrap();
    let (_, summaries) = h
        .expect_exactly(SERVICES.len(), Duration::from_secs(3))
        .await;
    check_summaries_are_ai_written(&summaries);
    let asked: BTreeSet<String> = h
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        asked.len(),
        SERVICES.len(),
        "one summary request per incident"
    );
    assert_eq!(
        h.requests.lock().unwrap().len(),
        SERVICES.len(),
        "none asked twice"
    );

    shutdown.cancel();
    second.await.unwrap().unwrap();
}

/// One alert of `severity` about `service` for `tenant`, as the gateway would publish it.
fn alert_for(tenant: &str, service: &str, n: usize) -> Envelope<RawAlert> {
    Envelope::new(
        tenant,
        RawAlert {
            source: "alertmanager".into(),
            payload: webhook(service, n),
            received_at: chrono::Utc::now(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incidents_tenant_decides_whether_it_escalates() {
    let h = Harness::start().await;
    let mut config = h.config(Some(KEY));
    // Everything escalates, except for globex, which is paged only for critical incidents.
    config.service = mcplane_shared::config::Document::parse(
        "[correlator]\ngroup_wait_ms = 1000\n\
         [correlator.tenants.globex]\nescalate_min_severity = \"critical\"\n",
    )
    .unwrap()
    .section("correlator")
    .unwrap();
    config.service.service_account_key = Some(KEY.to_string());
    let (shutdown, task) = h.run_with(config);
    // The same incident for both tenants: `Alert1` is `high`.
    h.publish_raw(&alert_for(TENANT, "search", 1)).await;
    h.publish_raw(&alert_for("globex", "search", 1)).await;

    let started = Instant::now();
    while h.summaries().await.is_empty() || h.opened().await.len() < 2 {
        assert!(started.elapsed() < DEADLINE, "no summary for acme");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past globex's group_wait too, so its summary would have been asked for by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let opened = h.opened().await;
    let tenants: BTreeSet<&str> = opened.iter().map(|e| e.tenant.as_str()).collect();
    assert_eq!(tenants, BTreeSet::from([TENANT, "globex"]));
    assert!(opened
        .iter()
        .all(|e| e.body.severity == mcplane_shared::Severity::High));

    let escalated = h
        .read::<IncidentSummary>(
            StreamKind::Summaries,
            &h.bus.subjects.summaries(TENANT, "high"),
        )
        .await;
    assert_eq!(escalated.len(), 1, "acme's high incident escalates");
    let quiet = h
        .read::<IncidentSummary>(
            StreamKind::Summaries,
            &h.bus.subjects.summaries("globex", "*"),
        )
        .await;
    assert!(quiet.is_empty(), "globex's does not: {quiet:#?}");
    let asked: Vec<String> = h
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.tenant.clone())
        .collect();
    assert_eq!(
        asked,
        vec![TENANT.to_string()],
        "no summary asked for globex"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlator_restarted_on_an_empty_disk_rebuilds_and_continues_its_open_incidents() {
    let h = Harness::start().await;
    let config = || {
        let mut c = h.config(Some(KEY));
        // Short, so the change after the restart is summarised within the test.
        c.service.group_interval_secs = 2;
        c
    };
    let (_first_shutdown, first) = h.run_with(config());
    let services = &SERVICES[..3];
    for _round in 0..2 {
        for n in 0..2 {
            for service in services {
                h.publish_raw(&alert_for(TENANT, service, n)).await;
            }
        }
    }
    let (opened, _) = h
        .expect_exactly(services.len(), Duration::from_millis(2500))
        .await;
    let checkout = opened
        .iter()
        .find(|e| e.service == "checkout")
        .expect("checkout incident")
        .incident_id
        .clone();

    // Killed, and its disk lost.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    std::fs::remove_dir_all(h.data.path().join("correlator")).unwrap();
    let (shutdown, second) = h.run_with(config());

    // A new alert on an open incident updates it: no new incident.
    h.publish_raw(&alert_for(TENANT, "checkout", 2)).await;
    let started = Instant::now();
    let updated = loop {
        let updated: Vec<IncidentEvent> = h
            .read::<IncidentEvent>(
                StreamKind::Incidents,
                &h.bus.subjects.incidents(TENANT, "updated"),
            )
            .await
            .into_iter()
            .map(|e| e.body)
            .filter(|e| e.alerts.len() == 3)
            .collect();
        if let Some(e) = updated.into_iter().next() {
            break e;
        }
        assert!(started.elapsed() < DEADLINE, "no update after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updated.incident_id, checkout, "the open incident continues");
    let counts: Vec<u32> = updated.alerts.iter().map(|a| a.count).collect();
    assert_eq!(
        counts,
        vec![2, 2, 1],
        "repeats before the loss are still counted"
    );

    // Its new revision is summarised once; what was already told is not told again.
    let started = Instant::now();
    while h.summaries().await.len() < services.len() + 1 {
        assert!(
            started.elapsed() < DEADLINE,
            "the update was not summarised"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.opened().await.len(), services.len(), "no incident opened");
    let summaries: Vec<IncidentSummary> = h.summaries().await.into_iter().map(|e| e.body).collect();
    assert_eq!(summaries.len(), services.len() + 1, "{summaries:#?}");
    let last = summaries.last().unwrap();
    assert_eq!(
        (last.incident_id.as_str(), last.revision, last.alert_count),
        (checkout.as_str(), updated.revision, 3)
    );
    check_summaries_are_ai_written(&summaries);

    shutdown.cancel();
    second.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlator_killed_mid_burst_and_restarted_on_an_empty_disk_loses_and_duplicates_nothing()
{
    let h = Harness::start().await;
    let (_first_shutdown, first) = h.run(Some(KEY));
    let publisher = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            for env in burst() {
                bus.publish_envelope(
                    bus.subjects.alerts_in(TENANT, "alertmanager"),
                    &env,
                    "gateway",
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    while h.opened().await.len() < 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "no incident opened before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed mid-burst, with alerts in flight, and its disk lost.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    std::fs::remove_dir_all(h.data.path().join("correlator")).unwrap();
    let (shutdown, second) = h.run(Some(KEY));
    publisher.await.unwrap();

    let (_, summaries) = h
        .expect_exactly(SERVICES.len(), Duration::from_secs(3))
        .await;
    check_summaries_are_ai_written(&summaries);
    // Every incident got all four of its distinct alerts (an event whose publication the kill
    // cut off comes again when its alert is redelivered, after ack_wait).
    let started = Instant::now();
    loop {
        let mut latest: std::collections::HashMap<String, IncidentEvent> = Default::default();
        for e in h
            .read::<IncidentEvent>(
                StreamKind::Incidents,
                &h.bus.subjects.incidents(TENANT, "*"),
            )
            .await
        {
            let e = e.body;
            if latest
                .get(&e.incident_id)
                .is_none_or(|l| e.revision >= l.revision)
            {
                latest.insert(e.incident_id.clone(), e);
            }
        }
        if latest.len() == SERVICES.len() && latest.values().all(|e| e.alerts.len() == 4) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "alerts missing: {:#?}",
            latest
                .values()
                .map(|e| (&e.service, e.alerts.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        h.opened().await.len(),
        SERVICES.len(),
        "no incident opened twice"
    );

    shutdown.cancel();
    second.await.unwrap().unwrap();
}
