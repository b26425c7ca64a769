//! Operators can see the fleet on the bus: every worker answers the NATS micro-service
//! `$SRV.PING` under its own name, and its `status` and `metrics` endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use mcplane_shared::Service;
use mcplane_tests::TestFleet;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_answers_srv_ping_and_its_status_and_metrics_endpoints() {
    let mut tf = TestFleet::start(&Service::ALL, |_| {}).await;
    let bus = tf.bus().await;
    let expected: BTreeSet<String> = Service::ALL
        .iter()
        .map(|s| format!("mcplane-{s}"))
        .collect();

    let found = mcplane_tests::eventually(Duration::from_secs(20), || async {
        let inbox = bus.client.new_inbox();
        let mut replies = bus.client.subscribe(inbox.clone()).await.ok()?;
        bus.client
            .publish_with_reply("$SRV.PING", inbox, "".into())
            .await
            .ok()?;
        let mut names = BTreeSet::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(500), replies.next()).await
        {
            let v: Value = serde_json::from_slice(&m.payload).ok()?;
            names.insert(v["name"].as_str()?.to_string());
        }
        (names == expected).then_some(names)
    })
    .await;
    assert_eq!(found, Some(expected), "every worker answers $SRV.PING");

    let status = bus
        .client
        .request(
            bus.subjects.service_endpoint(Service::Model, "status"),
            "".into(),
        )
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&status.payload).unwrap();
    assert_eq!(status["service"], "model");
    assert_eq!(status["nats"], "connected");

    let metrics = bus
        .client
        .request(
            bus.subjects.service_endpoint(Service::Audit, "metrics"),
            "".into(),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.payload);
    assert!(text.contains("# TYPE"), "Prometheus text: {text}");
    tf.stop().await;
}
