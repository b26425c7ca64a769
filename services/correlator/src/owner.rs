//! The owner of one partition: groups its canonical alerts into incidents, publishes incident
//! events, and asks for (then publishes) one summary per incident revision.
//!
//! Nothing is published before the state that decided it is flushed: an alert's effects and its
//! ledger entry go to sled in one batch, the summary timer's decisions go to an outbox in the
//! same batch as the incident they change. So a worker killed at any point neither loses an
//! alert (unacked messages come again and are answered from the ledger when already applied)
//! nor asks for a summary twice (the request id is recorded before the request is sent, and
//! re-sent with the same `Nats-Msg-Id`). The book sits behind a plain mutex never held across
//! an `.await`; the consumer and the timer each take it for one short, synchronous step.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use mcplane_shared::bus::{run_batch_consumer, Bus, ConsumerSpec, Disposition, Publication};
use mcplane_shared::ledger::Ledger;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, CanonicalAlert, Envelope, Exchange, IncidentEventKind, IncidentSummary, RequestType,
    Service, ServiceError,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Config;
use crate::grouping::{Due, IncidentBook, Outcome, Policy};
use crate::incident::{Change, Incident, PendingSummary};
use crate::partition::partition_segments;
use crate::rebuild::event_publication;
use crate::rules::Rules;
use crate::store::{LedgerEntry, PartitionStore, Step};
use crate::summary;

/// The stage name in `Nats-Msg-Id`s and logs.
pub const STAGE: &str = "correlate";
/// How often the summary timer looks for due incidents.
const TICK: Duration = Duration::from_millis(100);
/// Ledger entries are kept far longer than any redelivery could take.
const LEDGER_RETENTION: chrono::Duration = chrono::Duration::hours(24);
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub struct PartitionOwner {
    pub partition: u32,
    bus: Bus,
    store: Arc<PartitionStore>,
    book: Mutex<IncidentBook>,
    rules: Rules,
    policy: Policy,
    service_account_key: Option<String>,
    /// How long a step waits for more alerts when its batch is not full (`linger_ms`).
    linger: Duration,
    clock: Arc<dyn Clock>,
}

/// A message that could not be handled now; the consume loop naks it.
struct Retry;

/// A segment of a partition message of a pulled batch (one raw message's alerts): the
/// message's index in the batch, the segment's ledger key, its alerts.
type BatchAlert = (usize, String, Vec<Envelope<CanonicalAlert>>);

/// The outcome labels of `mcplane_correlator_alerts_total`, by [`outcome_index`].
const OUTCOMES: [&str; 5] = ["opened", "updated", "resolved", "counted", "ignored"];

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Opened(_) => 0,
        Outcome::Updated(_) => 1,
        Outcome::Resolved(_) => 2,
        Outcome::Counted(_) => 3,
        Outcome::Ignored => 4,
    }
}

/// An incident event one alert of a batch decided; an `updated` one is built only if no later
/// event of its incident in the batch supersedes it.
struct Decided<'a> {
    incident: String,
    kind: IncidentEventKind,
    env: &'a Envelope<CanonicalAlert>,
    publication: Option<Publication>,
}

fn retry_later(outcome: Result<(), Retry>) -> Disposition {
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(Retry) => Disposition::Nak(Duration::from_secs(1)),
    }
}

impl PartitionOwner {
    /// Opens the partition's folder and loads its live incidents.
    pub async fn open(
        partition: u32,
        bus: Bus,
        store: PartitionStore,
        rules: Rules,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ServiceError> {
        let book = IncidentBook::new(store.incidents()?, rules.clone());
        tracing::info!(partition, incidents = book.len(), "partition loaded");
        Ok(Arc::new(PartitionOwner {
            partition,
            bus,
            store: Arc::new(store),
            book: Mutex::new(book),
            rules,
            policy: config.policy(),
            service_account_key: config.service_account_key.clone(),
            linger: Duration::from_millis(config.linger_ms),
            clock,
        }))
    }

    /// Consumes the partition's alerts and summary replies and runs the summary timer until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let stop = shutdown.child_token();
        let subjects = &self.bus.subjects;
        let spec = ConsumerSpec {
            stream: StreamKind::Alerts,
            durable: subjects.durable(Service::Correlator, &format!("p{}", self.partition)),
            filters: vec![
                subjects.alerts_partition_all(self.partition),
                subjects.incident_summary_reply_all(self.partition),
            ],
            linger: self.linger,
        };
        let ledger: Arc<dyn Ledger> = self.store.clone();
        let consuming = async {
            let result = run_batch_consumer(&self.bus, spec, Some(ledger), stop.clone(), |batch| {
                self.handle_batch(batch)
            })
            .await;
            stop.cancel();
            result
        };
        let (consumed, ()) = tokio::join!(consuming, self.summary_timer(stop.clone()));
        consumed
    }

    fn lock(&self) -> MutexGuard<'_, IncidentBook> {
        // A panic while holding the lock cannot leave a half-applied step in sled (each step is
        // one batch), so the book is still usable: take it back.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the book back to what sled holds, after a step failed half-way in memory.
    fn reload(&self, book: &mut IncidentBook) {
        match self.store.incidents() {
            Ok(incidents) => *book = IncidentBook::new(incidents, self.rules.clone()),
            Err(e) => {
                tracing::error!(partition = self.partition, error = %e, "cannot reload incidents")
            }
        }
    }

    /// One pulled batch: summary replies one by one (a few per incident), then every alert of
    /// the batch as one step (one lock, one sled batch, one flush, publications in flight
    /// together).
    async fn handle_batch(&self, batch: Vec<jetstream::Message>) -> Vec<Disposition> {
        let mut dispositions = vec![Disposition::Ack; batch.len()];
        let reply_prefix = self.bus.subjects.incident_summary_reply(self.partition, "");
        let mut alerts = Vec::with_capacity(batch.len());
        for (i, msg) in batch.iter().enumerate() {
            let msg_id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string());
            if msg.subject.as_str().starts_with(reply_prefix.as_str()) {
                dispositions[i] = match Envelope::<Exchange>::from_slice(&msg.payload) {
                    Ok(env) => {
                        let key = format!("reply:{}", msg_id.unwrap_or_else(|| env.id.to_string()));
                        let span = self.span(&env);
                        retry_later(self.handle_reply(env, &key).instrument(span).await)
                    }
                    Err(code) => Disposition::Term(format!("{code}: not an exchange envelope")),
                };
            } else {
                match partition_segments(&msg.payload, msg_id) {
                    Ok(segments) => {
                        alerts.extend(segments.into_iter().map(|(key, decoded)| (i, key, decoded)))
                    }
                    Err(code) => {
                        dispositions[i] =
                            Disposition::Term(format!("{code}: not a canonical alert batch"))
                    }
                }
            }
        }
        if !alerts.is_empty() {
            let outcome = retry_later(self.handle_alerts(&alerts).await);
            for (i, _, _) in &alerts {
                dispositions[*i] = outcome.clone();
            }
        }
        dispositions
    }

    fn span<B>(&self, env: &Envelope<B>) -> tracing::Span {
        tracing::info_span!(
            "correlate",
            partition = self.partition,
            request_id = %env.id,
            trace_id = %env.trace.trace_id,
            tenant = %env.tenant,
        )
    }

    /// What handling `key` published, when it was handled before. Read under the book's lock,
    /// so two copies of one message in a batch cannot both be applied.
    fn recorded(&self, key: &str) -> Result<Option<LedgerEntry>, Retry> {
        let entry = self.store.ledger_entry(key).map_err(|e| {
            tracing::error!(key, error = %e, "ledger read failed");
            Retry
        })?;
        if entry.is_some() {
            tracing::debug!(key, "already handled; republishing the recorded outputs");
        }
        Ok(entry)
    }

    async fn publish(&self, publications: &[Publication]) -> Result<(), Retry> {
        if publications.is_empty() {
            return Ok(());
        }
        self.store.flush_async().await.map_err(|e| {
            tracing::error!(error = %e, "flush failed; nothing published");
            Retry
        })?;
        self.bus.publish_all(publications).await.map_err(|e| {
            tracing::warn!(error = %e, "publish failed; will retry");
            Retry
        })
    }

    /// Applies a batch's alerts and records them as one step, then publishes what they decided
    /// (and what the ledger holds for redelivered ones). All or nothing: a failure before the
    /// flush puts the book back to what sled holds and lets every alert of the batch come again.
    async fn handle_alerts(&self, alerts: &[BatchAlert]) -> Result<(), Retry> {
        let now = self.clock.now();
        let events = {
            let mut book = self.lock();
            match self.apply_alerts(&mut book, alerts, now) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(partition = self.partition, alerts = alerts.len(), error = %e, "cannot record alerts; will retry");
                    self.reload(&mut book);
                    return Err(Retry);
                }
            }
        };
        self.publish(&events).await?;
        if let Err(e) = self.store.events_sent(&events) {
            // Only tidiness is lost: a kept event is republished (and deduplicated) at worst.
            tracing::warn!(partition = self.partition, error = %e, "cannot forget sent events");
        }
        Ok(())
    }

    /// Routes each alert of a batch to its incident, then writes every touched incident once,
    /// every alert's ledger entry and the events they decided in one sled batch. Returns the
    /// publications to send: those events (in order) and the recorded outputs of alerts already
    /// handled.
    ///
    /// An `updated` event that a later event of the same incident in this batch supersedes is
    /// not sent: every event carries the incident's whole state, so the later one tells all it
    /// would have (its revision is skipped, as one whose event was lost would be). `opened` and
    /// `resolved` are always sent, and every event sent tells its incident as it stood at its
    /// revision, whatever else the batch holds. A source that batches (an Alertmanager group of ten alerts)
    /// thus costs two events, not ten, each holding up to ten alerts: the events were the
    /// owner's largest cost once alerts arrived together.
    fn apply_alerts(
        &self,
        book: &mut IncidentBook,
        alerts: &[BatchAlert],
        now: DateTime<Utc>,
    ) -> Result<Vec<Publication>, ServiceError> {
        let mut republish = Vec::new();
        let mut decided: Vec<Decided> = Vec::new();
        // Every incident the batch touched, with the index in `decided` of its latest event
        // (none when only repeats counted into it).
        let mut latest: HashMap<String, Option<usize>> = HashMap::new();
        // Per segment, its ledger key and the indexes in `decided` of the events it decided.
        let mut applied: Vec<(&str, Vec<usize>)> = Vec::with_capacity(alerts.len());
        let mut seen_keys = HashSet::with_capacity(alerts.len());
        let mut outcomes = [0u64; 5];
        for (_, key, envs) in alerts {
            // A second copy in one batch (a redelivery overtaking the original, or a segment
            // gathered anew beside its first copy) rides on the first.
            if !seen_keys.insert(key.as_str()) {
                continue;
            }
            if let Some(entry) = self.store.ledger_entry(key)? {
                tracing::debug!(key, "already handled; republishing the recorded outputs");
                republish.extend(entry.publications);
                republish.extend(self.store.events(&entry.events)?);
                continue;
            }
            let mut events = Vec::new();
            for env in envs {
                let _span = self.span(env).entered();
                // A repeat counts into its incident without an event of its own; an `updated`
                // still deferred for that incident is built first, so that what it tells is
                // the incident at its revision, whatever else the batch holds.
                for id in book.holding(&env.body.tenant, &env.body.fingerprint) {
                    if let Some(&Some(i)) = latest.get(id) {
                        if let Some(d) = decided.get_mut(i) {
                            if d.publication.is_none() {
                                d.publication = self.alert_event(book, d.env, id, d.kind)?;
                            }
                        }
                    }
                }
                let outcome = book.apply(env.id, &env.body, &self.policy, now);
                outcomes[outcome_index(&outcome)] += 1;
                if let Some(kind) = outcome.event_kind() {
                    if let Some(id) = outcome.incident() {
                        // `opened` and `resolved` are never superseded: built now, as they stand.
                        let built = match kind {
                            IncidentEventKind::Updated => None,
                            _ => self.alert_event(book, env, id, kind)?,
                        };
                        latest.insert(id.to_string(), Some(decided.len()));
                        events.push(decided.len());
                        decided.push(Decided {
                            incident: id.to_string(),
                            kind,
                            env,
                            publication: built,
                        });
                    }
                }
                if matches!(outcome, Outcome::Ignored) {
                    tracing::info!(
                        fingerprint = %env.body.fingerprint,
                        service = %env.body.service,
                        "resolved alert matches no open incident; ignored"
                    );
                }
                if let Some(id) = outcome.incident() {
                    if !latest.contains_key(id) {
                        latest.insert(id.to_string(), None);
                    }
                }
            }
            applied.push((key.as_str(), events));
        }
        // The events sent: each incident's latest, and every `opened` and `resolved`.
        let mut sent_as: Vec<Option<usize>> = vec![None; decided.len()];
        let mut events = Vec::with_capacity(decided.len());
        for i in 0..decided.len() {
            let last = latest.get(&decided[i].incident) == Some(&Some(i));
            if !last && decided[i].kind == IncidentEventKind::Updated {
                continue; // superseded (even if a repeat made us build it)
            }
            if decided[i].publication.is_none() {
                let d = &decided[i];
                decided[i].publication = self.alert_event(book, d.env, &d.incident, d.kind)?;
            }
            if let Some(p) = decided[i].publication.take() {
                sent_as[i] = Some(events.len());
                events.push(p);
            }
        }
        // A segment's ledger entry (one for all its alerts: they are applied together or not
        // at all) names the events its alerts decided, or those that superseded them: a
        // redelivery republishes what tells their effect.
        let msg_id = |i: usize| -> Option<String> {
            let sent = sent_as[i].or_else(|| {
                latest
                    .get(&decided[i].incident)
                    .copied()
                    .flatten()
                    .and_then(|l| sent_as[l])
            })?;
            events[sent].msg_id.clone()
        };
        let entries: Vec<(&str, LedgerEntry)> = applied
            .iter()
            .map(|(key, decided_by_it)| {
                let mut events: Vec<String> = Vec::new();
                for id in decided_by_it.iter().filter_map(|&i| msg_id(i)) {
                    if !events.contains(&id) {
                        events.push(id);
                    }
                }
                let entry = LedgerEntry {
                    at: now,
                    events,
                    ..Default::default()
                };
                (*key, entry)
            })
            .collect();
        // Each touched incident written once, as it stands after the batch.
        let incidents: Vec<&Incident> = latest.keys().filter_map(|id| book.get(id)).collect();
        self.store.apply(Step {
            incidents,
            ledger: entries.iter().map(|(k, e)| (*k, e)).collect(),
            events: events.iter().collect(),
            ..Default::default()
        })?;
        for (n, label) in outcomes.into_iter().zip(OUTCOMES) {
            if n > 0 {
                metrics::counter!("mcplane_correlator_alerts_total", "outcome" => label)
                    .increment(n);
            }
        }
        let superseded = decided.len() - events.len();
        if superseded > 0 {
            metrics::counter!("mcplane_correlator_events_superseded_total")
                .increment(superseded as u64);
        }
        events.extend(republish);
        Ok(events)
    }

    /// The `kind` event of incident `id` as it stands, derived from the alert that decided it.
    fn alert_event(
        &self,
        book: &IncidentBook,
        env: &Envelope<CanonicalAlert>,
        id: &str,
        kind: IncidentEventKind,
    ) -> Result<Option<Publication>, ServiceError> {
        let Some(incident) = book.get(id) else {
            return Ok(None);
        };
        tracing::info!(
            incident_id = %incident.id,
            tenant = %incident.tenant,
            service = %incident.service,
            revision = incident.revision,
            event = kind.as_str(),
            "incident {}", kind.as_str()
        );
        self.event_publication(env.derive(incident.event(kind)))
            .map(Some)
    }

    async fn handle_reply(&self, env: Envelope<Exchange>, key: &str) -> Result<(), Retry> {
        let now = self.clock.now();
        let entry = {
            let mut book = self.lock();
            if let Some(entry) = self.recorded(key)? {
                drop(book);
                return self.publish(&entry.publications).await;
            }
            let Some(id) = book.awaiting(env.id).map(|i| i.id.clone()) else {
                tracing::info!(request_id = %env.id, "summary reply for no pending request (timed out or already answered); ignored");
                return Ok(());
            };
            let built = book
                .get_mut(&id)
                .ok_or_else(|| ServiceError::Other(format!("incident {id} vanished")))
                .and_then(|incident| {
                    let Some(pending) = incident.summaries.pending.take() else {
                        return Err(ServiceError::Other(format!(
                            "incident {id} has no pending summary"
                        )));
                    };
                    let (response, reason) = match (&env.body.error, &env.body.response) {
                        (None, Some(r)) => (Some(r), String::new()),
                        (Some(e), _) => (
                            None,
                            format!("the AI pipeline answered {}: {}", e.code, e.message),
                        ),
                        (None, None) => (None, "the AI pipeline returned no response".to_string()),
                    };
                    let summary = summary::build(incident, pending.revision, response, &reason);
                    incident.summaries.last_revision = Some(pending.revision);
                    incident.summaries.last_at = Some(now);
                    let publication = self.summary_publication(env.derive(summary), incident)?;
                    let entry = LedgerEntry {
                        at: now,
                        publications: vec![publication],
                        ..Default::default()
                    };
                    self.store.apply(Step {
                        incidents: vec![incident],
                        ledger: vec![(key, &entry)],
                        ..Default::default()
                    })?;
                    Ok(entry)
                });
            match built {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record summary reply; will retry");
                    self.reload(&mut book);
                    return Err(Retry);
                }
            }
        };
        self.publish(&entry.publications).await
    }

    /// `mcplane.incidents.<tenant>.<event>`, once per incident revision.
    fn event_publication(
        &self,
        event: Envelope<mcplane_shared::IncidentEvent>,
    ) -> Result<Publication, ServiceError> {
        event_publication(&self.bus.subjects, &event)
    }

    /// `mcplane.summaries.<tenant>.<severity>`, exactly once per incident revision.
    fn summary_publication(
        &self,
        env: Envelope<IncidentSummary>,
        incident: &Incident,
    ) -> Result<Publication, ServiceError> {
        let s = &env.body;
        tracing::info!(
            incident_id = %s.incident_id,
            revision = s.revision,
            degraded = s.degraded,
            "incident summary"
        );
        metrics::counter!("mcplane_correlator_summaries_total", "degraded" => s.degraded.to_string())
            .increment(1);
        let mut p = Publication::envelope(
            self.bus
                .subjects
                .summaries(&incident.tenant, s.severity.as_str()),
            &env,
            STAGE,
        )?;
        p.msg_id = Some(format!("{}:{}:summary", s.incident_id, s.revision));
        Ok(p)
    }

    /// The request for the pipeline to summarise `incident`, answered on this partition's
    /// summary-reply subject.
    fn summary_request(
        &self,
        incident: &Incident,
        request_id: Uuid,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Publication, ServiceError> {
        let request = AiRequest {
            services: incident.services(),
            ..AiRequest::new(RequestType::Summarize, summary::request_input(incident))
        };
        let mut env = Envelope::new_at(request_id, now, &incident.tenant, Exchange::new(request));
        env.credential = Some(key.to_string());
        env.reply_to = Some(
            self.bus
                .subjects
                .incident_summary_reply(self.partition, &incident.tenant),
        );
        let mut p = Publication::envelope(self.bus.subjects.requests_submit(), &env, STAGE)?;
        // Keyed by the request, not the revision: a partition rebuilt after its disk was lost
        // asks again for a revision whose first request it no longer knows (see `rebuild`), and
        // the server must not drop that as a duplicate. A re-send of one request stays one.
        p.msg_id = Some(format!("{request_id}:summary-request"));
        Ok(p)
    }

    async fn summary_timer(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(partition = self.partition, error = %e, "summary timer step failed; retrying");
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                match self.store.prune_ledger(self.clock.now() - LEDGER_RETENTION) {
                    Ok(n) if n > 0 => {
                        tracing::info!(partition = self.partition, pruned = n, "ledger pruned")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(partition = self.partition, error = %e, "ledger prune failed")
                    }
                }
            }
        }
    }

    /// One timer step: decide what is due (recording it with the outbox), then send the outbox.
    async fn tick(&self) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let decided = {
            let mut book = self.lock();
            let due = book.due(&self.policy, now);
            if due.is_empty() {
                0
            } else {
                match self.decide(&mut book, due, now) {
                    Ok(n) => n,
                    Err(e) => {
                        self.reload(&mut book);
                        return Err(e);
                    }
                }
            }
        };
        if decided > 0 {
            self.store.flush_async().await?;
        }
        let outbox = self.store.outbox()?;
        if outbox.is_empty() {
            return Ok(());
        }
        self.bus.publish_all(&outbox).await?;
        self.store.sent(&outbox)
    }

    /// Applies what is due to the book and records it in one batch; returns the number of
    /// publications added to the outbox.
    fn decide(
        &self,
        book: &mut IncidentBook,
        due: Vec<(String, Due)>,
        now: DateTime<Utc>,
    ) -> Result<usize, ServiceError> {
        let mut changed = Vec::new();
        let mut evicted = Vec::new();
        let mut outbox = Vec::new();
        for (id, due) in due {
            match due {
                Due::Evict => {
                    book.remove(&id);
                    evicted.push(id);
                    continue;
                }
                Due::Settle => {
                    let change = book.settle(&id, &self.policy, now);
                    let Some(incident) = book.get(&id) else {
                        continue;
                    };
                    let kind = match change {
                        Some(Change::Resolved) => IncidentEventKind::Resolved,
                        Some(_) => IncidentEventKind::Updated,
                        None => continue,
                    };
                    tracing::info!(incident_id = %id, revision = incident.revision, event = kind.as_str(), "flapping settled");
                    let event = Envelope::new_at(
                        Uuid::now_v7(),
                        now,
                        &incident.tenant,
                        incident.event(kind),
                    );
                    outbox.push(self.event_publication(event)?);
                    changed.push(id);
                    continue;
                }
                _ => {}
            }
            let Some(incident) = book.get_mut(&id) else {
                continue;
            };
            let degraded_reason = match (due, &self.service_account_key) {
                (Due::Flush { log }, _) => {
                    incident.summaries.last_flush_at = Some(now);
                    if log.is_some() {
                        incident.summaries.log = log;
                    }
                    changed.push(id);
                    continue;
                }
                (Due::Summarize { revision, log }, Some(key)) => {
                    let request_id = Uuid::now_v7();
                    incident.summaries.last_flush_at = Some(now);
                    incident.summaries.log = Some(log);
                    incident.summaries.pending = Some(PendingSummary {
                        request_id,
                        revision,
                        requested_at: now,
                    });
                    tracing::info!(incident_id = %id, revision, %request_id, "asking the pipeline for a summary");
                    outbox.push(self.summary_request(incident, request_id, key, now)?);
                    changed.push(id);
                    continue;
                }
                (Due::Summarize { revision, log }, None) => {
                    incident.summaries.last_flush_at = Some(now);
                    incident.summaries.log = Some(log);
                    (
                        revision,
                        "no service account key is configured for the correlator".to_string(),
                    )
                }
                (Due::TimedOut { revision }, _) => (
                    revision,
                    format!(
                        "the AI pipeline did not answer within {}s",
                        self.policy.summary_timeout.as_secs()
                    ),
                ),
                (Due::Evict | Due::Settle, _) => continue,
            };
            let (revision, reason) = degraded_reason;
            incident.summaries.pending = None;
            incident.summaries.last_revision = Some(revision);
            incident.summaries.last_at = Some(now);
            let summary = summary::build(incident, revision, None, &reason);
            outbox.push(
                self.summary_publication(Envelope::new(&incident.tenant, summary), incident)?,
            );
            changed.push(id);
        }
        let incidents: Vec<&Incident> = changed.iter().filter_map(|id| book.get(id)).collect();
        self.store.apply(Step {
            incidents,
            evicted,
            outbox: outbox.iter().collect(),
            ..Default::default()
        })?;
        Ok(outbox.len())
    }
}
