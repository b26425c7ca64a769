//! Requests near the size the bus carries. NATS refuses a message over the server's
//! `max_payload` (1 MiB by default), and a request grows on its way: the gateway wraps the body
//! in an envelope, redaction adds the sealed token originals, and its audit entry keeps the
//! sealed payload in hex. A request that can no longer travel must end with a coded answer and
//! an audit entry, not wait out every redelivery and vanish. (Auth's default input limit,
//! 64 KiB, keeps requests far from this; these tests raise it, as an operator may.)

use std::time::Duration;

use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::Service;
use mcplane_tests::{stored_messages, wait_consumer_idle, TestFleet};
use serde_json::{json, Value};

async fn ask(tf: &TestFleet, input: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/requests", tf.base()))
        .bearer_auth(&tf.user_key)
        .json(&json!({"type": "answer", "input": input}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `n` bytes of ticket text in which every line names an address, as a pasted log might.
fn text_with_emails(n: usize) -> String {
    let mut text = String::with_capacity(n + 64);
    let mut i = 0;
    while text.len() < n {
        text.push_str(&format!(
            "user{i}@example.com saw checkout fail at step {i}.\n"
        ));
        i += 1;
    }
    text
}

/// `n` bytes of prose with nothing to redact.
fn plain_text(n: usize) -> String {
    "checkout latency rose after the deploy and the cache hit rate fell. "
        .chars()
        .cycle()
        .take(n)
        .collect()
}

/// The audit events of request `id`, in the order the audit stream holds them.
async fn audited(bus: &Bus, id: &str) -> Vec<Value> {
    assert!(wait_consumer_idle(bus, StreamKind::Audit, "audit", Duration::from_secs(20)).await);
    let mut events = Vec::new();
    for m in stored_messages(bus, StreamKind::Audit, bus.subjects.audit_all()).await {
        let mut event: Value = serde_json::from_slice(&m).unwrap();
        if event["body"]["request_id"] == id {
            events.push(event["body"].take());
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_bus_gets_a_coded_answer_and_an_audit_entry() {
    // Auth refuses inputs over 64 KiB by default; an operator may allow far larger ones.
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        doc.set("auth.max_input_bytes", toml::Value::Integer(1 << 20));
    })
    .await;

    // Inside the gateway's body limit (1 MiB) but, wrapped, over max_payload.
    let (status, body) = ask(&tf, &"a".repeat(1_046_000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    // Fits at the gateway, outgrows the bus at redaction (the sealed token originals).
    let (status, body) = ask(&tf, &text_with_emails(600_000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("redact_request"), "{message}");
    let id = body["id"].as_str().unwrap().to_string();

    // Every stage it passed is on the audit trail, the last one failed with the code.
    let bus = tf.bus().await;
    let stages = audited(&bus, &id).await;
    let names: Vec<&str> = stages
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["authorize", "enrich", "redact_request"],
        "{names:?}"
    );
    let failed = &stages[2];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["code"], "payload_too_large");
    assert!(failed["detail"]["bytes"].as_u64().unwrap() > 1 << 20);

    // Plain text of the same size travels (tokens are what grew the last one), but its sealed
    // copy, in hex, is more than an audit entry can carry: the entry says it is withheld.
    let (status, body) = ask(&tf, &plain_text(600_000)).await;
    assert_eq!(
        status,
        200,
        "{}",
        body.to_string().get(..500).unwrap_or_default()
    );
    let id = body["id"].as_str().unwrap().to_string();
    let stages = audited(&bus, &id).await;
    let redacted = stages
        .iter()
        .find(|e| e["stage"] == "redact_request")
        .expect("a redact_request entry");
    assert_eq!(redacted["outcome"], "ok");
    let detail = &redacted["detail"];
    assert!(
        detail.get("payload").is_none(),
        "{}",
        detail.to_string().get(..500).unwrap_or_default()
    );
    assert!(detail["payload_withheld"].is_string());
    assert!(detail["latency_ms"].is_u64());
    tf.stop().await;
}
