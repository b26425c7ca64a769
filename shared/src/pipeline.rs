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

use crate::body::audit::{AuditEvent, AuditOutcome, PAYLOAD_DETAIL_KEY};
use crate::body::exchange::Exchange;
use crate::bus::{
    audit_publication, publish_once, result_publications, run_flowing_consumer, Bus, ConsumerSpec,
    Disposition, Publication,
};
use crate::envelope::{Envelope, Step};
use crate::error::{ErrorBody, ErrorCode, ServiceError};
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
        linger: Duration::ZERO,
    };
    let handler = &handler;
    let bus_ref = &bus;
    let ledger_ref = &ledger;
    // Requests are independent of each other: each is handled and acked on its own, with up to
    // `bus.batch_size` in hand (see `bus::flow`), so none waits for another's round trips.
    run_flowing_consumer(
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
        let request_type = env.body.request.request_type;
        let outcome = handler(env, step).await;
        if let StageOutcome::Retry(delay) = outcome {
            return Err(Disposition::Nak(delay));
        }
        let facts = CommonFacts {
            request_type,
            latency_ms: started.elapsed().as_millis() as u64,
        };
        let pubs = match outcomes_to_publications(bus, outcome, step, facts) {
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

/// What every stage's audit entry records besides the stage's own facts.
#[derive(Debug, Clone, Copy)]
struct CommonFacts {
    request_type: crate::RequestType,
    /// Time spent in the stage's handler for this request.
    latency_ms: u64,
}

impl CommonFacts {
    /// Adds the facts to a stage's detail object, never overwriting what the stage said.
    fn add_to(self, mut detail: serde_json::Value) -> serde_json::Value {
        if detail.is_null() {
            detail = serde_json::json!({});
        }
        if let Some(map) = detail.as_object_mut() {
            map.entry("request_type")
                .or_insert_with(|| serde_json::json!(self.request_type));
            map.entry("latency_ms")
                .or_insert_with(|| serde_json::json!(self.latency_ms));
        }
        detail
    }
}

fn outcomes_to_publications(
    bus: &Bus,
    outcome: StageOutcome,
    step: Step,
    facts: CommonFacts,
) -> Result<Option<Vec<Publication>>, ServiceError> {
    let stage = step.as_str();
    match outcome {
        StageOutcome::Retry(_) => Ok(None),
        StageOutcome::Continue { mut env, detail } => {
            let detail = facts.add_to(detail);
            // The audit entry carries this stage's span; the hand-off the next stage's.
            let trace = env.trace.clone();
            env.trace = env.trace.child();
            let onward = match env.itinerary.advance() {
                Some(next) => vec![Publication::envelope(
                    bus.subjects.stage(next.service(), &env.tenant),
                    &env,
                    stage,
                )?],
                None => result_publications(bus, &env, stage)?,
            };
            env.trace = trace;
            if let Some(bytes) = oversized(bus, &onward) {
                return too_large(bus, *env, stage, bytes, detail).map(Some);
            }
            let audit = audit_publication(bus, &env, stage, AuditOutcome::Ok, None, detail)?;
            let mut pubs = onward;
            pubs.push(fitted_audit(bus, audit)?);
            Ok(Some(pubs))
        }
        StageOutcome::Fail { env, error, detail } => {
            tracing::warn!(code = %error.code, message = %error.message, "request failed at this stage");
            failed(bus, *env, stage, error, facts.add_to(detail)).map(Some)
        }
    }
}

/// Delivers `env` with `error` as its result, and the stage's failed audit entry.
fn failed(
    bus: &Bus,
    mut env: Envelope<Exchange>,
    stage: &str,
    error: ErrorBody,
    detail: serde_json::Value,
) -> Result<Vec<Publication>, ServiceError> {
    let audit = audit_publication(
        bus,
        &env,
        stage,
        AuditOutcome::Failed,
        Some(error.code),
        detail,
    )?;
    env.body.error = Some(error);
    let mut pubs = result_publications(bus, &env, stage)?;
    if oversized(bus, &pubs).is_some() {
        // The error is the answer; what the request carried stays behind.
        strip_for_error(&mut env);
        pubs = result_publications(bus, &env, stage)?;
    }
    pubs.push(fitted_audit(bus, audit)?);
    Ok(pubs)
}

/// The size of the first publication the bus cannot carry, if any.
fn oversized(bus: &Bus, pubs: &[Publication]) -> Option<usize> {
    pubs.iter()
        .map(|p| p.payload.len())
        .find(|&len| !bus.fits(len))
}

/// Ends a request that outgrew the bus at this stage (its input, the context injected, the
/// sealed token originals or the answer): the stage's step cannot be handed on, and retrying
/// would fail the same way, so the client gets `payload_too_large` and the trail a failed entry.
fn too_large(
    bus: &Bus,
    mut env: Envelope<Exchange>,
    stage: &str,
    bytes: usize,
    mut detail: serde_json::Value,
) -> Result<Vec<Publication>, ServiceError> {
    let max_payload = bus.max_payload();
    tracing::warn!(
        bytes,
        max_payload,
        "the request outgrew what the bus carries; answered payload_too_large"
    );
    metrics::counter!("mcplane_requests_too_large_total", "stage" => stage.to_string())
        .increment(1);
    let error = ErrorBody::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the request grew to {bytes} bytes at the {stage} stage, more than the bus carries \
             ({max_payload} bytes, nats-server max_payload); send a smaller input"
        ),
    );
    if let Some(map) = detail.as_object_mut() {
        map.insert("bytes".into(), bytes.into());
        map.insert("max_payload".into(), max_payload.into());
    }
    strip_for_error(&mut env);
    failed(bus, env, stage, error, detail)
}

/// Leaves a failed request only what its error result needs: a client reads the error, never
/// the input, context or answer of a failed request.
fn strip_for_error(env: &mut Envelope<Exchange>) {
    env.body.request.input = String::new();
    env.body.context = Vec::new();
    env.body.response = None;
    env.body.vault = None;
}

/// An audit publication the bus can carry. An entry over the limit is nearly always one that
/// keeps a large sealed payload: the payload is withheld and the entry says so, and failing
/// that only the detail's common facts stay. The chain never misses the stage.
fn fitted_audit(bus: &Bus, audit: Publication) -> Result<Publication, ServiceError> {
    if bus.fits(audit.payload.len()) {
        return Ok(audit);
    }
    let encode = |e: serde_json::Error| ServiceError::Encode(e.to_string());
    let mut event: Envelope<AuditEvent> = serde_json::from_str(&audit.payload).map_err(encode)?;
    let bytes = audit.payload.len();
    metrics::counter!("mcplane_audit_payloads_withheld_total").increment(1);
    tracing::warn!(
        bytes,
        "audit entry too large for the bus; its payload is withheld"
    );
    let withheld = serde_json::json!(format!("{bytes} bytes: too large for the bus"));
    if let Some(map) = event.body.detail.as_object_mut() {
        map.remove(PAYLOAD_DETAIL_KEY);
        map.insert("payload_withheld".into(), withheld.clone());
    }
    let mut payload = serde_json::to_string(&event).map_err(encode)?;
    if !bus.fits(payload.len()) {
        let keep = |key: &str| event.body.detail.get(key).cloned();
        event.body.detail = serde_json::json!({
            "request_type": keep("request_type"),
            "latency_ms": keep("latency_ms"),
            "detail_withheld": withheld,
        });
        payload = serde_json::to_string(&event).map_err(encode)?;
    }
    Ok(Publication { payload, ..audit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_entry_gets_request_type_and_latency_without_losing_the_stage_facts() {
        let facts = CommonFacts {
            request_type: crate::RequestType::Answer,
            latency_ms: 12,
        };
        assert_eq!(
            facts.add_to(json!({"sources": ["cmdb"]})),
            json!({"sources": ["cmdb"], "request_type": "answer", "latency_ms": 12})
        );
        assert_eq!(
            facts.add_to(serde_json::Value::Null),
            json!({"request_type": "answer", "latency_ms": 12})
        );
        // A stage that measured its own latency keeps its figure.
        assert_eq!(facts.add_to(json!({"latency_ms": 3}))["latency_ms"], 3);
    }
}
