//! Routing and resilience of the invoke step against scripted providers on loopback ports:
//! retries only on retryable failures (with `Retry-After`), fallback in order, circuits that
//! open and recover through a half-open probe, restricted data kept private, budgets reserved
//! atomically, streams cut mid-way, and routing rules changed at run time.

use std::path::Path;
use std::time::{Duration, Instant};

use mcplane_model::config::{BreakerConfig, BudgetConfig, Config, ProviderConfig, ProviderKind};
use mcplane_model::routing::RoutingConfig;
use mcplane_shared::bus::{Bus, ResultStore};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, AiResponse, AuditEvent, BudgetAlert, Classification, Envelope, ErrorBody, ErrorCode,
    Exchange, Itinerary, Principal, PrincipalKind, RequestType, Service,
};
use mcplane_testkit::{
    bus_config, service_config, stored_messages, Behavior, NatsServer, Running, StubProvider,
};
use serde_json::Value;

const TENANT: &str = "acme";
const DEADLINE: Duration = Duration::from_secs(30);

fn openai(name: &str, stub: &StubProvider) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        model: format!("{name}-model"),
        base_url: Some(stub.url().to_string()),
        ..ProviderConfig::local(name)
    }
}

fn base_config(providers: Vec<ProviderConfig>) -> Config {
    Config {
        request_timeout_ms: 2_000,
        max_attempts: 3,
        providers,
        ..Config::default()
    }
}

struct Harness {
    nats: NatsServer,
    bus: Bus,
    _data: tempfile::TempDir,
    service: Option<Running>,
}

impl Harness {
    async fn start(config: Config) -> Harness {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().unwrap();
        let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
            .await
            .unwrap();
        let service = Some(spawn(&nats, data.path(), config));
        Harness {
            nats,
            bus,
            _data: data,
            service,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await;
        }
    }

    /// Publishes a request due at the invoke step; returns its envelope.
    async fn send(&self, tweak: impl FnOnce(&mut Envelope<Exchange>)) -> Envelope<Exchange> {
        let mut env = Envelope::new(
            TENANT,
            Exchange::new(AiRequest::new(
                RequestType::Answer,
                "Why do payments time out?",
            )),
        );
        env.itinerary = Itinerary::ai_request();
        env.itinerary.next = 2;
        env.principal = Some(Principal {
            id: "key-1".into(),
            tenant: TENANT.into(),
            roles: vec!["sre".into()],
            kind: PrincipalKind::User,
        });
        tweak(&mut env);
        self.bus
            .publish_envelope(
                self.bus.subjects.stage(Service::Model, TENANT),
                &env,
                "test",
            )
            .await
            .unwrap();
        env
    }

    /// The invoke step's outcome for `id`: the response it forwarded, or the error it
    /// delivered as the result.
    async fn outcome(&self, id: uuid::Uuid) -> Result<AiResponse, ErrorBody> {
        let results = ResultStore::open(&self.bus).await.unwrap();
        let started = Instant::now();
        loop {
            if let Some(env) = results.get(&id).await.unwrap() {
                return Err(env
                    .body
                    .error
                    .expect("a delivered failure carries its error"));
            }
            let forwarded = stored_messages(
                &self.bus,
                StreamKind::Pipeline,
                self.bus.subjects.stage(Service::Redaction, TENANT),
            )
            .await;
            for payload in forwarded {
                let env = Envelope::<Exchange>::from_slice(&payload).unwrap();
                if env.id == id {
                    return Ok(env.body.response.expect("forwarded with a response"));
                }
            }
            assert!(started.elapsed() < DEADLINE, "no outcome for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The detail of the invoke step's audit entry for `id`.
    async fn audit_detail(&self, id: uuid::Uuid) -> Value {
        let started = Instant::now();
        loop {
            for payload in stored_messages(
                &self.bus,
                StreamKind::Audit,
                self.bus.subjects.audit(TENANT),
            )
            .await
            {
                let event = Envelope::<AuditEvent>::from_slice(&payload).unwrap().body;
                if event.request_id == id && event.stage == "invoke" {
                    return event.detail;
                }
            }
            assert!(started.elapsed() < DEADLINE, "no audit entry for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(nats: &NatsServer, data: &Path, config: Config) -> Running {
    let config = service_config(nats, data, config);
    Running::spawn(|shutdown| mcplane_model::run(config, shutdown))
}

fn outcomes(detail: &Value) -> Vec<(String, String)> {
    detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_honouring_retry_after_then_fall_back_in_order() {
    let down = StubProvider::start(Behavior::Status(500, None)).await;
    let busy = StubProvider::start(Behavior::answer("from busy")).await;
    busy.then(Behavior::Status(429, Some(1)));
    let h = Harness::start(base_config(vec![
        openai("down", &down),
        openai("busy", &busy),
    ]))
    .await;

    let env = h.send(|_| {}).await;
    let response = h.outcome(env.id).await.unwrap();
    assert_eq!(response.text, "from busy");
    assert_eq!(down.call_count(), 3, "a 500 is retried up to max_attempts");
    let calls = busy.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let detail = h.audit_detail(env.id).await;
    assert_eq!(
        outcomes(&detail),
        [
            ("down", "retryable"),
            ("down", "retryable"),
            ("down", "retryable"),
            ("busy", "retryable"),
            ("busy", "ok")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        detail["routing"]["candidates"],
        serde_json::json!(["down", "busy"])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_not_retried_and_dropped_connections_are() {
    let garbled = StubProvider::start(Behavior::Malformed).await;
    let hangs_up = StubProvider::start(Behavior::Drop).await;
    let h = Harness::start(base_config(vec![
        openai("garbled", &garbled),
        openai("hangs-up", &hangs_up),
        ProviderConfig::local("local"),
    ]))
    .await;
    let env = h.send(|_| {}).await;
    let response = h.outcome(env.id).await.unwrap();
    assert_eq!(response.provider, "local");
    assert_eq!(garbled.call_count(), 1, "an unreadable answer is permanent");
    assert_eq!(hangs_up.call_count(), 3, "a dropped connection may pass");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_times_out_opens_its_circuit_and_recovers_through_one_probe() {
    let slow = StubProvider::start(Behavior::Slow(
        Duration::from_secs(3),
        Box::new(Behavior::answer("late")),
    ))
    .await;
    let mut flaky = openai("flaky", &slow);
    flaky.timeout_ms = Some(300);
    let config = Config {
        max_attempts: 1,
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_ms: 1_500,
        },
        ..base_config(vec![flaky, ProviderConfig::local("local")])
    };
    let h = Harness::start(config).await;

    for _ in 0..2 {
        let env = h.send(|_| {}).await;
        assert_eq!(h.outcome(env.id).await.unwrap().provider, "local");
    }
    assert_eq!(slow.call_count(), 2);
    // The circuit is open: the provider is not even asked.
    let env = h.send(|_| {}).await;
    assert_eq!(h.outcome(env.id).await.unwrap().provider, "local");
    assert_eq!(slow.call_count(), 2);
    let detail = h.audit_detail(env.id).await;
    assert_eq!(detail["routing"]["excluded"][0]["reason"], "circuit open");

    // After open_ms one probe goes through; it succeeds and the circuit closes.
    slow.set_default(Behavior::answer("back"));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for _ in 0..2 {
        let env = h.send(|_| {}).await;
        assert_eq!(h.outcome(env.id).await.unwrap().text, "back");
    }
    assert_eq!(slow.call_count(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_data_never_reaches_a_public_cloud_provider() {
    let cloud = StubProvider::start(Behavior::answer("cloud")).await;
    let inside = StubProvider::start(Behavior::answer("private")).await;
    let mut private = openai("private", &inside);
    private.boundary = Some(mcplane_model::config::Boundary::Private);
    let h = Harness::start(base_config(vec![openai("cloud", &cloud), private])).await;

    let env = h
        .send(|e| e.classification = Classification::Restricted)
        .await;
    assert_eq!(h.outcome(env.id).await.unwrap().text, "private");
    let env = h.send(|_| {}).await;
    assert_eq!(h.outcome(env.id).await.unwrap().text, "cloud");
    assert_eq!(
        cloud.call_count(),
        1,
        "only the internal request went to the cloud"
    );
    h.stop().await;

    // With no private provider at all, restricted data gets a degraded answer, not the cloud.
    let cloud = StubProvider::start(Behavior::answer("cloud")).await;
    let h = Harness::start(base_config(vec![openai("cloud", &cloud)])).await;
    let env = h
        .send(|e| e.classification = Classification::Restricted)
        .await;
    let error = h.outcome(env.id).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Degraded);
    assert!(error.message.contains("boundary"), "{}", error.message);
    assert_eq!(cloud.call_count(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_never_spend_more_than_a_budget_that_fits_ten() {
    // $1 per output token; each request asks for at most 10 tokens and uses 10: $10 each.
    let stub = StubProvider::start(Behavior::Answer {
        text: "ok".into(),
        completion_tokens: 10,
    })
    .await;
    let mut paid = openai("paid", &stub);
    paid.output_cost_per_mtok = 1_000_000.0;
    let mut config = base_config(vec![paid]);
    config.budgets.insert(
        TENANT.into(),
        BudgetConfig {
            daily_usd: Some(100.0),
            monthly_usd: None,
            soft_ratio: 0.5,
        },
    );
    let h = Harness::start(config).await;

    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(h.send(|e| e.body.request.max_tokens = Some(10)).await.id);
    }
    let (mut answered, mut denied) = (0, 0);
    for id in ids {
        match h.outcome(id).await {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::BudgetExceeded, "{}", e.message);
                denied += 1;
            }
        }
    }
    assert_eq!((answered, denied), (10, 40));
    assert_eq!(
        stub.call_count(),
        10,
        "denied requests never reach the provider"
    );

    let budgets = mcplane_model::budget::Budgets::new(
        h.bus
            .bucket(&h.bus.subjects.budgets_bucket())
            .await
            .unwrap(),
        Default::default(),
    );
    let [(_, day), _] = budgets.usage(TENANT, chrono::Utc::now()).await.unwrap();
    assert_eq!(
        day.cost_micros, 100_000_000,
        "exactly the budget, never more"
    );
    assert_eq!(day.requests, 10);

    // The soft limit ($50) was crossed once and announced once.
    let alerts = stored_messages(
        &h.bus,
        StreamKind::Usage,
        h.bus.subjects.usage(TENANT, "budget"),
    )
    .await;
    assert_eq!(alerts.len(), 1);
    let alert = Envelope::<BudgetAlert>::from_slice(&alerts[0])
        .unwrap()
        .body;
    assert_eq!(
        (alert.window.as_str(), alert.soft_limit_micros),
        ("day", 50_000_000)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_its_first_chunk_falls_back_and_one_cut_after_is_a_coded_error() {
    let early = StubProvider::start(Behavior::Stream {
        pieces: vec![],
        finish: false,
    })
    .await;
    let h = Harness::start(Config {
        max_attempts: 1,
        ..base_config(vec![
            openai("early", &early),
            ProviderConfig::local("local"),
        ])
    })
    .await;
    let env = h.send(|e| e.body.request.stream = true).await;
    assert_eq!(h.outcome(env.id).await.unwrap().provider, "local");
    h.stop().await;

    let late = StubProvider::start(Behavior::Stream {
        pieces: vec!["Restart ".into(), "the pool".into()],
        finish: false,
    })
    .await;
    let h = Harness::start(base_config(vec![
        openai("late", &late),
        ProviderConfig::local("local"),
    ]))
    .await;
    let env = h.send(|e| e.body.request.stream = true).await;
    let error = h.outcome(env.id).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::StreamInterrupted);
    assert_eq!(
        late.call_count(),
        1,
        "no retry and no second model for a half answer"
    );

    late.set_default(Behavior::Stream {
        pieces: vec!["Restart ".into(), "the pool".into()],
        finish: true,
    });
    let env = h.send(|e| e.body.request.stream = true).await;
    assert_eq!(h.outcome(env.id).await.unwrap().text, "Restart the pool");
    assert_eq!(late.calls()[1].body["stream"], true);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_routing_rules_change_the_next_decision_without_a_restart() {
    let a = StubProvider::start(Behavior::answer("from a")).await;
    let b = StubProvider::start(Behavior::answer("from b")).await;
    let providers = vec![openai("a", &a), openai("b", &b)];
    let mut config = base_config(providers.clone());
    config.routing = toml::from_str::<RoutingConfig>(
        "version = \"v1\"\n[[rules]]\nname = \"all-to-a\"\nproviders = [\"a\", \"b\"]\n",
    )
    .unwrap();
    let h = Harness::start(config).await;
    let env = h.send(|_| {}).await;
    assert_eq!(h.outcome(env.id).await.unwrap().text, "from a");

    // A version that names an unknown provider is refused; the one in force stays.
    assert!(mcplane_model::live::push(
        &h.bus,
        "version = \"bad\"\n[[rules]]\nname = \"x\"\nproviders = [\"zz\"]\n",
        &providers
    )
    .await
    .is_err());
    let (rules, _) = mcplane_model::live::push(
        &h.bus,
        "version = \"v2\"\n[[rules]]\nname = \"all-to-b\"\nproviders = [\"b\", \"a\"]\n",
        &providers,
    )
    .await
    .unwrap();
    assert_eq!(rules.version, "v2");
    let started = Instant::now();
    loop {
        let env = h.send(|_| {}).await;
        let response = h.outcome(env.id).await.unwrap();
        if response.text == "from b" {
            let detail = h.audit_detail(env.id).await;
            assert_eq!(detail["routing"]["version"], "v2");
            assert_eq!(detail["routing"]["rule"], "all-to-b");
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the pushed rules never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = &h.nats;
    h.stop().await;
}
