//! The auth stage against a real nats-server: forwarding, denial, audit, the ledger and the
//! credential query.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::HeaderMap;
use futures::StreamExt;
use mcplane_auth::config::Config;
use mcplane_auth::keys::KeyStore;
use mcplane_shared::bus::{Bus, ResultStore};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, AuditEvent, AuditOutcome, Envelope, ErrorCode, Exchange, Itinerary, PrincipalKind,
    RequestType, Service,
};
use mcplane_testkit::{bus_config, service_config, stored_result, NatsServer, Running};

const DEADLINE: Duration = Duration::from_secs(15);

struct Harness {
    _nats: NatsServer,
    _data: tempfile::TempDir,
    keys: KeyStore,
    bus: Bus,
    user_key: String,
    user_key_id: String,
    service_key: String,
    service: Running,
}

impl Harness {
    async fn start() -> Harness {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(data.path()).unwrap();
        let (user_key, user) = keys
            .create("acme", vec!["sre".into()], PrincipalKind::User, None)
            .unwrap();
        let (service_key, _) = keys
            .create(
                "*",
                vec!["service".into()],
                PrincipalKind::ServiceAccount,
                None,
            )
            .unwrap();
        let config = service_config(&nats, data.path(), Config::default());
        let service = Running::spawn(|shutdown| mcplane_auth::run(config, shutdown));
        let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
            .await
            .unwrap();
        let harness = Harness {
            _nats: nats,
            _data: data,
            keys,
            bus,
            user_key,
            user_key_id: user.key_id,
            service_key,
            service,
        };
        // The resolver answering means `run` is up.
        harness
            .resolve_until(&harness.user_key.clone(), |r| r.get("principal").is_some())
            .await;
        harness
    }

    async fn stop(self) {
        self.service.stop().await;
    }

    /// Publishes a request on `mcplane.requests.submit`; returns its stream sequence.
    async fn submit(&self, env: &Envelope<Exchange>, msg_id: &str) -> u64 {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.bus
            .js
            .publish_with_headers(
                self.bus.subjects.requests_submit(),
                headers,
                env.to_bytes().unwrap(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Waits until the auth consumer has acknowledged stream sequence `seq`.
    async fn wait_consumed(&self, seq: u64) {
        let stream_name = self.bus.subjects.stream_name(StreamKind::Pipeline);
        let started = Instant::now();
        loop {
            if let Ok(mut consumer) = self
                .bus
                .js
                .get_consumer_from_stream::<pull::Config, _, _>("auth", &stream_name)
                .await
            {
                if consumer.info().await.unwrap().ack_floor.stream_sequence >= seq {
                    return;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "auth never consumed message {seq}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every message on `subject` in the stream, once at least `at_least` have arrived.
    async fn messages(&self, kind: StreamKind, subject: &str, at_least: usize) -> Vec<Vec<u8>> {
        let stream = self
            .bus
            .js
            .get_stream(self.bus.subjects.stream_name(kind))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: subject.to_string(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_millis(300))
                .messages()
                .await
                .unwrap();
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                m.ack().await.unwrap();
                out.push(m.payload.to_vec());
                got += 1;
            }
            if out.len() >= at_least && got == 0 {
                return out;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "only {} of {at_least} messages on {subject}",
                out.len()
            );
        }
    }

    async fn audit_events(&self, tenant: &str, at_least: usize) -> Vec<AuditEvent> {
        self.messages(
            StreamKind::Audit,
            &self.bus.subjects.audit(tenant),
            at_least,
        )
        .await
        .iter()
        .map(|b| Envelope::<AuditEvent>::from_slice(b).unwrap().body)
        .collect()
    }

    async fn resolve(&self, payload: String) -> serde_json::Value {
        let reply = self
            .bus
            .client
            .request(self.bus.subjects.auth_resolve(), payload.into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    async fn resolve_until(
        &self,
        credential: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        let payload = serde_json::json!({ "credential": credential }).to_string();
        loop {
            if let Ok(reply) = self
                .bus
                .client
                .request(self.bus.subjects.auth_resolve(), payload.clone().into())
                .await
            {
                let value: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                if done(&value) {
                    return value;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "auth resolve never answered as expected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn request(tenant: &str, credential: Option<&str>) -> Envelope<Exchange> {
    let mut env = Envelope::new(
        tenant,
        Exchange::new(AiRequest {
            services: vec!["checkout-api".into()],
            ..AiRequest::new(RequestType::Answer, "why is checkout slow?")
        }),
    );
    env.credential = credential.map(String::from);
    env
}

fn forwarded(bytes: &[u8]) -> Envelope<Exchange> {
    Envelope::<Exchange>::from_slice(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_valid_key_is_forwarded_to_enrichment_without_its_credential() {
    let h = Harness::start().await;
    let env = request("", Some(&h.user_key));
    h.submit(&env, &format!("{}:gateway", env.id)).await;

    let subject = h.bus.subjects.stage(Service::Enrichment, "acme");
    assert_eq!(subject, "mcplane.stage.enrichment.acme");
    let out = h.messages(StreamKind::Pipeline, &subject, 1).await;
    assert_eq!(out.len(), 1);
    let fwd = forwarded(&out[0]);
    assert_eq!(fwd.id, env.id);
    assert_eq!(fwd.tenant, "acme");
    assert_eq!(fwd.credential, None);
    assert!(!String::from_utf8_lossy(&out[0]).contains(&h.user_key));
    let principal = fwd.principal.unwrap();
    assert_eq!(principal.id, h.user_key_id);
    assert_eq!(principal.roles, vec!["sre".to_string()]);
    assert_eq!(fwd.itinerary, Itinerary::ai_request());
    assert_eq!(fwd.trace.trace_id, env.trace.trace_id);

    let audit = h.audit_events("acme", 1).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].request_id, env.id);
    assert_eq!(audit[0].stage, "authorize");
    assert_eq!(audit[0].outcome, AuditOutcome::Ok);
    assert_eq!(audit[0].principal.as_deref(), Some(h.user_key_id.as_str()));
    assert_eq!(audit[0].detail["key_id"], h.user_key_id.as_str());
    assert_eq!(audit[0].detail["principal_kind"], "user");

    // A service account for any tenant acts for the tenant the envelope names.
    let env = request("globex", Some(&h.service_key));
    h.submit(&env, &format!("{}:gateway", env.id)).await;
    let subject = h.bus.subjects.stage(Service::Enrichment, "globex");
    let out = h.messages(StreamKind::Pipeline, &subject, 1).await;
    assert_eq!(forwarded(&out[0]).tenant, "globex");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unknown_key_gets_an_unauthenticated_result_and_a_denied_audit_event() {
    let h = Harness::start().await;
    let inbox = h.bus.client.new_inbox();
    let mut replies = h.bus.client.subscribe(format!("{inbox}.>")).await.unwrap();
    h.bus.client.flush().await.unwrap();

    // A well-formed key nobody issued, and no key at all; both claim a tenant.
    let stranger = {
        let other = tempfile::tempdir().unwrap();
        let store = KeyStore::open(other.path()).unwrap();
        store
            .create("acme", vec![], PrincipalKind::User, None)
            .unwrap()
            .0
    };
    let mut envs = Vec::new();
    for credential in [None, Some(stranger.as_str())] {
        let mut env = request("acme", credential);
        env.reply_to = Some(format!("{inbox}.{}", env.id));
        h.submit(&env, &format!("{}:gateway", env.id)).await;
        envs.push(env);
    }

    for _ in 0..envs.len() {
        let msg = tokio::time::timeout(DEADLINE, replies.next())
            .await
            .expect("a reply in time")
            .unwrap();
        assert!(!String::from_utf8_lossy(&msg.payload).contains(&stranger));
        let result = forwarded(&msg.payload);
        assert!(envs.iter().any(|e| e.id == result.id));
        assert_eq!(result.body.error.unwrap().code, ErrorCode::Unauthenticated);
        assert_eq!(result.credential, None);
    }
    for env in &envs {
        // The reply came first; the stored result may trail it a moment.
        let stored = stored_result(&h.bus, &env.id, DEADLINE).await;
        assert_eq!(stored.body.error.unwrap().code, ErrorCode::Unauthenticated);
        assert_eq!(stored.credential, None);
        assert_eq!(stored.principal, None);
    }

    let audit = h.audit_events("_unauthenticated", 2).await;
    assert_eq!(audit.len(), 2);
    for event in &audit {
        assert_eq!(event.outcome, AuditOutcome::Denied);
        assert_eq!(event.code, Some(ErrorCode::Unauthenticated));
        assert_eq!(event.principal, None);
    }
    // Nothing went on to the pipeline or into the claimed tenant's trail.
    let acme_subject = h.bus.subjects.stage(Service::Enrichment, "acme");
    assert!(h
        .messages(StreamKind::Pipeline, &acme_subject, 0)
        .await
        .is_empty());
    assert!(h.audit_events("acme", 0).await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_delivered_twice_is_forwarded_once_from_the_ledger() {
    let h = Harness::start().await;
    let inbox = h.bus.client.new_inbox();
    let mut replies = h.bus.client.subscribe(inbox.clone()).await.unwrap();
    h.bus.client.flush().await.unwrap();

    let mut env = request("", Some(&h.user_key));
    env.reply_to = Some(inbox);
    let first = h.submit(&env, "first-delivery").await;
    h.wait_consumed(first).await;

    // Revoke the key: were the second delivery decided again, it would be denied.
    assert!(h.keys.revoke(&h.user_key_id).unwrap());
    h.resolve_until(&h.user_key.clone(), |r| r.get("error").is_some())
        .await;
    let second = h.submit(&env, "second-delivery").await;
    assert!(second > first, "the server must keep both deliveries");
    h.wait_consumed(second).await;

    let subject = h.bus.subjects.stage(Service::Enrichment, "acme");
    assert_eq!(h.messages(StreamKind::Pipeline, &subject, 1).await.len(), 1);
    let audit = h.audit_events("acme", 1).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, AuditOutcome::Ok);
    let results = ResultStore::open(&h.bus).await.unwrap();
    assert_eq!(
        results.get(&env.id).await.unwrap(),
        None,
        "no denial was delivered"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.next())
            .await
            .is_err()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_resolve_answers_with_a_principal_or_a_coded_error() {
    let h = Harness::start().await;
    let ok = h
        .resolve(serde_json::json!({ "credential": h.user_key }).to_string())
        .await;
    assert_eq!(ok["principal"]["id"], h.user_key_id.as_str());
    assert_eq!(ok["principal"]["tenant"], "acme");
    assert_eq!(ok["principal"]["kind"], "user");

    let unknown = h
        .resolve(serde_json::json!({ "credential": "mcp_not_a_key" }).to_string())
        .await;
    assert_eq!(unknown["error"]["code"], "unauthenticated");

    let garbage = h.resolve("{".to_string()).await;
    assert_eq!(garbage["error"]["code"], "invalid_json");

    // A key created by another process (the CLI) works without a restart.
    let data_dir: &Path = h._data.path();
    let cli = KeyStore::open(data_dir).unwrap();
    let (fresh, _) = cli
        .create("initech", vec!["alerts".into()], PrincipalKind::User, None)
        .unwrap();
    let answer = h
        .resolve(serde_json::json!({ "credential": fresh }).to_string())
        .await;
    assert_eq!(answer["principal"]["tenant"], "initech");
    h.stop().await;
}
