//! Shared pieces of the end-to-end tests: a real nats-server (from `mcplane-testkit`), the
//! fleet started in-process against it with a temporary data folder, and small HTTP helpers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mcplane_auth::keys::KeyStore;
use mcplane_cli::fleet::{Fleet, NatsChoice};
use mcplane_shared::config::Document;
use mcplane_shared::{PrincipalKind, Service};
pub use mcplane_testkit::{free_port, stored_messages, NatsServer};

/// The test configuration: the example file's shape with test-friendly timings.
pub const TEST_CONFIG: &str = r#"
[log]
format = "pretty"
filter = "warn"

[bus]
batch_size = 64
ack_wait_secs = 5

[gateway]
request_timeout_ms = 15000

[correlator]
partitions = 4
group_wait_ms = 1500
group_interval_secs = 3600

[[model.providers]]
name = "local"
kind = "local"
model = "mcplane-local-1"
"#;

/// A fleet under test with everything it needs around it.
pub struct TestFleet {
    pub nats: NatsServer,
    pub data: tempfile::TempDir,
    pub http: SocketAddr,
    pub doc: Document,
    pub user_key: String,
    pub fleet: Option<Fleet>,
}

impl TestFleet {
    /// Starts nats-server and the given services; `customize` edits the configuration first.
    pub async fn start(services: &[Service], customize: impl FnOnce(&mut Document)) -> TestFleet {
        let nats = NatsServer::start();
        let data = tempfile::tempdir().expect("temp data dir");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut doc = Document::parse(TEST_CONFIG).expect("test config");
        doc.set("bus.url", toml::Value::String(nats.url()));
        doc.set(
            "data_dir",
            toml::Value::String(data.path().display().to_string()),
        );
        doc.set("gateway.http_addr", toml::Value::String(http.to_string()));
        let cmdb = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cmdb.toml");
        doc.set("enrichment.cmdb_file", toml::Value::String(cmdb.into()));

        let keys = KeyStore::open(data.path()).expect("key store");
        let (user_key, _) = keys
            .create("acme", vec!["sre".into()], PrincipalKind::User, None)
            .expect("user key");
        let (sa_key, _) = keys
            .create(
                "*",
                vec!["service".into()],
                PrincipalKind::ServiceAccount,
                None,
            )
            .expect("service account key");
        doc.set(
            "correlator.service_account_key",
            toml::Value::String(sa_key),
        );
        customize(&mut doc);
        mcplane_shared::telemetry::init_logs(&doc.common().expect("common config").log);

        let fleet = Fleet::start_services(doc.clone(), NatsChoice::Configured, services)
            .await
            .expect("fleet starts");
        let tf = TestFleet {
            nats,
            data,
            http,
            doc,
            user_key,
            fleet: Some(fleet),
        };
        if services.contains(&Service::Gateway) {
            tf.wait_ready().await;
        }
        tf
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gateway never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A bus connection for the test's own observations.
    pub async fn bus(&self) -> mcplane_shared::bus::Bus {
        let common = self.doc.common().expect("common");
        mcplane_shared::bus::connect(&common.bus, "test")
            .await
            .expect("test bus connection")
    }

    /// Stops the fleet gracefully (services drain and release their sled folders).
    pub async fn stop(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.stop().await.expect("fleet stops cleanly");
        }
    }
}

/// Polls `check` every 50 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the durable consumer has nothing pending or unacknowledged.
pub async fn wait_consumer_idle(
    bus: &mcplane_shared::bus::Bus,
    kind: mcplane_shared::subjects::StreamKind,
    durable: &str,
    timeout: Duration,
) -> bool {
    let stream_name = bus.subjects.stream_name(kind);
    eventually(timeout, || async {
        let stream = bus.js.get_stream(&stream_name).await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(durable).await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .is_some()
}

/// An Alertmanager webhook v4 payload with one firing alert.
pub fn alertmanager_payload(service: &str, alertname: &str, severity: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{service=\"{service}\"}}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mcplane",
        "groupLabels": {"service": service},
        "commonLabels": {"service": service, "severity": severity},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local:9093",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": alertname,
                "service": service,
                "severity": severity,
                "instance": format!("{service}-0:9100"),
            },
            "annotations": {"summary": format!("{alertname} on {service}")},
            "startsAt": "2026-11-24T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local:9090/graph",
            "fingerprint": ""
        }]
    })
}

/// The load generators' runtime: one worker thread, so the generator leaves the machine's
/// cores to the fleet it measures.
pub fn bench_runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start a runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}

/// Prints a load generator's JSON report on stdout, or its error on stderr.
pub fn print_report(report: anyhow::Result<serde_json::Value>) -> std::process::ExitCode {
    match report {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
