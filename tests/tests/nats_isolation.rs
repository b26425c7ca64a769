//! The generated NATS authorization (`mcplane nats-config`) enforced by a real nats-server:
//! the whole fleet works with each service connected as its own user, a tenant's chat
//! integration cannot subscribe to another tenant's summaries, a tenant's monitoring tool cannot
//! publish another tenant's alerts, a client cannot publish into an internal stage subject,
//! only auth and the admin reach the API key bucket, and only the redaction service the token
//! vault.

use std::time::Duration;

use futures::StreamExt;
use mcplane_shared::config::Document;
use mcplane_shared::permissions::{self, NatsUser};
use mcplane_shared::subjects::{StreamKind, Subjects};
use mcplane_shared::{Envelope, IncidentSummary, PrincipalKind, Service};
use mcplane_testkit::{free_port, stored_messages, NatsServer};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Connects as `user`, collecting the server's error messages (permission violations).
async fn connect_as(
    nats: &NatsServer,
    user: &NatsUser,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.user.clone(),
        user.password.clone(),
    )
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    })
    .connect(nats.url())
    .await
    .expect("connect");
    (client, rx)
}

async fn violation(errors: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("the server reported no violation")
        .expect("error channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_generated_authorization_each_party_reaches_only_its_own_subjects() {
    let subjects = Subjects::default();
    let tenants = vec!["acme".to_string(), "globex".to_string()];
    let users = permissions::users(&subjects, &tenants, |u| format!("test-{u}"));
    let data = tempfile::tempdir().unwrap();
    let auth_file = data.path().join("nats-auth.conf");
    std::fs::write(&auth_file, permissions::render(&users)).unwrap();
    let nats = NatsServer::start_with_config(Some(&auth_file));
    let user = |name: &str| users.iter().find(|u| u.user == name).unwrap().clone();

    // The fleet, each service as its own user.
    let keys = mcplane_auth::keys::KeyStore::open(data.path()).unwrap();
    let (user_key, _) = keys
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .unwrap();
    let (sa_key, _) = keys
        .create(
            "*",
            vec!["service".into()],
            PrincipalKind::ServiceAccount,
            None,
        )
        .unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let mut doc = Document::parse(mcplane_tests::TEST_CONFIG).unwrap();
    doc.set(
        "data_dir",
        toml::Value::String(data.path().display().to_string()),
    );
    doc.set("gateway.http_addr", toml::Value::String(http.clone()));
    doc.set(
        "enrichment.cmdb_file",
        toml::Value::String(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cmdb.toml").into()),
    );
    doc.set(
        "correlator.service_account_key",
        toml::Value::String(sa_key),
    );
    mcplane_shared::telemetry::init_logs(&doc.common().unwrap().log);
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for service in Service::ALL {
        let mut d = doc.clone();
        let u = user(&format!("mcplane-{service}"));
        d.set("bus.url", toml::Value::String(u.url(&nats.url())));
        tasks.push(mcplane_cli::fleet::spawn_service(service, &d, shutdown.child_token()).unwrap());
    }
    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let ready = mcplane_tests::eventually(Duration::from_secs(30), || async {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never became ready");

    // The admin (`mcplane keys create --nats`) issues a key into the fleet's bucket; the auth
    // service, as its own user, follows it.
    let (admin, _) = connect_as(&nats, &user("mcplane-admin")).await;
    let admin = mcplane_shared::bus::Bus::from_client(admin, Default::default());
    let (bucket_key, _) = mcplane_auth::fleet_keys::KeyBucket::open(&admin)
        .await
        .unwrap()
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .await
        .unwrap();
    let accepted = mcplane_tests::eventually(Duration::from_secs(10), || async {
        let r = client
            .get(format!("{base}/v1/models"))
            .bearer_auth(&bucket_key)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(accepted.is_some(), "the bucket key is accepted");
    // Any other service is refused the bucket: no reading digests, no purging revocations.
    let (gateway, mut gateway_errors) = connect_as(&nats, &user("mcplane-gateway")).await;
    let js = async_nats::jetstream::new(gateway);
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        js.get_key_value(subjects.keys_bucket()),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "the gateway opened the key bucket"
    );
    let error = violation(&mut gateway_errors).await;
    assert!(
        error.contains("Permissions Violation") && error.contains("KV_mcplane-keys"),
        "{error}"
    );

    let (chat, mut chat_errors) = connect_as(&nats, &user("mcplane-chat-acme")).await;
    let mut own = chat
        .subscribe(subjects.summaries("acme", ">"))
        .await
        .unwrap();

    // An AI request and an alert go through every service under its own permissions.
    let resp = client
        .post(format!("{base}/v1/requests"))
        .bearer_auth(&user_key)
        .json(&json!({"type": "answer", "input": "is checkout healthy?", "services": ["checkout"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = client
        .post(format!("{base}/v1/alerts/alertmanager"))
        .bearer_auth(&user_key)
        .json(&mcplane_tests::alertmanager_payload(
            "checkout",
            "HighErrorRate",
            "critical",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let summary = tokio::time::timeout(Duration::from_secs(30), own.next())
        .await
        .expect("acme's integration gets acme's summary")
        .unwrap();
    let summary = Envelope::<IncidentSummary>::from_slice(&summary.payload).unwrap();
    assert_eq!(summary.body.tenant, "acme");
    assert!(
        !summary.body.degraded,
        "the summary went through the model: {summary:?}"
    );

    // acme's integration cannot subscribe to globex's summaries.
    let mut other = chat
        .subscribe(subjects.summaries("globex", ">"))
        .await
        .unwrap();
    let error = violation(&mut chat_errors).await;
    assert!(
        error.contains("Permissions Violation") && error.contains("globex"),
        "{error}"
    );
    let (correlator, _) = connect_as(&nats, &user("mcplane-correlator")).await;
    correlator
        .publish(subjects.summaries("globex", "critical"), "secret".into())
        .await
        .unwrap();
    correlator.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other.next())
            .await
            .ok()
            .flatten()
            .is_none(),
        "no globex summary reaches acme's integration"
    );

    // A client cannot skip stages by publishing into one.
    let (bus_client, mut client_errors) = connect_as(&nats, &user("mcplane-client")).await;
    bus_client
        .publish(subjects.stage(Service::Model, "acme"), "{}".into())
        .await
        .unwrap();
    bus_client.flush().await.unwrap();
    let error = violation(&mut client_errors).await;
    assert!(
        error.contains("Permissions Violation") && error.contains("stage.model"),
        "{error}"
    );

    // acme's monitoring tool cannot raise globex's alerts.
    let (alerts, mut alert_errors) = connect_as(&nats, &user("mcplane-alerts-acme")).await;
    alerts
        .publish(subjects.alerts_in("globex", "generic"), "{}".into())
        .await
        .unwrap();
    alerts.flush().await.unwrap();
    let error = violation(&mut alert_errors).await;
    assert!(error.contains("Permissions Violation"), "{error}");

    let (observer, _) = connect_as(&nats, &user("mcplane-audit")).await;
    let bus = mcplane_shared::bus::Bus::from_client(observer, Default::default());
    // The refused alert was never stored (the alerts stream keeps everything it got).
    assert!(stored_messages(
        &bus,
        StreamKind::Alerts,
        subjects.alerts_in("globex", "generic")
    )
    .await
    .is_empty());

    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_redaction_service_reads_or_writes_the_token_vault() {
    let subjects = Subjects::default();
    let users = permissions::users(&subjects, &["acme".to_string()], |u| format!("test-{u}"));
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("nats-auth.conf");
    std::fs::write(&auth_file, permissions::render(&users)).unwrap();
    let nats = NatsServer::start_with_config(Some(&auth_file));
    let user = |name: &str| users.iter().find(|u| u.user == name).unwrap().clone();
    let bucket = subjects.redaction_vault_bucket();
    let stream = format!("KV_{bucket}");
    let key = "key.982010"; // an epoch's sealing key, as `mcplane_redaction::vault` names it

    // The redaction service connects as the service does (its replies on a private inbox),
    // creates the vault and keeps an epoch's sealing key in it.
    let inbox = subjects.private_inbox(Service::Redaction);
    let redaction = mcplane_shared::bus::connect_with_inbox(
        &mcplane_shared::config::BusConfig {
            url: user("mcplane-redaction").url(&nats.url()),
            ..Default::default()
        },
        "mcplane-redaction",
        Some(&inbox),
    )
    .await
    .unwrap();
    let vault = redaction.ensure_vault_bucket().await.unwrap();
    vault
        .put(
            key,
            "5f1d0c0e9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5".into(),
        )
        .await
        .unwrap();

    // Every other user with the JetStream API, the admin among them, is refused each way in:
    // opening the bucket, a direct or stream message get, a consumer (a watch), a purge, a put,
    // and a stream of its own (or one it may create) sourcing the vault. Each refusal is the
    // server's, reported on the connection.
    let others: Vec<NatsUser> = users
        .iter()
        .filter(|u| {
            u.publish.iter().any(|p| p == "$JS.API.CONSUMER.>") && u.user != "mcplane-redaction"
        })
        .cloned()
        .collect();
    assert_eq!(
        others.len(),
        Service::every().count(),
        "every other service and the admin"
    );
    let last = format!(r#"{{"last_by_subj":"$KV.{bucket}.{key}"}}"#);
    let consumer = format!(
        r#"{{"stream_name":"{stream}","config":{{"deliver_policy":"all","ack_policy":"none","filter_subject":"$KV.{bucket}.>"}}}}"#
    );
    let attempts = [
        (
            format!("$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.{key}"),
            String::new(),
        ),
        (format!("$JS.API.DIRECT.GET.{stream}"), last.clone()),
        (format!("$JS.API.STREAM.MSG.GET.{stream}"), last),
        (format!("$JS.API.STREAM.INFO.{stream}"), String::new()),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            consumer.clone(),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy.$KV.{bucket}.>"),
            consumer.clone(),
        ),
        (
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.spy"),
            consumer,
        ),
        (format!("$JS.API.STREAM.PURGE.{stream}"), String::new()),
        // A stream of one's own that sources the vault would copy every entry into it.
        (
            "$JS.API.STREAM.CREATE.SPY".to_string(),
            format!(r#"{{"name":"SPY","sources":[{{"name":"{stream}"}}]}}"#),
        ),
        (
            format!(
                "$JS.API.STREAM.UPDATE.{}",
                subjects.stream_name(StreamKind::Alerts)
            ),
            format!(
                r#"{{"name":"{}","sources":[{{"name":"{stream}"}}]}}"#,
                subjects.stream_name(StreamKind::Alerts)
            ),
        ),
        (format!("$KV.{bucket}.{key}"), "overwritten".to_string()),
    ];
    for other in &others {
        let (client, mut errors) = connect_as(&nats, other).await;
        let js = async_nats::jetstream::new(client.clone());
        // The bucket beside it opens: the refusal is the vault's alone.
        js.get_key_value(subjects.results_bucket())
            .await
            .unwrap_or_else(|e| panic!("{} cannot open the results bucket: {e}", other.user));
        let open = tokio::time::timeout(Duration::from_secs(1), js.get_key_value(&bucket)).await;
        assert!(
            !matches!(open, Ok(Ok(_))),
            "{} opened the vault",
            other.user
        );
        let error = violation(&mut errors).await;
        assert!(
            error.contains("Permissions Violation") && error.contains(&stream),
            "{}: {error}",
            other.user
        );
        for (subject, payload) in &attempts {
            let inbox = client.new_inbox();
            client
                .publish_with_reply(subject.clone(), inbox, payload.clone().into())
                .await
                .unwrap();
            client.flush().await.unwrap();
            let error = violation(&mut errors).await;
            assert!(
                error.contains("Permissions Violation") && error.contains(subject.as_str()),
                "{} {subject}: {error}",
                other.user
            );
        }
    }

    // Nor can anyone overhear the answers to the service's own reads: they come back on its
    // private inbox, outside the `_INBOX.>` everyone may subscribe to, and that inbox is its own.
    let (spy, mut spy_errors) = connect_as(&nats, &user("mcplane-enrichment")).await;
    let mut overheard = spy.subscribe("_INBOX.>").await.unwrap();
    let _private = spy.subscribe(format!("{inbox}.>")).await.unwrap();
    spy.flush().await.unwrap();
    let error = violation(&mut spy_errors).await;
    assert!(
        error.contains("Permissions Violation") && error.contains(&inbox),
        "{error}"
    );
    // The entry is as the redaction service left it, and nobody consumes the vault.
    let entry = vault.get(key).await.unwrap().unwrap();
    let leak = tokio::time::timeout(Duration::from_millis(500), overheard.next()).await;
    assert!(leak.is_err(), "a vault read was overheard: {leak:?}");
    assert!(std::str::from_utf8(&entry).unwrap().starts_with("5f1d0c0e"));
    let info = redaction
        .jetstream()
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.consumer_count, 0);
    assert_eq!(info.state.messages, 1);
}
