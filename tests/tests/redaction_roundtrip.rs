//! Reversible tokenisation end to end, through the real fleet (gateway → auth → enrichment →
//! redaction → model → stub provider → model → redaction → gateway → client): the provider
//! only ever sees tokens, a client whose role may detokenise gets the originals back in the
//! answer, and a client without that role gets the tokens.

use mcplane_auth::keys::KeyStore;
use mcplane_shared::{PrincipalKind, Service};
use mcplane_testkit::provider::{Behavior, StubProvider};
use mcplane_tests::TestFleet;
use serde_json::{json, Value};

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";

async fn ask(base: &str, key: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/requests"))
        .bearer_auth(key)
        .json(&json!({
            "type": "answer",
            "input": format!("Customer {EMAIL} was charged twice on card {CARD}. Draft a reply."),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorised_client_gets_originals_unauthorised_gets_tokens_provider_sees_neither() {
    // The model answers in terms of the tokens it was given, as a real model does.
    let stub = StubProvider::start(Behavior::answer(
        "Dear <EMAIL_1>, we refunded the duplicate charge on <CARD_1>.",
    ))
    .await;
    let url = stub.url().to_string();
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        let provider: toml::Table = toml::from_str(&format!(
            "name = \"stub\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"stub-1\"\nboundary = \"private\""
        ))
        .unwrap();
        doc.set("model.providers", toml::Value::Array(vec![toml::Value::Table(provider)]));
        let roles: toml::Table =
            toml::from_str("EMAIL = [\"sre\"]\nCARD = [\"sre\"]").unwrap();
        doc.set("redaction.detokenize_roles", toml::Value::Table(roles));
    })
    .await;
    let viewer_key = KeyStore::open(tf.data.path())
        .unwrap()
        .create("acme", vec!["viewer".into()], PrincipalKind::User, None)
        .unwrap()
        .0;

    // The fleet's user key has the role `sre`: it may see e-mail addresses and cards.
    let authorised = ask(&tf.base(), &tf.user_key).await;
    let text = authorised["response"]["text"]
        .as_str()
        .expect("answer text");
    assert_eq!(
        text,
        format!("Dear {EMAIL}, we refunded the duplicate charge on {CARD}.")
    );

    let unauthorised = ask(&tf.base(), &viewer_key).await;
    let text = unauthorised["response"]["text"]
        .as_str()
        .expect("answer text");
    assert_eq!(
        text,
        "Dear <EMAIL_1>, we refunded the duplicate charge on <CARD_1>."
    );
    let body = unauthorised.to_string();
    assert!(!body.contains(EMAIL) && !body.contains(CARD), "{body}");

    // The provider saw tokens, never an original: assert on the exact bytes it received.
    let calls = stub.calls();
    assert_eq!(calls.len(), 2, "one provider call per request");
    for call in &calls {
        let sent = call.body.to_string();
        assert!(!sent.contains(EMAIL) && !sent.contains("4111"), "{sent}");
        assert!(
            sent.contains("<EMAIL_1>") && sent.contains("<CARD_1>"),
            "{sent}"
        );
    }
    tf.stop().await;
}
