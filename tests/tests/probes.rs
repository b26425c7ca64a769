//! Every worker's probe endpoint (`[telemetry] listen`) against a real nats-server, over real
//! sockets: ready once its consume loop pulls, not ready (503, with the reason) while NATS is
//! gone and ready again once it is back, its metrics served, and the listener closed when the
//! workers stop. The disk side of readiness is exercised by the full and read-only disk cases
//! in `faults.rs`.

use std::time::Duration;

use mcplane_shared::Service;
use mcplane_tests::{eventually, free_port, TestFleet};
use serde_json::Value;

/// `GET path`: the status and the body (JSON when it is JSON).
async fn get(http: &reqwest::Client, base: &str, path: &str) -> Option<(u16, String)> {
    let r = http.get(format!("{base}{path}")).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn await_status(http: &reqwest::Client, base: &str, path: &str, want: u16) -> Option<Value> {
    eventually(Duration::from_secs(30), || async {
        let (status, body) = get(http, base, path).await?;
        (status == want).then(|| serde_json::from_str(&body).unwrap_or(Value::Null))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_ready_only_while_nats_is_up_and_serve_their_metrics() {
    let probe = format!("127.0.0.1:{}", free_port());
    let mut tf = TestFleet::start(&[Service::Enrichment, Service::Redaction], |doc| {
        doc.set("telemetry.listen", toml::Value::String(probe.clone()));
    })
    .await;
    let base = format!("http://{probe}");
    let http = reqwest::Client::new();

    // Both workers of this one-process fleet answer on the one listener.
    let ready = await_status(&http, &base, "/readyz", 200)
        .await
        .expect("ready once the consume loops pull");
    let mut services: Vec<&str> = ready["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["enrichment", "redaction"]);
    let (status, _) = get(&http, &base, "/healthz").await.unwrap();
    assert_eq!(status, 200);

    // A message the enrichment stage can only drop shows in its metrics.
    let bus = tf.bus().await;
    bus.js
        .publish(
            bus.subjects.stage(Service::Enrichment, "acme"),
            "not an envelope".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let counted = eventually(Duration::from_secs(20), || async {
        let (_, text) = get(&http, &base, "/metrics").await?;
        text.lines()
            .any(|l| {
                l.starts_with("mcplane_messages_total")
                    && l.contains("consumer=\"enrichment\"")
                    && l.contains("outcome=\"term\"")
            })
            .then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the dropped message is counted in /metrics"
    );

    // NATS gone: not ready, saying why; back: ready again, without a restart.
    // Each worker has its own connection and notices the loss on its own schedule, so wait
    // until both say why rather than asserting on the first 503.
    tf.nats.kill();
    let down = eventually(Duration::from_secs(30), || async {
        let (status, body) = get(&http, &base, "/readyz").await?;
        let down: Value = serde_json::from_str(&body).ok()?;
        let both = ["enrichment", "redaction"].iter().all(|s| {
            down["reasons"][*s]
                .to_string()
                .contains("not connected to NATS")
        });
        (status == 503 && both).then_some(down)
    })
    .await
    .expect("not ready, with each worker's reason, while NATS is down");
    assert_eq!(down["error"]["code"], "unavailable", "{down}");
    let (status, _) = get(&http, &base, "/healthz").await.unwrap();
    assert_eq!(
        status, 200,
        "still alive: an orchestrator must not restart it"
    );
    tf.nats.restart();
    assert!(
        await_status(&http, &base, "/readyz", 200).await.is_some(),
        "ready again once NATS is back"
    );

    tf.stop().await;
    let closed = eventually(Duration::from_secs(10), || async {
        get(&http, &base, "/healthz").await.is_none().then_some(())
    })
    .await;
    assert!(closed.is_some(), "the listener closes with the last worker");
}
