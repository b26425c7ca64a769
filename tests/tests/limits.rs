//! Rate limits at the edge: past a principal's burst the next request is answered 429
//! `rate_limited` with a `Retry-After` hint, and the principal is served again once its bucket
//! refills; a second principal of the same tenant is not affected.

use mcplane_shared::{PrincipalKind, Service};
use mcplane_tests::TestFleet;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_burst_a_principal_gets_429_with_retry_after_and_others_do_not() {
    let mut tf = TestFleet::start(&Service::ALL, |doc| {
        let limits: toml::Table =
            toml::from_str("principal_per_sec = 1.0\nprincipal_burst = 2.0\n").unwrap();
        doc.set("auth.rate_limits", toml::Value::Table(limits));
    })
    .await;
    let keys = mcplane_auth::keys::KeyStore::open(tf.data.path()).unwrap();
    let (other_key, _) = keys
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .unwrap();
    let client = reqwest::Client::new();
    let ask = |key: String| {
        client
            .post(format!("{}/v1/requests", tf.base()))
            .bearer_auth(key)
            .json(&json!({"type": "answer", "input": "is search healthy?"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(ask(tf.user_key.clone()).await.unwrap().status(), 200);
    }
    let limited = ask(tf.user_key.clone()).await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after_secs"], retry_after);

    assert_eq!(
        ask(other_key).await.unwrap().status(),
        200,
        "another principal"
    );
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(
        ask(tf.user_key.clone()).await.unwrap().status(),
        200,
        "refilled"
    );
    tf.stop().await;
}
