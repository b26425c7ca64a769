//! Crypto-shredding through the whole fleet and the operator's command line: a request's
//! redacted input and checked answer are kept sealed with the tenant's audit key (never in
//! plaintext on the audit stream), `mcplane audit query --decrypt` opens them, and after
//! `mcplane audit shred` they no longer open while `mcplane audit verify` still passes, against
//! the signed checkpoint too.

use std::process::{Command, Output};
use std::time::Duration;

use mcplane_shared::subjects::StreamKind;
use mcplane_shared::tenant_keys::TenantKeys;
use mcplane_shared::Service;
use mcplane_tests::{stored_messages, wait_consumer_idle, TestFleet};
use serde_json::{json, Value};

fn cli(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

/// `audit query --decrypt` lines of one request, by stage.
fn decrypted(data: &std::path::Path, request_id: &str) -> Vec<(String, Value)> {
    let out = cli(data, &["audit", "query", "--tenant", "acme", "--decrypt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"]["request_id"] == request_id)
        .map(|l| (l["event"]["stage"].as_str().unwrap().to_string(), l))
        .collect()
}

fn line<'a>(lines: &'a [(String, Value)], stage: &str) -> &'a Value {
    &lines.iter().find(|(s, _)| s == stage).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_a_tenant_key_makes_its_payloads_unreadable_and_verify_still_passes() {
    let mut tf = TestFleet::start(&Service::ALL, |_| {}).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/requests", tf.base()))
        .bearer_auth(&tf.user_key)
        .json(&json!({
            "type": "answer",
            "input": "Customer jane.doe@example.com says checkout search is slow. Why?"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    let bus = tf.bus().await;
    assert!(wait_consumer_idle(&bus, StreamKind::Audit, "audit", Duration::from_secs(20)).await);
    // Neither the original nor even the redacted text is on the audit stream: only ciphertext.
    let stream = stored_messages(&bus, StreamKind::Audit, bus.subjects.audit_all()).await;
    assert!(!stream.is_empty());
    for m in &stream {
        let text = String::from_utf8_lossy(m);
        assert!(
            !text.contains("jane.doe") && !text.contains("search is slow"),
            "{text}"
        );
    }
    tf.stop().await;
    let data = tf.data.path();

    // While the key exists, an authorised operator reads the payloads back.
    let lines = decrypted(data, &id);
    // Every stage's entry says what was asked and how long the stage took.
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for (stage, l) in &lines {
        let detail = &l["event"]["detail"];
        assert_eq!(detail["request_type"], "answer", "{stage}: {detail}");
        assert!(detail["latency_ms"].is_u64(), "{stage}: {detail}");
    }
    let input = line(&lines, "redact_request")["payload_plaintext"]["input"]
        .as_str()
        .unwrap_or_else(|| panic!("{lines:#?}"))
        .to_string();
    assert!(
        input.contains("search is slow")
            && input.contains("<EMAIL_")
            && !input.contains("jane.doe"),
        "kept after redaction: {input}"
    );
    assert!(
        line(&lines, "redact_response")["payload_plaintext"]["answer"].is_string(),
        "{lines:#?}"
    );
    assert!(line(&lines, "invoke").get("payload_plaintext").is_none());

    // Shredding asks for its confirmation flag first.
    let key_file = TenantKeys::new(TenantKeys::default_dir(data))
        .path("acme")
        .unwrap();
    assert!(key_file.exists());
    let refused = cli(data, &["audit", "shred", "--tenant", "acme"]);
    assert!(!refused.status.success());
    assert!(key_file.exists(), "nothing destroyed without the flag");
    let shred = cli(
        data,
        &[
            "audit",
            "shred",
            "--tenant",
            "acme",
            "--destroy-payloads-irreversibly",
        ],
    );
    assert!(
        shred.status.success(),
        "{}",
        String::from_utf8_lossy(&shred.stderr)
    );
    assert!(!key_file.exists());

    // The payloads are unreadable now ...
    let lines = decrypted(data, &id);
    for stage in ["redact_request", "redact_response"] {
        let l = line(&lines, stage);
        assert!(l.get("payload_plaintext").is_none(), "{l}");
        assert!(l["payload_error"].is_string(), "{l}");
    }
    // ... and the chain verifies, from the data folder and as an export against its checkpoint.
    let verify = cli(data, &["audit", "verify", "--tenant", "acme"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let cp = cli(data, &["audit", "checkpoint", "--tenant", "acme"]);
    assert!(cp.status.success());
    let checkpoint: Value = serde_json::from_slice(&cp.stdout).unwrap();
    let cp_file = data.join("checkpoint.json");
    std::fs::write(&cp_file, &cp.stdout).unwrap();
    let export = data.join("acme.jsonl");
    assert!(cli(
        data,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--out",
            export.to_str().unwrap()
        ]
    )
    .status
    .success());
    let against = cli(
        data,
        &[
            "audit",
            "verify",
            "--tenant",
            "acme",
            "--export",
            export.to_str().unwrap(),
            "--checkpoint",
            cp_file.to_str().unwrap(),
            "--public-key",
            checkpoint["public_key"].as_str().unwrap(),
        ],
    );
    assert!(
        against.status.success(),
        "{}",
        String::from_utf8_lossy(&against.stdout)
    );
}
