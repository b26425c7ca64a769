//! Crypto-shredding against a real audit service on a real nats-server: payloads kept sealed
//! with a tenant's key are chained as ciphertext (never plaintext, neither in the chain nor in
//! the audit stream); once the key is destroyed they no longer open, while the chain, its
//! export and its signed checkpoint still verify, and other tenants' payloads are untouched.

use std::path::Path;
use std::time::{Duration, Instant};

use mcplane_audit::checkpoint::{self, Signer};
use mcplane_audit::config::Config;
use mcplane_audit::store;
use mcplane_shared::body::audit::{SealedPayload, PAYLOAD_DETAIL_KEY};
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::tenant_keys::{KeyError, TenantKey, TenantKeys};
use mcplane_shared::{AuditEvent, AuditOutcome, Envelope};
use mcplane_testkit::{bus_config, service_config, stored_messages, NatsServer, Running};

fn audit_service(nats: &NatsServer, data: &Path) -> Running {
    let config = service_config(nats, data, Config::default());
    Running::spawn(|shutdown| mcplane_audit::run(config, shutdown))
}

fn secret_text(tenant: &str, request: u128) -> String {
    format!("{tenant} ticket {request}: disk full on <IP_1>, call <PHONE_1>")
}

/// A redaction step's audit event with its payload sealed, as the redaction service emits it.
fn sealed_event(key: &TenantKey, tenant: &str, request: u128) -> Envelope<AuditEvent> {
    let request_id = uuid::Uuid::from_u128(request);
    let stage = "redact_request";
    let payload = serde_json::json!({ "input": secret_text(tenant, request) });
    let sealed = key.seal(tenant, request_id, stage, &payload).unwrap();
    Envelope::new(
        tenant,
        AuditEvent {
            request_id,
            stage: stage.into(),
            tenant: tenant.into(),
            principal: Some("key_000000000001".into()),
            outcome: AuditOutcome::Ok,
            code: None,
            detail: serde_json::json!({
                "direction": "request",
                "counts": {"IP": 1, "PHONE": 1},
                PAYLOAD_DETAIL_KEY: sealed,
            }),
            trace_id: "ab".repeat(16),
            at: chrono::Utc::now(),
        },
    )
}

async fn wait_chained(data: &Path, bus: &Bus, expected: usize) {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(StreamKind::Audit))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("audit")
            .await
        {
            let info = c.info().await.unwrap();
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence as usize >= expected
            {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "audit never chained {expected} events in {}",
            data.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens every payload of a tenant's chain with `key`; one result per entry.
fn open_all(
    data: &Path,
    tenant: &str,
    key: Option<&TenantKey>,
) -> Vec<Result<serde_json::Value, String>> {
    store::entries(data, tenant)
        .unwrap()
        .iter()
        .map(|e| {
            let sealed: SealedPayload =
                serde_json::from_value(e.event["detail"][PAYLOAD_DETAIL_KEY].clone()).unwrap();
            let id = uuid::Uuid::parse_str(e.event["request_id"].as_str().unwrap()).unwrap();
            let stage = e.event["stage"].as_str().unwrap();
            match key {
                Some(k) => k
                    .open(&sealed, tenant, id, stage)
                    .map_err(|e| e.to_string()),
                None => Err("no key".into()),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_key_destruction_payloads_are_unreadable_and_the_chain_still_verifies() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let keys = TenantKeys::new(TenantKeys::default_dir(data.path()));
    let acme_key = keys.load_or_create("acme").unwrap();
    let globex_key = keys.load_or_create("globex").unwrap();
    let service = audit_service(&nats, data.path());
    for request in 0..5u128 {
        for (tenant, key) in [("acme", &acme_key), ("globex", &globex_key)] {
            let env = sealed_event(key, tenant, request);
            bus.publish_envelope(bus.subjects.audit(tenant), &env, "redact_request")
                .await
                .unwrap();
        }
    }
    wait_chained(data.path(), &bus, 10).await;
    service.stop().await;

    // Chained as ciphertext: no plaintext in the chain, nor in the audit stream it replays.
    let before = store::verify(data.path(), "acme").unwrap();
    assert_eq!(before.entries, 5);
    let chain_text: String = store::entries(data.path(), "acme")
        .unwrap()
        .iter()
        .map(|e| e.event.to_string())
        .collect();
    assert!(!chain_text.contains("disk full"), "plaintext in the chain");
    let stream = stored_messages(&bus, StreamKind::Audit, bus.subjects.audit_all()).await;
    assert_eq!(stream.len(), 10);
    assert!(stream
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains("disk full")));

    // Readable with the key while it exists.
    let opened = open_all(data.path(), "acme", Some(&acme_key));
    for (request, payload) in opened.iter().enumerate() {
        assert_eq!(
            payload.as_ref().unwrap()["input"],
            secret_text("acme", request as u128)
        );
    }

    // The erasure request: acme's key is destroyed.
    assert_eq!(keys.destroy("acme").unwrap(), Some(acme_key.id()));
    let held = keys.load("acme").unwrap();
    assert!(held.is_none(), "the key is gone from its folder");
    assert!(open_all(data.path(), "acme", held.as_ref())
        .iter()
        .all(Result::is_err));
    // Any other key (globex's, or acme's next one) does not open them either.
    assert!(open_all(data.path(), "acme", Some(&globex_key))
        .iter()
        .all(|r| r.is_err()));
    let rotated = keys.load_or_create("acme").unwrap();
    let err = open_all(data.path(), "acme", Some(&rotated))
        .remove(0)
        .unwrap_err();
    assert!(
        err.contains(&acme_key.id()),
        "names the destroyed key: {err}"
    );
    let sealed = serde_json::from_value::<SealedPayload>(
        store::entries(data.path(), "acme").unwrap()[0].event["detail"][PAYLOAD_DETAIL_KEY].clone(),
    )
    .unwrap();
    assert!(matches!(
        rotated.open(&sealed, "acme", uuid::Uuid::from_u128(0), "redact_request"),
        Err(KeyError::OtherKey { .. })
    ));

    // The chain still verifies: from the data folder, from an export, against the signed
    // checkpoint the service published on its way out.
    assert_eq!(store::verify(data.path(), "acme").unwrap(), before);
    let export = data.path().join("acme.jsonl");
    let lines: Vec<String> = store::entries(data.path(), "acme")
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(&export, lines.join("\n")).unwrap();
    let exported = store::read_export(&export).unwrap();
    assert_eq!(
        store::verify_entries(&exported).unwrap(),
        (before.entries, before.head_hash.clone())
    );
    let cp = store::latest_checkpoint(data.path(), "acme")
        .unwrap()
        .expect("a checkpoint on the way out");
    let signer = Signer::load_or_create(&data.path().join("audit").join("signing.key")).unwrap();
    assert_eq!(
        checkpoint::verify_signature(&cp, &signer.public_hex()),
        Ok(())
    );
    assert_eq!(checkpoint::check_chain(&exported, &cp), Ok(()));

    // Another tenant's payloads are untouched.
    assert!(open_all(data.path(), "globex", Some(&globex_key))
        .iter()
        .all(Result::is_ok));
}
