//! Ingest: raw alerts in, canonical alerts out, each keyed onto its partition.
//!
//! A message on `mcplane.alerts.in.<tenant>.<source>` is either the gateway's
//! `Envelope<RawAlert>` or a provider payload published as-is by a bus-native tool; for the
//! latter the subject is the only word on tenant and source (NATS permissions on that subject
//! are what isolate tenants). Outputs carry deterministic `Nats-Msg-Id`s
//! (`<raw id or seq-N>:p<partition>:normalize`): one [`AlertBatch`] per raw message and
//! partition, so a redelivery is dropped by the server and, past its dedup window, by the
//! partition owner's ledger (one entry per partition message). Stateless: replicas share the durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use mcplane_shared::bus::{run_consumer, Bus, ConsumerSpec, Disposition, Publication};
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
            let n = alerts.len();
            let batch = AlertBatch { alerts };
            let mut env = match &raw {
                Some(raw) => raw.derive(batch),
                None => Envelope::new(tenant, batch),
            };
            env.tenant = tenant.to_string();
            let mut p = Publication::envelope(
                self.bus.subjects.alerts_partition(partition, tenant),
                &env,
                STAGE,
            )
            .map_err(|e| e.to_string())?;
            // Deterministic, so that a redelivered raw message is dropped by the server (and,
            // past its dedup window, by the owner's ledger, keyed by this msg id).
            p.msg_id = Some(format!("{key}:p{partition}:{STAGE}"));
            pubs.push((p, n));
        }
        Ok(pubs)
    }
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
