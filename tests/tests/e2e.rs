//! End-to-end behaviour of the fleet against a real nats-server: one AI request through every
//! stage, a burst of alerts into incidents and Slack posts, a worker killed mid-burst, bad input
//! at the edge, and a tampered audit chain.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, IncidentEvent, IncidentSummary, Service};
use mcplane_tests::{
    alertmanager_payload, eventually, stored_messages, wait_consumer_idle, TestFleet,
};
use serde_json::{json, Value};

/// An HTTP receiver on a free loopback port that records every JSON body and answers with
/// `reply`; returns its base URL and the record.
async fn receiver(reply: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let app = Router::new().fallback(post(move |Json(body): Json<Value>| {
        let seen = seen2.clone();
        let reply = reply.clone();
        async move {
            seen.lock().unwrap().push(body);
            Json(reply)
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_request_goes_through_every_stage_redacted_both_ways_with_cmdb_context() {
    // A provider that leaks PII in its answer, so redaction on the way back is visible.
    let (provider_url, provider_seen) = receiver(json!({
        "id": "cmpl-1", "object": "chat.completion", "model": "stub-1",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "Check the payments dependency. Escalate to oncall@example.com or +1 415 555 0100."}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20}
    }))
    .await;
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        let providers = toml::Value::Array(vec![toml::Value::Table(
            toml::from_str(&format!(
                "name = \"stub\"\nkind = \"openai\"\nbase_url = \"{provider_url}\"\nmodel = \"stub-1\"\nboundary = \"private\""
            ))
            .unwrap(),
        )]);
        doc.set("model.providers", providers);
    })
    .await;

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/requests", tf.base()))
        .bearer_auth(&tf.user_key)
        .json(&json!({
            "type": "answer",
            "input": "Customer jane.doe@example.com (card 4111 1111 1111 1111) cannot pay at checkout. Why?",
            "services": ["checkout"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().expect("result id").to_string();

    // The client sees the provider's answer with its PII masked ...
    let text = body["response"]["text"].as_str().expect("response text");
    assert!(text.contains("Check the payments dependency"), "{text}");
    assert!(
        !text.contains("oncall@example.com") && !text.contains("555 0100"),
        "{text}"
    );
    // ... and the CMDB context of the service it named.
    let context = body["context"].as_array().expect("context");
    assert!(
        context
            .iter()
            .any(|c| c["source"] == "cmdb" && c["subject"] == "checkout"),
        "{body:#}"
    );

    // The provider never saw the customer's PII: assert on the exact bytes it received.
    let seen = provider_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "the provider is called exactly once");
    let sent = seen[0].to_string();
    assert!(!sent.contains("jane.doe@example.com"), "{sent}");
    assert!(!sent.contains("4111 1111 1111 1111"), "{sent}");
    assert!(sent.contains("checkout"), "{sent}");

    // One audit entry per stage, and the chain verifies.
    let bus = tf.bus().await;
    assert!(wait_consumer_idle(&bus, StreamKind::Audit, "audit", Duration::from_secs(20)).await);
    tf.stop().await;
    let entries = mcplane_audit::store::entries(tf.data.path(), "acme").unwrap();
    let stages: Vec<String> = entries
        .iter()
        .filter(|e| e.event["request_id"] == id.as_str())
        .map(|e| e.event["stage"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        stages,
        [
            "authorize",
            "enrich",
            "redact_request",
            "invoke",
            "redact_response"
        ],
        "one audit entry per stage, in order"
    );
    let report = mcplane_audit::store::verify(tf.data.path(), "acme").unwrap();
    assert_eq!(report.entries, entries.len() as u64);
}

/// Sends 100 Alertmanager webhooks (5 services x 4 distinct alerts x 5 repeats) and returns the
/// number of distinct (service) groups.
async fn send_alert_burst(base: &str, key: &str) -> usize {
    let client = reqwest::Client::new();
    let services = [
        "checkout",
        "payments",
        "inventory",
        "search",
        "notifications",
    ];
    for round in 0..5 {
        for service in services {
            for alert in [
                "HighErrorRate",
                "HighLatency",
                "PodRestarting",
                "QueueBacklog",
            ] {
                let resp = client
                    .post(format!("{base}/v1/alerts/alertmanager"))
                    .bearer_auth(key)
                    .json(&alertmanager_payload(service, alert, "critical"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202, "round {round} {service} {alert}");
            }
        }
    }
    services.len()
}

/// Counts distinct incidents opened and summaries published, from their streams.
async fn incident_counts(bus: &mcplane_shared::bus::Bus) -> (usize, usize) {
    let mut opened = HashSet::new();
    let mut summaries = 0;
    for (kind, filter) in [
        (
            StreamKind::Incidents,
            bus.subjects.incidents("acme", "opened"),
        ),
        (StreamKind::Summaries, bus.subjects.summaries("acme", "*")),
    ] {
        for payload in stored_messages(bus, kind, filter).await {
            if kind == StreamKind::Incidents {
                let env = Envelope::<IncidentEvent>::from_slice(&payload).unwrap();
                opened.insert(env.body.incident_id);
            } else {
                Envelope::<IncidentSummary>::from_slice(&payload).unwrap();
                summaries += 1;
            }
        }
    }
    (opened.len(), summaries)
}

/// The latest revision of every `acme` incident on the bus.
async fn latest_incidents(bus: &mcplane_shared::bus::Bus) -> Vec<IncidentEvent> {
    let mut latest: std::collections::HashMap<String, IncidentEvent> = Default::default();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_burst_with_duplicates_yields_one_incident_and_one_summary_each_posted_to_slack() {
    let (slack_url, slack_seen) = receiver(json!("ok")).await;
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        doc.set(
            "notifier.slack_webhook_url",
            toml::Value::String(format!("{slack_url}/slack")),
        );
    })
    .await;
    let groups = send_alert_burst(&tf.base(), &tf.user_key).await;
    let bus = tf.bus().await;

    let counts = eventually(Duration::from_secs(60), || async {
        let c = incident_counts(&bus).await;
        let posts = slack_seen.lock().unwrap().len();
        (c.1 >= groups && posts >= groups).then_some(c)
    })
    .await;
    let (incidents, summaries) = counts.unwrap_or_else(|| {
        panic!(
            "timed out: {:?} incidents/summaries, {} slack posts",
            futures::executor::block_on(incident_counts(&bus)),
            slack_seen.lock().unwrap().len()
        )
    });
    // Let anything extra arrive before asserting exactly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (incidents_after, summaries_after) = incident_counts(&bus).await;
    assert_eq!((incidents, summaries), (groups, groups));
    assert_eq!((incidents_after, summaries_after), (groups, groups));
    let posts = slack_seen.lock().unwrap().clone();
    assert_eq!(posts.len(), groups, "exactly one Slack post per incident");
    assert!(posts
        .iter()
        .all(|p| p["blocks"].is_array() && p["text"].is_string()));
    tf.stop().await;
}

fn spawn_correlator(tf: &TestFleet, config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
        .args(["run", "correlator", "--config"])
        .arg(config)
        .args(["--nats", &tf.nats.url(), "--data"])
        .arg(tf.data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the correlator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlator_killed_mid_burst_loses_no_alert_and_duplicates_no_incident() {
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::Correlator)
        .collect();
    let mut tf = TestFleet::start(&others, |_| {}).await;
    // The correlator runs as its own process so it can really be killed (-9).
    let config = tf.data.path().join("correlator.toml");
    let sa = tf
        .doc
        .get("correlator.service_account_key")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        &config,
        format!(
            "{}\n[correlator]\npartitions = 4\ngroup_wait_ms = 1500\ngroup_interval_secs = 3600\nservice_account_key = \"{sa}\"\n",
            mcplane_tests::TEST_CONFIG.replace("[correlator]\npartitions = 4\ngroup_wait_ms = 1500\ngroup_interval_secs = 3600\n", "")
        ),
    )
    .unwrap();
    let mut correlator = spawn_correlator(&tf, &config);

    let base = tf.base();
    let key = tf.user_key.clone();
    let burst = tokio::spawn(async move { send_alert_burst(&base, &key).await });
    // Kill it while the burst is being ingested, then start it again on the same disk.
    let bus = tf.bus().await;
    let _ = eventually(Duration::from_secs(20), || async {
        let stream = bus
            .js
            .get_stream(bus.subjects.stream_name(StreamKind::Alerts))
            .await
            .ok()?;
        let mut stream = stream;
        let info = stream.info().await.ok()?;
        (info.state.messages >= 20).then_some(())
    })
    .await;
    correlator.kill().unwrap();
    correlator.wait().unwrap();
    let groups = burst.await.unwrap();
    let mut correlator = spawn_correlator(&tf, &config);

    // An event whose publication the kill interrupted is republished from the ledger when its
    // alert is redelivered (after ack_wait), so it may come after later summaries: wait for all.
    let counts = eventually(Duration::from_secs(60), || async {
        let c = incident_counts(&bus).await;
        (c.0 >= groups && c.1 >= groups).then_some(c)
    })
    .await;
    // Every alert was counted: 4 distinct alerts per incident, each received 5 times. The
    // revision that carries the last of them may be one whose publication the kill interrupted,
    // republished only when its alert comes again after `ack_wait`, so wait for it.
    let complete = eventually(Duration::from_secs(30), || async {
        let latest = latest_incidents(&bus).await;
        (latest.len() == groups && latest.iter().all(|i| i.alerts.len() == 4)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = incident_counts(&bus).await;
    let latest = latest_incidents(&bus).await;
    correlator.kill().unwrap();
    let _ = correlator.wait();
    assert_eq!(
        counts,
        Some((groups, groups)),
        "one incident and one summary per service"
    );
    assert_eq!(after, (groups, groups), "nothing duplicated later");
    assert!(
        complete.is_some(),
        "every alert reached its incident: {latest:?}"
    );
    tf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_the_gateway_keeps_serving() {
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        doc.set("gateway.body_limit_bytes", toml::Value::Integer(4096));
    })
    .await;
    let client = reqwest::Client::new();
    let base = tf.base();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client
                .post(format!("{base}/v1/requests"))
                .json(&json!({"type": "answer", "input": "x"})),
            401,
            "unauthenticated",
        ),
        (
            client
                .post(format!("{base}/v1/requests"))
                .bearer_auth("mcp_not_a_real_key")
                .json(&json!({"type": "answer", "input": "x"})),
            401,
            "unauthenticated",
        ),
        (
            client
                .post(format!("{base}/v1/requests"))
                .bearer_auth(&tf.user_key)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            client
                .post(format!("{base}/v1/requests"))
                .bearer_auth(&tf.user_key)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"type\":\"answer\",\"input\":\"{}\"}}",
                    "x".repeat(10_000)
                )),
            413,
            "payload_too_large",
        ),
        (
            client
                .post(format!("{base}/v1/alerts/nagios"))
                .bearer_auth(&tf.user_key)
                .json(&json!({})),
            404,
            "unknown_source",
        ),
    ];
    for (request, status, code) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "expected {code}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Still serving after all of that.
    let resp = client
        .post(format!("{base}/v1/requests"))
        .bearer_auth(&tf.user_key)
        .json(&json!({"type": "summarize", "input": "checkout error rate is high", "services": ["checkout"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    tf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_one_byte_of_an_audit_entry_makes_verify_fail_and_name_it() {
    let mut tf = TestFleet::start(&Service::ALL, |_| {}).await;
    for i in 0..3 {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/requests", tf.base()))
            .bearer_auth(&tf.user_key)
            .json(&json!({"type": "answer", "input": format!("question {i} about search")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let bus = tf.bus().await;
    assert!(wait_consumer_idle(&bus, StreamKind::Audit, "audit", Duration::from_secs(20)).await);
    tf.stop().await;

    let verify = |data: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
            .args(["audit", "verify", "--tenant", "acme", "--data"])
            .arg(data)
            .output()
            .unwrap()
    };
    let ok = verify(tf.data.path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("15 entries verified"));

    // An auditor's offline check: the export matches the signed checkpoint under the trusted
    // key, and not under another; an export with an entry removed fails at that entry.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
            .args(args)
            .arg("--data")
            .arg(tf.data.path())
            .output()
            .unwrap()
    };
    let cp = cli(&["audit", "checkpoint", "--tenant", "acme"]);
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let checkpoint: Value = serde_json::from_slice(&cp.stdout).unwrap();
    assert_eq!(checkpoint["tree_size"], 15);
    let cp_file = tf.data.path().join("checkpoint.json");
    std::fs::write(&cp_file, &cp.stdout).unwrap();
    let export = tf.data.path().join("acme.jsonl");
    let exported = cli(&[
        "audit",
        "export",
        "--tenant",
        "acme",
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(exported.status.success());
    let trusted = checkpoint["public_key"].as_str().unwrap().to_string();
    let against = |file: &std::path::Path, key: &str| {
        cli(&[
            "audit",
            "verify",
            "--tenant",
            "acme",
            "--export",
            file.to_str().unwrap(),
            "--checkpoint",
            cp_file.to_str().unwrap(),
            "--public-key",
            key,
        ])
    };
    let good = against(&export, &trusted);
    let text = String::from_utf8_lossy(&good.stdout).to_string();
    assert!(
        good.status.success() && text.contains("matches the signed checkpoint of 15"),
        "{text}"
    );
    let wrong_key = "ab".repeat(32);
    assert!(!against(&export, &wrong_key).status.success());
    let lines: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let cut = tf.data.path().join("cut.jsonl");
    let without_7: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, l)| l.clone())
        .collect();
    std::fs::write(&cut, without_7.join("\n")).unwrap();
    let bad = against(&cut, &trusted);
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(!bad.status.success() && text.contains("entry 7"), "{text}");

    // Flip one byte inside entry 7's event (keeping it valid JSON): `"stage":"x..."`.
    {
        let db = sled::open(tf.data.path().join("audit").join("chain")).unwrap();
        let tree = db.open_tree("chain/acme").unwrap();
        let key = 7u64.to_be_bytes();
        let mut value = tree.get(key).unwrap().expect("entry 7").to_vec();
        let text = String::from_utf8(value.clone()).unwrap();
        let at = text.find("\"stage\":\"").expect("stage field") + "\"stage\":\"".len();
        value[at] = if value[at] == b'z' { b'y' } else { b'z' };
        tree.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let bad = verify(tf.data.path());
    let out = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(!bad.status.success(), "{out}");
    assert!(out.contains('7'), "names the first bad entry: {out}");
}
