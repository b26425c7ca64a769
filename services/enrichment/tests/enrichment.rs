//! The enrichment stage against a real nats-server: context forwarded to redaction, restricted
//! fields only for the roles allowed to see them, the audit event, and the refusal of a request
//! without a principal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcplane_enrichment::config::Config;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, AuditEvent, AuditOutcome, Envelope, ErrorCode, Exchange, Itinerary, Principal,
    PrincipalKind, RequestType, Service, Step,
};
use mcplane_testkit::{bus_config, service_config, stored_result, NatsServer, Running};

const DEADLINE: Duration = Duration::from_secs(15);
const TENANT: &str = "acme";

struct Harness {
    _nats: NatsServer,
    _data: tempfile::TempDir,
    bus: Bus,
    service: Running,
}

impl Harness {
    async fn start() -> Harness {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().unwrap();
        let cmdb_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/cmdb.toml");
        let config = service_config(
            &nats,
            data.path(),
            Config {
                cmdb_file: Some(cmdb_file),
                ..Config::default()
            },
        );
        let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
            .await
            .unwrap();
        let service = Running::spawn(|shutdown| mcplane_enrichment::run(config, shutdown));
        Harness {
            _nats: nats,
            _data: data,
            bus,
            service,
        }
    }

    async fn stop(self) {
        self.service.stop().await;
    }

    async fn submit(&self, env: &Envelope<Exchange>) {
        self.bus
            .publish_envelope(
                self.bus.subjects.stage(Service::Enrichment, TENANT),
                env,
                "test",
            )
            .await
            .unwrap();
    }

    /// The last message on `subject` in the stream, once one has arrived.
    async fn last_on(&self, kind: StreamKind, subject: &str) -> Vec<u8> {
        let stream = self
            .bus
            .js
            .get_stream(self.bus.subjects.stream_name(kind))
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(m) = stream.get_last_raw_message_by_subject(subject).await {
                return m.payload.to_vec();
            }
            assert!(started.elapsed() < DEADLINE, "nothing arrived on {subject}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn forwarded(&self) -> (Vec<u8>, Envelope<Exchange>) {
        let bytes = self
            .last_on(
                StreamKind::Pipeline,
                &self.bus.subjects.stage(Service::Redaction, TENANT),
            )
            .await;
        let env = Envelope::<Exchange>::from_slice(&bytes).unwrap();
        (bytes, env)
    }

    async fn audit(&self) -> AuditEvent {
        let bytes = self
            .last_on(StreamKind::Audit, &self.bus.subjects.audit(TENANT))
            .await;
        Envelope::<AuditEvent>::from_slice(&bytes).unwrap().body
    }
}

fn request(input: &str, services: &[&str], roles: Option<&[&str]>) -> Envelope<Exchange> {
    let mut env = Envelope::new(
        TENANT,
        Exchange::new(AiRequest {
            services: services.iter().map(|s| s.to_string()).collect(),
            ..AiRequest::new(RequestType::Summarize, input)
        }),
    );
    env.itinerary = Itinerary::ai_request();
    env.principal = roles.map(|roles| Principal {
        id: "key-123".into(),
        tenant: TENANT.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        kind: PrincipalKind::User,
    });
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_gets_cmdb_context_without_restricted_fields() {
    let h = Harness::start().await;
    let env = request(
        "Checkout errors spiked after the payments-db failover",
        &["inventory", "billing-legacy"],
        Some(&["viewer"]),
    );
    h.submit(&env).await;

    let (bytes, out) = h.forwarded().await;
    assert_eq!(out.id, env.id);
    assert_eq!(out.itinerary.current(), Some(Step::RedactRequest));
    let subjects: Vec<_> = out
        .body
        .context
        .iter()
        .map(|c| c.subject.as_str())
        .collect();
    assert_eq!(subjects, vec!["inventory", "checkout", "payments-db"]);
    assert!(out.body.context.iter().all(|c| c.source == "cmdb"));
    let db = &out.body.context[2].data;
    assert_eq!(db["team"], "data-platform");
    assert_eq!(db["tier"], 0);
    assert!(db["dependents"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("payments")));
    let text = String::from_utf8(bytes).unwrap();
    for secret in [
        "pg-payments-primary",
        "oncall_phone",
        "restricted",
        "415 555",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked to a viewer: {text}"
        );
    }

    let audit = h.audit().await;
    assert_eq!(audit.request_id, env.id);
    assert_eq!(audit.stage, "enrich");
    assert_eq!(audit.outcome, AuditOutcome::Ok);
    assert_eq!(audit.principal.as_deref(), Some("key-123"));
    assert_eq!(audit.detail["sources"], serde_json::json!(["cmdb"]));
    assert_eq!(
        audit.detail["services"],
        serde_json::json!(["inventory", "checkout", "payments-db"])
    );
    assert_eq!(audit.detail["restricted_fields"], false);
    assert_eq!(
        audit.detail["unknown_services"],
        serde_json::json!(["billing-legacy"])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sre_gets_restricted_fields() {
    let h = Harness::start().await;
    let env = request("payments-db connections exhausted", &[], Some(&["sre"]));
    h.submit(&env).await;

    let (bytes, out) = h.forwarded().await;
    assert_eq!(out.body.context.len(), 1);
    assert_eq!(
        out.body.context[0].data["restricted"]["db_host"],
        "pg-payments-primary.db.internal:5432"
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("pg-payments-primary.db.internal"));

    let audit = h.audit().await;
    assert_eq!(audit.detail["restricted_fields"], true);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_principal_is_delivered_forbidden() {
    let h = Harness::start().await;
    let env = request("checkout is down", &[], None);
    h.submit(&env).await;

    let stored = stored_result(&h.bus, &env.id, DEADLINE).await;
    assert_eq!(stored.body.error.unwrap().code, ErrorCode::Forbidden);
    assert!(stored.body.context.is_empty());
    let audit = h.audit().await;
    assert_eq!(audit.outcome, AuditOutcome::Failed);
    assert_eq!(audit.code, Some(ErrorCode::Forbidden));
    h.stop().await;
}
