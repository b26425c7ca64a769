//! Every worker announces itself as a NATS micro-service (`mcplane-<service>`), so operators
//! can list instances and their request statistics with the standard `$SRV.PING`, `$SRV.INFO`
//! and `$SRV.STATS` API (`nats micro ls`), and ask any service for its state on the bus:
//! `<prefix>.svc.<service>.status` (JSON) and `<prefix>.svc.<service>.metrics` (Prometheus
//! text) — the latter is how a worker without an HTTP listener is scraped through a bridge.

use async_nats::service::ServiceExt;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Bus;
use crate::subjects::Service;

/// Announces `service` until `stop`; failures are logged, never fatal (discovery is a
/// convenience, not part of the data path).
pub fn announce(bus: &Bus, service: Service, stop: CancellationToken) -> JoinHandle<()> {
    let bus = bus.clone();
    tokio::spawn(async move {
        let started = chrono::Utc::now();
        let micro = match bus
            .client
            .service_builder()
            .description(format!("mcplane {service} worker"))
            .start(format!("mcplane-{service}"), env!("CARGO_PKG_VERSION"))
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register as a NATS micro-service");
                return;
            }
        };
        let endpoints = (
            micro
                .endpoint(bus.subjects.service_endpoint(service, "status"))
                .await,
            micro
                .endpoint(bus.subjects.service_endpoint(service, "metrics"))
                .await,
        );
        let (mut status, mut metrics) = match endpoints {
            (Ok(s), Ok(m)) => (s, m),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot add micro-service endpoints");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(request) = status.next() => {
                    let body = serde_json::json!({
                        "service": service.as_str(),
                        "version": env!("CARGO_PKG_VERSION"),
                        "started_at": started,
                        "nats": bus.client.connection_state().to_string(),
                    });
                    let _ = request.respond(Ok(body.to_string().into())).await;
                }
                Some(request) = metrics.next() => {
                    let text = crate::telemetry::metrics().render();
                    let _ = request.respond(Ok(text.into())).await;
                }
                else => break,
            }
        }
        if let Err(e) = micro.stop().await {
            tracing::debug!(error = %e, "micro-service stop");
        }
    })
}
