//! The authorise stage: the first stop of every request, consuming `mcplane.requests.submit`.
//!
//! It turns a decision ([`crate::authorize::decide`]) into publications: a forward to the
//! enrichment stage plus an `ok` audit event, or the result with a coded error plus a `denied`
//! or `failed` audit event. Outputs go through the ledger first, so a redelivered request is
//! never decided twice (a key revoked in between cannot turn one request into two outcomes).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use mcplane_shared::bus::{
    audit_publication, publish_once, result_publications, run_flowing_consumer, Bus, ConsumerSpec,
    Disposition, Publication,
};
use mcplane_shared::ledger::Ledger;
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{AuditOutcome, Envelope, Exchange, Principal, Service, ServiceError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::authorize::{decide, Decision};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::limits::Limits;

/// The stage name in ledger keys, audit entries and `Nats-Msg-Id`s.
pub const STAGE: &str = "authorize";

/// What the stage needs for every message.
pub struct AuthorizeStage {
    pub bus: Bus,
    pub credentials: Arc<Credentials>,
    pub limits: Limits,
    pub ledger: Arc<dyn Ledger>,
    pub config: Config,
    pub policy: LivePolicy,
}

impl AuthorizeStage {
    /// Consumes submitted requests through the shared durable `auth` until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let spec = ConsumerSpec {
            stream: StreamKind::Pipeline,
            durable: self.bus.subjects.durable(Service::Auth, ""),
            filters: vec![self.bus.subjects.requests_submit()],
            linger: Duration::ZERO,
        };
        // Each request on its own, as the later stages (`mcplane_shared::pipeline::run_stage`).
        run_flowing_consumer(
            &self.bus,
            spec,
            Some(self.ledger.clone()),
            shutdown,
            |msg| self.handle(msg),
        )
        .await
    }

    async fn handle(&self, msg: jetstream::Message) -> Disposition {
        let env = match Envelope::<Exchange>::from_slice(&msg.payload) {
            Ok(env) => env,
            Err(code) => return Disposition::Term(format!("{code}: not an exchange envelope")),
        };
        let span = tracing::info_span!(
            "stage",
            stage = STAGE,
            request_id = %env.id,
            trace_id = %env.trace.trace_id,
        );
        let key = format!("{}:{STAGE}", env.id);
        let now = Utc::now();
        publish_once(&self.bus, self.ledger.as_ref(), &key, STAGE, || async {
            let started = std::time::Instant::now();
            let resolved = self
                .credentials
                .resolve(env.credential.as_deref(), now)
                .await;
            self.publications(env, resolved, started)
        })
        .instrument(span)
        .await
    }

    fn publications(
        &self,
        env: Envelope<Exchange>,
        resolved: Result<Principal, mcplane_shared::ErrorBody>,
        started: std::time::Instant,
    ) -> Result<Vec<Publication>, Disposition> {
        let encode_failed = |e: ServiceError| {
            tracing::error!(error = %e, "cannot encode outputs");
            Disposition::Nak(Duration::from_secs(1))
        };
        // One engine for the whole decision, and its version in the audit entry.
        let policy = self.policy.current();
        let request_type = env.body.request.request_type;
        let decision = match decide(env, resolved, &self.config, &policy) {
            Decision::Forward(env) => {
                let admitted = match &env.principal {
                    Some(p) => self.limits.admit(p, &env.tenant, std::time::Instant::now()),
                    None => Ok(()),
                };
                match admitted {
                    Ok(()) => Decision::Forward(env),
                    Err(error) => Decision::Refuse {
                        env,
                        error,
                        outcome: AuditOutcome::Denied,
                    },
                }
            }
            other => other,
        };
        match decision {
            Decision::Retry => {
                tracing::warn!("key store unavailable; will retry");
                Err(Disposition::Nak(Duration::from_secs(2)))
            }
            Decision::Forward(mut env) => {
                let mut detail = principal_detail(env.principal.as_ref());
                detail["policy_version"] = policy.version().into();
                detail["request_type"] = serde_json::json!(request_type);
                detail["latency_ms"] = (started.elapsed().as_millis() as u64).into();
                let audit =
                    audit_publication(&self.bus, &env, STAGE, AuditOutcome::Ok, None, detail)
                        .map_err(encode_failed)?;
                env.trace = env.trace.child();
                let forward = Publication::envelope(
                    self.bus.subjects.stage(Service::Enrichment, &env.tenant),
                    &env,
                    STAGE,
                )
                .map_err(encode_failed)?;
                count(AuditOutcome::Ok);
                tracing::info!(tenant = %env.tenant, principal = ?env.principal.as_ref().map(|p| &p.id), "authorised");
                Ok(vec![forward, audit])
            }
            Decision::Refuse {
                mut env,
                error,
                outcome,
            } => {
                let mut detail = principal_detail(env.principal.as_ref());
                detail["policy_version"] = policy.version().into();
                detail["message"] = serde_json::Value::String(error.message.clone());
                detail["request_type"] = serde_json::json!(request_type);
                detail["latency_ms"] = (started.elapsed().as_millis() as u64).into();
                let audit =
                    audit_publication(&self.bus, &env, STAGE, outcome, Some(error.code), detail)
                        .map_err(encode_failed)?;
                count(outcome);
                tracing::warn!(code = %error.code, message = %error.message, "request refused");
                env.body.error = Some(error);
                let mut pubs =
                    result_publications(&self.bus, &env, STAGE).map_err(encode_failed)?;
                pubs.push(audit);
                Ok(pubs)
            }
        }
    }
}

/// What the audit entry records about who asked: never the key, only its id.
fn principal_detail(principal: Option<&Principal>) -> serde_json::Value {
    match principal {
        Some(p) => serde_json::json!({
            "principal_kind": p.kind,
            "roles": p.roles,
            "key_id": p.id,
        }),
        None => serde_json::json!({}),
    }
}

fn count(outcome: AuditOutcome) {
    let label = match outcome {
        AuditOutcome::Ok => "ok",
        AuditOutcome::Denied => "denied",
        AuditOutcome::Failed => "failed",
    };
    metrics::counter!("mcplane_auth_decisions_total", "outcome" => label).increment(1);
}
