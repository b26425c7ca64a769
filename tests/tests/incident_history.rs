//! Incident history in summaries, end to end: the whole fleet on a real nats-server and a stub
//! provider recording the exact bytes it was sent. An incident on a service resolves; the next
//! incident on that service is summarised with the first one's history (when, which alerts, its
//! last summary), injected by the enrichment service as the `incidents` source; another tenant's
//! incident on the same service never sees it.

use std::time::Duration;

use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, IncidentEvent, Service};
use mcplane_testkit::{Behavior, StubProvider};
use mcplane_tests::{alertmanager_payload, eventually, stored_messages, TestFleet};
use serde_json::Value;

const FIRST_SUMMARY: &str = "Root cause: the checkout connection pool was exhausted.";

async fn post_alert(tf: &TestFleet, payload: &Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/alerts/alertmanager", tf.base()))
        .bearer_auth(&tf.user_key)
        .json(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

fn resolved(mut payload: Value) -> Value {
    payload["status"] = "resolved".into();
    payload["alerts"][0]["status"] = "resolved".into();
    payload["alerts"][0]["endsAt"] = "2026-11-24T10:05:00Z".into();
    payload
}

/// Waits until the stub has been called `n` times; returns what the `n`th call sent.
async fn nth_call(stub: &StubProvider, n: usize) -> String {
    eventually(Duration::from_secs(30), || async {
        (stub.call_count() >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the provider was called {} times, not {n}",
            stub.call_count()
        )
    });
    stub.calls()[n - 1].body.to_string()
}

async fn incident_ids(tf: &TestFleet, tenant: &str, event: &str) -> Vec<String> {
    let bus = tf.bus().await;
    stored_messages(
        &bus,
        StreamKind::Incidents,
        bus.subjects.incidents(tenant, event),
    )
    .await
    .iter()
    .map(|p| {
        Envelope::<IncidentEvent>::from_slice(p)
            .unwrap()
            .body
            .incident_id
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_incident_on_a_service_is_summarised_with_the_last_ones_history_of_its_own_tenant()
{
    let stub = StubProvider::start(Behavior::answer(FIRST_SUMMARY)).await;
    let url = stub.url().to_string();
    let mut tf = TestFleet::start(&Service::ALL, move |doc| {
        let provider: toml::Table = toml::from_str(&format!(
            "name = \"stub\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"stub-1\"\nboundary = \"private\""
        ))
        .unwrap();
        doc.set(
            "model.providers",
            toml::Value::Array(vec![toml::Value::Table(provider)]),
        );
    })
    .await;

    // acme's first incident on checkout: summarised (no history yet), then resolved.
    let first = alertmanager_payload("checkout", "PoolExhausted", "critical");
    post_alert(&tf, &first).await;
    let sent = nth_call(&stub, 1).await;
    assert!(sent.contains("PoolExhausted on checkout"), "{sent}");
    assert!(!sent.contains("past_incidents"), "no history yet: {sent}");
    stub.set_default(Behavior::answer("Checkout is failing again."));
    post_alert(&tf, &resolved(first)).await;
    let first_id = eventually(Duration::from_secs(20), || async {
        incident_ids(&tf, "acme", "resolved").await.pop()
    })
    .await
    .expect("the first incident resolved");

    // A new incident on checkout: its summary request carries the first one's history.
    post_alert(
        &tf,
        &alertmanager_payload("checkout", "HighErrorRate", "critical"),
    )
    .await;
    let sent = nth_call(&stub, 2).await;
    assert!(sent.contains("HighErrorRate on checkout"), "{sent}");
    assert!(sent.contains("past_incidents"), "{sent}");
    assert!(sent.contains(&first_id), "the first incident's id: {sent}");
    assert!(
        sent.contains("PoolExhausted on checkout"),
        "its alerts: {sent}"
    );
    assert!(
        sent.contains("connection pool was exhausted"),
        "its last summary: {sent}"
    );
    assert!(sent.contains("resolved_at"), "when it resolved: {sent}");

    // globex's incident on the same service sees none of acme's history.
    let bus = tf.bus().await;
    let theirs = alertmanager_payload("checkout", "DiskFull", "critical");
    bus.js
        .publish(
            bus.subjects.alerts_in("globex", "alertmanager"),
            serde_json::to_vec(&theirs).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let sent = nth_call(&stub, 3).await;
    assert!(sent.contains("DiskFull on checkout"), "{sent}");
    assert!(!sent.contains(&first_id), "acme's incident leaked: {sent}");
    assert!(
        !sent.contains("PoolExhausted"),
        "acme's alerts leaked: {sent}"
    );
    assert!(
        !sent.contains("connection pool"),
        "acme's summary leaked: {sent}"
    );
    assert!(!sent.contains("past_incidents"), "{sent}");
    tf.stop().await;
}
