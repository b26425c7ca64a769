//! Rebuilding a partition whose folder is gone (a replica restarted on an empty disk, a
//! partition moved to a replica that never held it) from the streams, before consuming.
//!
//! The partition's durable consumer keeps its position on the server, so consuming on from
//! there with an empty store would forget every open incident: the next alert on one would open
//! a new incident. Instead the partition's canonical alerts (`mcplane.alerts.part.<n>.>`, kept
//! 7 days) are replayed through the same grouping, each at the time the stream stored it, up
//! to the last one the durable delivered; those it may still redeliver get their ledger entry
//! (with the incident event they publish) so a redelivery republishes rather than re-applies.
//! Which revisions were already summarised comes from the summaries stream, so a rebuilt
//! incident is not summarised again for what its people were already told.
//!
//! Replaying alerts rather than the latest incident events: events carry what people read, not
//! the grouping state (group keys, flap history, notification log) that decides what happens
//! next, while alerts are the owner's actual input. A summary the pipeline was still working on
//! when the disk went is asked for again (its answer to the lost request is ignored).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::subjects::{StreamKind, Subjects};
use mcplane_shared::{Envelope, IncidentEvent, IncidentSummary, Service, ServiceError};

use crate::grouping::{IncidentBook, Policy};
use crate::notify::NotifyLog;
use crate::owner::STAGE;
use crate::partition::partition_segments;
use crate::rules::Rules;
use crate::store::{LedgerEntry, PartitionStore, Step};

/// How long to wait for the next replayed message before giving up on the rebuild.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a rebuild restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub alerts: usize,
    pub incidents: usize,
    pub summarised: usize,
}

type Sets = (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
);

fn stored_at(msg: &async_nats::jetstream::Message) -> Option<(u64, u64, DateTime<Utc>)> {
    let info = msg.info().ok()?;
    let p = info.published;
    let at = DateTime::<Utc>::from_timestamp(p.unix_timestamp(), p.nanosecond())?;
    Some((info.stream_sequence, info.pending, at))
}

/// The segment names a replay met within the last `span` of stream time.
///
/// Ingest gathers the segments of a pulled batch into shared messages; a batch whose publish
/// failed part-way comes again and may be gathered otherwise, so a segment can be stored twice
/// under two msg ids (the owner's ledger skips the second). The copies are at most one
/// redelivery chain apart, so only the names of that span are kept, not those of the whole
/// stream.
struct RecentSegments {
    span: chrono::Duration,
    order: VecDeque<(DateTime<Utc>, String)>,
    names: HashSet<String>,
}

impl RecentSegments {
    fn new(span: chrono::Duration) -> Self {
        RecentSegments {
            span,
            order: VecDeque::new(),
            names: HashSet::new(),
        }
    }

    /// Whether `key`, stored at `at`, is met for the first time within the span.
    fn first_time(&mut self, key: &str, at: DateTime<Utc>) -> bool {
        while let Some((then, _)) = self.order.front() {
            if at - *then <= self.span {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.names.remove(&old);
            }
        }
        if !self.names.insert(key.to_string()) {
            return false;
        }
        self.order.push_back((at, key.to_string()));
        true
    }
}

/// How far apart two deliveries of one raw message can be stored: `max_deliver` deliveries,
/// each at most `ack_wait` after the last, twice over for margin (10 minutes by default; a
/// day at most, the owner's ledger retention).
fn redelivery_span(bus: &Bus) -> chrono::Duration {
    let secs = bus
        .config
        .ack_wait_secs
        .saturating_mul(bus.config.max_deliver.max(1).unsigned_abs())
        .saturating_mul(2)
        .min(86_400);
    chrono::Duration::seconds(secs as i64)
}

/// The next message of a replay that is not finished (the loops stop at the last one): a
/// stream going quiet before then is an error, not the end, or a partial state would be taken
/// for the whole one.
async fn next(
    messages: &mut async_nats::jetstream::consumer::pull::Ordered,
    what: &str,
) -> Result<async_nats::jetstream::Message, ServiceError> {
    match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
        Ok(Some(msg)) => msg.map_err(|e| ServiceError::bus(format!("{what}: {e}"))),
        Ok(None) | Err(_) => Err(ServiceError::bus(format!(
            "{what}: the stream stopped delivering with messages still to read"
        ))),
    }
}

/// `mcplane.incidents.<tenant>.<event>` for one revision, with its message id
/// `<incident>:<revision>:<event>`: the one definition both the owner and a rebuild use, so a
/// rebuilt event is the same message and the server drops a copy it already has.
pub(crate) fn event_publication(
    subjects: &Subjects,
    event: &Envelope<IncidentEvent>,
) -> Result<Publication, ServiceError> {
    let e = &event.body;
    let mut p = Publication::envelope(
        subjects.incidents(&e.tenant, e.event.as_str()),
        event,
        STAGE,
    )?;
    p.msg_id = Some(format!(
        "{}:{}:{}",
        e.incident_id,
        e.revision,
        e.event.as_str()
    ));
    Ok(p)
}

/// Rebuilds partition `partition` into `store` when the store is empty and the partition was
/// consumed before; `None` when there was nothing to rebuild.
pub async fn rebuild_if_empty(
    bus: &Bus,
    partition: u32,
    store: &PartitionStore,
    rules: &Rules,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Option<Rebuilt>, ServiceError> {
    if !store.is_empty() {
        return Ok(None);
    }
    let stream = bus.ensure_stream(StreamKind::Alerts).await?;
    let durable = bus
        .subjects
        .durable(Service::Correlator, &format!("p{partition}"));
    let info = match stream.consumer_info(&durable).await {
        Ok(info) => info,
        // Never consumed: a new partition, nothing to rebuild.
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ServiceError::bus(format!(
                "consumer {durable} (to see whether partition {partition} needs rebuilding): {e}"
            )))
        }
    };
    let upto = info.delivered.stream_sequence;
    let ack_floor = info.ack_floor.stream_sequence;
    if upto == 0 {
        return Ok(None);
    }
    tracing::warn!(
        partition,
        upto,
        "partition folder is empty but the partition was consumed before: rebuilding from the stream"
    );
    let started = std::time::Instant::now();
    let mut book = IncidentBook::new(Vec::new(), rules.clone());
    let mut rebuilt = Rebuilt::default();
    // What each incident revision's notification would have told, for the summaries below.
    let mut told: HashMap<(String, u32), Sets> = HashMap::new();
    // Written with the incidents at the end, so a rebuild cut short leaves the store empty and
    // is simply done again at the next start.
    let mut ledger: Vec<(String, LedgerEntry)> = Vec::new();
    let mut recent = RecentSegments::new(redelivery_span(bus));

    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: bus.subjects.alerts_partition_all(partition),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ServiceError::bus(format!("replaying partition {partition}: {e}")))?;
    if consumer.cached_info().num_pending > 0 {
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| ServiceError::bus(format!("replaying partition {partition}: {e}")))?;
        loop {
            let msg = next(&mut messages, &format!("replaying partition {partition}")).await?;
            let Some((seq, pending, at)) = stored_at(&msg) else {
                continue;
            };
            if seq > upto {
                break; // the durable delivers this one and what follows
            }
            let msg_id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string());
            for (key, envs) in partition_segments(&msg.payload, msg_id).unwrap_or_default() {
                // A segment stored twice (its raw message delivered again and gathered anew)
                // is applied once, as the owner's ledger did.
                if !recent.first_time(&key, at) {
                    continue;
                }
                let mut publications = Vec::new();
                for env in envs {
                    let outcome = book.apply(env.id, &env.body, policy, at);
                    rebuilt.alerts += 1;
                    let incident = outcome.incident().and_then(|id| book.get(id));
                    if let Some(incident) = incident {
                        told.insert(
                            (incident.id.clone(), incident.revision),
                            incident.notify_sets(),
                        );
                    }
                    if let (Some(kind), Some(incident), true) =
                        (outcome.event_kind(), incident, seq > ack_floor)
                    {
                        publications.push(event_publication(
                            &bus.subjects,
                            &env.derive(incident.event(kind)),
                        )?);
                    }
                }
                // Acked below the floor: never delivered again, so no ledger entry is needed.
                if seq > ack_floor {
                    ledger.push((
                        key,
                        // Kept whole rather than under `evt/`: only the few messages above the
                        // ack floor get an entry, and a redelivery republishes it as it is.
                        LedgerEntry {
                            at: now,
                            publications,
                            events: Vec::new(),
                        },
                    ));
                }
            }
            if seq >= upto || pending == 0 {
                break;
            }
        }
    }

    // The newest summary published for each rebuilt incident.
    let mut summarised: HashMap<String, (u32, DateTime<Utc>)> = HashMap::new();
    if !book.is_empty() {
        let summaries = bus.ensure_stream(StreamKind::Summaries).await?;
        let consumer = summaries
            .create_consumer(OrderedConfig {
                filter_subject: bus.subjects.summaries_all(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| ServiceError::bus(format!("reading summaries: {e}")))?;
        if consumer.cached_info().num_pending > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| ServiceError::bus(format!("reading summaries: {e}")))?;
            loop {
                let msg = next(&mut messages, "reading summaries").await?;
                let Some((_, pending, at)) = stored_at(&msg) else {
                    continue;
                };
                if let Ok(env) = Envelope::<IncidentSummary>::from_slice(&msg.payload) {
                    let s = env.body;
                    if book
                        .get(&s.incident_id)
                        .is_some_and(|i| i.tenant == s.tenant)
                    {
                        let newer = summarised
                            .get(&s.incident_id)
                            .is_none_or(|(rev, _)| s.revision >= *rev);
                        if newer {
                            summarised.insert(s.incident_id, (s.revision, at));
                        }
                    }
                }
                if pending == 0 {
                    break;
                }
            }
        }
    }
    for (id, (revision, at)) in &summarised {
        let Some(incident) = book.get_mut(id) else {
            continue;
        };
        let (firing, resolved) = told
            .remove(&(id.clone(), *revision))
            .unwrap_or_else(|| incident.notify_sets());
        let s = &mut incident.summaries;
        s.last_revision = Some(*revision);
        s.last_at = Some(*at);
        s.last_flush_at = Some(*at);
        s.log = Some(NotifyLog {
            firing,
            resolved,
            at: *at,
        });
    }
    rebuilt.incidents = book.len();
    rebuilt.summarised = summarised.len();
    store.apply(Step {
        ledger: ledger.iter().map(|(k, e)| (k.as_str(), e)).collect(),
        ..Default::default()
    })?;
    store.apply(Step {
        incidents: book.iter().collect(),
        ..Default::default()
    })?;
    store.flush_async().await?;
    tracing::warn!(
        partition,
        alerts = rebuilt.alerts,
        incidents = rebuilt.incidents,
        summarised = rebuilt.summarised,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition rebuilt from the stream"
    );
    metrics::counter!("mcplane_correlator_partitions_rebuilt_total").increment(1);
    Ok(Some(rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_name_is_met_once_within_the_span_and_older_names_are_let_go() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let mut recent = RecentSegments::new(chrono::Duration::seconds(600));
        assert!(recent.first_time("alert:raw-a:p1:normalize", at(0)));
        assert!(recent.first_time("alert:raw-b:p1:normalize", at(1)));
        // Stored again within the span (gathered anew after a failed publish): skipped.
        assert!(!recent.first_time("alert:raw-a:p1:normalize", at(300)));
        assert!(!recent.first_time("alert:raw-b:p1:normalize", at(601)));
        // Past the span the older names are let go, so memory follows the span, not the stream.
        assert!(recent.first_time("alert:raw-c:p1:normalize", at(900)));
        assert_eq!(recent.names.len(), 1);
        assert!(recent.first_time("alert:raw-a:p1:normalize", at(901)));
    }
}
