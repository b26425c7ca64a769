//! The fault suite: a burst of AI requests while a worker is killed with `kill -9` and started
//! again (every pipeline stage, the gateway under HTTP clients, the notifier under a burst of
//! incident summaries, the Kafka bridge mid-topic), while nats-server itself is killed and
//! restarted on its JetStream folder, while the model provider hangs, and while a worker's disk
//! is full or read-only. Every case checks the same books: every accepted request has exactly
//! one result, the provider was called exactly once per request, the audit chain holds exactly
//! one entry per request and stage and still verifies, and (where alerts flow) every accepted
//! alert is counted once and every summary is posted to Slack once.
//!
//! The victim runs as its own process (the `mcplane` command line, `run <service>`), so the kill
//! is a real one; the rest of the fleet runs in the test. The victim serves its probe endpoint
//! (`[telemetry] listen`), so the disk cases also check that `/readyz` says 503 while the disk
//! refuses writes and 200 once it takes them again. (The correlator's kill test lives in
//! `e2e.rs`.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::config::Document;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, Envelope, ErrorCode, Exchange, IncidentEvent, IncidentSummary, RequestType, Service,
};
use mcplane_testkit::{free_port, stored_messages, Behavior, KafkaBroker, StubProvider};
use mcplane_tests::{alertmanager_payload, eventually, wait_consumer_idle, TestFleet};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// Requests per burst.
const BURST: usize = 240;
/// Requests per second offered during a burst (the burst lasts under a second).
const RATE: u64 = 300;
/// How long a case may take to see every result.
const SETTLE: Duration = Duration::from_secs(75);

/// The sections the fault cases run with, in the fleet and in the victim's own file.
fn fault_config(provider_url: &str, extra_model: &str) -> String {
    let cmdb = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cmdb.toml");
    format!(
        r#"
[log]
format = "pretty"
filter = "error"

[bus]
batch_size = 64
ack_wait_secs = 2
max_deliver = 50

[auth.rate_limits]
principal_per_sec = 0.0
tenant_per_sec = 0.0

[enrichment]
cmdb_file = "{cmdb}"

[model]
max_attempts = 1
{extra_model}

[[model.providers]]
name = "stub"
kind = "openai"
model = "stub-1"
base_url = "{provider_url}"
boundary = "private"
"#
    )
}

/// Lays the sections of `text` over the fleet's document, keeping its server URL.
fn overlay(doc: &mut Document, text: &str) {
    let url = doc.get("bus.url").cloned();
    let table: toml::Table = toml::from_str(text).expect("fault config parses");
    for (section, value) in table {
        match (section.as_str(), value) {
            // Merge, so the fleet's own keys (gateway address, CMDB path) stay.
            (_, toml::Value::Table(t)) => {
                for (k, v) in t {
                    doc.set(&format!("{section}.{k}"), v);
                }
            }
            (_, v) => doc.set(&section, v),
        }
    }
    if let Some(url) = url {
        doc.set("bus.url", url);
    }
}

/// The request pipeline (and, with `alerts`, the alert path) in the test, minus `victims`,
/// which the case runs as processes of their own.
async fn fleet_without(victims: &[Service], alerts: bool, config: &str) -> TestFleet {
    let services: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| !victims.contains(s))
        .filter(|s| alerts || (*s != Service::Correlator && *s != Service::Notifier))
        .collect();
    TestFleet::start(&services, |doc| overlay(doc, config)).await
}

/// One service of the fleet as a process of its own, serving its probes on `probe`.
struct Victim {
    service: Service,
    config: std::path::PathBuf,
    probe: SocketAddr,
    /// Started with `SIGXFSZ` ignored, so a write past a lowered file-size limit fails with
    /// `EFBIG` instead of killing the process (the full-disk case).
    ignore_xfsz: bool,
    child: Option<Child>,
}

impl Victim {
    fn start(tf: &TestFleet, service: Service, config_text: &str) -> Victim {
        Victim::start_with(tf, service, config_text, false)
    }

    fn start_with(
        tf: &TestFleet,
        service: Service,
        config_text: &str,
        ignore_xfsz: bool,
    ) -> Victim {
        let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = tf.data.path().join(format!("{service}-victim.toml"));
        let text = format!("{config_text}\n[telemetry]\nlisten = \"{probe}\"\n");
        std::fs::write(&config, text).expect("victim config");
        let mut v = Victim {
            service,
            config,
            probe,
            ignore_xfsz,
            child: None,
        };
        v.spawn(tf);
        v
    }

    fn spawn(&mut self, tf: &TestFleet) {
        let mut command = if self.ignore_xfsz {
            // The ignored signal is inherited through exec.
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg("trap '' XFSZ; exec \"$0\" \"$@\"")
                .arg(env!("CARGO_BIN_EXE_mcplane-under-test"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
        };
        let child = command
            .args(["run", self.service.as_str(), "--config"])
            .arg(&self.config)
            .args(["--nats", &tf.nats.url(), "--data"])
            .arg(tf.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the victim");
        self.child = Some(child);
    }

    fn pid(&self) -> String {
        self.child
            .as_ref()
            .expect("victim running")
            .id()
            .to_string()
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `GET /readyz` on the victim's probe endpoint: the status and the JSON body.
    async fn readyz(&self) -> Option<(u16, Value)> {
        let response = reqwest::Client::new()
            .get(format!("http://{}/readyz", self.probe))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Polls `/readyz` until it answers `status`; returns that answer's body.
    async fn await_readiness(&self, status: u16, timeout: Duration) -> Option<Value> {
        eventually(timeout, || async {
            self.readyz()
                .await
                .and_then(|(s, body)| (s == status).then_some(body))
        })
        .await
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop (it drains and releases its sled folder).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client submitting requests on the bus the way the gateway does and collecting results.
struct Client {
    bus: Bus,
    inbox: String,
    key: String,
    /// Request id → result envelopes received (a redelivered final stage may answer twice on
    /// the core inbox; the client keys by id).
    results: Arc<Mutex<HashMap<uuid::Uuid, Vec<Envelope<Exchange>>>>>,
}

impl Client {
    async fn start(tf: &TestFleet) -> Client {
        let bus = tf.bus().await;
        let inbox = bus.client.new_inbox();
        let mut sub = bus.client.subscribe(format!("{inbox}.*")).await.unwrap();
        bus.client.flush().await.unwrap();
        let results: Arc<Mutex<HashMap<uuid::Uuid, Vec<Envelope<Exchange>>>>> = Arc::default();
        let r = results.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(env) = Envelope::<Exchange>::from_slice(&msg.payload) {
                    r.lock().unwrap().entry(env.id).or_default().push(env);
                }
            }
        });
        Client {
            bus,
            inbox,
            key: tf.user_key.clone(),
            results,
        }
    }

    /// Submits request `i`, retrying the very same publication (same `Nats-Msg-Id`) until the
    /// server acknowledges it, as a client must when an ack is lost: the server keeps one copy.
    async fn submit(&self, i: usize) -> uuid::Uuid {
        let mut request = AiRequest::new(
            RequestType::Answer,
            format!("fault-burst request {i}: why is checkout slow?"),
        );
        request.services = vec!["checkout".into()];
        let mut env = Envelope::new("", Exchange::new(request));
        env.credential = Some(self.key.clone());
        env.reply_to = Some(format!("{}.{}", self.inbox, env.id));
        let publication =
            Publication::envelope(self.bus.subjects.requests_submit(), &env, "gateway").unwrap();
        let deadline = Instant::now() + SETTLE;
        while let Err(e) = self
            .bus
            .publish_all(std::slice::from_ref(&publication))
            .await
        {
            assert!(Instant::now() < deadline, "request {i} never accepted: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        env.id
    }

    /// Submits `BURST` requests at `RATE`, calling `fault` once after a third of them.
    async fn burst(&self, fault: impl AsyncFnOnce()) -> Vec<uuid::Uuid> {
        let mut ids = Vec::with_capacity(BURST);
        let mut fault = Some(fault);
        let start = tokio::time::Instant::now();
        for i in 0..BURST {
            tokio::time::sleep_until(start + Duration::from_millis(i as u64 * 1000 / RATE)).await;
            ids.push(self.submit(i).await);
            if i == BURST / 3 {
                if let Some(f) = fault.take() {
                    f().await;
                }
            }
        }
        ids
    }

    /// Waits for a result for every id; returns the ids still without one.
    async fn await_results(&self, ids: &[uuid::Uuid]) -> Vec<uuid::Uuid> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let missing: Vec<uuid::Uuid> = {
                let results = self.results.lock().unwrap();
                ids.iter()
                    .filter(|id| !results.contains_key(id))
                    .copied()
                    .collect()
            };
            if missing.is_empty() || Instant::now() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The provider's record: how many calls it got per request number (calls that are not a
/// burst request, such as an incident summary, are left out).
fn calls_per_request(stub: &StubProvider) -> BTreeMap<usize, usize> {
    let mut per = BTreeMap::new();
    for call in stub.calls() {
        let text = call.body.to_string();
        let n = text
            .split("fault-burst request ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = n {
            *per.entry(n).or_insert(0) += 1;
        }
    }
    per
}

/// The books every case must balance. With `in_doubt_allowed` (the model worker killed), a
/// request whose worker died between claiming the call and recording it may end as
/// `invocation_in_doubt` (the model is never called twice), but still ends exactly once.
async fn assert_accounted_once(
    tf: &mut TestFleet,
    client: &Client,
    ids: &[uuid::Uuid],
    stub: &StubProvider,
    audit_victim: Option<&mut Victim>,
    in_doubt_allowed: bool,
) {
    let missing = client.await_results(ids).await;
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    let mut in_doubt = HashSet::new();
    {
        let results = client.results.lock().unwrap();
        for id in ids {
            let first = &results[id][0];
            for env in &results[id] {
                // A result answered twice (a redelivered final stage) is the same result.
                assert_eq!(env.body, first.body, "{id}: two different results");
            }
            match &first.body.error {
                None => assert!(first.body.response.is_some(), "{id}: no response"),
                Some(e) if in_doubt_allowed && e.code == ErrorCode::InvocationInDoubt => {
                    in_doubt.insert(id.to_string());
                }
                Some(e) => panic!("{id}: {e:?}"),
            }
        }
    }
    let per = calls_per_request(stub);
    assert_eq!(
        per.values().sum::<usize>(),
        stub.call_count(),
        "every provider call carries its request number"
    );
    assert!(
        per.values().all(|n| *n == 1),
        "no request called the provider twice: {:?}",
        per.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        per.len() >= ids.len() - in_doubt.len() && per.len() <= ids.len(),
        "every answered request reached the provider once ({} calls, {} requests, {} in doubt)",
        per.len(),
        ids.len(),
        in_doubt.len()
    );

    let in_doubt: Vec<String> = in_doubt.into_iter().collect();
    assert_audited_once(tf, ids, &in_doubt, audit_victim).await;
}

/// The audit trail: exactly one entry per request and stage (four for a request `in_doubt`,
/// which stops at `invoke`), and an intact chain. Stops the fleet (and `audit_victim`).
async fn assert_audited_once(
    tf: &mut TestFleet,
    ids: &[uuid::Uuid],
    in_doubt: &[String],
    audit_victim: Option<&mut Victim>,
) {
    let bus = tf.bus().await;
    assert!(
        wait_consumer_idle(&bus, StreamKind::Audit, "audit", SETTLE).await,
        "the audit service caught up"
    );
    if let Some(v) = audit_victim {
        v.stop();
    }
    tf.stop().await;
    let entries = mcplane_audit::store::entries(tf.data.path(), "acme").unwrap();
    let wanted: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut per_key: HashMap<(String, String), usize> = HashMap::new();
    for e in &entries {
        let id = e.event["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if wanted.contains(&id) {
            let stage = e.event["stage"].as_str().unwrap_or_default().to_string();
            *per_key.entry((id, stage)).or_default() += 1;
        }
    }
    // Five stages audited per answered request; an in-doubt one stops at `invoke` (four).
    assert_eq!(
        per_key.len(),
        ids.len() * 5 - in_doubt.len(),
        "every stage of every request audited"
    );
    assert!(
        per_key.values().all(|n| *n == 1),
        "no stage audited twice: {:?}",
        per_key
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    mcplane_audit::store::verify(tf.data.path(), "acme").expect("the chain verifies");
}

/// A burst while `victim` is killed with `kill -9` and started again on the same disk.
async fn burst_survives_kill_of(victim: Service) {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    // A claim left pending by a killed model worker is declared in doubt after the longest an
    // invocation may take (timeout + the largest Retry-After, per attempt, + 30 s): short
    // timeouts keep that, and so this case, inside a minute.
    let config = fault_config(
        stub.url(),
        "request_timeout_ms = 1000\nqueue_timeout_ms = 200",
    );
    let mut tf = fleet_without(&[victim], false, &config).await;
    let mut v = Victim::start(&tf, victim, &config);
    let client = Client::start(&tf).await;

    let tf_ref = &tf;
    let v_ref = &mut v;
    let ids = client
        .burst(async || {
            v_ref.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            v_ref.spawn(tf_ref);
        })
        .await;
    let audit_victim = (victim == Service::Audit).then_some(&mut v);
    let in_doubt_allowed = victim == Service::Model;
    assert_accounted_once(
        &mut tf,
        &client,
        &ids,
        &stub,
        audit_victim,
        in_doubt_allowed,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_killed_mid_burst_loses_and_repeats_nothing() {
    burst_survives_kill_of(Service::Auth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_killed_mid_burst_loses_and_repeats_nothing() {
    burst_survives_kill_of(Service::Enrichment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_killed_mid_burst_loses_and_repeats_nothing() {
    burst_survives_kill_of(Service::Redaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_killed_mid_burst_calls_the_provider_once_per_request() {
    burst_survives_kill_of(Service::Model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_killed_mid_burst_chains_every_stage_exactly_once() {
    burst_survives_kill_of(Service::Audit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_mid_burst_loses_and_repeats_nothing() {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    let config = fault_config(stub.url(), "");
    let mut tf = fleet_without(&[Service::Gateway], false, &config).await;
    let client = Client::start(&tf).await;
    let nats = &mut tf.nats;
    let ids = client
        .burst(async || {
            // kill -9: JetStream keeps what it acknowledged in its file store.
            nats.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            nats.restart();
        })
        .await;
    assert_accounted_once(&mut tf, &client, &ids, &stub, None, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_times_out_and_the_request_falls_back_once() {
    // The stub never answers in time; the built-in provider is the fallback.
    let stub = StubProvider::start(Behavior::Slow(
        Duration::from_secs(30),
        Box::new(Behavior::answer("too late")),
    ))
    .await;
    let config = format!(
        "{}\n[[model.providers]]\nname = \"local\"\nkind = \"local\"\nmodel = \"mcplane-local-1\"\n",
        fault_config(stub.url(), "request_timeout_ms = 300")
    );
    let mut tf = fleet_without(&[Service::Gateway], false, &config).await;
    let client = Client::start(&tf).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(client.submit(i).await);
    }
    let missing = client.await_results(&ids).await;
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    {
        let results = client.results.lock().unwrap();
        for id in &ids {
            let env = &results[id][0];
            assert!(env.body.error.is_none(), "{:?}", env.body.error);
            assert_eq!(
                env.body.response.as_ref().unwrap().provider,
                "local",
                "answered by the fallback"
            );
        }
    }
    // Each request tried the hanging provider once (max_attempts = 1), then fell back.
    assert!(
        calls_per_request(&stub).values().all(|n| *n == 1),
        "{:?}",
        calls_per_request(&stub)
    );
    let bus = tf.bus().await;
    assert!(wait_consumer_idle(&bus, StreamKind::Audit, "audit", SETTLE).await);
    tf.stop().await;
    let entries = mcplane_audit::store::entries(tf.data.path(), "acme").unwrap();
    let invokes = entries
        .iter()
        .filter(|e| e.event["stage"] == "invoke")
        .count();
    assert_eq!(invokes, ids.len(), "one invoke entry per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_without_fallback_answers_a_coded_timeout() {
    let stub = StubProvider::start(Behavior::Slow(
        Duration::from_secs(30),
        Box::new(Behavior::answer("too late")),
    ))
    .await;
    let config = fault_config(stub.url(), "request_timeout_ms = 300");
    let mut tf = fleet_without(&[Service::Gateway], false, &config).await;
    let client = Client::start(&tf).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.submit(i).await);
    }
    let missing = client.await_results(&ids).await;
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    let codes: Vec<String> = {
        let results = client.results.lock().unwrap();
        ids.iter()
            .map(|id| {
                results[id][0]
                    .body
                    .error
                    .as_ref()
                    .map(|e| e.code.to_string())
                    .unwrap_or_default()
            })
            .collect()
    };
    assert!(
        codes.iter().all(|c| !c.is_empty()),
        "every request failed with a code: {codes:?}"
    );
    assert_eq!(stub.call_count(), ids.len(), "one call per request");
    tf.stop().await;
}

/// Submits one request and waits for its result: the fleet and the victim are serving.
async fn warm_up(client: &Client, victim: &Victim) -> uuid::Uuid {
    let first = client.submit(10_000).await;
    assert!(client.await_results(&[first]).await.is_empty(), "warm-up");
    assert!(
        victim
            .await_readiness(200, Duration::from_secs(20))
            .await
            .is_some(),
        "the victim is ready once it served a request"
    );
    first
}

/// Polls the victim's `/readyz` while `requests` more are submitted, until it answers 503;
/// returns the reasons it gave.
async fn not_ready_under_load(
    client: &Client,
    victim: &Victim,
    ids: &mut Vec<uuid::Uuid>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    // Numbered apart from the cases' own requests (0..) and the warm-up (10 000).
    let mut i = 1_000;
    loop {
        ids.push(client.submit(i).await);
        i += 1;
        if let Some((503, body)) = victim.readyz().await {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered 503 while the disk refused writes: {:?}",
            victim.readyz().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The enrichment worker's disk "fills up" while it runs (its file-size limit drops to 8 KiB,
/// so every sled write past that fails with `EFBIG`), a burst arrives, and the limit is lifted
/// again, without a restart: `/readyz` says 503 meanwhile, and every request is answered once
/// the disk is writable again, when `/readyz` says 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_disk_makes_the_worker_unready_and_it_recovers_without_restart() {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    let config = fault_config(stub.url(), "");
    let mut tf = fleet_without(&[Service::Enrichment], false, &config).await;
    let mut victim = Victim::start_with(&tf, Service::Enrichment, &config, true);
    let client = Client::start(&tf).await;
    let mut ids = vec![warm_up(&client, &victim).await];

    let pid = victim.pid();
    let prlimit = |limit: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "prlimit --fsize={limit}");
    };
    prlimit("8192:unlimited");
    let why = not_ready_under_load(&client, &victim, &mut ids).await;
    assert!(
        why.to_string().contains("last write failed"),
        "the reason names the failed write: {why}"
    );
    for i in 0..20 {
        ids.push(client.submit(i).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    prlimit("unlimited:unlimited");
    let missing = client.await_results(&ids).await;
    let ready_again = victim.await_readiness(200, SETTLE).await;
    assert!(victim.alive(), "the worker kept running");
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    assert!(
        ready_again.is_some(),
        "ready again once the disk takes writes"
    );
    assert_accounted_once(&mut tf, &client, &ids, &stub, None, false).await;
}

/// The redaction worker's disk turns read-only while it runs: every write and sync it makes
/// fails with `EROFS`, as on a filesystem the kernel remounted read-only. The tests run as
/// root, which `chmod` does not stop, and a read-only remount is refused while sled holds its
/// files open for writing (`EBUSY`), so the fault is injected at the system-call boundary of
/// the running process: `strace --inject` on `pwrite64`/`fsync`/`fdatasync` (sled's writes),
/// then detached. `/readyz` says 503 meanwhile, and every request is answered once, without a
/// restart, when the disk is writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_ledger_disk_makes_the_worker_unready_and_it_recovers_without_restart() {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    let config = fault_config(stub.url(), "");
    let mut tf = fleet_without(&[Service::Redaction], false, &config).await;
    let mut victim = Victim::start(&tf, Service::Redaction, &config);
    let client = Client::start(&tf).await;
    let mut ids = vec![warm_up(&client, &victim).await];

    let writes = "pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range";
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-p", &victim.pid()])
        .arg(format!("-etrace={writes}"))
        .arg(format!("-einject={writes}:error=EROFS"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (scripts/ensure-strace.sh installs it)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        strace.try_wait().unwrap().is_none(),
        "strace could not attach to the worker: the test needs ptrace rights over it \
         (root, or kernel.yama.ptrace_scope = 0)"
    );
    let why = not_ready_under_load(&client, &victim, &mut ids).await;
    assert!(
        why.to_string().contains("Read-only file system"),
        "the reason names the read-only disk: {why}"
    );
    for i in 0..20 {
        ids.push(client.submit(i).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SIGINT makes strace detach, leaving the worker running untraced.
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    let missing = client.await_results(&ids).await;
    let ready_again = victim.await_readiness(200, SETTLE).await;
    assert!(victim.alive(), "the worker kept running");
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    assert!(
        ready_again.is_some(),
        "ready again once the disk takes writes"
    );
    assert_accounted_once(&mut tf, &client, &ids, &stub, None, false).await;
}

/// The latest revision of every `acme` incident on the bus.
async fn latest_incidents(bus: &mcplane_shared::bus::Bus) -> Vec<IncidentEvent> {
    let mut latest: HashMap<String, IncidentEvent> = HashMap::new();
    let filter = bus.subjects.incidents("acme", "*");
    for payload in stored_messages(bus, StreamKind::Incidents, filter).await {
        let env = Envelope::<IncidentEvent>::from_slice(&payload).unwrap();
        let e = latest
            .entry(env.body.incident_id.clone())
            .or_insert(env.body.clone());
        if env.body.revision >= e.revision {
            *e = env.body;
        }
    }
    latest.into_values().collect()
}

/// Alert `i` of a burst: its own alert name (so its own fingerprint) on one of sixteen
/// services. Spread so that an incident holds at most a hundred of the largest burst's (1,200)
/// alerts, all of which its events then list for [`alert_counts`] to count (past a hundred an
/// event lists only the latest).
fn burst_alert(i: usize) -> Value {
    alertmanager_payload(
        &format!("fault-svc-{}", i % 16),
        &format!("FaultAlert{i}"),
        "critical",
    )
}

/// How many times each burst alert was counted, over every incident.
fn alert_counts(incidents: &[IncidentEvent]) -> BTreeMap<usize, u32> {
    let mut counts = BTreeMap::new();
    for incident in incidents {
        for alert in &incident.alerts {
            let n = alert
                .summary
                .strip_prefix("FaultAlert")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(n) = n {
                *counts.entry(n).or_insert(0) += alert.count;
            }
        }
    }
    counts
}

/// HTTP clients POST AI requests and alerts to a gateway that is killed with `kill -9` after a
/// third of them and started again: every request it accepted (202 with an id) has exactly one
/// result, fetched from the restarted gateway, and reached the provider exactly once; every
/// alert it accepted (202) is counted exactly once in an incident. What the kill cut off got
/// no 202 and may or may not have gone on, but at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_mid_burst_answers_every_accepted_request_and_alert_once() {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    let config = fault_config(stub.url(), "");
    let mut tf = fleet_without(&[Service::Gateway], true, &config).await;
    // A 1 ms wait for the result: every accepted request answers 202 at once, so the kill
    // lands among requests still in the pipeline.
    let gateway_config = format!(
        "{config}\n[gateway]\nhttp_addr = \"{}\"\nrequest_timeout_ms = 1\n",
        tf.http
    );
    let mut gateway = Victim::start(&tf, Service::Gateway, &gateway_config);
    tf.wait_ready().await;

    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 40;
    let attempts = Arc::new(AtomicUsize::new(0));
    // Requests accepted by the restarted gateway: it serves again without operator action.
    let after_restart = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (base, key, attempts) = (tf.base(), tf.user_key.clone(), attempts.clone());
        let (after_restart, restarted) = (after_restart.clone(), restarted.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut requests, mut alerts) = (Vec::new(), Vec::new());
            for k in 0..PER_CLIENT {
                let i = c * PER_CLIENT + k;
                attempts.fetch_add(1, Ordering::SeqCst);
                let request = serde_json::json!({
                    "type": "answer",
                    "input": format!("fault-burst request {i}: why is checkout slow?"),
                    "services": ["checkout"],
                });
                let sent = http
                    .post(format!("{base}/v1/requests"))
                    .bearer_auth(&key)
                    .json(&request)
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status() == 202 {
                        if restarted.load(Ordering::SeqCst) {
                            after_restart.fetch_add(1, Ordering::SeqCst);
                        }
                        let body: Value = r.json().await.unwrap();
                        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
                        requests.push((i, id));
                    }
                }
                let sent = http
                    .post(format!("{base}/v1/alerts/alertmanager"))
                    .bearer_auth(&key)
                    .json(&burst_alert(i))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 202) {
                    alerts.push(i);
                }
                // The burst outlasts the restart (about 2.5 s a client).
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            (requests, alerts)
        }));
    }
    let total = CLIENTS * PER_CLIENT;
    let killed_at = eventually(SETTLE, || async {
        let n = attempts.load(Ordering::SeqCst);
        (n >= total / 3).then_some(n)
    })
    .await
    .expect("the burst got going");
    gateway.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.spawn(&tf);
    restarted.store(true, Ordering::SeqCst);
    let (mut requests, mut alerts) = (Vec::new(), Vec::new());
    for t in tasks {
        let (r, a) = t.await.unwrap();
        requests.extend(r);
        alerts.extend(a);
    }
    tf.wait_ready().await;
    assert!(
        requests.len() < total,
        "the kill (after {killed_at} attempts) cut the burst: {} of {total} requests accepted",
        requests.len()
    );
    assert!(
        after_restart.load(Ordering::SeqCst) > 0,
        "the restarted gateway accepted requests again"
    );

    // Every accepted request: one result, served by the restarted gateway.
    let http = reqwest::Client::new();
    for (i, id) in &requests {
        let fetched = eventually(SETTLE, || async {
            let r = http
                .get(format!("{}/v1/requests/{id}", tf.base()))
                .bearer_auth(&tf.user_key)
                .send()
                .await
                .ok()?;
            (r.status() != 404).then_some(r.status().as_u16())
        })
        .await;
        assert_eq!(fetched, Some(200), "request {i} ({id}) answered");
    }
    let per = calls_per_request(&stub);
    assert!(
        per.values().all(|n| *n == 1),
        "a request called twice: {per:?}"
    );
    for (i, _) in &requests {
        assert_eq!(
            per.get(i),
            Some(&1),
            "accepted request {i} reached the provider"
        );
    }

    // Every accepted alert: counted once, in one incident.
    let bus = tf.bus().await;
    let counts = eventually(SETTLE, || async {
        let counts = alert_counts(&latest_incidents(&bus).await);
        alerts
            .iter()
            .all(|i| counts.contains_key(i))
            .then_some(counts)
    })
    .await
    .expect("every accepted alert reached an incident");
    assert!(
        counts.values().all(|n| *n == 1),
        "an alert counted twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let ids: Vec<uuid::Uuid> = requests.iter().map(|(_, id)| *id).collect();
    gateway.kill();
    assert_audited_once(&mut tf, &ids, &[], None).await;
}

/// An HTTP receiver standing in for Slack: records every post, and how many are in flight.
struct SlackReceiver {
    url: String,
    posts: Arc<Mutex<Vec<Value>>>,
    in_flight: Arc<AtomicUsize>,
}

impl SlackReceiver {
    async fn start() -> SlackReceiver {
        use axum::routing::post;
        let posts: Arc<Mutex<Vec<Value>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (p, f) = (posts.clone(), in_flight.clone());
        let app = axum::Router::new().fallback(post(move |axum::Json(body): axum::Json<Value>| {
            let (posts, in_flight) = (p.clone(), f.clone());
            async move {
                in_flight.fetch_add(1, Ordering::SeqCst);
                // A little latency, as a real webhook has.
                tokio::time::sleep(Duration::from_millis(20)).await;
                posts.lock().unwrap().push(body);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slack", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlackReceiver {
            url,
            posts,
            in_flight,
        }
    }

    fn count(&self) -> usize {
        self.posts.lock().unwrap().len()
    }
}

/// A burst of alerts opens many incidents; the notifier posting their summaries to Slack is
/// killed with `kill -9` once a third are posted and started again: every summary on the bus is
/// posted exactly once (a redelivered summary whose post went out is answered from the
/// fleet-wide claim, never posted again).
///
/// The kill lands between posts (every summary so far posted, the rest of the burst still to
/// come): a kill between claiming a post and sending it leaves that post in doubt, which the notifier resolves, after minutes,
/// by not posting rather than risking a second page; that window is not this test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_killed_mid_burst_posts_every_summary_exactly_once() {
    let slack = SlackReceiver::start().await;
    let mut tf = fleet_without(&[Service::Notifier], true, "").await;
    let notifier_config = format!(
        "{}\n[notifier]\nslack_webhook_url = \"{}\"\n",
        mcplane_tests::TEST_CONFIG,
        slack.url
    );
    let mut notifier = Victim::start(&tf, Service::Notifier, &notifier_config);

    // One incident (and so one summary and one post) per service, opened about 70 ms apart: a
    // third of them, then the kill once the notifier has posted every summary so far, then the
    // rest of the burst while it is down and after it is back.
    const INCIDENTS: usize = 45;
    const BEFORE_KILL: usize = INCIDENTS / 3;
    let send = |range: std::ops::Range<usize>| {
        let (base, key) = (tf.base(), tf.user_key.clone());
        async move {
            let http = reqwest::Client::new();
            for i in range {
                let alert =
                    alertmanager_payload(&format!("notify-svc-{i}"), "HighErrorRate", "critical");
                let r = http
                    .post(format!("{base}/v1/alerts/alertmanager"))
                    .bearer_auth(&key)
                    .json(&alert)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                tokio::time::sleep(Duration::from_millis(70)).await;
            }
        }
    };
    let bus = tf.bus().await;
    let summaries = || async {
        stored_messages(
            &bus,
            StreamKind::Summaries,
            bus.subjects.summaries("acme", "*"),
        )
        .await
        .iter()
        .map(|p| Envelope::<IncidentSummary>::from_slice(p).unwrap().body)
        .collect::<Vec<_>>()
    };
    send(0..BEFORE_KILL).await;
    // Every summary on the bus posted and none in flight: the notifier is idle, so the kill
    // lands between posts. (Killing it when the receiver merely has nothing in flight raced
    // with the notifier claiming its next post, which then stays in doubt, as above.)
    let killed_at = eventually(SETTLE, || async {
        let n = slack.count();
        (n == BEFORE_KILL
            && summaries().await.len() == BEFORE_KILL
            && slack.in_flight.load(Ordering::SeqCst) == 0)
            .then_some(n)
    })
    .await
    .expect("the first third of the summaries posted");
    notifier.kill();
    let sender = tokio::spawn(send(BEFORE_KILL..INCIDENTS));
    tokio::time::sleep(Duration::from_millis(300)).await;
    notifier.spawn(&tf);
    sender.await.unwrap();

    let posted = eventually(SETTLE, || async {
        let n = summaries().await.len();
        (n == INCIDENTS && slack.count() >= n).then_some(())
    })
    .await;
    // Let a duplicate, if any, arrive before counting exactly.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summaries = summaries().await;
    let posts = slack.posts.lock().unwrap().clone();
    assert!(
        posted.is_some(),
        "killed after {killed_at} posts: {} summaries, {} posts",
        summaries.len(),
        posts.len()
    );
    assert_eq!(summaries.len(), INCIDENTS, "one summary per incident");
    assert_eq!(posts.len(), INCIDENTS, "one Slack post per summary");
    let texts: HashSet<String> = posts.iter().map(|p| p["text"].to_string()).collect();
    assert_eq!(texts.len(), INCIDENTS, "no summary posted twice");
    notifier.stop();
    tf.stop().await;
}

/// The Kafka bridge, as a process of its own, killed with `kill -9` while it publishes a
/// topic's records and started again: every record is on the bus once and every alert is
/// counted once in its incident. (`alert_feeds.rs` aborts an in-process bridge, whose consumer
/// is dropped and closed; a real kill leaves the group membership and the uncommitted offsets
/// exactly as a crash does, and the restarted bridge waits out the session timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bridge_killed_mid_stream_counts_every_alert_once() {
    let kafka = KafkaBroker::start();
    let topic = "fault-alerts-acme";
    let n = 1200;
    let mut tf = TestFleet::start(&[Service::Correlator], |_| {}).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    futures::future::join_all((0..n).map(|i| {
        let producer = producer.clone();
        async move {
            let value = burst_alert(i).to_string();
            let key = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }))
    .await;

    let bus = tf.bus().await;
    let mut publishes = bus
        .client
        .subscribe(bus.subjects.alerts_in("acme", "alertmanager"))
        .await
        .unwrap();
    let config = format!(
        r#"{}
[kafka-bridge]
brokers = "{}"
group_id = "mcplane-fault-test"
max_in_flight = 8
commit_interval_ms = 20
kafka = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[[kafka-bridge.topics]]
topic = "{topic}"
tenant = "acme"
source = "alertmanager"
"#,
        mcplane_tests::TEST_CONFIG,
        kafka.bootstrap()
    );
    let mut bridge = Victim::start(&tf, Service::KafkaBridge, &config);
    // Killed the moment a fifth of the records went out.
    let mut seen = 0;
    let counted = tokio::time::timeout(SETTLE, async {
        while seen < n / 5 {
            if publishes.next().await.is_none() {
                break;
            }
            seen += 1;
        }
    })
    .await;
    bridge.kill();
    assert!(
        counted.is_ok(),
        "the bridge never got going ({seen} publishes)"
    );
    drop(publishes);
    tokio::time::sleep(Duration::from_millis(300)).await;
    bridge.spawn(&tf);

    let counts = eventually(SETTLE, || async {
        let counts = alert_counts(&latest_incidents(&bus).await);
        (counts.len() == n).then_some(counts)
    })
    .await;
    let raw = stored_messages(
        &bus,
        StreamKind::Alerts,
        bus.subjects.alerts_in("acme", "alertmanager"),
    )
    .await
    .len();
    let counts =
        counts.unwrap_or_else(|| panic!("not every alert reached an incident ({raw} on the bus)"));
    assert_eq!(raw, n, "every record on the bus exactly once");
    assert!(
        counts.values().all(|c| *c == 1),
        "an alert counted twice: {:?}",
        counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        bridge
            .await_readiness(200, Duration::from_secs(20))
            .await
            .is_some(),
        "the restarted bridge is ready"
    );
    bridge.stop();
    tf.stop().await;
}
