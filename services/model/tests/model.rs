//! The invoke step against a real nats-server and a real HTTP provider on a loopback port:
//! a redelivery never invokes the provider twice, on the same replica or on another, a claim
//! left pending by a dead replica is answered in doubt, and failing providers fall back.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use mcplane_model::config::{Config, ProviderConfig, ProviderKind};
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::ledger::{Ledger, SledLedger};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, Envelope, ErrorCode, Exchange, Itinerary, Principal, PrincipalKind, RequestType,
    Service, Step,
};
use mcplane_testkit::{bus_config, service_config, NatsServer, Running};
use serde_json::{json, Value};

const TENANT: &str = "acme";
const DEADLINE: Duration = Duration::from_secs(20);

/// An OpenAI-compatible provider on a free port that counts its calls.
async fn counting_provider() -> (String, Arc<AtomicUsize>) {
    provider_answering("Restart the payments pool.").await
}

/// An OpenAI-compatible provider on a free port that answers `content` and counts its calls.
async fn provider_answering(content: &str) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let content = content.to_string();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(_body): Json<Value>| {
            let (seen, content) = (seen.clone(), content.clone());
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                Json(json!({
                    "model": "stub-1",
                    "choices": [{"message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), calls)
}

fn openai(name: &str, base_url: &str) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        model: "stub-1".into(),
        base_url: Some(base_url.into()),
        ..ProviderConfig::local(name)
    }
}

fn local() -> ProviderConfig {
    ProviderConfig::local("local")
}

fn replica(nats: &NatsServer, data: &Path, providers: Vec<ProviderConfig>) -> Running {
    let config = service_config(
        nats,
        data,
        Config {
            request_timeout_ms: 2_000,
            max_attempts: 2,
            providers,
            ..Config::default()
        },
    );
    Running::spawn(|shutdown| mcplane_model::run(config, shutdown))
}

/// A request whose itinerary is due at the invoke step.
fn request() -> Envelope<Exchange> {
    let mut env = Envelope::new(
        TENANT,
        Exchange::new(AiRequest::new(
            RequestType::Answer,
            "Why do payments time out?",
        )),
    );
    env.itinerary = Itinerary::ai_request();
    env.itinerary.next = 2;
    assert_eq!(env.itinerary.current(), Some(Step::Invoke));
    env.principal = Some(Principal {
        id: "key-1".into(),
        tenant: TENANT.into(),
        roles: vec!["sre".into()],
        kind: PrincipalKind::User,
    });
    env
}

/// Publishes `env` to the model stage as a fresh message (a distinct `Nats-Msg-Id`, so the
/// server does not drop it): exactly what a redelivery looks like to the stage.
async fn deliver(bus: &Bus, env: &Envelope<Exchange>, attempt: &str) {
    bus.publish_envelope(bus.subjects.stage(Service::Model, TENANT), env, attempt)
        .await
        .unwrap();
}

async fn wait_idle(bus: &Bus) {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(StreamKind::Pipeline))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let pending = match stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("model")
            .await
        {
            Ok(mut c) => {
                let info = c.info().await.unwrap();
                info.num_pending + info.num_ack_pending as u64
            }
            Err(_) => 1,
        };
        if pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the model stage never went idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The envelope the stage forwarded to the response redaction step.
async fn forwarded(bus: &Bus) -> Envelope<Exchange> {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(StreamKind::Pipeline))
        .await
        .unwrap();
    let subject = bus.subjects.stage(Service::Redaction, TENANT);
    let started = Instant::now();
    loop {
        if let Ok(m) = stream.get_last_raw_message_by_subject(&subject).await {
            return Envelope::from_slice(&m.payload).unwrap();
        }
        assert!(started.elapsed() < DEADLINE, "nothing forwarded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn result(bus: &Bus, id: &uuid::Uuid) -> Envelope<Exchange> {
    mcplane_testkit::stored_result(bus, id, DEADLINE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_envelope_delivered_twice_invokes_the_provider_once() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let (url, calls) = counting_provider().await;
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let service = replica(&nats, data.path(), vec![openai("stub", &url)]);

    let env = request();
    deliver(&bus, &env, "first").await;
    let out = forwarded(&bus).await;
    assert_eq!(out.id, env.id);
    assert_eq!(out.itinerary.current(), Some(Step::RedactResponse));
    let response = out.body.response.expect("a response");
    assert_eq!(response.text, "Restart the payments pool.");
    assert_eq!(response.provider, "stub");

    deliver(&bus, &env, "again").await;
    wait_idle(&bus).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the provider is called exactly once"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_on_another_replica_reuses_the_claimed_outcome() {
    let nats = NatsServer::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (url, calls) = counting_provider().await;
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();

    let env = request();
    let a = replica(&nats, data_a.path(), vec![openai("stub", &url)]);
    deliver(&bus, &env, "first").await;
    forwarded(&bus).await;
    wait_idle(&bus).await;
    a.stop().await;

    // Replica B has never seen the request: its own ledger is empty.
    let b = replica(&nats, data_b.path(), vec![openai("stub", &url)]);
    deliver(&bus, &env, "on-b").await;
    wait_idle(&bus).await;
    b.stop().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "replica B reused A's invocation"
    );

    // B produced the same answer from the claim, and recorded it in its own ledger.
    let ledger = SledLedger::open(
        data_b.path().join("model").join("ledger"),
        Duration::from_secs(3600),
    )
    .unwrap();
    let stored = ledger
        .get(&format!("{}:invoke", env.id))
        .unwrap()
        .expect("replica B recorded its outputs");
    let pubs: Vec<Publication> = mcplane_shared::bus::decode_outputs(&stored).unwrap();
    let next = pubs
        .iter()
        .find(|p| p.subject == bus.subjects.stage(Service::Redaction, TENANT))
        .expect("forwarded to response redaction");
    let env_b: Envelope<Exchange> = Envelope::from_slice(next.payload.as_bytes()).unwrap();
    assert_eq!(
        env_b.body.response.unwrap().text,
        "Restart the payments pool."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_pending_by_a_dead_replica_is_answered_in_doubt_not_invoked_again() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let (url, calls) = counting_provider().await;
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let env = request();
    // A replica claimed this request an hour ago and died before recording an outcome.
    let kv = bus.bucket(&bus.subjects.claims_bucket()).await.unwrap();
    let an_hour_ago = chrono_millis() - 3_600_000;
    kv.create(
        format!("{}.invoke", env.id),
        format!("pending:{an_hour_ago}").into(),
    )
    .await
    .unwrap();

    let service = replica(&nats, data.path(), vec![openai("stub", &url)]);
    deliver(&bus, &env, "after-crash").await;
    let out = result(&bus, &env.id).await;
    service.stop().await;
    assert_eq!(out.body.error.unwrap().code, ErrorCode::InvocationInDoubt);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_falls_back_and_with_no_fallback_the_answer_is_degraded() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    // Nothing listens on this port: every connect is refused.
    let dead = format!("http://127.0.0.1:{}/v1", mcplane_testkit::free_port());

    let data = tempfile::tempdir().unwrap();
    let service = replica(&nats, data.path(), vec![openai("down", &dead), local()]);
    let env = request();
    deliver(&bus, &env, "t").await;
    let out = forwarded(&bus).await;
    assert_eq!(out.body.response.unwrap().provider, "local");
    service.stop().await;

    let data = tempfile::tempdir().unwrap();
    let service = replica(&nats, data.path(), vec![openai("down", &dead)]);
    let env = request();
    deliver(&bus, &env, "t").await;
    let out = result(&bus, &env.id).await;
    service.stop().await;
    let error = out.body.error.expect("a coded error");
    assert_eq!(error.code, ErrorCode::Degraded);
    assert!(error.message.contains("down"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_for_the_bus_ends_the_request_with_payload_too_large_and_one_call() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    // 1.2 MB of answer: past NATS' 1 MiB `max_payload` for the claim's record, let alone the
    // hand-off carrying it on.
    let (url, calls) = provider_answering(&"All quiet. ".repeat(110_000)).await;
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let service = replica(&nats, data.path(), vec![openai("verbose", &url)]);

    let env = request();
    deliver(&bus, &env, "first").await;
    let out = result(&bus, &env.id).await;
    let error = out.body.error.expect("a coded error");
    assert_eq!(error.code, ErrorCode::PayloadTooLarge, "{}", error.message);
    assert!(
        error.message.contains("verbose") && error.message.contains("max_payload"),
        "{}",
        error.message
    );
    assert!(out.body.response.is_none());

    // Delivered again: the refusal recorded in the claim is reused, the provider not called.
    deliver(&bus, &env, "again").await;
    wait_idle(&bus).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    service.stop().await;
}
