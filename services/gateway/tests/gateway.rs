//! The gateway against a real nats-server over real sockets: coded errors at the edge, the
//! request round trip (pending, then answered by a stand-in pipeline), alert webhooks resolved
//! through a stand-in auth responder, readiness and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures::StreamExt;
use mcplane_gateway::config::Config;
use mcplane_shared::bus::{self, result_publications, Bus};
use mcplane_shared::config::{BusConfig, Common, ServiceConfig};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiResponse, Envelope, ErrorBody, ErrorCode, Exchange, Principal, PrincipalKind, RawAlert,
    ServiceError, TraceContext, Usage,
};
use mcplane_testkit::NatsServer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KEY: &str = "mcp_test_key_alice";
const OTHER_KEY: &str = "mcp_test_key_mallory";
const WAIT: Duration = Duration::from_secs(20);

struct Gateway {
    base: String,
    http: reqwest::Client,
    bus: Bus,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), ServiceError>>,
    _data: tempfile::TempDir,
}

impl Gateway {
    async fn start(server: &NatsServer, tune: impl FnOnce(&mut Config)) -> Gateway {
        let data = tempfile::tempdir().unwrap();
        let bus_config = BusConfig {
            url: server.url(),
            ..Default::default()
        };
        let mut service = Config::default();
        tune(&mut service);
        let config = ServiceConfig {
            common: Common {
                bus: bus_config.clone(),
                data_dir: data.path().to_path_buf(),
                ..Default::default()
            },
            service,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(mcplane_gateway::serve(config, listener, shutdown.clone()));
        let bus = bus::connect(&bus_config, "gateway-test").await.unwrap();
        let gateway = Gateway {
            base,
            http: reqwest::Client::new(),
            bus,
            shutdown,
            handle,
            _data: data,
        };
        gateway.wait_for_readiness(200).await;
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn wait_for_readiness(&self, status: u16) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status().as_u16() == status {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "/readyz never answered {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        read(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        read(req.send().await.unwrap()).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("the gateway did not stop")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

fn request_body(input: &str) -> String {
    json!({"type": "answer", "input": input, "services": ["checkout"]}).to_string()
}

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Stands in for the auth stage: a pull consumer on what the gateway submits.
async fn submissions(bus: &Bus) -> PullConsumer {
    bus.durable_consumer(
        StreamKind::Pipeline,
        "test-auth",
        vec![bus.subjects.requests_submit()],
    )
    .await
    .unwrap()
}

async fn next_submitted(consumer: &PullConsumer) -> Envelope<Exchange> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        if let Some(msg) = batch.next().await {
            let msg = msg.unwrap();
            msg.ack().await.unwrap();
            return Envelope::<Exchange>::from_slice(&msg.payload).unwrap();
        }
        assert!(Instant::now() < deadline, "nothing was submitted");
    }
}

/// Finishes a request the way the pipeline's last stage does.
async fn deliver(bus: &Bus, mut env: Envelope<Exchange>, error: Option<ErrorBody>) {
    env.credential = None;
    env.tenant = "acme".into();
    env.principal = Some(principal("acme"));
    match error {
        Some(error) => env.body.error = Some(error),
        None => {
            env.body.response = Some(AiResponse {
                text: format!("answer to: {}", env.body.request.input),
                provider: "local".into(),
                model: "local-echo".into(),
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    cost_micros: 0,
                },
            })
        }
    }
    let pubs = result_publications(bus, &env, "redact_response").unwrap();
    bus.publish_all(&pubs).await.unwrap();
}

fn principal(tenant: &str) -> Principal {
    Principal {
        id: "key-1".into(),
        tenant: tenant.into(),
        roles: vec!["sre".into()],
        kind: PrincipalKind::User,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_json_errors_and_the_server_keeps_serving() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| c.body_limit_bytes = 4096).await;

    assert_error(
        &gw.post("/v1/requests", None, request_body("hi")).await,
        401,
        "unauthenticated",
    );
    let mut basic = gw
        .http
        .post(gw.url("/v1/requests"))
        .body(request_body("hi"));
    basic = basic.header("authorization", "Basic dXNlcjpwYXNz");
    assert_error(
        &read(basic.send().await.unwrap()).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &gw.post("/v1/requests", Some(KEY), "{not json").await,
        400,
        "invalid_json",
    );
    assert_error(
        &gw.post(
            "/v1/requests",
            Some(KEY),
            r#"{"type": "dance", "input": "x"}"#,
        )
        .await,
        422,
        "invalid_request",
    );
    assert_error(
        &gw.post("/v1/requests", Some(KEY), r#"{"input": "no type"}"#)
            .await,
        422,
        "invalid_request",
    );
    let oversized = request_body(&"x".repeat(10_000));
    assert_error(
        &gw.post("/v1/requests", Some(KEY), oversized.clone()).await,
        413,
        "payload_too_large",
    );
    assert_error(
        &gw.post("/v1/alerts/nagios", Some(KEY), "{}").await,
        404,
        "unknown_source",
    );
    assert_error(
        &gw.get("/v1/requests/not-a-uuid", Some(KEY)).await,
        400,
        "invalid_request",
    );
    assert_error(
        &gw.get("/v1/requests/not-a-uuid", None).await,
        401,
        "unauthenticated",
    );
    let unknown = uuid::Uuid::now_v7();
    assert_error(
        &gw.get(&format!("/v1/requests/{unknown}"), Some(KEY)).await,
        404,
        "not_found",
    );
    assert_error(&gw.get("/v2/nothing-here", None).await, 404, "not_found");
    let wrong_method = gw.http.delete(gw.url("/v1/requests")).send().await.unwrap();
    assert!(wrong_method.headers().contains_key("allow"));
    assert_error(&read(wrong_method).await, 405, "invalid_request");
    assert_error(
        &gw.get("/v1/alerts/generic", None).await,
        405,
        "invalid_request",
    );

    // Still serving, and it counted all of that by route template and status.
    assert_eq!(
        gw.get("/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(gw.get("/readyz", None).await.0, 200);
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("mcplane_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/v1/requests""#), "{text}");
    assert!(text.contains(r#"route="/v1/requests/{id}""#), "{text}");
    assert!(text.contains(r#"status="413""#), "{text}");
    assert!(text.contains("mcplane_http_request_seconds"), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_result_in_time_is_pending_then_served_to_its_requester_only() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| c.request_timeout_ms = 300).await;
    let consumer = submissions(&gw.bus).await;
    let caller_trace = TraceContext::new_root();

    let response = gw
        .http
        .post(gw.url("/v1/requests"))
        .bearer_auth(KEY)
        .header("traceparent", caller_trace.traceparent())
        .body(request_body("why is checkout slow?"))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let (status, body) = read(response).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/requests/{id}"));
    assert_eq!(body["location"], location);

    // What went onto the bus: the credential for auth, its digest for later, our trace.
    let submitted = next_submitted(&consumer).await;
    assert_eq!(submitted.id.to_string(), id);
    assert_eq!(submitted.tenant, "");
    assert_eq!(submitted.credential.as_deref(), Some(KEY));
    assert_eq!(submitted.body.requester_digest, Some(digest(KEY)));
    assert_eq!(submitted.trace.trace_id, caller_trace.trace_id);
    assert!(submitted
        .reply_to
        .as_deref()
        .is_some_and(|r| r.ends_with(&id)));

    assert_error(&gw.get(&location, Some(KEY)).await, 404, "not_found");
    deliver(&gw.bus, submitted, None).await;

    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        let got = gw.get(&location, Some(KEY)).await;
        if got.0 != 404 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "completed");
    assert_eq!(body["type"], "answer");
    assert_eq!(body["response"]["text"], "answer to: why is checkout slow?");
    assert_eq!(body["response"]["usage"]["output_tokens"], 4);
    let text = body.to_string();
    assert!(
        !text.contains(KEY) && !text.contains(&digest(KEY)) && !text.contains("requester_digest")
    );

    // Another caller cannot tell the result exists.
    let other = gw.get(&location, Some(OTHER_KEY)).await;
    assert_error(&other, 404, "not_found");
    assert_eq!(other.1["error"]["message"], "no result for this id yet");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_in_time_returns_its_result_or_its_error() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| c.request_timeout_ms = 15_000).await;
    let consumer = submissions(&gw.bus).await;
    let pipeline = {
        let bus = gw.bus.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let env = next_submitted(&consumer).await;
                let error = (env.body.request.input == "deny me")
                    .then(|| ErrorBody::new(ErrorCode::Forbidden, "role may not ask this"));
                deliver(&bus, env, error).await;
            }
        })
    };

    let (status, body) = gw
        .post("/v1/requests", Some(KEY), request_body("hello"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["response"]["text"], "answer to: hello");
    assert_eq!(body["response"]["provider"], "local");

    let denied = gw
        .post("/v1/requests", Some(KEY), request_body("deny me"))
        .await;
    assert_error(&denied, 403, "forbidden");
    let id = denied.1["id"].as_str().unwrap().to_string();
    pipeline.await.unwrap();

    // The stored failure reads the same way.
    assert_error(
        &gw.get(&format!("/v1/requests/{id}"), Some(KEY)).await,
        403,
        "forbidden",
    );
    gw.stop().await;
}

/// Stands in for the auth service's `auth.resolve` responder; counts the queries it answers.
async fn stub_auth(bus: &Bus) -> Arc<AtomicUsize> {
    let queries = Arc::new(AtomicUsize::new(0));
    let mut sub = bus
        .client
        .subscribe(bus.subjects.auth_resolve())
        .await
        .unwrap();
    bus.client.flush().await.unwrap();
    let (client, count) = (bus.client.clone(), queries.clone());
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            count.fetch_add(1, Ordering::SeqCst);
            let query: Value = serde_json::from_slice(&msg.payload).unwrap();
            let reply = if query["credential"] == KEY {
                json!({"principal": principal("acme")})
            } else {
                json!({"error": {"code": "unauthenticated", "message": "unknown key"}})
            };
            let _ = client
                .publish(msg.reply.unwrap(), reply.to_string().into())
                .await;
        }
    });
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_published_for_the_tenant_of_its_credential() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| {
        c.auth_cache_ttl_secs = 300;
        c.body_limit_bytes = 4096;
    })
    .await;
    let queries = stub_auth(&gw.bus).await;
    let alerts = gw
        .bus
        .js
        .get_stream(gw.bus.subjects.stream_name(StreamKind::Alerts))
        .await
        .unwrap()
        .create_consumer(pull::Config {
            filter_subject: "mcplane.alerts.in.acme.>".into(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();

    // `generic` is used so this does not depend on the finer points of one vendor's format.
    let generic =
        json!({"title": "Checkout 5xx above 5%", "service": "checkout", "severity": "critical"});
    let (status, body) = gw
        .post("/v1/alerts/generic", Some(KEY), generic.to_string())
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["alerts"], 1);
    let id = body["id"].as_str().unwrap().to_string();

    let mut messages = alerts.messages().await.unwrap();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "mcplane.alerts.in.acme.generic");
    let env = Envelope::<RawAlert>::from_slice(&msg.payload).unwrap();
    assert_eq!(env.id.to_string(), id);
    assert_eq!(env.tenant, "acme");
    assert_eq!(env.body.source, "generic");
    assert_eq!(env.body.payload, generic);
    assert_eq!(env.principal.map(|p| p.id), Some("key-1".to_string()));
    assert!(env.credential.is_none());
    msg.ack().await.unwrap();

    let alertmanager = json!({
        "version": "4",
        "status": "firing",
        "receiver": "mcplane",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighLatency", "service": "checkout", "severity": "warning"},
            "annotations": {"summary": "p99 above 2s"},
            "startsAt": "2024-05-14T09:00:00Z"
        }]
    });
    let (status, body) = gw
        .post(
            "/v1/alerts/alertmanager",
            Some(KEY),
            alertmanager.to_string(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "mcplane.alerts.in.acme.alertmanager");
    msg.ack().await.unwrap();

    // One resolution served both posts from the cache.
    assert_eq!(queries.load(Ordering::SeqCst), 1);

    assert_error(
        &gw.post("/v1/alerts/generic", Some(OTHER_KEY), generic.to_string())
            .await,
        401,
        "unauthenticated",
    );
    assert_error(
        &gw.post("/v1/alerts/generic", None, generic.to_string())
            .await,
        401,
        "unauthenticated",
    );
    assert_error(
        &gw.post("/v1/alerts/generic", Some(KEY), "{oops").await,
        400,
        "invalid_json",
    );
    let oversized = json!({"title": "x".repeat(10_000), "service": "s"}).to_string();
    assert_error(
        &gw.post("/v1/alerts/generic", Some(KEY), oversized).await,
        413,
        "payload_too_large",
    );
    assert_error(
        &gw.post(
            "/v1/alerts/generic",
            Some(KEY),
            json!({"service": "checkout"}).to_string(),
        )
        .await,
        422,
        "invalid_alert",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection_and_alerts_need_auth_to_answer() {
    let mut server = NatsServer::start();
    let gw = Gateway::start(&server, |_| {}).await;

    // Nobody answers auth.resolve here.
    let alert = json!({"title": "t", "service": "s"}).to_string();
    assert_error(
        &gw.post("/v1/alerts/generic", Some(KEY), alert).await,
        503,
        "unavailable",
    );

    server.kill();
    gw.wait_for_readiness(503).await;
    let (status, body) = gw.get("/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(gw.get("/healthz", None).await.0, 200);

    server.restart();
    gw.wait_for_readiness(200).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_waiting_request_before_the_server_stops() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| c.request_timeout_ms = 120_000).await;
    let consumer = submissions(&gw.bus).await;
    let waiting = {
        let (http, url) = (gw.http.clone(), gw.url("/v1/requests"));
        tokio::spawn(async move {
            read(
                http.post(url)
                    .bearer_auth(KEY)
                    .body(request_body("slow"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    // Once it is on the bus the handler is waiting for its result.
    let submitted = next_submitted(&consumer).await;
    gw.shutdown.cancel();
    let (status, body) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], submitted.id.to_string());
    gw.stop().await;
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A stand-in for SNS's `SubscribeURL` on a local port; counts the GETs with the right token.
async fn subscribe_endpoint() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/confirm",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let counted = counted.clone();
                async move {
                    if q.get("Token").map(String::as_str) == Some("t-123") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        (axum::http::StatusCode::OK, "<ConfirmSubscriptionResponse/>")
                    } else {
                        (axum::http::StatusCode::BAD_REQUEST, "bad token")
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/confirm?Token=t-123"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_subscription_is_confirmed_by_getting_the_subscribe_url_of_an_allowed_host() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |c| {
        c.sns_confirm_hosts = vec!["127.0.0.1".into()];
        c.sns_confirm_https_only = false;
    })
    .await;
    stub_auth(&gw.bus).await;
    let (url, hits) = subscribe_endpoint().await;
    let mut confirmation = fixture("sns/subscription-confirmation.json");
    confirmation["SubscribeURL"] = json!(url);

    // SNS can only authenticate with the user info of the subscription URL: Basic auth.
    let post = |body: Value| {
        gw.http
            .post(gw.url("/v1/alerts/cloudwatch"))
            .basic_auth("mcplane", Some(KEY))
            .body(body.to_string())
            .send()
    };
    let (status, body) = read(post(confirmation.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscription"], "confirmed");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A SubscribeURL on a host not allowed is never fetched.
    let mut forged = confirmation.clone();
    forged["SubscribeURL"] = json!(url.replace("127.0.0.1", "localhost"));
    let answer = read(post(forged).await.unwrap()).await;
    assert_error(&answer, 422, "invalid_alert");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A confirmation whose signing certificate is not on an AWS host is refused structurally.
    let mut unsigned = confirmation.clone();
    unsigned["SigningCertURL"] = json!("https://certs.example.com/sns.pem");
    assert_error(
        &read(post(unsigned).await.unwrap()).await,
        422,
        "invalid_alert",
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Notifications are alerts: accepted and published.
    let (status, body) = read(
        post(fixture("alerts/checkout-ecs-cpu-high.cloudwatch.json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["alerts"].clone()), (202, json!(1)), "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_refuses_to_confirm_a_subscription_outside_amazonaws_over_https() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |_| {}).await;
    stub_auth(&gw.bus).await;
    let (url, hits) = subscribe_endpoint().await;
    let mut confirmation = fixture("sns/subscription-confirmation.json");
    confirmation["SubscribeURL"] = json!(url);
    assert_error(
        &gw.post("/v1/alerts/cloudwatch", Some(KEY), confirmation.to_string())
            .await,
        422,
        "invalid_alert",
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pagerduty_event_may_authenticate_with_its_routing_key() {
    let server = NatsServer::start();
    let gw = Gateway::start(&server, |_| {}).await;
    stub_auth(&gw.bus).await;
    let mut event = fixture("alerts/checkout-card-declines.pagerduty.json");
    event["routing_key"] = json!(KEY);
    let (status, body) = gw
        .post("/v1/alerts/pagerduty", None, event.to_string())
        .await;
    assert_eq!(status, 202, "{body}");
    event["routing_key"] = json!(OTHER_KEY);
    assert_error(
        &gw.post("/v1/alerts/pagerduty", None, event.to_string())
            .await,
        401,
        "unauthenticated",
    );
    gw.stop().await;
}
