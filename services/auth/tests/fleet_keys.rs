//! Keys valid on every auth replica: two `mcplane_auth::run` instances with separate data
//! folders against one nats-server, a key created in the fleet's key bucket (the path
//! `mcplane keys create --nats` takes), accepted by both, and refused by both shortly after
//! its revocation.
//!
//! Replicas answer `mcplane.auth.resolve` in one queue group, so a query reaches one of them
//! at random: a batch of queries that all agree has reached both (2^-(n-1) odds otherwise),
//! and stopping one replica leaves a query nowhere to go but the other.

use std::path::Path;
use std::time::{Duration, Instant};

use mcplane_auth::config::Config;
use mcplane_auth::fleet_keys::KeyBucket;
use mcplane_auth::keys::KeyStore;
use mcplane_shared::bus::Bus;
use mcplane_shared::PrincipalKind;
use mcplane_testkit::{bus_config, service_config, NatsServer, Running};
use serde_json::Value;

/// Queries per batch: both replicas see some with near certainty.
const BATCH: usize = 24;
const DEADLINE: Duration = Duration::from_secs(15);

fn replica(nats: &NatsServer, data: &Path) -> Running {
    let config = service_config(nats, data, Config::default());
    Running::spawn(|shutdown| mcplane_auth::run(config, shutdown))
}

async fn resolve(bus: &Bus, key: &str) -> Value {
    let payload = serde_json::json!({ "credential": key }).to_string();
    let request = bus
        .client
        .request(bus.subjects.auth_resolve(), payload.into());
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).unwrap(),
        // No replica subscribed, or the query went to one that was stopping.
        Ok(Err(e)) => serde_json::json!({ "no_reply": e.to_string() }),
        Err(_) => serde_json::json!({ "no_reply": "timed out" }),
    }
}

/// The first reply a replica gives (a query sent to a replica as it stops goes unanswered).
async fn answered(bus: &Bus, key: &str) -> Value {
    let started = Instant::now();
    loop {
        let reply = resolve(bus, key).await;
        if reply.get("no_reply").is_none() {
            return reply;
        }
        assert!(started.elapsed() < DEADLINE, "no replica answered: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The replies of one batch, each reduced to the tenant or the error code.
async fn batch(bus: &Bus, key: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        let reply = resolve(bus, key).await;
        out.push(
            reply["principal"]["tenant"]
                .as_str()
                .map(|t| format!("tenant:{t}"))
                .or_else(|| reply["error"]["code"].as_str().map(str::to_string))
                .unwrap_or_else(|| reply.to_string()),
        );
    }
    out
}

/// Waits until a whole batch answers `expected`; returns how long that took.
async fn until_all(bus: &Bus, key: &str, expected: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answers = batch(bus, key).await;
        if answers.iter().all(|a| a == expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "replicas never all answered {expected}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_key_is_accepted_by_every_replica_and_its_revocation_refused_by_all() {
    let nats = NatsServer::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&nats, data_a.path());
    let b = replica(&nats, data_b.path());
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();

    // Created where neither replica's data folder is: in the bucket.
    let keys = KeyBucket::open(&bus).await.unwrap();
    let (key, record) = keys
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .await
        .unwrap();
    until_all(&bus, &key, "tenant:acme").await;
    // Neither replica's key file knows it.
    for data in [data_a.path(), data_b.path()] {
        assert!(KeyStore::open(data).unwrap().list().unwrap().is_empty());
    }
    // The bucket holds the digest and metadata, never the key.
    let listed = keys.list().await.unwrap();
    assert_eq!(listed, vec![record.clone()]);
    let stored = bus
        .bucket(&bus.subjects.keys_bucket())
        .await
        .unwrap()
        .get(&record.key_id)
        .await
        .unwrap()
        .unwrap();
    let stored = String::from_utf8(stored.to_vec()).unwrap();
    assert!(!stored.contains(&key) && stored.contains(&record.hash));

    // Revoked once, refused everywhere, live.
    assert!(keys.revoke(&record.key_id).await.unwrap());
    assert!(!keys.revoke("key_000000000000").await.unwrap());
    let took = until_all(&bus, &key, "unauthenticated").await;
    eprintln!("revocation refused by both replicas after {took:?}");

    // With A gone, only B can answer: it refuses the revoked key and accepts a new one.
    a.stop().await;
    let reply = answered(&bus, &key).await;
    assert_eq!(reply["error"]["code"], "unauthenticated", "{reply}");
    let (second, _) = keys
        .create("globex", vec!["viewer".into()], PrincipalKind::User, None)
        .await
        .unwrap();
    until_all(&bus, &second, "tenant:globex").await;

    // A replica starting afresh (an empty data folder) loads both from the bucket.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = replica(&nats, fresh_dir.path());
    b.stop().await;
    until_all(&bus, &second, "tenant:globex").await;
    assert_eq!(
        answered(&bus, &key).await["error"]["code"],
        "unauthenticated"
    );
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_key_file_carries_its_keys_and_revocations_into_the_bucket() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let file = KeyStore::open(data.path()).unwrap();
    let (kept, _) = file
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .unwrap();
    let (gone, gone_record) = file
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .unwrap();
    assert!(file.revoke(&gone_record.key_id).unwrap());
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let bucket = KeyBucket::open(&bus).await.unwrap();
    let report = bucket.import(file.list().unwrap()).await.unwrap();
    assert_eq!((report.created, report.conflicts.len()), (2, 0));
    let again = bucket.import(file.list().unwrap()).await.unwrap();
    assert_eq!((again.created, again.unchanged), (0, 2));

    // A replica on another host (its own, empty data folder) now honours the file's keys.
    let elsewhere = tempfile::tempdir().unwrap();
    let service = replica(&nats, elsewhere.path());
    until_all(&bus, &kept, "tenant:acme").await;
    assert_eq!(
        answered(&bus, &gone).await["error"]["code"],
        "unauthenticated"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_read_the_bucket_answers_unavailable_not_a_guess() {
    // A NATS user that may do anything except touch the key bucket's stream.
    let subjects = mcplane_shared::Subjects::default();
    let stream = format!("KV_{}", subjects.keys_bucket());
    let user = mcplane_shared::permissions::NatsUser {
        user: "blind".into(),
        password: "blind-pw".into(),
        publish: vec![">".into()],
        deny_publish: vec![
            format!("$JS.API.STREAM.*.{stream}"),
            format!("$JS.API.CONSUMER.*.{stream}"),
            format!("$JS.API.CONSUMER.*.{stream}.>"),
        ],
        subscribe: vec![">".into()],
    };
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("auth.conf");
    std::fs::write(
        &conf,
        mcplane_shared::permissions::render(std::slice::from_ref(&user)),
    )
    .unwrap();
    let nats = NatsServer::start_with_config(Some(&conf));

    // A key it could check (its own key file) and one it cannot know about: both wait on the
    // bucket, then get a coded `unavailable`, neither a principal nor a denial.
    let data = tempfile::tempdir().unwrap();
    let (file_key, _) = KeyStore::open(data.path())
        .unwrap()
        .create("acme", vec!["sre".into()], PrincipalKind::User, None)
        .unwrap();
    let mut config = service_config(&nats, data.path(), Config::default());
    config.common.bus.url = user.url(&nats.url());
    let service = Running::spawn(|shutdown| mcplane_auth::run(config, shutdown));
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.user.clone(),
        user.password.clone(),
    )
    .connect(nats.url())
    .await
    .unwrap();
    let bus = Bus::from_client(client, bus_config(&nats));
    let stranger = "mcp_".to_string() + &"A".repeat(36);
    let reply = answered(&bus, &file_key).await;
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let reply = answered(&bus, &stranger).await;
    // A malformed key needs no bucket to be refused.
    assert_eq!(reply["error"]["code"], "unauthenticated", "{reply}");
    service.stop().await;
}
