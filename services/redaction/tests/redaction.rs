//! The redaction stage against a real nats-server: a request masked before the model stage,
//! a response masked and delivered as the result, and the counts in the audit trail.

use std::time::{Duration, Instant};

use mcplane_redaction::config::Config;
use mcplane_redaction::vault::Vault;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, AiResponse, AuditEvent, AuditOutcome, ContextItem, Envelope, Exchange, Itinerary,
    Principal, PrincipalKind, RequestType, Service, Step, Usage,
};
use mcplane_testkit::{bus_config, service_config, NatsServer, Running};
use serde_json::json;

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
        Harness::start_with(Config::default()).await
    }

    async fn start_with(config: Config) -> Harness {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().unwrap();
        let config = service_config(&nats, data.path(), config);
        let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
            .await
            .unwrap();
        let service = Running::spawn(|shutdown| mcplane_redaction::run(config, shutdown));
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
                self.bus.subjects.stage(Service::Redaction, TENANT),
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

    /// The last hand-off to the model stage, once one has arrived.
    async fn handed_to_model(&self) -> Vec<u8> {
        self.last_on(
            StreamKind::Pipeline,
            &self.bus.subjects.stage(Service::Model, TENANT),
        )
        .await
    }

    /// The request's result, once stored.
    async fn stored_result(&self, id: uuid::Uuid) -> Envelope<Exchange> {
        mcplane_testkit::stored_result(&self.bus, &id, DEADLINE).await
    }

    async fn audit(&self) -> AuditEvent {
        let bytes = self
            .last_on(StreamKind::Audit, &self.bus.subjects.audit(TENANT))
            .await;
        Envelope::<AuditEvent>::from_slice(&bytes).unwrap().body
    }
}

fn request(input: &str) -> Envelope<Exchange> {
    let mut env = Envelope::new(
        TENANT,
        Exchange::new(AiRequest {
            services: vec!["payments-db".into()],
            ..AiRequest::new(RequestType::Answer, input)
        }),
    );
    env.itinerary = Itinerary::ai_request();
    env.principal = Some(Principal {
        id: "key-123".into(),
        tenant: TENANT.into(),
        roles: vec!["sre".into()],
        kind: PrincipalKind::User,
    });
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_the_model_stage_masked() {
    let h = Harness::start().await;
    let mut env = request(
        "Customer jane.doe@example.com (+1 415 555 2671) paid with 4111 1111 1111 1111 \
         and got a 502 from 10.20.30.40; token Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz",
    );
    env.itinerary.next = 1; // enrichment is done
    env.body.context.push(ContextItem {
        source: "cmdb".into(),
        subject: "payments-db".into(),
        data: json!({
            "owner": "carol.diaz@example.com",
            "tier": 0,
            "restricted": {
                "db_host": "10.1.2.3:5432",
                "oncall_phone": "+1 415 555 0199",
            },
        }),
    });
    h.submit(&env).await;

    let bytes = h.handed_to_model().await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    // Whole values, or fragments with a space or dot: the envelope also carries random hex
    // (ids, trace ids, the vault's ciphertext) and a nanosecond timestamp, in which a bare
    // "4111" turns up by chance (it did: `…:43.900341114Z`). A partial card in the prompt is
    // caught by the exact `input` below.
    for pii in [
        "jane.doe@example.com",
        "415 555",
        "4111 1111 1111 1111",
        "10.20.30.40",
        "eyJhbGciOiJIUzI1NiJ9",
        "carol.diaz",
        "10.1.2.3",
    ] {
        assert!(!text.contains(pii), "{pii} reached the model stage: {text}");
    }
    let out = Envelope::<Exchange>::from_slice(&bytes).unwrap();
    assert_eq!(out.id, env.id);
    assert_eq!(out.itinerary.current(), Some(Step::Invoke));
    assert_eq!(
        out.body.request.input,
        "Customer <EMAIL_1> (<PHONE_1>) paid with <CARD_1> \
         and got a 502 from <IP_1>; token Bearer [REDACTED:JWT]"
    );
    let data = &out.body.context[0].data;
    assert_eq!(data["owner"], "<EMAIL_2>");
    assert_eq!(data["restricted"]["db_host"], "<IP_2>:5432");
    assert_eq!(data["restricted"]["oncall_phone"], "<PHONE_2>");
    assert_eq!(data["tier"], 0);
    let expected = json!({"CARD": 1, "EMAIL": 2, "IP": 2, "PHONE": 2, "JWT": 1});

    // The originals travel sealed for the way back; only the redaction service's vault (whose
    // keys only it may read on a permissioned bus) opens them, for this request alone.
    let sealed = out.body.vault.clone().expect("the tokens travel sealed");
    assert!(!serde_json::to_string(&sealed).unwrap().contains("jane.doe"));
    let vault = Vault::open(&h.bus).await.unwrap();
    let entry = vault.open_sealed(TENANT, env.id, &sealed).await.unwrap();
    assert_eq!(entry.tokens["<EMAIL_1>"], "jane.doe@example.com");
    assert_eq!(entry.tokens["<IP_2>"], "10.1.2.3");
    assert!(
        !serde_json::to_string(&entry)
            .unwrap()
            .contains("eyJhbGciOiJIUzI1NiJ9"),
        "masked credentials are not kept"
    );
    assert!(vault
        .open_sealed(TENANT, uuid::Uuid::now_v7(), &sealed)
        .await
        .is_err());
    assert_eq!(json!(out.body.redactions.request), expected);

    let audit = h.audit().await;
    assert_eq!(audit.request_id, env.id);
    assert_eq!(audit.stage, "redact_request");
    assert_eq!(audit.outcome, AuditOutcome::Ok);
    assert_eq!(audit.detail["counts"], expected);
    assert!(!audit.detail.to_string().contains("example.com"));
    h.stop().await;
}

/// A request whose context had a restricted field, answered by a model that repeats the
/// field's value (it knew it from elsewhere), its seal dropped on the way when `drop_seal`:
/// the stored result and the `redact_response` audit event.
async fn restricted_value_repeated(drop_seal: bool) -> (Envelope<Exchange>, AuditEvent) {
    let h = Harness::start_with(Config {
        restricted_fields: vec!["db_host".into()],
        ..Config::default()
    })
    .await;
    let mut env = request("Where does payments-db live?");
    env.itinerary.next = 1; // redact_request
    env.body.context.push(ContextItem {
        source: "cmdb".into(),
        subject: "payments-db".into(),
        data: json!({"tier": 0, "db_host": "db-7.payments.internal"}),
    });
    h.submit(&env).await;
    let bytes = h.handed_to_model().await;
    let mut out = Envelope::<Exchange>::from_slice(&bytes).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("db-7.payments"));
    assert!(out.body.vault.is_some());

    if drop_seal {
        out.body.vault = None;
    }
    out.body.response = Some(AiResponse {
        text: "It runs on db-7.payments.internal.".into(),
        provider: "local".into(),
        model: "mcplane-local-1".into(),
        usage: Usage::default(),
    });
    out.itinerary.next = 3; // redact_response
    h.bus
        .publish_envelope(
            h.bus.subjects.stage(Service::Redaction, TENANT),
            &out,
            "invoke", // as the model stage would: not a duplicate of the first submission
        )
        .await
        .unwrap();
    let stored = h.stored_result(env.id).await;
    let audit = h.audit().await;
    h.stop().await;
    (stored, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealed_vault_carries_restricted_values_to_the_way_back_and_never_into_a_result() {
    // The way back knows the restricted value only from the seal, and withholds the answer.
    let (stored, audit) = restricted_value_repeated(false).await;
    let error = stored.body.error.clone().expect("a coded error");
    assert_eq!(error.code, mcplane_shared::ErrorCode::OutputBlocked);
    assert!(stored.body.vault.is_none());
    let raw = serde_json::to_string(&stored).unwrap();
    assert!(
        !raw.contains("ciphertext") && !raw.contains("db-7.payments"),
        "{raw}"
    );
    assert_eq!(audit.detail["blocked"], "restricted_field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_seal_was_lost_is_withheld_when_restricted_fields_were_removed() {
    let (stored, audit) = restricted_value_repeated(true).await;
    let error = stored.body.error.clone().expect("a coded error");
    assert_eq!(error.code, mcplane_shared::ErrorCode::OutputBlocked);
    assert!(stored.body.response.is_none());
    assert_eq!(audit.detail["blocked"], "vault_missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_is_delivered_masked_with_counts() {
    let h = Harness::start().await;
    let mut env = request("What is the on-call number for payments?");
    env.itinerary.next = 3; // redact_response: the last step
    env.body.redactions.request.insert("EMAIL".into(), 1);
    env.body.response = Some(AiResponse {
        text: "Call Carol at +1 415 555 0199 or mail carol.diaz@example.com; \
               the primary is 2001:db8::5."
            .into(),
        provider: "local".into(),
        model: "mcplane-local-1".into(),
        usage: Usage::default(),
    });
    h.submit(&env).await;

    let stored = h.stored_result(env.id).await;
    assert!(stored.itinerary.is_done());
    assert!(stored.body.error.is_none());
    assert_eq!(
        stored.body.response.unwrap().text,
        "Call Carol at [REDACTED:PHONE] or mail [REDACTED:EMAIL]; \
         the primary is [REDACTED:IP]."
    );
    assert_eq!(
        json!(stored.body.redactions.response),
        json!({"EMAIL": 1, "IP": 1, "PHONE": 1})
    );
    // The request direction's counts are left as the first pass recorded them.
    assert_eq!(json!(stored.body.redactions.request), json!({"EMAIL": 1}));

    let audit = h.audit().await;
    assert_eq!(audit.stage, "redact_response");
    assert_eq!(audit.detail["direction"], "response");
    assert_eq!(audit.detail["total"], 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_carrying_a_credential_is_blocked_coded_and_audited_without_it() {
    let h = Harness::start().await;
    let mut env = request("How do I call the admin API?");
    env.itinerary.next = 3;
    env.body.response = Some(AiResponse {
        text: "Use the admin key sk-proj-AbCdEf0123456789GhIjKlMn in the header.".into(),
        provider: "local".into(),
        model: "mcplane-local-1".into(),
        usage: Usage::default(),
    });
    h.submit(&env).await;

    let stored = h.stored_result(env.id).await;
    let error = stored.body.error.clone().expect("a coded error");
    assert_eq!(error.code, mcplane_shared::ErrorCode::OutputBlocked);
    assert!(stored.body.response.is_none());
    let delivered = serde_json::to_string(&stored).unwrap();
    assert!(!delivered.contains("AbCdEf0123456789"), "{delivered}");

    let audit = h.audit().await;
    assert_eq!(audit.stage, "redact_response");
    assert_eq!(audit.outcome, AuditOutcome::Failed);
    assert_eq!(audit.detail["blocked"], "secret_in_output");
    assert_eq!(audit.detail["types"], json!(["API_KEY"]));
    assert!(!audit.detail.to_string().contains("AbCdEf0123456789"));
    h.stop().await;
}
