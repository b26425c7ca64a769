//! The official `openai` Python package against the gateway, unchanged: a chat call, a
//! streamed chat call and the model list go through the whole governed pipeline, and the
//! prompt the provider receives has the customer's PII redacted.
//!
//! `scripts/test.sh` installs the pinned package; without it this test fails and says so.

use std::process::Command;

use mcplane_shared::Service;
use mcplane_testkit::{Behavior, StubProvider};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_chats_and_streams_through_the_governed_pipeline() {
    let probe = Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "the openai Python package is missing: python3 -m pip install openai (scripts/test.sh does)"
    );
    let stub = StubProvider::start(Behavior::answer(
        "Check the payments dependency; page oncall@example.com.",
    ))
    .await;
    let url = stub.url().to_string();
    let mut tf = mcplane_tests::TestFleet::start(&Service::ALL, |doc| {
        let provider: toml::Table = toml::from_str(&format!(
            "name = \"stub\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"stub-1\"\nboundary = \"private\""
        ))
        .unwrap();
        doc.set("model.providers", toml::Value::Array(vec![toml::Value::Table(provider)]));
    })
    .await;

    let base = tf.base();
    let key = tf.user_key.clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&base, &key])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();

    let expected = "Check the payments dependency; page [REDACTED:EMAIL].";
    assert_eq!(
        seen["plain"], expected,
        "the answer is redacted before the client sees it"
    );
    assert_eq!(seen["streamed"], expected);
    assert!(seen["chunks"].as_u64().unwrap() >= 1);
    assert_eq!(seen["plain_model"], "stub-1");
    assert!(seen["usage"].as_u64().unwrap() > 0);
    assert_eq!(seen["models"], serde_json::json!(["stub-1"]));
    assert_eq!(seen["denied"], 401);

    let calls = stub.calls();
    assert_eq!(calls.len(), 2, "one provider call per chat call");
    for call in &calls {
        let sent = call.body.to_string();
        assert!(
            !sent.contains("jane.doe@example.com") && !sent.contains("7946 0958"),
            "{sent}"
        );
        assert!(sent.contains("checkout"), "{sent}");
    }
    assert_eq!(
        calls[1].body["stream"], true,
        "a streamed call streams from the provider"
    );
    tf.stop().await;
}
