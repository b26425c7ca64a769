//! The notifier service: posts each incident summary to its tenant's Slack webhook, once.
//!
//! It consumes `mcplane.summaries.>` (durable `notifier`, shared by replicas). A post is an
//! effect that must happen once across the fleet, so it is claimed first in the claims bucket
//! under `<incident>.<revision>.<target>`; the replica that wins posts and records a receipt,
//! and any redelivery — on any replica — finds the receipt instead of posting again. Each
//! receipt is also written to the tenant's audit chain (stage `notify`).

pub mod blocks;
pub mod config;
pub mod deliver;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mcplane_shared::body::audit::AuditOutcome;
use mcplane_shared::bus::{
    audit_publication, run_consumer, Bus, Claim, Claims, ConsumerSpec, Disposition,
};
use mcplane_shared::config::ServiceConfig;
use mcplane_shared::ledger::{Ledger, SledLedger};
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, ErrorCode, IncidentSummary, Service, ServiceError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::deliver::{Failure, Receipt};

/// How long a delivery stays in the local ledger: far longer than any redelivery.
const LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The audit stage name of a delivery receipt.
const STAGE: &str = "notify";

struct Notifier {
    bus: Bus,
    claims: Claims,
    ledger: Arc<SledLedger>,
    http: reqwest::Client,
    config: Config,
}

/// Runs the notifier until `shutdown`, then drains the batch in hand and returns.
pub async fn run(
    config: ServiceConfig<Config>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let bus = mcplane_shared::bus::connect(&config.common.bus, "mcplane-notifier").await?;
    // Listed by `$SRV.PING`/`nats micro ls` until shutdown.
    mcplane_shared::bus::announce(
        &bus,
        mcplane_shared::Service::Notifier,
        shutdown.child_token(),
    );
    // `/healthz`, `/readyz` and `/metrics` over HTTP when `[telemetry] listen` is set.
    mcplane_shared::health::serve(
        &config.common.telemetry,
        mcplane_shared::Service::Notifier,
        &bus.health,
        shutdown.child_token(),
    )
    .await?;
    let ledger = Arc::new(SledLedger::open(
        config.common.service_dir(Service::Notifier).join("ledger"),
        LEDGER_RETENTION,
    )?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.service.request_timeout_ms))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServiceError::Other(format!("http client: {e}")))?;
    let notifier = Notifier {
        claims: Claims::open(&bus).await?,
        bus: bus.clone(),
        ledger: ledger.clone(),
        http,
        config: config.service,
    };
    tracing::info!(
        default_webhook = notifier.config.slack_webhook_url.is_some(),
        tenant_webhooks = notifier.config.tenant_webhooks.len(),
        "notifier starting"
    );
    let spec = ConsumerSpec {
        stream: StreamKind::Summaries,
        durable: bus.subjects.durable(Service::Notifier, ""),
        filters: vec![bus.subjects.summaries_all()],
        linger: Duration::ZERO,
    };
    let notifier = &notifier;
    run_consumer(&bus, spec, Some(ledger), shutdown, move |msg| async move {
        let env = match Envelope::<IncidentSummary>::from_slice(&msg.payload) {
            Ok(env) => env,
            Err(code) => return Disposition::Term(format!("{code}: not a summary envelope")),
        };
        let span = tracing::info_span!(
            "notify",
            request_id = %env.id,
            trace_id = %env.trace.trace_id,
            tenant = %env.tenant,
            incident_id = %env.body.incident_id,
            revision = env.body.revision,
        );
        notifier.handle(env).instrument(span).await
    })
    .await
}

impl Notifier {
    /// The longest a claim may stay pending while its owner is still posting.
    fn in_doubt_after(&self) -> Duration {
        let per_attempt =
            Duration::from_millis(self.config.request_timeout_ms) + Duration::from_secs(30);
        per_attempt * self.config.max_attempts as u32 + Duration::from_secs(60)
    }

    async fn handle(&self, env: Envelope<IncidentSummary>) -> Disposition {
        let Some(url) = self.config.webhook_for(&env.tenant) else {
            metrics::counter!("mcplane_notifier_posts_total", "outcome" => "no_webhook")
                .increment(1);
            tracing::debug!("no webhook configured for this tenant");
            return Disposition::Ack;
        };
        let target = deliver::target_id(url);
        let key = format!("{}.{}.{}", env.body.incident_id, env.body.revision, target);
        match self.ledger.get(&key) {
            Ok(Some(_)) => return Disposition::Ack,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "ledger read failed");
                return Disposition::Nak(Duration::from_secs(1));
            }
        }
        let receipt = match self.claims.claim(&key).await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the post; will retry");
                return Disposition::Nak(Duration::from_secs(1));
            }
            Ok(Claim::Done(bytes)) => match serde_json::from_slice::<Receipt>(&bytes) {
                Ok(r) => r,
                Err(e) => return Disposition::Term(format!("unreadable receipt for {key}: {e}")),
            },
            Ok(Claim::Pending { age }) if age < self.in_doubt_after() => {
                return Disposition::Nak(Duration::from_secs(5));
            }
            Ok(Claim::Pending { age }) => {
                // Its owner died mid-post: the message may or may not be in Slack. Posting
                // again could page twice; the summary stays on the bus either way.
                tracing::error!(?age, "delivery in doubt; not posting again");
                metrics::counter!("mcplane_notifier_posts_total", "outcome" => "in_doubt")
                    .increment(1);
                return Disposition::Ack;
            }
            Ok(Claim::Won) => {
                let body = blocks::message(&env.body);
                let receipt = match deliver::post(&self.http, url, &body, self.config.max_attempts)
                    .await
                {
                    Ok(r) => r,
                    Err(Failure::Permanent(r)) => r,
                    Err(Failure::Retryable(r)) => {
                        metrics::counter!("mcplane_notifier_posts_total", "outcome" => "retry_later").increment(1);
                        if let Err(e) = self.claims.release(&key).await {
                            tracing::error!(error = %e, "cannot release the claim");
                        }
                        tracing::warn!(error = ?r.error, "webhook unavailable; the summary will be redelivered");
                        return Disposition::Nak(Duration::from_secs(30));
                    }
                };
                let recorded = match serde_json::to_vec(&receipt) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => return Disposition::Term(format!("cannot encode receipt: {e}")),
                };
                if let Err(e) = self.claims.complete(&key, recorded).await {
                    tracing::error!(error = %e, "cannot record the receipt; will retry");
                    return Disposition::Nak(Duration::from_secs(1));
                }
                let outcome = if receipt.delivered {
                    "delivered"
                } else {
                    "refused"
                };
                metrics::counter!("mcplane_notifier_posts_total", "outcome" => outcome)
                    .increment(1);
                tracing::info!(delivered = receipt.delivered, status = ?receipt.status, attempts = receipt.attempts, "summary posted");
                receipt
            }
        };
        // The receipt goes to the tenant's audit chain (deduplicated by its message id, so a
        // redelivery republishes it harmlessly), then the local ledger.
        let (outcome, code) = if receipt.delivered {
            (AuditOutcome::Ok, None)
        } else {
            (AuditOutcome::Failed, Some(ErrorCode::ProviderError))
        };
        let detail = serde_json::to_value(&receipt).unwrap_or_default();
        let publication = match audit_publication(&self.bus, &env, STAGE, outcome, code, detail) {
            Ok(p) => p,
            Err(e) => return Disposition::Term(format!("cannot encode the receipt: {e}")),
        };
        if let Err(e) = self.bus.publish_all(&[publication]).await {
            tracing::warn!(error = %e, "cannot publish the receipt; will retry");
            return Disposition::Nak(Duration::from_secs(1));
        }
        if let Err(e) = self.ledger.put(&key, b"done") {
            tracing::error!(error = %e, "ledger write failed");
        }
        Disposition::Ack
    }
}
