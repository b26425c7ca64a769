//! The notifier against a real nats-server and a real HTTP receiver standing in for Slack:
//! each summary is posted once across replicas and redeliveries, passing failures are retried,
//! refusals are not, and every delivery leaves a receipt in the tenant's audit trail.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mcplane_notifier::config::Config;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{AuditEvent, AuditOutcome, Envelope, IncidentSummary, Severity};
use mcplane_testkit::{bus_config, service_config, NatsServer, Running};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

/// A webhook receiver answering the given statuses in turn (then 200), recording each body.
async fn receiver(script: Vec<u16>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen2 = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let (seen, script) = (seen2.clone(), script.clone());
            async move {
                seen.lock().unwrap().push(body);
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                (StatusCode::from_u16(status).unwrap(), "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

fn replica(nats: &NatsServer, data: &Path, url: &str) -> Running {
    let config = service_config(
        nats,
        data,
        Config {
            slack_webhook_url: Some(url.to_string()),
            ..Config::default()
        },
    );
    Running::spawn(|shutdown| mcplane_notifier::run(config, shutdown))
}

fn summary(revision: u32) -> Envelope<IncidentSummary> {
    Envelope::new(
        "acme",
        IncidentSummary {
            incident_id: "0193a0c4-0000-7000-8000-000000000001".into(),
            tenant: "acme".into(),
            revision,
            severity: Severity::Critical,
            service: "checkout".into(),
            title: "checkout: HighErrorRate".into(),
            summary: "Checkout errors at 12%.".into(),
            alert_count: 2,
            degraded: false,
            provider: Some("local".into()),
            model: Some("mcplane-local-1".into()),
            opened_at: chrono::Utc::now(),
            links: vec![],
        },
    )
}

async fn publish(bus: &Bus, env: &Envelope<IncidentSummary>, attempt: &str) {
    bus.publish_envelope(bus.subjects.summaries("acme", "critical"), env, attempt)
        .await
        .unwrap();
}

/// The receipt the notifier wrote to the audit stream for `env`.
async fn receipt(bus: &Bus) -> AuditEvent {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(StreamKind::Audit))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(m) = stream
            .get_last_raw_message_by_subject(&bus.subjects.audit("acme"))
            .await
        {
            return Envelope::<AuditEvent>::from_slice(&m.payload).unwrap().body;
        }
        assert!(started.elapsed() < DEADLINE, "no receipt");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for(seen: &Arc<Mutex<Vec<Value>>>, n: usize) {
    let started = Instant::now();
    while seen.lock().unwrap().len() < n {
        assert!(started.elapsed() < DEADLINE, "expected {n} posts");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_posted_once_across_replicas_and_redeliveries() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let (url, seen) = receiver(vec![]).await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&nats, a_dir.path(), &url);
    let b = replica(&nats, b_dir.path(), &url);

    let env = summary(1);
    // The same summary three times (as redeliveries would bring it), to either replica.
    for attempt in ["one", "two", "three"] {
        publish(&bus, &env, attempt).await;
    }
    wait_for(&seen, 1).await;
    let r = receipt(&bus).await;
    assert_eq!(r.stage, "notify");
    assert_eq!(r.outcome, AuditOutcome::Ok);
    assert_eq!(r.detail["delivered"], true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.stop().await;
    b.stop().await;

    let posts = seen.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "exactly one post: {posts:?}");
    assert_eq!(
        posts[0]["text"],
        "[critical] checkout: HighErrorRate (2 alerts on checkout)"
    );
    assert_eq!(posts[0]["blocks"][0]["type"], "header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_failures_are_retried_and_refusals_are_not() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();

    // Two 503s, then success: one summary, three attempts, delivered.
    let (url, seen) = receiver(vec![503, 503]).await;
    let dir = tempfile::tempdir().unwrap();
    let notifier = replica(&nats, dir.path(), &url);
    publish(&bus, &summary(1), "t").await;
    wait_for(&seen, 3).await;
    let r = receipt(&bus).await;
    assert_eq!(
        (r.detail["delivered"].clone(), r.detail["attempts"].clone()),
        (true.into(), 3.into())
    );
    notifier.stop().await;

    // A 404 (a deleted channel) is final: one attempt, a failed receipt, no retry.
    let (url, seen) = receiver(vec![404]).await;
    let dir = tempfile::tempdir().unwrap();
    let notifier = replica(&nats, dir.path(), &url);
    publish(&bus, &summary(2), "t").await;
    wait_for(&seen, 1).await;
    let started = Instant::now();
    let r = loop {
        let r = receipt(&bus).await;
        if r.outcome == AuditOutcome::Failed {
            break r;
        }
        assert!(started.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(r.detail["status"], 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    notifier.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}
