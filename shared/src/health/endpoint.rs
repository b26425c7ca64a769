//! The small HTTP endpoint every worker serves when `[telemetry] listen` is set: `/healthz`
//! (the process answers), `/readyz` (every service in it is [`Health`]-y, else 503 with the
//! reasons) and `/metrics` (the process-wide Prometheus recorder).
//!
//! Services of one process share one listener per address: `mcplane up` runs the whole fleet
//! in one process with one configuration, so each worker asking for the same address attaches
//! to the listener the first one opened, and `/readyz` answers for all of them. The listener
//! closes when the last service attached to it stops.
//!
//! A one-process fleet [`reserve`]s the listener for all its services before it spawns any:
//! each worker attaches when its own task gets to it, and without the reservation `/readyz`
//! would answer 200 as soon as the first worker pulled, while the others had not started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Health;
use crate::config::{ConfigError, TelemetryConfig};
use crate::error::{ErrorBody, ErrorCode, ServiceError};
use crate::subjects::Service;

/// The services answering on one address of this process.
struct Endpoint {
    services: Mutex<Vec<Attached>>,
    /// Cancelled when the last service detaches (the endpoint is dropped): the server stops.
    closed: CancellationToken,
}

struct Attached {
    id: u64,
    service: Service,
    /// `None` while the service is reserved but has not attached yet: it is starting.
    health: Option<Health>,
}

/// The listener of one address, held open for services a fleet is about to start. While it
/// lives, each reserved service that has not attached yet makes `/readyz` answer 503.
pub struct Reservation {
    _endpoint: Arc<Endpoint>,
}

impl Endpoint {
    fn attached(&self) -> std::sync::MutexGuard<'_, Vec<Attached>> {
        // Every change under this lock is one push, one field set or one retain: a panic
        // elsewhere cannot leave the list half-changed.
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

static ENDPOINTS: OnceLock<Mutex<BTreeMap<SocketAddr, Weak<Endpoint>>>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Serves `service`'s probes and the metrics on `config.listen` until `stop` (nothing but the
/// metrics recorder when `listen` is unset). A bind failure is an error naming
/// `telemetry.listen`: an operator who asked for probes must not get a worker without them.
pub async fn serve(
    config: &TelemetryConfig,
    service: Service,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), ServiceError> {
    // Install the recorder now, whether or not this endpoint is on: metrics recorded before it
    // exists are dropped, and the bus's `svc.<service>.metrics` renders the same recorder.
    crate::telemetry::metrics();
    let Some(addr) = config.listen else {
        return Ok(());
    };
    let endpoint = endpoint_at(addr)?;
    // Take this service's reservation when there is one, else attach beside the others.
    let id = {
        let mut services = endpoint.attached();
        match services
            .iter_mut()
            .find(|a| a.service == service && a.health.is_none())
        {
            Some(reserved) => {
                reserved.health = Some(health.clone());
                reserved.id
            }
            None => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                services.push(Attached {
                    id,
                    service,
                    health: Some(health.clone()),
                });
                id
            }
        }
    };
    tracing::info!(%addr, %service, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        stop.cancelled().await;
        endpoint.attached().retain(|a| a.id != id);
        // Dropping the last handle closes the listener.
        drop(endpoint);
    });
    Ok(())
}

/// Opens the listener on `config.listen` (when set) for those of `services` that serve on it
/// ([`Service::serves_worker_probes`]), each counted as starting until it [`serve`]s. The
/// listener stays open while the reservation lives, and a bind failure is reported here,
/// before anything is spawned.
pub fn reserve(
    config: &TelemetryConfig,
    services: &[Service],
) -> Result<Option<Reservation>, ServiceError> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let endpoint = endpoint_at(addr)?;
    endpoint
        .attached()
        .extend(
            services
                .iter()
                .filter(|s| s.serves_worker_probes())
                .map(|&service| Attached {
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    service,
                    health: None,
                }),
        );
    Ok(Some(Reservation {
        _endpoint: endpoint,
    }))
}

/// The endpoint on `addr`, opening its listener when this process has none there yet.
fn endpoint_at(addr: SocketAddr) -> Result<Arc<Endpoint>, ServiceError> {
    let bind_error = |e: std::io::Error| {
        ServiceError::Config(ConfigError::new(
            "telemetry.listen",
            format!("cannot listen on {addr}: {e}"),
        ))
    };
    let mut endpoints = ENDPOINTS
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| ServiceError::Other("telemetry endpoints poisoned".into()))?;
    if let Some(endpoint) = endpoints.get(&addr).and_then(Weak::upgrade) {
        return Ok(endpoint);
    }
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    let endpoint = Arc::new(Endpoint {
        services: Mutex::default(),
        closed: CancellationToken::new(),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::downgrade(&endpoint));
    let closed = endpoint.closed.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(closed.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(%addr, error = %e, "telemetry endpoint stopped");
        }
    });
    endpoints.insert(addr, Arc::downgrade(&endpoint));
    Ok(endpoint)
}

type Shared = Weak<Endpoint>;

/// Each attached service's name and its reasons not to be ready.
fn readiness(endpoint: &Shared) -> Vec<(Service, Vec<String>)> {
    let Some(endpoint) = endpoint.upgrade() else {
        return Vec::new();
    };
    let attached = endpoint.attached();
    attached
        .iter()
        .map(|a| {
            let reasons = match &a.health {
                Some(health) => health.not_ready_reasons(),
                None => vec!["starting".into()],
            };
            (a.service, reasons)
        })
        .collect()
}

/// `GET /healthz`: the process answers.
async fn healthz(State(endpoint): State<Shared>) -> Json<serde_json::Value> {
    let services: Vec<&str> = readiness(&endpoint)
        .iter()
        .map(|(s, _)| s.as_str())
        .collect();
    Json(json!({ "status": "ok", "services": services }))
}

/// `GET /readyz`: 200 when every service here is ready, else 503 with each reason.
async fn readyz(State(endpoint): State<Shared>) -> Response {
    let states = readiness(&endpoint);
    let names: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (service, why) in &states {
        if !why.is_empty() {
            reasons.insert(service.as_str(), why.clone());
        }
    }
    if states.is_empty() {
        reasons.insert("process", vec!["no service running".into()]);
    }
    if reasons.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ready", "services": names })),
        )
            .into_response();
    }
    let message = reasons
        .iter()
        .flat_map(|(service, why)| why.iter().map(move |w| format!("{service}: {w}")))
        .collect::<Vec<_>>()
        .join("; ");
    let error = ErrorBody::new(ErrorCode::Unavailable, message);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": error, "status": "not_ready", "reasons": reasons })),
    )
        .into_response()
}

/// `GET /metrics` in the Prometheus text format.
async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn unconnected_health() -> Health {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        Health::new(client)
    }

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// A plain HTTP/1.1 GET over a real socket: (status, body).
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await?;
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        Ok((status, body))
    }

    /// Whether `addr` stops accepting connections within two seconds.
    async fn closes(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            if get(addr, "/healthz").await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn services_of_one_process_share_the_listener_and_each_reason_is_answered() {
        let addr = free_addr();
        let config = TelemetryConfig { listen: Some(addr) };
        let (auth, model) = (unconnected_health().await, unconnected_health().await);
        let (stop_auth, stop_model) = (CancellationToken::new(), CancellationToken::new());
        serve(&config, Service::Auth, &auth, stop_auth.clone())
            .await
            .unwrap();
        serve(&config, Service::Model, &model, stop_model.clone())
            .await
            .unwrap();
        model.storage_failed("model", "Read-only file system (os error 30)");

        let (status, body) = get(addr, "/healthz").await.unwrap();
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["services"], json!(["auth", "model"]));

        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 503);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
        let model_reasons = body["reasons"]["model"].to_string();
        assert!(model_reasons.contains("not connected to NATS"), "{body}");
        assert!(model_reasons.contains("Read-only file system"), "{body}");
        assert!(body["reasons"]["auth"].is_array(), "{body}");

        // The process-wide recorder is what `/metrics` renders.
        crate::telemetry::metrics();
        metrics::counter!("mcplane_probe_endpoint_test_total").increment(3);
        let (status, body) = get(addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("mcplane_probe_endpoint_test_total 3"),
            "Prometheus text: {body}"
        );

        // The listener closes with the last service attached to it.
        stop_auth.cancel();
        stop_model.cancel();
        assert!(
            closes(addr).await,
            "the listener closed after the last service stopped"
        );
    }

    #[tokio::test]
    async fn a_reserved_service_is_starting_until_it_attaches() {
        let addr = free_addr();
        let config = TelemetryConfig { listen: Some(addr) };
        // The gateway answers its probes on its own address: it is not reserved here.
        let reservation = reserve(&config, &[Service::Gateway, Service::Auth, Service::Model])
            .unwrap()
            .expect("listen is set");

        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 503);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["reasons"]["auth"], json!(["starting"]), "{body}");
        assert_eq!(body["reasons"]["model"], json!(["starting"]), "{body}");

        // Auth attaches: its own reasons replace `starting`; model is still starting.
        let auth = unconnected_health().await;
        let stop_auth = CancellationToken::new();
        serve(&config, Service::Auth, &auth, stop_auth.clone())
            .await
            .unwrap();
        let (_, body) = get(addr, "/readyz").await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let auth_reasons = body["reasons"]["auth"].to_string();
        assert!(auth_reasons.contains("not connected to NATS"), "{body}");
        assert!(!auth_reasons.contains("starting"), "{body}");
        assert_eq!(body["reasons"]["model"], json!(["starting"]), "{body}");
        let (_, body) = get(addr, "/healthz").await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["services"], json!(["auth", "model"]), "one entry each");

        // The reservation keeps the listener open after the attached service stops; dropping
        // it closes the listener.
        stop_auth.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            get(addr, "/healthz").await.is_ok(),
            "held by the reservation"
        );
        drop(reservation);
        assert!(
            closes(addr).await,
            "the listener closed with the reservation"
        );
    }

    #[tokio::test]
    async fn an_address_taken_by_another_process_is_an_error_naming_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = TelemetryConfig {
            listen: Some(taken.local_addr().unwrap()),
        };
        let health = unconnected_health().await;
        let err = serve(&config, Service::Audit, &health, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("telemetry.listen"), "{err}");
    }

    #[tokio::test]
    async fn no_listen_address_serves_nothing() {
        let health = unconnected_health().await;
        serve(
            &TelemetryConfig::default(),
            Service::Audit,
            &health,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    }
}
