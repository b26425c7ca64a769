//! Authorisation policy at run time: a pushed policy changes the next decision of every
//! deciding service without a restart, the audit chain names the version that decided, and
//! what the listings show (`/v1/models`, `/v1/capabilities`) is exactly what is enforced.

use std::time::Duration;

use mcplane_auth::keys::KeyStore;
use mcplane_shared::policy::live::{push, PushError};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{PrincipalKind, Service};
use mcplane_testkit::{Behavior, StubProvider};
use mcplane_tests::{eventually, wait_consumer_idle, TestFleet};
use serde_json::{json, Value};

/// Service desk: only `answer` requests, only private models. Everyone else as built in.
const DESK_2: &str = r#"// version: desk-2
@id("members-submit")
permit (principal, action == Action::"request", resource)
unless { principal in Role::"service-desk" };
@id("desk-answers-only")
permit (principal in Role::"service-desk", action == Action::"request", resource == RequestType::"answer");
@id("private-models")
permit (principal, action == Action::"invoke", resource) when { resource.boundary == "private" };
@id("sre-any-model")
permit (principal in Role::"sre", action == Action::"invoke", resource);
@id("read")
permit (principal, action == Action::"read", resource);
"#;

/// Service desk may have no model invoked at all.
const DESK_3: &str = r#"// version: desk-3
permit (principal, action == Action::"request", resource);
permit (principal, action == Action::"invoke", resource) unless { principal in Role::"service-desk" };
permit (principal, action == Action::"read", resource);
"#;

async fn get(tf: &TestFleet, key: &str, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", tf.base()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn ask(tf: &TestFleet, key: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/requests", tf.base()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn model_ids(models: &Value) -> Vec<String> {
    let mut ids: Vec<String> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_policy_decides_the_next_request_and_the_audit_names_its_version() {
    let cloud = StubProvider::start(Behavior::answer("from the cloud")).await;
    let url = cloud.url().to_string();
    let mut tf = TestFleet::start(&Service::ALL, move |doc| {
        let local: toml::Table =
            toml::from_str("name = \"local\"\nkind = \"local\"\nmodel = \"mcplane-local-1\"")
                .unwrap();
        let cloud: toml::Table = toml::from_str(&format!(
            "name = \"cloud\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"stub-1\"\nboundary = \"public_cloud\""
        ))
        .unwrap();
        doc.set(
            "model.providers",
            toml::Value::Array(vec![toml::Value::Table(local), toml::Value::Table(cloud)]),
        );
    })
    .await;
    let keys = KeyStore::open(tf.data.path()).unwrap();
    let (desk, _) = keys
        .create(
            "acme",
            vec!["service-desk".into()],
            PrincipalKind::User,
            None,
        )
        .unwrap();
    let sre = tf.user_key.clone();
    let summarize = json!({"type": "summarize", "input": "checkout errors since 10:00"});

    // Under the built-in policy the desk may summarise and sees every model.
    let (status, body) = ask(&tf, &desk, summarize.clone()).await;
    assert_eq!(status, 200, "{body}");
    let first_id = body["id"].as_str().unwrap().to_string();
    let all = model_ids(&get(&tf, &desk, "/v1/models").await);
    assert_eq!(all, vec!["mcplane-local-1", "stub-1"]);

    // Push desk-2 while the fleet runs.
    let bus = tf.bus().await;
    let (engine, _) = push(&bus, DESK_2).await.unwrap();
    assert_eq!(engine.version(), "desk-2");
    // The same version for different text is refused; the exact text again is fine.
    let reused = push(&bus, &DESK_2.replace("desk-answers-only", "x")).await;
    assert!(
        matches!(reused, Err(PushError::VersionReused(_))),
        "{reused:?}"
    );
    push(&bus, DESK_2).await.unwrap();

    // The next summarise is refused, with no restart; the gateway's listing agrees.
    let denied = eventually(Duration::from_secs(15), || {
        let (tf, desk, summarize) = (&tf, desk.clone(), summarize.clone());
        async move {
            let (status, body) = ask(tf, &desk, summarize).await;
            (status == 403).then_some(body)
        }
    })
    .await
    .expect("the pushed policy takes effect");
    assert_eq!(denied["error"]["code"], "forbidden", "{denied}");
    assert!(denied["error"]["message"]
        .as_str()
        .unwrap()
        .contains("desk-2"));
    let denied_id = denied["id"].as_str().map(str::to_string);
    let caps = get(&tf, &desk, "/v1/capabilities").await;
    assert_eq!(caps["request_types"], json!(["answer"]), "{caps}");
    assert_eq!(caps["policy_version"], "desk-2");

    // Listings match enforcement: the desk is shown only the private model, and asking for the
    // cloud one never reaches it; an SRE is shown both and reaches the cloud model.
    let desk_models = eventually(Duration::from_secs(10), || {
        let (tf, desk) = (&tf, desk.clone());
        async move {
            let ids = model_ids(&get(tf, &desk, "/v1/models").await);
            (ids.len() == 1).then_some(ids)
        }
    })
    .await
    .expect("the model service switched too");
    assert_eq!(desk_models, vec!["mcplane-local-1"]);
    let (status, body) = ask(
        &tf,
        &desk,
        json!({"type": "answer", "input": "why is the build slow?", "model": "stub-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        cloud.call_count(),
        0,
        "the desk's request never reached the cloud model"
    );
    assert_eq!(
        model_ids(&get(&tf, &sre, "/v1/models").await),
        vec!["mcplane-local-1", "stub-1"]
    );
    let (status, body) = ask(
        &tf,
        &sre,
        json!({"type": "answer", "input": "why is the build slow?", "model": "stub-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cloud.call_count(), 1);

    // desk-3: nothing listed, and a request is refused `forbidden` at the model stage.
    push(&bus, DESK_3).await.unwrap();
    let empty = eventually(Duration::from_secs(15), || {
        let (tf, desk) = (&tf, desk.clone());
        async move {
            let ids = model_ids(&get(tf, &desk, "/v1/models").await);
            ids.is_empty().then_some(())
        }
    })
    .await;
    assert!(empty.is_some(), "desk-3 leaves the desk no model");
    let (status, body) = ask(&tf, &desk, json!({"type": "answer", "input": "hello"})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(cloud.call_count(), 1);

    // The audit chain names the version behind each decision.
    assert!(wait_consumer_idle(&bus, StreamKind::Audit, "audit", Duration::from_secs(20)).await);
    tf.stop().await;
    let entries = mcplane_audit::store::entries(tf.data.path(), "acme").unwrap();
    let version_of = |id: &str, stage: &str| -> Option<String> {
        entries
            .iter()
            .find(|e| e.event["request_id"] == id && e.event["stage"] == stage)
            .and_then(|e| {
                e.event["detail"]["policy_version"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    assert_eq!(
        version_of(&first_id, "authorize").as_deref(),
        Some("builtin-1")
    );
    assert_eq!(
        version_of(&first_id, "enrich").as_deref(),
        Some("builtin-1")
    );
    let denied_id = denied_id.expect("the refusal carries the request id");
    assert_eq!(
        version_of(&denied_id, "authorize").as_deref(),
        Some("desk-2")
    );
    let invoke_versions: Vec<&str> = entries
        .iter()
        .filter(|e| e.event["stage"] == "invoke")
        .filter_map(|e| e.event["detail"]["routing"]["policy_version"].as_str())
        .collect();
    assert!(
        invoke_versions.contains(&"builtin-1"),
        "{invoke_versions:?}"
    );
    assert!(invoke_versions.contains(&"desk-3"), "{invoke_versions:?}");
}
