//! Ingest: raw alerts in, canonical alerts out, each keyed onto its partition.
//!
//! A message on `mcplane.alerts.in.<tenant>.<source>` is either the gateway's
//! `Envelope<RawAlert>` or a provider payload published as-is by a bus-native tool; for the
//! latter the subject is the only word on tenant and source (NATS permissions on that subject
//! are what isolate tenants). Outputs carry deterministic `Nats-Msg-Id`s
//! (`<raw id or seq-N>:p<partition>:normalize`): one [`AlertBatch`] per raw message and
//! partition, so a redelivery is dropped by the server and, past its dedup window, by the
//! partition owner's ledger (one entry per partition message). A batch larger than about
//! 256 KiB is sent as several (`…:p<partition>+<first alert>:normalize`), so that no
//! notification, however large, makes a message the bus refuses. Stateless: replicas share the
//! durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use mcplane_shared::bus::{
    run_consumer, Bus, ConsumerSpec, Disposition, Publication, SMALL_PAYLOAD,
};
use mcplane_shared::subjects::{validate_token, StreamKind};
use mcplane_shared::{alerts, AlertBatch, BatchedAlert, Envelope, RawAlert, Service, ServiceError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::Clock;
use crate::grouping::is_key_only;
use crate::partition::partition_of_key;
use crate::rules::Rules;

/// The stage name in `Nats-Msg-Id`s of canonical alerts.
pub const STAGE: &str = "normalize";

pub struct Ingest {
    pub bus: Bus,
    pub partitions: u32,
    pub rules: Rules,
    pub clock: Arc<dyn Clock>,
    /// How long a pulled batch waits for more raw alerts (`linger_ms`): the canonical alerts
    /// of a larger batch are published and acknowledged together.
    pub linger: Duration,
}

impl Ingest {
    /// Consumes `mcplane.alerts.in.>` through the shared durable `correlator-ingest`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let spec = ConsumerSpec {
            stream: StreamKind::Alerts,
            durable: self.bus.subjects.durable(Service::Correlator, "ingest"),
            filters: vec![self.bus.subjects.alerts_in_all()],
            linger: self.linger,
        };
        run_consumer(&self.bus, spec, None, shutdown, |msg| self.handle(msg)).await
    }

    async fn handle(&self, msg: jetstream::Message) -> Disposition {
        let seq = msg.info().map(|i| i.stream_sequence).ok();
        let span = tracing::info_span!("normalize", subject = %msg.subject, stream_seq = ?seq);
        self.forward(&msg, seq).instrument(span).await
    }

    async fn forward(&self, msg: &jetstream::Message, seq: Option<u64>) -> Disposition {
        let pubs = match self.publications(msg.subject.as_str(), &msg.payload, seq) {
            Ok(pubs) => pubs,
            Err(reason) => {
                metrics::counter!("mcplane_correlator_alerts_rejected_total").increment(1);
                return Disposition::Term(reason);
            }
        };
        let alerts: usize = pubs.iter().map(|(_, n)| n).sum();
        metrics::counter!("mcplane_correlator_alerts_normalized_total").increment(alerts as u64);
        let pubs: Vec<Publication> = pubs.into_iter().map(|(p, _)| p).collect();
        match self.bus.publish_all(&pubs).await {
            Ok(()) => Disposition::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish canonical alerts; will retry");
                Disposition::Nak(Duration::from_secs(1))
            }
        }
    }

    /// The canonical alert publications for one raw message (one per partition it touches,
    /// with the number of alerts each carries), or why it can never be handled. `stream_seq`
    /// names a bare payload (which has no id of its own) in msg ids.
    pub fn publications(
        &self,
        subject: &str,
        payload: &[u8],
        stream_seq: Option<u64>,
    ) -> Result<Vec<(Publication, usize)>, String> {
        let (tenant, source) = subject_tokens(&self.bus.subjects.alerts_in_all(), subject)?;
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| format!("{subject}: payload is not JSON: {e}"))?;
        let is_envelope = ["id", "kind", "body"]
            .iter()
            .all(|k| value.get(k).is_some());
        let (key, raw) = if is_envelope {
            let env = Envelope::<RawAlert>::from_slice(payload)
                .map_err(|code| format!("{subject}: {code}: not a raw alert envelope"))?;
            if !env.tenant.is_empty() && env.tenant != tenant {
                return Err(format!(
                    "{subject}: envelope {} names tenant {:?}, the subject {tenant:?}",
                    env.id, env.tenant
                ));
            }
            if env.body.source != source {
                return Err(format!(
                    "{subject}: envelope {} names source {:?}, the subject {source:?}",
                    env.id, env.body.source
                ));
            }
            (env.id.to_string(), Some(env))
        } else {
            let seq = stream_seq.ok_or_else(|| format!("{subject}: no stream sequence"))?;
            (format!("seq-{seq}"), None)
        };
        let (payload, received_at) = match &raw {
            Some(env) => (&env.body.payload, env.body.received_at),
            None => (&value, self.clock.now()),
        };
        let canonical = alerts::normalize(source, tenant, payload, received_at)
            .map_err(|e| format!("{subject}: {} ({}): {}", e.code, key, e.message))?;
        // The alerts of each partition, in the raw message's order.
        let mut batches: BTreeMap<u32, Vec<BatchedAlert>> = BTreeMap::new();
        for alert in canonical {
            // A key-only PagerDuty acknowledge/resolve does not say which service its trigger
            // was about, so it goes to every partition; the one holding the key applies it and
            // the others ignore it.
            if is_key_only(&alert) {
                for partition in 0..self.partitions {
                    batches.entry(partition).or_default().push(BatchedAlert {
                        id: Uuid::now_v7(),
                        alert: alert.clone(),
                    });
                }
            } else {
                let partition =
                    partition_of_key(&self.rules.partition_key(&alert), self.partitions);
                batches.entry(partition).or_default().push(BatchedAlert {
                    id: Uuid::now_v7(),
                    alert,
                });
            }
        }
        let mut pubs = Vec::with_capacity(batches.len());
        for (partition, alerts) in batches {
            // Deterministic, so that a redelivered raw message is dropped by the server (and,
            // past its dedup window, by the owner's ledger, keyed by this msg id).
            let msg_id = format!("{key}:p{partition}:{STAGE}");
            let subject = self.bus.subjects.alerts_partition(partition, tenant);
            let (p, alerts) = encode(subject, tenant, raw.as_ref(), alerts, msg_id)?;
            // A large notification (an Alertmanager group of a thousand alerts): its canonical
            // alerts, each with its original beside it, can outgrow what the bus carries. Only
            // a large message asks for the server's `max_payload` (a copy of its whole `INFO`).
            let max_payload = if p.payload.len() <= SMALL_PAYLOAD {
                usize::MAX
            } else {
                self.bus.max_payload()
            };
            let budget = BATCH_BYTES.min(max_payload / 4);
            if p.payload.len() <= budget {
                pubs.push((p, alerts.len()));
                continue;
            }
            let subject = p.subject;
            for (first, chunk) in chunks(alerts, budget)? {
                let msg_id = format!("{key}:p{partition}+{first}:{STAGE}");
                let (mut p, mut chunk) =
                    encode(subject.clone(), tenant, raw.as_ref(), chunk, msg_id)?;
                if !self.bus.fits(p.payload.len()) {
                    // One alert too large for the bus on its own (a run of several is a quarter
                    // of it at most): it goes without the original kept beside it, or not at all.
                    for alert in &mut chunk {
                        alert.alert.original = Value::Null;
                    }
                    let msg_id = p.msg_id.take().unwrap_or_default();
                    (p, chunk) = encode(subject.clone(), tenant, raw.as_ref(), chunk, msg_id)?;
                    tracing::warn!(
                        key,
                        bytes = p.payload.len(),
                        "alert too large for the bus with its original; sent without it"
                    );
                }
                if !self.bus.fits(p.payload.len()) {
                    tracing::error!(
                        key,
                        bytes = p.payload.len(),
                        max_payload,
                        "alert too large for the bus even without its original; dropped"
                    );
                    metrics::counter!("mcplane_correlator_alerts_rejected_total").increment(1);
                    continue;
                }
                pubs.push((p, chunk.len()));
            }
        }
        Ok(pubs)
    }
}

/// The largest partition message ingest publishes whole (or a quarter of the server's
/// `max_payload`, if that is less); a raw message's alerts for one partition beyond it are sent
/// as several, each about this size. A quarter of NATS' default `max_payload` (1 MiB), so that
/// a message of canonical alerts never comes near it.
const BATCH_BYTES: usize = 256 << 10;

/// One partition message of `alerts`, and the alerts back (to split them when it is too large).
fn encode(
    subject: String,
    tenant: &str,
    raw: Option<&Envelope<RawAlert>>,
    alerts: Vec<BatchedAlert>,
    msg_id: String,
) -> Result<(Publication, Vec<BatchedAlert>), String> {
    let batch = AlertBatch { alerts };
    let mut env = match raw {
        Some(raw) => raw.derive(batch),
        None => Envelope::new(tenant, batch),
    };
    env.tenant = tenant.to_string();
    let mut p = Publication::envelope(subject, &env, STAGE).map_err(|e| e.to_string())?;
    p.msg_id = Some(msg_id);
    Ok((p, env.body.alerts))
}

/// `alerts` in runs of about `budget` bytes (each alert's JSON summed; a larger alert alone),
/// in order, each with the index of its first alert: the msg id of the message it becomes.
/// The sizes hold timestamps whose width varies with their fraction, so a redelivery may split
/// at another alert; its messages then have other msg ids and an alert on both sides of the
/// seam is counted twice, as a repeat. None is lost.
fn chunks(
    alerts: Vec<BatchedAlert>,
    budget: usize,
) -> Result<Vec<(usize, Vec<BatchedAlert>)>, String> {
    let mut out: Vec<(usize, Vec<BatchedAlert>)> = Vec::new();
    let mut bytes = 0;
    for (i, alert) in alerts.into_iter().enumerate() {
        let size = serde_json::to_vec(&alert)
            .map_err(|e| format!("canonical alert {i}: {e}"))?
            .len();
        match out.last_mut() {
            Some((_, run)) if bytes + size <= budget => run.push(alert),
            _ => {
                out.push((i, vec![alert]));
                bytes = 0;
            }
        }
        bytes += size;
    }
    Ok(out)
}

/// `(tenant, source)` from `<prefix>.alerts.in.<tenant>.<source>`, both validated.
fn subject_tokens<'s>(all: &str, subject: &'s str) -> Result<(&'s str, &'s str), String> {
    let base = all.trim_end_matches('>');
    let rest = subject
        .strip_prefix(base)
        .ok_or_else(|| format!("{subject}: not an alerts-in subject"))?;
    let mut tokens = rest.split('.');
    let (Some(tenant), Some(source), None) = (tokens.next(), tokens.next(), tokens.next()) else {
        return Err(format!("{subject}: expected {base}<tenant>.<source>"));
    };
    validate_token(tenant).map_err(|_| format!("{subject}: invalid tenant {tenant:?}"))?;
    if !alerts::is_known_source(source) {
        return Err(format!(
            "{subject}: unknown alert source {source:?}; known: {}",
            alerts::SOURCES.join(", ")
        ));
    }
    Ok((tenant, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_names_tenant_and_a_known_source() {
        let all = "mcplane.alerts.in.>";
        assert_eq!(
            subject_tokens(all, "mcplane.alerts.in.acme.alertmanager"),
            Ok(("acme", "alertmanager"))
        );
        for bad in [
            "mcplane.alerts.in.acme.nagios",
            "mcplane.alerts.in.acme",
            "mcplane.alerts.in.acme.generic.x",
            "mcplane.alerts.in.ACME.generic",
            "other.alerts.in.acme.generic",
        ] {
            assert!(subject_tokens(all, bad).is_err(), "{bad}");
        }
    }
}
