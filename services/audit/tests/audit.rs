//! The audit service against a real nats-server: events from every stage become one hash
//! chain per tenant, redelivered events are chained once, and a replica that lost its disk
//! rebuilds the very same chain from the audit stream.

use std::path::Path;
use std::time::{Duration, Instant};

use mcplane_audit::config::Config;
use mcplane_audit::store;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{AuditEvent, AuditOutcome, Envelope};
use mcplane_testkit::{bus_config, service_config, NatsServer, Running};

fn audit_service(nats: &NatsServer, data: &Path) -> Running {
    let config = service_config(nats, data, Config::default());
    Running::spawn(|shutdown| mcplane_audit::run(config, shutdown))
}

fn event(tenant: &str, request: u128, stage: &str) -> Envelope<AuditEvent> {
    Envelope::new(
        tenant,
        AuditEvent {
            request_id: uuid::Uuid::from_u128(request),
            stage: stage.into(),
            tenant: tenant.into(),
            principal: Some("key-1".into()),
            outcome: AuditOutcome::Ok,
            code: None,
            detail: serde_json::json!({"request": request as u64}),
            trace_id: "ab".repeat(16),
            at: chrono::Utc::now(),
        },
    )
}

async fn publish(bus: &Bus, env: &Envelope<AuditEvent>, attempt: &str) {
    bus.publish_envelope(bus.subjects.audit(&env.tenant), env, attempt)
        .await
        .unwrap();
}

/// Waits until the durable `audit` consumer (a newer one than `replaced`, when given) has
/// delivered and acknowledged everything; returns its creation time.
async fn wait_idle(bus: &Bus, replaced: Option<time::OffsetDateTime>) -> time::OffsetDateTime {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(StreamKind::Audit))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        // A restarted service that lost its disk replaces the durable, so the one just found
        // may be gone by the time it is asked for its info: look again.
        let found = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("audit")
            .await;
        if let Ok(mut c) = found {
            let Ok(info) = c.info().await.cloned() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let fresh = replaced.is_none_or(|old| info.created != old);
            if fresh
                && info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence > 0
            {
                return info.created;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "audit never went idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_chain_per_tenant_once_and_a_lost_disk_is_rebuilt_from_the_stream() {
    let nats = NatsServer::start();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let service = audit_service(&nats, data.path());

    for request in 0..4u128 {
        for stage in ["authorize", "enrich", "invoke"] {
            publish(&bus, &event("acme", request, stage), "a").await;
        }
        publish(&bus, &event("globex", request, "authorize"), "a").await;
    }
    // A redelivered event (a new envelope id, same request and stage) is chained once.
    publish(&bus, &event("acme", 0, "enrich"), "again").await;
    // An event whose subject names another tenant is refused, not chained.
    let forged = event("globex", 9, "invoke");
    bus.publish_envelope(bus.subjects.audit("acme"), &forged, "x")
        .await
        .unwrap();
    let created = wait_idle(&bus, None).await;
    service.stop().await;

    let acme = store::verify(data.path(), "acme").unwrap();
    assert_eq!(acme.entries, 12);
    assert_eq!(store::verify(data.path(), "globex").unwrap().entries, 4);
    let stages: Vec<String> = store::entries(data.path(), "acme")
        .unwrap()
        .iter()
        .take(3)
        .map(|e| e.event["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stages, ["authorize", "enrich", "invoke"]);

    // The disk is lost: the chain comes back, identical, from the stream.
    std::fs::remove_dir_all(store::chain_dir(data.path())).unwrap();
    let service = audit_service(&nats, data.path());
    wait_idle(&bus, Some(created)).await;
    service.stop().await;
    let rebuilt = store::verify(data.path(), "acme").unwrap();
    assert_eq!(rebuilt, acme);
}
