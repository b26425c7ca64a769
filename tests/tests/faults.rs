//! The fault suite: a burst of AI requests while a worker is killed with `kill -9` and started
//! again, while nats-server itself is killed and restarted on its JetStream folder, while the
//! model provider hangs, and while a worker's disk is full. Every case checks the same books: every accepted request has exactly
//! one result, the provider was called exactly once per request, and the audit chain holds
//! exactly one entry per request and stage and still verifies.
//!
//! The victim runs as its own process (the `mcplane` command line, `run <service>`), so the kill
//! is a real one; the rest of the fleet runs in the test. (The correlator's kill test lives in
//! `e2e.rs`.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::config::Document;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{AiRequest, Envelope, ErrorCode, Exchange, RequestType, Service};
use mcplane_testkit::{Behavior, StubProvider};
use mcplane_tests::{wait_consumer_idle, TestFleet};

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

/// One service of the fleet as a process of its own.
struct Victim {
    service: Service,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Victim {
    fn start(tf: &TestFleet, service: Service, config_text: &str) -> Victim {
        let config = tf.data.path().join(format!("{service}-victim.toml"));
        std::fs::write(&config, config_text).expect("victim config");
        let mut v = Victim {
            service,
            config,
            child: None,
        };
        v.spawn(tf);
        v
    }

    fn spawn(&mut self, tf: &TestFleet) {
        let child = Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
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

/// The provider's record: how many calls it got per request number.
fn calls_per_request(stub: &StubProvider) -> BTreeMap<usize, usize> {
    let mut per = BTreeMap::new();
    for call in stub.calls() {
        let text = call.body.to_string();
        let n = text
            .split("fault-burst request ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("every provider call carries its request number");
        *per.entry(n).or_insert(0) += 1;
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

    // The audit trail: exactly one entry per request and stage, and an intact chain.
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
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != victim && *s != Service::Correlator && *s != Service::Notifier)
        .collect();
    let mut tf = TestFleet::start(&others, |doc| overlay(doc, &config)).await;
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
    let services = [
        Service::Auth,
        Service::Enrichment,
        Service::Redaction,
        Service::Model,
        Service::Audit,
    ];
    let mut tf = TestFleet::start(&services, |doc| overlay(doc, &config)).await;
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
    let services = [
        Service::Auth,
        Service::Enrichment,
        Service::Redaction,
        Service::Model,
        Service::Audit,
    ];
    let mut tf = TestFleet::start(&services, |doc| overlay(doc, &config)).await;
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
    let services = [
        Service::Auth,
        Service::Enrichment,
        Service::Redaction,
        Service::Model,
        Service::Audit,
    ];
    let mut tf = TestFleet::start(&services, |doc| overlay(doc, &config)).await;
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

/// The enrichment worker's disk "fills up" while it runs (its file-size limit drops to 8 KiB,
/// so every sled write past that fails with `EFBIG`), a burst arrives, and the limit is lifted
/// again, without a restart: every request is answered once the disk is writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_disk_delays_requests_and_the_worker_recovers_without_restart() {
    let stub = StubProvider::start(Behavior::answer("Scale the checkout pool.")).await;
    let config = fault_config(stub.url(), "");
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| {
            *s != Service::Enrichment && *s != Service::Correlator && *s != Service::Notifier
        })
        .collect();
    let mut tf = TestFleet::start(&others, |doc| overlay(doc, &config)).await;
    let config_path = tf.data.path().join("enrichment-victim.toml");
    std::fs::write(&config_path, &config).unwrap();
    // SIGXFSZ ignored (inherited through exec), so an oversized write fails instead of killing.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mcplane-under-test"))
        .args(["run", "enrichment", "--config"])
        .arg(&config_path)
        .args(["--nats", &tf.nats.url(), "--data"])
        .arg(tf.data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let client = Client::start(&tf).await;
    // Ready: one request all the way through.
    let first = client.submit(10_000).await;
    assert!(client.await_results(&[first]).await.is_empty());

    let prlimit = |limit: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "prlimit --fsize={limit}");
    };
    prlimit("8192:unlimited");
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(client.submit(i).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    prlimit("unlimited:unlimited");
    let missing = client.await_results(&ids).await;
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "the worker kept running");
    assert!(
        missing.is_empty(),
        "{} requests without a result",
        missing.len()
    );
    let per = calls_per_request(&stub);
    assert_eq!(
        per.len(),
        ids.len() + 1,
        "every request reached the provider"
    );
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    tf.stop().await;
}
