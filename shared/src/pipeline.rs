//! The request pipeline's stage loop, shared by every stage on a request's itinerary.
//!
//! A stage only says what it does to one request ([`StageOutcome`]); this module does the rest
//! the same way for all of them: decode and check the routing slip, answer redeliveries from the
//! ledger, forward to the next stage's subject or deliver the result, emit the audit event, and
//! keep the outputs in the ledger so a redelivery republishes the very same bytes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::body::audit::AuditOutcome;
use crate::body::exchange::Exchange;
use crate::bus::{
    audit_publication, publish_once, result_publications, run_consumer, Bus, ConsumerSpec,
    Disposition, Publication,
};
use crate::envelope::{Envelope, Step};
use crate::error::{ErrorBody, ServiceError};
use crate::ledger::Ledger;
use crate::subjects::{Service, StreamKind};

/// What a stage did with one request.
#[derive(Debug)]
pub enum StageOutcome {
    /// Go on to the next step with the updated envelope; `detail` goes into the audit entry.
    Continue {
        env: Box<Envelope<Exchange>>,
        detail: serde_json::Value,
    },
    /// Stop here and deliver the request with this error.
    Fail {
        env: Box<Envelope<Exchange>>,
        error: ErrorBody,
        detail: serde_json::Value,
    },
    /// A passing failure: deliver the message again after the delay; nothing is recorded.
    Retry(Duration),
}

/// Runs a pipeline stage: consumes `mcplane.stage.<service>.*` until `shutdown`.
pub async fn run_stage<H, F>(
    bus: Bus,
    service: Service,
    ledger: Arc<dyn Ledger>,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), ServiceError>
where
    H: Fn(Envelope<Exchange>, Step) -> F + Send + Sync,
    F: Future<Output = StageOutcome> + Send,
{
    let spec = ConsumerSpec {
        stream: StreamKind::Pipeline,
        durable: bus.subjects.durable(service, ""),
        filters: vec![bus.subjects.stage_all(service)],
    };
    let handler = &handler;
    let bus_ref = &bus;
    let ledger_ref = &ledger;
    run_consumer(
        &bus,
        spec,
        Some(ledger.clone()),
        shutdown,
        move |msg| async move {
            let env = match Envelope::<Exchange>::from_slice(&msg.payload) {
                Ok(env) => env,
                Err(code) => return Disposition::Term(format!("{code}: not an exchange envelope")),
            };
            let Some(step) = env.itinerary.current().filter(|s| s.service() == service) else {
                return Disposition::Term(format!(
                    "misrouted: request {} is not due at the {service} stage",
                    env.id
                ));
            };
            let span = tracing::info_span!(
                "stage",
                stage = step.as_str(),
                request_id = %env.id,
                trace_id = %env.trace.trace_id,
                tenant = %env.tenant,
            );
            handle_one(bus_ref, ledger_ref.as_ref(), env, step, handler)
                .instrument(span)
                .await
        },
    )
    .await
}

async fn handle_one<H, F>(
    bus: &Bus,
    ledger: &dyn Ledger,
    env: Envelope<Exchange>,
    step: Step,
    handler: &H,
) -> Disposition
where
    H: Fn(Envelope<Exchange>, Step) -> F,
    F: Future<Output = StageOutcome>,
{
    let key = format!("{}:{}", env.id, step.as_str());
    publish_once(bus, ledger, &key, step.as_str(), || async move {
        let started = std::time::Instant::now();
        let outcome = handler(env, step).await;
        if let StageOutcome::Retry(delay) = outcome {
            return Err(Disposition::Nak(delay));
        }
        let pubs = match outcomes_to_publications(bus, outcome, step) {
            Ok(Some(pubs)) => pubs,
            Ok(None) => return Err(Disposition::Nak(Duration::from_millis(500))),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode outputs");
                return Err(Disposition::Nak(Duration::from_secs(1)));
            }
        };
        metrics::histogram!("mcplane_stage_seconds", "stage" => step.as_str())
            .record(started.elapsed().as_secs_f64());
        Ok(pubs)
    })
    .await
}

fn outcomes_to_publications(
    bus: &Bus,
    outcome: StageOutcome,
    step: Step,
) -> Result<Option<Vec<Publication>>, ServiceError> {
    let stage = step.as_str();
    match outcome {
        StageOutcome::Retry(_) => Ok(None),
        StageOutcome::Continue { mut env, detail } => {
            let audit = audit_publication(bus, &env, stage, AuditOutcome::Ok, None, detail)?;
            env.trace = env.trace.child();
            let mut pubs = match env.itinerary.advance() {
                Some(next) => vec![Publication::envelope(
                    bus.subjects.stage(next.service(), &env.tenant),
                    &env,
                    stage,
                )?],
                None => result_publications(bus, &env, stage)?,
            };
            pubs.push(audit);
            Ok(Some(pubs))
        }
        StageOutcome::Fail {
            mut env,
            error,
            detail,
        } => {
            let audit = audit_publication(
                bus,
                &env,
                stage,
                AuditOutcome::Failed,
                Some(error.code),
                detail,
            )?;
            tracing::warn!(code = %error.code, message = %error.message, "request failed at this stage");
            env.body.error = Some(error);
            let mut pubs = result_publications(bus, &env, stage)?;
            pubs.push(audit);
            Ok(Some(pubs))
        }
    }
}
