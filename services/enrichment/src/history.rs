//! Incident history, the `incidents` data source: what happened before on a service, so a
//! summary can say "this is the third time this week, last time it was the connection pool".
//!
//! Fed by the bus, not asked of the correlator (services never call each other): every replica
//! follows `mcplane.incidents.*.resolved` and `mcplane.summaries.>` with its own ordered
//! consumer into a small sled index keyed by tenant and service, keeping the last
//! `history_per_service` resolved incidents of each. The index remembers the stream sequence it
//! has applied, so a restart resumes where it stopped and an empty disk refills from the
//! streams (kept seven days). Lookups read only the request's own tenant's keys: tenant
//! isolation is the key layout, the policy decides the rest (see `stage`).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, IncidentEvent, IncidentSummary, ServiceError, Severity};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The data source name in policies, on injected context items and in audit entries.
pub const SOURCE: &str = "incidents";
/// Alerts listed per past incident; the rest are counted.
const MAX_ALERTS: usize = 10;
/// Characters kept of a past incident's last summary.
const MAX_SUMMARY_CHARS: usize = 1500;
/// Summaries of incidents not (yet) resolved are kept this long waiting for their resolve.
const PENDING_SUMMARY_RETENTION: chrono::Duration = chrono::Duration::days(8);

const HISTORY: &str = "h/";
const BY_INCIDENT: &str = "i/";
const SUMMARY: &str = "s/";
const APPLIED: &str = "seq/";

/// One alert of a past incident, as much as a summary needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastAlert {
    pub source: String,
    pub service: String,
    pub severity: Severity,
    pub summary: String,
    pub count: u32,
}

/// A resolved incident as history: when, which alerts, and what was last said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastIncident {
    pub incident_id: String,
    pub title: String,
    pub severity: Severity,
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: DateTime<Utc>,
    pub alerts: Vec<PastAlert>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_alerts: usize,
    /// The last summary published for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The newest summary seen for an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LastSummary {
    revision: u32,
    text: String,
    at: DateTime<Utc>,
}

/// The sled index (`<data_dir>/enrichment/history`).
pub struct HistoryIndex {
    db: sled::Db,
    per_service: usize,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ServiceError> {
    serde_json::to_vec(value).map_err(|e| ServiceError::Encode(e.to_string()))
}

fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// `<tenant>\n<service>\n`: the prefix of one service's history.
fn service_prefix(tenant: &str, service: &str) -> String {
    format!("{HISTORY}{tenant}\n{service}\n")
}

impl HistoryIndex {
    pub fn open(dir: &std::path::Path, per_service: usize) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024)
            .open()
            .map_err(|e| ServiceError::storage(format!("{}: {e}", dir.display())))?;
        Ok(HistoryIndex { db, per_service })
    }

    /// The last stream sequence applied from `stream`.
    pub fn applied(&self, stream: &str) -> Result<u64, ServiceError> {
        Ok(self
            .db
            .get(format!("{APPLIED}{stream}"))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    fn summary_of(&self, incident_id: &str) -> Result<Option<LastSummary>, ServiceError> {
        Ok(self
            .db
            .get(format!("{SUMMARY}{incident_id}"))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Records a resolved incident under each of its services (replacing what an earlier
    /// resolve of the same incident recorded), and keeps each service's newest `per_service`.
    pub fn record_resolved(
        &self,
        event: &IncidentEvent,
        stream: &str,
        seq: u64,
    ) -> Result<(), ServiceError> {
        let mut batch = sled::Batch::default();
        let by_incident = format!("{BY_INCIDENT}{}", event.incident_id);
        if let Some(old) = self.db.get(&by_incident)? {
            let old: Vec<String> = serde_json::from_slice(&old).unwrap_or_default();
            for key in old {
                batch.remove(key.as_bytes());
            }
        }
        let resolved_at = event.resolved_at.unwrap_or(event.updated_at);
        let past = PastIncident {
            incident_id: event.incident_id.clone(),
            title: event.title.clone(),
            severity: event.severity,
            services: event.services.clone(),
            root_service: event.root_service.clone(),
            opened_at: event.opened_at,
            resolved_at,
            alerts: event
                .alerts
                .iter()
                .take(MAX_ALERTS)
                .map(|a| PastAlert {
                    source: a.source.clone(),
                    service: a.service.clone(),
                    severity: a.severity,
                    summary: truncated(&a.summary, 300),
                    count: a.count,
                })
                .collect(),
            // Events list a storm's latest alerts only; `alert_count` counts them all (and is
            // 0 in events written before it existed, which listed every alert).
            more_alerts: (event.alert_count as usize)
                .max(event.alerts.len())
                .saturating_sub(event.alerts.len().min(MAX_ALERTS)),
            last_summary: self
                .summary_of(&event.incident_id)?
                .map(|s| truncated(&s.text, MAX_SUMMARY_CHARS)),
        };
        let value = encode(&past)?;
        let mut services = event.services.clone();
        if services.is_empty() {
            services.push(event.service.clone());
        }
        // Zero-padded millis sort chronologically within a service's prefix.
        let stamp = format!("{:020}", resolved_at.timestamp_millis().max(0));
        let mut keys = Vec::with_capacity(services.len());
        for service in &services {
            let key = format!(
                "{}{stamp}\n{}",
                service_prefix(&event.tenant, service),
                event.incident_id
            );
            batch.insert(key.as_bytes(), value.clone());
            keys.push(key);
        }
        batch.insert(by_incident.as_bytes(), encode(&keys)?);
        batch.insert(format!("{APPLIED}{stream}").as_bytes(), &seq.to_be_bytes());
        self.db.apply_batch(batch)?;
        for service in &services {
            self.trim(&event.tenant, service)?;
        }
        Ok(())
    }

    /// Drops all but the newest `per_service` entries of one service.
    fn trim(&self, tenant: &str, service: &str) -> Result<(), ServiceError> {
        let keys: Vec<sled::IVec> = self
            .db
            .scan_prefix(service_prefix(tenant, service))
            .keys()
            .collect::<Result<_, _>>()?;
        if keys.len() <= self.per_service {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in &keys[..keys.len() - self.per_service] {
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Remembers an incident's newest summary, and puts it on its history entries if it has
    /// resolved already (the resolution's summary usually comes after the resolve event).
    pub fn record_summary(
        &self,
        summary: &IncidentSummary,
        at: DateTime<Utc>,
        stream: &str,
        seq: u64,
    ) -> Result<(), ServiceError> {
        let mut batch = sled::Batch::default();
        batch.insert(format!("{APPLIED}{stream}").as_bytes(), &seq.to_be_bytes());
        let newer = self
            .summary_of(&summary.incident_id)?
            .is_none_or(|s| summary.revision >= s.revision);
        if newer {
            let last = LastSummary {
                revision: summary.revision,
                text: truncated(&summary.summary, MAX_SUMMARY_CHARS),
                at,
            };
            batch.insert(
                format!("{SUMMARY}{}", summary.incident_id).as_bytes(),
                encode(&last)?,
            );
            if let Some(keys) = self
                .db
                .get(format!("{BY_INCIDENT}{}", summary.incident_id))?
            {
                let keys: Vec<String> = serde_json::from_slice(&keys).unwrap_or_default();
                for key in keys {
                    let Some(value) = self.db.get(&key)? else {
                        continue; // trimmed away
                    };
                    if let Ok(mut past) = serde_json::from_slice::<PastIncident>(&value) {
                        past.last_summary = Some(last.text.clone());
                        batch.insert(key.as_bytes(), encode(&past)?);
                    }
                }
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets summaries older than the streams keep (their incidents never resolved, or
    /// resolved long ago and were trimmed); returns how many.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<usize, ServiceError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.db.scan_prefix(SUMMARY) {
            let (key, value) = item?;
            let old = serde_json::from_slice::<LastSummary>(&value)
                .map(|s| s.at < now - PENDING_SUMMARY_RETENTION)
                .unwrap_or(true);
            if old {
                batch.remove(key);
                n += 1;
            }
        }
        self.db.apply_batch(batch)?;
        Ok(n)
    }

    /// `tenant`'s past incidents on `service`, newest first.
    pub fn lookup(&self, tenant: &str, service: &str) -> Result<Vec<PastIncident>, ServiceError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(service_prefix(tenant, service)).rev() {
            let (_, value) = item?;
            match serde_json::from_slice(&value) {
                Ok(past) => out.push(past),
                Err(e) => tracing::error!(error = %e, "corrupt history entry skipped"),
            }
            if out.len() >= self.per_service {
                break;
            }
        }
        Ok(out)
    }

    pub fn flush(&self) -> Result<(), ServiceError> {
        self.db.flush()?;
        Ok(())
    }
}

/// How long to wait before following a stream again after it failed.
const RETRY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Follows the resolved incidents and the summaries into `index` until `stop`.
pub async fn follow(bus: Bus, index: std::sync::Arc<HistoryIndex>, stop: CancellationToken) {
    let incidents = follow_stream(
        &bus,
        &index,
        StreamKind::Incidents,
        bus.subjects.incidents("*", "resolved"),
        &stop,
    );
    let summaries = follow_stream(
        &bus,
        &index,
        StreamKind::Summaries,
        bus.subjects.summaries_all(),
        &stop,
    );
    let pruning = async {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match index.prune(Utc::now()) {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "old incident summaries pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "history prune failed"),
            }
        }
    };
    tokio::join!(incidents, summaries, pruning);
}

async fn follow_stream(
    bus: &Bus,
    index: &HistoryIndex,
    kind: StreamKind,
    filter: String,
    stop: &CancellationToken,
) {
    let name = bus.subjects.stream_name(kind);
    loop {
        let followed = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow_once(bus, index, kind, &name, &filter) => r,
        };
        if let Err(e) = followed {
            tracing::warn!(stream = %name, error = %e, "following for incident history failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Applies `kind`'s messages on `filter` after the last applied sequence, until the stream
/// ends or fails.
async fn follow_once(
    bus: &Bus,
    index: &HistoryIndex,
    kind: StreamKind,
    name: &str,
    filter: &str,
) -> Result<(), ServiceError> {
    let stream = bus.ensure_stream(kind).await?;
    let applied = index.applied(name)?;
    let deliver_policy = if applied == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: applied + 1,
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| ServiceError::bus(format!("history consumer on {name}: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| ServiceError::bus(format!("history consumer on {name}: {e}")))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| ServiceError::bus(format!("history consumer on {name}: {e}")))?;
        let Ok(info) = msg.info() else { continue };
        let (seq, at) = (info.stream_sequence, info.published);
        let at = DateTime::<Utc>::from_timestamp(at.unix_timestamp(), at.nanosecond())
            .unwrap_or_else(Utc::now);
        let applied = match kind {
            StreamKind::Incidents => match Envelope::<IncidentEvent>::from_slice(&msg.payload) {
                // The subject names the tenant; a body disagreeing with it is not believed.
                Ok(env) if subject_tenant(&msg.subject) == Some(env.body.tenant.as_str()) => {
                    index.record_resolved(&env.body, name, seq)
                }
                _ => {
                    tracing::warn!(subject = %msg.subject, "unreadable incident event; skipped");
                    Ok(())
                }
            },
            _ => match Envelope::<IncidentSummary>::from_slice(&msg.payload) {
                Ok(env) if subject_tenant(&msg.subject) == Some(env.body.tenant.as_str()) => {
                    index.record_summary(&env.body, at, name, seq)
                }
                _ => {
                    tracing::warn!(subject = %msg.subject, "unreadable summary; skipped");
                    Ok(())
                }
            },
        };
        applied?;
        metrics::counter!("mcplane_enrichment_history_events_total", "stream" => name.to_string())
            .increment(1);
    }
    Ok(())
}

/// The tenant token of `<prefix>.incidents.<tenant>.<event>` or
/// `<prefix>.summaries.<tenant>.<severity>`.
fn subject_tenant(subject: &str) -> Option<&str> {
    let mut tokens = subject.rsplit('.');
    let _last = tokens.next()?;
    tokens.next()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mcplane_shared::{AlertStatus, IncidentAlert, IncidentEventKind};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_715_677_200 + secs, 0).unwrap()
    }

    pub(crate) fn resolved(tenant: &str, id: &str, service: &str, secs: i64) -> IncidentEvent {
        IncidentEvent {
            incident_id: id.into(),
            tenant: tenant.into(),
            event: IncidentEventKind::Resolved,
            revision: 3,
            service: service.into(),
            services: vec![service.into()],
            root_service: None,
            severity: Severity::High,
            title: format!("{service} is slow"),
            alerts: vec![IncidentAlert {
                fingerprint: "f1".into(),
                source: "alertmanager".into(),
                service: service.into(),
                status: AlertStatus::Resolved,
                severity: Severity::High,
                summary: format!("{service} p99 above 2s"),
                count: 4,
                first_seen: at(secs - 60),
                last_seen: at(secs),
                flapping: false,
            }],
            alert_count: 1,
            opened_at: at(secs - 60),
            updated_at: at(secs),
            resolved_at: Some(at(secs)),
        }
    }

    fn summary(tenant: &str, id: &str, revision: u32, text: &str) -> IncidentSummary {
        IncidentSummary {
            incident_id: id.into(),
            tenant: tenant.into(),
            revision,
            severity: Severity::High,
            service: "checkout".into(),
            title: "t".into(),
            summary: text.into(),
            alert_count: 1,
            degraded: false,
            provider: None,
            model: None,
            opened_at: at(0),
            links: vec![],
        }
    }

    #[test]
    fn history_is_per_tenant_and_service_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let index = HistoryIndex::open(dir.path(), 2).unwrap();
        for (i, secs) in [100, 200, 300].into_iter().enumerate() {
            index
                .record_resolved(
                    &resolved("acme", &format!("i{i}"), "checkout", secs),
                    "I",
                    1,
                )
                .unwrap();
        }
        index
            .record_resolved(&resolved("globex", "g1", "checkout", 50), "I", 2)
            .unwrap();
        let ids: Vec<String> = index
            .lookup("acme", "checkout")
            .unwrap()
            .into_iter()
            .map(|p| p.incident_id)
            .collect();
        assert_eq!(ids, ["i2", "i1"], "the newest two, newest first");
        let theirs = index.lookup("globex", "checkout").unwrap();
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].incident_id, "g1");
        assert!(index.lookup("acme", "search").unwrap().is_empty());
        assert_eq!(index.applied("I").unwrap(), 2);
    }

    #[test]
    fn a_storm_is_remembered_with_every_alert_counted() {
        let dir = tempfile::tempdir().unwrap();
        let index = HistoryIndex::open(dir.path(), 5).unwrap();
        // Listed whole (an event written before `alert_count` existed says 0)...
        let mut whole = resolved("acme", "w", "checkout", 100);
        whole.alerts = vec![whole.alerts[0].clone(); 12];
        whole.alert_count = 0;
        // ...and a storm whose event lists its latest hundred of 3,000.
        let mut storm = resolved("acme", "s", "checkout", 200);
        storm.alerts = vec![storm.alerts[0].clone(); 100];
        storm.alert_count = 3000;
        for (seq, event) in [whole, storm].iter().enumerate() {
            index.record_resolved(event, "I", seq as u64).unwrap();
        }
        let past = index.lookup("acme", "checkout").unwrap();
        let told: Vec<(&str, usize, usize)> = past
            .iter()
            .map(|p| (p.incident_id.as_str(), p.alerts.len(), p.more_alerts))
            .collect();
        assert_eq!(told, [("s", MAX_ALERTS, 2990), ("w", MAX_ALERTS, 2)]);
    }

    #[test]
    fn a_summary_lands_on_its_incident_before_or_after_the_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let index = HistoryIndex::open(dir.path(), 5).unwrap();
        // Before: kept until the resolve comes.
        index
            .record_summary(&summary("acme", "a", 1, "pool exhausted"), at(0), "S", 1)
            .unwrap();
        index
            .record_resolved(&resolved("acme", "a", "checkout", 10), "I", 1)
            .unwrap();
        // After: the resolution's summary replaces the older one; an older revision does not.
        index
            .record_resolved(&resolved("acme", "b", "checkout", 20), "I", 2)
            .unwrap();
        index
            .record_summary(&summary("acme", "b", 4, "fixed by restart"), at(30), "S", 2)
            .unwrap();
        index
            .record_summary(&summary("acme", "b", 2, "older"), at(31), "S", 3)
            .unwrap();
        let past = index.lookup("acme", "checkout").unwrap();
        assert_eq!(past[0].incident_id, "b");
        assert_eq!(past[0].last_summary.as_deref(), Some("fixed by restart"));
        assert_eq!(past[1].last_summary.as_deref(), Some("pool exhausted"));
        // A second resolve of one incident replaces its entry rather than adding one.
        index
            .record_resolved(&resolved("acme", "a", "checkout", 40), "I", 3)
            .unwrap();
        assert_eq!(index.lookup("acme", "checkout").unwrap().len(), 2);
        assert_eq!(index.prune(at(40) + chrono::Duration::days(9)).unwrap(), 2);
    }

    #[test]
    fn the_tenant_comes_from_the_subject() {
        assert_eq!(
            subject_tenant("mcplane.incidents.acme.resolved"),
            Some("acme")
        );
        assert_eq!(subject_tenant("x.summaries.globex.high"), Some("globex"));
    }
}
