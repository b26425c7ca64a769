//! The token vault's keys against a real nats-server: one replica seals, another opens; a seal
//! opens only for its own tenant and request; once its key has left the bucket, nobody opens it.

use std::collections::BTreeMap;

use mcplane_redaction::vault::{Vault, VaultEntry, VaultError};
use mcplane_testkit::{bus_config, NatsServer};
use uuid::Uuid;

fn entry() -> VaultEntry {
    VaultEntry {
        tokens: BTreeMap::from([("<EMAIL_1>".to_string(), "jane.doe@example.com".to_string())]),
        restricted: vec!["db-7.payments.internal".to_string()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_from_one_replica_opens_on_another_for_its_request_only() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let (a, b) = (
        Vault::open(&bus).await.unwrap(),
        Vault::open(&bus).await.unwrap(),
    );
    let id = Uuid::now_v7();
    let sealed = a.seal("acme", id, &entry()).await.unwrap();
    let text = serde_json::to_string(&sealed).unwrap();
    assert!(
        !text.contains("jane.doe") && !text.contains("db-7"),
        "{text}"
    );

    assert_eq!(b.open_sealed("acme", id, &sealed).await.unwrap(), entry());
    // Both replicas seal with the one key of the epoch: created once, by whoever came first.
    let again = b.seal("acme", id, &entry()).await.unwrap();
    assert_eq!(again.key_id, sealed.key_id);
    assert_ne!(again.nonce, sealed.nonce);

    for (tenant, request) in [("globex", id), ("acme", Uuid::now_v7())] {
        assert!(matches!(
            b.open_sealed(tenant, request, &sealed).await,
            Err(VaultError::DoesNotOpen(_))
        ));
    }
    let mut altered = sealed.clone();
    let flipped = if altered.ciphertext.starts_with('0') {
        "1"
    } else {
        "0"
    };
    altered.ciphertext.replace_range(0..1, flipped);
    assert!(matches!(
        b.open_sealed("acme", id, &altered).await,
        Err(VaultError::DoesNotOpen(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_its_key_is_gone_from_the_bucket_a_seal_opens_nowhere() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let sealer = Vault::open(&bus).await.unwrap();
    let id = Uuid::now_v7();
    let sealed = sealer.seal("acme", id, &entry()).await.unwrap();

    // What the bucket's max age does after an hour, done now: the key leaves the bucket.
    let kv = bus.ensure_vault_bucket().await.unwrap();
    let mut names = Vec::new();
    let mut keys = kv.keys().await.unwrap();
    while let Some(name) = futures::StreamExt::next(&mut keys).await {
        names.push(name.unwrap());
    }
    assert_eq!(
        names.len(),
        1,
        "one key per epoch, not one entry per request: {names:?}"
    );
    assert!(names[0].starts_with("key."), "{names:?}");
    kv.purge(&names[0]).await.unwrap();

    // A replica that did not hold the key in memory (a new one, or one restarted) cannot open
    // the seal: the answer is withheld rather than checked against nothing.
    let fresh = Vault::open(&bus).await.unwrap();
    assert!(matches!(
        fresh.open_sealed("acme", id, &sealed).await,
        Err(VaultError::DoesNotOpen(_))
    ));
    // A new seal gets a new key.
    let next = fresh.seal("acme", id, &entry()).await.unwrap();
    assert_ne!(next.key_id, sealed.key_id);
}
