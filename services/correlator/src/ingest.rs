//! Ingest: raw alerts in, canonical alerts out, each keyed onto its partition.
//!
//! A message on `mcplane.alerts.in.<tenant>.<source>` is either the gateway's
//! `Envelope<RawAlert>` or a provider payload published as-is by a bus-native tool; for the
//! latter the subject is the only word on tenant and source (NATS permissions on that subject
//! are what isolate tenants). Stateless: replicas share the durable.
//!
//! The alerts of one raw message that fall on one partition are a *segment*, named
//! deterministically (`<raw id or seq-N>:p<partition>:normalize`). Every raw message of a pulled
//! batch is normalised on its own (a poison one is dropped alone); then the segments of the
//! whole batch bound for one partition and tenant are gathered into [`AlertBatch`] messages of
//! up to about 256 KiB, so that under load the bus and the partition owner handle one message
//! per partition for many raw messages (at ten alerts a payload and eight partitions, a raw
//! message alone made six messages of under two alerts each). The owner applies and records
//! each segment on its own, by its name, so a redelivered raw message is recognised however
//! the next batch gathers it. A message of one segment is named after it, so the server drops
//! its redelivery too; a message of several lists them (`segments`) and is named after them
//! all. A segment larger than the budget (a notification of a thousand alerts) is sent as
//! several (`…:p<partition>+<first alert>:normalize`), so that no notification, however large,
//! makes a message the bus refuses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use mcplane_shared::alerts::fingerprint::fnv1a64;
use mcplane_shared::bus::{run_batch_consumer, Bus, ConsumerSpec, Disposition, Publication};
use mcplane_shared::subjects::{validate_token, StreamKind};
use mcplane_shared::{
    alerts, AlertBatch, AlertSegment, BatchedAlert, Envelope, RawAlert, Service, ServiceError,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::grouping::is_key_only;
use crate::partition::partition_of_key;
use crate::rules::Rules;

/// The stage name in `Nats-Msg-Id`s of canonical alerts.
pub const STAGE: &str = "normalize";

/// The largest partition message ingest gathers (or a quarter of the server's `max_payload`,
/// if that is less); one raw message's alerts for one partition beyond it are sent as several,
/// each about this size. A quarter of NATS' default `max_payload` (1 MiB), so that a message of
/// canonical alerts never comes near it, even when a segment's size was estimated low.
const BATCH_BYTES: usize = 256 << 10;

/// What a canonical alert is taken to weigh, per byte of the raw payload it came from: it
/// carries its original beside the normalised fields (measured: about twice; three leaves room).
const BYTES_PER_RAW_BYTE: usize = 3;
/// And per alert, for its id, the normalised fields' names and the segment's entry.
const BYTES_PER_ALERT: usize = 512;
/// What a message's envelope adds to its segments.
const ENVELOPE_BYTES: usize = 1024;

pub struct Ingest {
    pub bus: Bus,
    pub partitions: u32,
    pub rules: Rules,
    pub clock: Arc<dyn Clock>,
    /// How long a pulled batch waits for more raw alerts (`linger_ms`): the canonical alerts
    /// of a larger batch are gathered into fewer messages, published and acknowledged together.
    pub linger: Duration,
}

/// One raw message's alerts for one partition (or a run of them, for a large notification):
/// what ingest's messages are made of, and what the partition owner records as handled.
pub struct Segment {
    pub partition: u32,
    /// `mcplane.alerts.part.<partition>.<tenant>`.
    pub subject: String,
    /// Its name: the msg id of a message holding it alone, the owner's ledger key.
    pub key: String,
    /// The raw message's envelope fields, with this segment's alerts as the body.
    pub env: Envelope<AlertBatch>,
    /// What it adds to a message: measured for a large segment, estimated for a small one.
    pub bytes: usize,
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
        run_batch_consumer(&self.bus, spec, None, shutdown, |batch| {
            self.handle_batch(batch)
        })
        .await
    }

    /// Normalises each raw message of a pulled batch on its own, then publishes the segments
    /// of them all, gathered per partition. A raw message that can never be handled is dropped
    /// alone; a failed publish lets the whole batch come again (the owner recognises what it
    /// already applied, segment by segment).
    async fn handle_batch(&self, batch: Vec<jetstream::Message>) -> Vec<Disposition> {
        let budget = self.budget();
        let mut dispositions = Vec::with_capacity(batch.len());
        let mut segments = Vec::new();
        let mut alerts = 0;
        for msg in &batch {
            let seq = msg.info().map(|i| i.stream_sequence).ok();
            let span = tracing::info_span!("normalize", subject = %msg.subject, stream_seq = ?seq);
            let _entered = span.enter();
            match self.segments(msg.subject.as_str(), &msg.payload, seq, budget) {
                Ok(found) => {
                    alerts += found.iter().map(|s| s.env.body.alerts.len()).sum::<usize>();
                    segments.extend(found);
                    dispositions.push(Disposition::Ack);
                }
                Err(reason) => {
                    metrics::counter!("mcplane_correlator_alerts_rejected_total").increment(1);
                    dispositions.push(Disposition::Term(reason));
                }
            }
        }
        let published = match self.messages(segments, budget) {
            Ok(pubs) => self.bus.publish_all_owned(pubs).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => {
                metrics::counter!("mcplane_correlator_alerts_normalized_total")
                    .increment(alerts as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, raw_messages = batch.len(), "cannot publish canonical alerts; will retry");
                for d in &mut dispositions {
                    if *d == Disposition::Ack {
                        *d = Disposition::Nak(Duration::from_secs(1));
                    }
                }
            }
        }
        dispositions
    }

    /// The size a message of canonical alerts should keep within: [`BATCH_BYTES`], or a quarter
    /// of the server's `max_payload` if that is less.
    pub fn budget(&self) -> usize {
        BATCH_BYTES.min(self.bus.max_payload() / 4)
    }

    /// The segments of one raw message (one per partition it touches, or several for a
    /// partition's share larger than `budget`), or why it can never be handled. `stream_seq`
    /// names a bare payload (which has no id of its own).
    pub fn segments(
        &self,
        subject: &str,
        payload: &[u8],
        stream_seq: Option<u64>,
        budget: usize,
    ) -> Result<Vec<Segment>, String> {
        let (tenant, source) = subject_tokens(&self.bus.subjects.alerts_in_all(), subject)?;
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| format!("{subject}: payload is not JSON: {e}"))?;
        let is_envelope = ["id", "kind", "body"]
            .iter()
            .all(|k| value.get(k).is_some());
        let (raw_key, raw) = if is_envelope {
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
        let (body, received_at) = match &raw {
            Some(env) => (&env.body.payload, env.body.received_at),
            None => (&value, self.clock.now()),
        };
        let canonical = alerts::normalize(source, tenant, body, received_at)
            .map_err(|e| format!("{subject}: {} ({raw_key}): {}", e.code, e.message))?;
        let per_alert =
            BYTES_PER_RAW_BYTE * payload.len() / canonical.len().max(1) + BYTES_PER_ALERT;
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
        let envelope = |alerts: Vec<BatchedAlert>| {
            let batch = AlertBatch {
                alerts,
                segments: Vec::new(),
            };
            let mut env = match &raw {
                Some(raw) => raw.derive(batch),
                None => Envelope::new(tenant, batch),
            };
            env.tenant = tenant.to_string();
            env
        };
        let mut segments = Vec::with_capacity(batches.len());
        for (partition, alerts) in batches {
            let subject = self.bus.subjects.alerts_partition(partition, tenant);
            // Deterministic, so that a redelivered raw message is recognised: dropped by the
            // server when its segment goes alone, skipped by the owner's ledger either way.
            let key = format!("{raw_key}:p{partition}:{STAGE}");
            let estimate = per_alert * alerts.len() + ENVELOPE_BYTES;
            let env = envelope(alerts);
            if estimate <= budget {
                segments.push(Segment {
                    partition,
                    subject,
                    key,
                    env,
                    bytes: estimate,
                });
                continue;
            }
            // A large notification (an Alertmanager group of a thousand alerts): measured, and
            // if its canonical alerts, each with its original beside it, outgrow the budget,
            // sent as several segments.
            let bytes = encoded_len(&env)?;
            if bytes <= budget {
                segments.push(Segment {
                    partition,
                    subject,
                    key,
                    env,
                    bytes,
                });
                continue;
            }
            for (first, chunk) in chunks(env.body.alerts, budget)? {
                let key = format!("{raw_key}:p{partition}+{first}:{STAGE}");
                let mut env = envelope(chunk);
                let mut bytes = encoded_len(&env)?;
                if !self.bus.fits(bytes) {
                    // One alert too large for the bus on its own (a run of several is a quarter
                    // of it at most): it goes without the original kept beside it, or not at all.
                    for alert in &mut env.body.alerts {
                        alert.alert.original = Value::Null;
                    }
                    bytes = encoded_len(&env)?;
                    tracing::warn!(
                        key,
                        bytes,
                        "alert too large for the bus with its original; sent without it"
                    );
                }
                if !self.bus.fits(bytes) {
                    tracing::error!(
                        key,
                        bytes,
                        max_payload = self.bus.max_payload(),
                        "alert too large for the bus even without its original; dropped"
                    );
                    metrics::counter!("mcplane_correlator_alerts_rejected_total").increment(1);
                    continue;
                }
                segments.push(Segment {
                    partition,
                    subject: subject.clone(),
                    key,
                    env,
                    bytes,
                });
            }
        }
        Ok(segments)
    }

    /// The messages for a batch's segments: per partition and tenant, consecutive segments
    /// gathered while their sizes sum within `budget`, in order.
    pub fn messages(
        &self,
        mut segments: Vec<Segment>,
        budget: usize,
    ) -> Result<Vec<Publication>, ServiceError> {
        // By subject (partition and tenant); the sort is stable, so each keeps the batch's order.
        segments.sort_by(|a, b| a.subject.cmp(&b.subject));
        let mut pubs = Vec::new();
        let (mut run, mut bytes): (Vec<Segment>, usize) = (Vec::new(), 0);
        for segment in segments {
            let joins = run
                .last()
                .is_some_and(|last| last.subject == segment.subject)
                && bytes + segment.bytes <= budget;
            if !joins && !run.is_empty() {
                self.gathered(std::mem::take(&mut run), &mut pubs)?;
                bytes = 0;
            }
            bytes += segment.bytes;
            run.push(segment);
        }
        if !run.is_empty() {
            self.gathered(run, &mut pubs)?;
        }
        Ok(pubs)
    }

    /// One message of `run`'s segments, or, if it does not fit on the bus after all (sizes
    /// estimated low), each half of them.
    fn gathered(
        &self,
        mut run: Vec<Segment>,
        out: &mut Vec<Publication>,
    ) -> Result<(), ServiceError> {
        let segments = metrics::histogram!("mcplane_correlator_segments_per_message");
        if run.len() == 1 {
            let Segment {
                subject, key, env, ..
            } = run.remove(0);
            let mut p = Publication::envelope(subject, &env, STAGE)?;
            p.msg_id = Some(key);
            out.push(p);
            segments.record(1.0);
            return Ok(());
        }
        let env = gather(&mut run);
        let mut p = Publication::envelope(run[0].subject.clone(), &env, STAGE)?;
        if self.bus.fits(p.payload.len()) {
            p.msg_id = Some(gathered_msg_id(&run));
            out.push(p);
            segments.record(run.len() as f64);
            return Ok(());
        }
        tracing::warn!(
            segments = run.len(),
            bytes = p.payload.len(),
            "gathered canonical alerts too large for the bus; sending them in two"
        );
        scatter(env.body, &mut run);
        let second = run.split_off(run.len() / 2);
        self.gathered(run, out)?;
        self.gathered(second, out)
    }
}

/// The envelope of a message gathering `run`'s segments (their alerts moved into it, in
/// order, each segment listed with its count). Its envelope fields are the first segment's, but
/// for the principal: the segments may come from different callers, and each keeps its trace.
fn gather(run: &mut [Segment]) -> Envelope<AlertBatch> {
    let total = run.iter().map(|s| s.env.body.alerts.len()).sum();
    let mut alerts = Vec::with_capacity(total);
    let mut segments = Vec::with_capacity(run.len());
    for s in run.iter_mut() {
        segments.push(AlertSegment {
            key: s.key.clone(),
            alerts: s.env.body.alerts.len(),
            trace: s.env.trace.clone(),
        });
        alerts.append(&mut s.env.body.alerts);
    }
    let first = &run[0].env;
    let mut env = Envelope::new(first.tenant.clone(), AlertBatch { alerts, segments });
    env.trace = first.trace.clone();
    env
}

/// Gives `run`'s segments their alerts back (what [`gather`] took), by the counts it listed.
fn scatter(gathered: AlertBatch, run: &mut [Segment]) {
    let AlertBatch {
        mut alerts,
        segments,
    } = gathered;
    for (s, listed) in run.iter_mut().zip(&segments).rev() {
        s.env.body.alerts = alerts.split_off(alerts.len() - listed.alerts);
    }
}

/// The msg id of a message gathering `run`: deterministic, so that a batch delivered again
/// whole makes the same messages, which the server then drops.
fn gathered_msg_id(run: &[Segment]) -> String {
    let mut names = String::new();
    for s in run {
        names.push_str(&s.key);
        names.push('\n');
    }
    format!(
        "{:016x}x{}:p{}:{STAGE}",
        fnv1a64(names.as_bytes()),
        run.len(),
        run[0].partition
    )
}

fn encoded_len(env: &Envelope<AlertBatch>) -> Result<usize, String> {
    serde_json::to_vec(env)
        .map(|v| v.len())
        .map_err(|e| format!("canonical alerts: {e}"))
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
    use crate::partition::tests::batched;

    fn segment(key: &str, alerts: usize) -> Segment {
        Segment {
            partition: 1,
            subject: "mcplane.alerts.part.1.acme".into(),
            key: key.into(),
            env: Envelope::new(
                "acme",
                AlertBatch {
                    alerts: batched(alerts),
                    segments: Vec::new(),
                },
            ),
            bytes: 0,
        }
    }

    fn ids(run: &[Segment]) -> Vec<Vec<Uuid>> {
        run.iter()
            .map(|s| s.env.body.alerts.iter().map(|a| a.id).collect())
            .collect()
    }

    #[test]
    fn gathering_lists_each_segment_in_order_and_scattering_gives_its_alerts_back() {
        let mut run = vec![
            segment("raw-a:p1:normalize", 2),
            segment("raw-b:p1:normalize", 1),
            segment("raw-c:p1+40:normalize", 3),
        ];
        let before = ids(&run);
        let env = gather(&mut run);
        assert!(run.iter().all(|s| s.env.body.alerts.is_empty()));
        let gathered: Vec<Uuid> = env.body.alerts.iter().map(|a| a.id).collect();
        assert_eq!(gathered, before.concat());
        let listed: Vec<(&str, usize, &str)> = env
            .body
            .segments
            .iter()
            .map(|s| (s.key.as_str(), s.alerts, s.trace.trace_id.as_str()))
            .collect();
        let expected: Vec<(&str, usize, &str)> = run
            .iter()
            .zip([2, 1, 3])
            .map(|(s, n)| (s.key.as_str(), n, s.env.trace.trace_id.as_str()))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(env.trace, run[0].env.trace);
        assert_eq!(env.tenant, "acme");
        assert!(env.principal.is_none());

        scatter(env.body, &mut run);
        assert_eq!(ids(&run), before);
    }

    #[test]
    fn a_gathered_message_is_named_after_its_segments_and_partition() {
        let run = [
            segment("raw-a:p1:normalize", 1),
            segment("raw-b:p1:normalize", 1),
        ];
        let id = gathered_msg_id(&run);
        assert!(id.ends_with("x2:p1:normalize"), "{id}");
        // The same segments gathered again make the same message, which the server drops.
        let again = [
            segment("raw-a:p1:normalize", 2),
            segment("raw-b:p1:normalize", 3),
        ];
        assert_eq!(gathered_msg_id(&again), id);
        // Other segments, or the same in another order, make another.
        let other = [
            segment("raw-b:p1:normalize", 1),
            segment("raw-a:p1:normalize", 1),
        ];
        assert_ne!(gathered_msg_id(&other), id);
        let more = [
            segment("raw-a:p1:normalize", 1),
            segment("raw-b:p1:normalize", 1),
            segment("raw-c:p1:normalize", 1),
        ];
        assert_ne!(gathered_msg_id(&more), id);
    }

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
