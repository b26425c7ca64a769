//! One partition's durable state in its own sled folder (`<data_dir>/correlator/p<n>/`), so a
//! partition can move to another replica by moving the folder (or by replaying the stream).
//!
//! Five kinds of keys in one tree, so that one atomic batch covers a whole step: `inc/<id>`
//! (an incident and its last alerts), `ina/<id>/<chunk>` (its other alerts, sixteen to a record),
//! `led/<key>` (a message already handled, with what it published, for
//! redeliveries), `out/<msg id>` (an outbox of publications decided by the summary timer but
//! not yet confirmed sent) and `evt/<msg id>` (an incident event decided by an alert, until
//! JetStream has acknowledged it). Everything is flushed before it is published or acked.
//!
//! An alert's ledger entry names its events by msg id instead of holding them: an event carries
//! every alert of its incident, so a copy per alert kept for a day made the ledger grow with the
//! square of an incident's size. The event is kept under `evt/` only until it is sent; a
//! redelivered alert republishes those of its events still there (a gone one was acknowledged).
//!
//! An incident's alerts are records of their own because a step touching an incident changes
//! one or a few of its alerts: written inline, every step rewrote (and re-encoded) all of them,
//! so the bytes written per alert grew with the size of its incident — an alert storm, the
//! moment the correlator matters most, made each alert dearer. Full chunks of sixteen alerts
//! are records of their own (a sled key per alert cost more than it saved for incidents of tens
//! of alerts) and the rest, where new alerts are appended, stays in the incident's record, so
//! a small incident is still one record; the store remembers a hash of each chunk it holds and
//! writes only those that changed, so a step costs about the same whether its incident has
//! twenty alerts or two thousand. Incidents written whole by earlier versions still read; their
//! next write moves their full chunks apart.
//!
//! Flushes are group commits: every write bumps a counter, and a flush first checks whether a
//! flush that started after its writes already covered them. So a batch of alerts handled
//! concurrently costs one fsync, not one each — and, more importantly, at most one flush per
//! store is ever waiting. sled 0.34's `flush_async` parks a thread of sled's own small I/O pool
//! until the data is stable, and the writes that would make it stable queue behind on that
//! same pool: a burst of concurrent `flush_async` calls deadlocked the partition (sled issue
//! 1308). The blocking `flush` therefore runs on tokio's blocking pool instead.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mcplane_shared::bus::{append_outputs, decode_outputs, Publication};
use mcplane_shared::ledger::Ledger;
use mcplane_shared::ServiceError;
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use mcplane_shared::body::incident::IncidentAlert;

const INCIDENT: &str = "inc/";
const ALERTS: &str = "ina/";
const LEDGER: &str = "led/";
const OUTBOX: &str = "out/";
const EVENTS: &str = "evt/";

/// How long to keep trying to open a folder another instance (a replica shutting down, or a
/// task of this process not yet dropped) still holds.
const OPEN_PATIENCE: Duration = Duration::from_secs(15);

/// A handled message and what handling it published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    /// Publications kept whole (a summary and its request, a few per incident).
    #[serde(default)]
    pub publications: Vec<Publication>,
    /// Msg ids of incident events kept under `evt/` until sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// The first byte of a kept incident event's record: then when it was decided (milliseconds
/// since the epoch, `i64` little-endian, for pruning) and the publication in the ledger's raw
/// layout ([`append_outputs`]). An `updated` event carries every alert of its incident; inside
/// a JSON record its text was escaped once more on every step. Records written as JSON by
/// earlier versions (they start with `{`) still read.
const EVENT_RECORD: u8 = 0xE1;

fn encode_event(at: DateTime<Utc>, publication: &Publication) -> Vec<u8> {
    let mut out = vec![EVENT_RECORD];
    out.extend_from_slice(&at.timestamp_millis().to_le_bytes());
    append_outputs(&mut out, std::slice::from_ref(publication));
    out
}

fn decode_event(record: &[u8]) -> Result<Publication, String> {
    if record.first() == Some(&EVENT_RECORD) {
        let body = record.get(9..).ok_or("event record cut short")?;
        return decode_outputs(body)?
            .into_iter()
            .next()
            .ok_or_else(|| "event record without its event".to_string());
    }
    serde_json::from_slice::<JsonEventRecord>(record)
        .map(|r| r.publication)
        .map_err(|e| e.to_string())
}

/// An incident event kept until sent, as earlier versions wrote it.
#[derive(Deserialize)]
struct JsonEventRecord {
    publication: Publication,
}

/// The time stamp of a ledger entry or a kept event, for pruning.
#[derive(Deserialize)]
struct Stamp {
    at: DateTime<Utc>,
}

fn stamp_of(record: &[u8]) -> Option<DateTime<Utc>> {
    if record.first() == Some(&EVENT_RECORD) {
        let millis = i64::from_le_bytes(record.get(1..9)?.try_into().ok()?);
        return DateTime::from_timestamp_millis(millis);
    }
    serde_json::from_slice::<Stamp>(record).ok().map(|s| s.at)
}

/// The writes of one step, applied atomically.
#[derive(Default)]
pub struct Step<'a> {
    pub incidents: Vec<&'a Incident>,
    pub evicted: Vec<String>,
    pub ledger: Vec<(&'a str, &'a LedgerEntry)>,
    pub outbox: Vec<&'a Publication>,
    /// Incident events to keep until sent (see [`PartitionStore::events`]).
    pub events: Vec<&'a Publication>,
}

pub struct PartitionStore {
    db: sled::Db,
    durability: Arc<Durability>,
    /// Per incident, a hash of each record of its alerts as the tree holds it: what a step
    /// need not write again. Only set from what was read or written successfully.
    alert_hashes: Mutex<HashMap<String, Vec<u64>>>,
    /// Keyed at random per process, so that nobody can craft alerts whose records collide.
    hasher: RandomState,
}

/// Alerts per record.
const CHUNK: usize = 16;

/// The key of one record of an incident's alerts: its number zero-padded, so a prefix scan
/// reads them in order.
fn alert_key(incident: &str, chunk: usize) -> String {
    format!("{ALERTS}{incident}/{chunk:08}")
}

fn alerts_prefix(incident: &str) -> String {
    format!("{ALERTS}{incident}/")
}

/// An incident's record: the incident and the alerts past its last full chunk (those a step
/// most often changes: new alerts are appended), so an incident of fewer than [`CHUNK`]
/// alerts is one record, as before.
#[derive(Serialize)]
struct Head<'a> {
    #[serde(flatten)]
    incident: &'a Incident,
    tail: &'a [IncidentAlert],
}

#[derive(Deserialize)]
struct HeadRecord {
    #[serde(flatten)]
    incident: Incident,
    /// Absent in records written by earlier versions, which hold every alert inline.
    #[serde(default)]
    tail: Option<Vec<IncidentAlert>>,
}

/// Group commit bookkeeping: how many writes were made, and how many a flush has covered.
#[derive(Default)]
struct Durability {
    written: AtomicU64,
    flushed: AtomicU64,
    /// One flush at a time; the others wait for it and usually find their writes covered.
    turn: tokio::sync::Mutex<()>,
}

impl Durability {
    fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    fn covered(&self, written: u64) -> bool {
        self.flushed.load(Ordering::SeqCst) >= written
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ServiceError> {
    serde_json::to_vec(value).map_err(|e| ServiceError::Encode(e.to_string()))
}

impl PartitionStore {
    /// Opens (or creates) the folder, waiting a while if another holder is still letting go.
    pub async fn open(dir: &Path) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir)?;
        let started = Instant::now();
        loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(16 * 1024 * 1024)
                .open()
            {
                Ok(db) => {
                    return Ok(PartitionStore {
                        db,
                        durability: Arc::default(),
                        alert_hashes: Mutex::default(),
                        hasher: RandomState::new(),
                    })
                }
                Err(e) if started.elapsed() < OPEN_PATIENCE => {
                    tracing::debug!(dir = %dir.display(), error = %e, "partition folder busy, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(ServiceError::storage(format!("{}: {e}", dir.display()))),
            }
        }
    }

    fn scan<T: for<'de> Deserialize<'de>>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, ServiceError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key[prefix.len()..]).to_string();
            match serde_json::from_slice(&value) {
                Ok(v) => out.push((key, v)),
                // One unreadable record must not stop the partition; it is logged and skipped.
                Err(e) => tracing::error!(key = %key, error = %e, "corrupt record skipped"),
            }
        }
        Ok(out)
    }

    /// Whether the folder holds nothing at all (new, or its disk was lost: see `rebuild`).
    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// Every live incident, with its alerts.
    pub fn incidents(&self) -> Result<Vec<Incident>, ServiceError> {
        let heads = self.scan::<HeadRecord>(INCIDENT)?;
        let mut incidents = Vec::with_capacity(heads.len());
        let mut hashes = HashMap::with_capacity(heads.len());
        for (_, head) in heads {
            let mut incident = head.incident;
            // An incident written whole by an earlier version has no tail and its alerts
            // already; its hashes stay unknown, so its next write moves them apart.
            if let Some(tail) = head.tail {
                incident.alerts = self
                    .scan::<Vec<IncidentAlert>>(&alerts_prefix(&incident.id))?
                    .into_iter()
                    .flat_map(|(_, chunk)| chunk)
                    .collect();
                hashes.insert(
                    incident.id.clone(),
                    incident
                        .alerts
                        .chunks(CHUNK)
                        .map(|c| self.hash_of(c))
                        .collect(),
                );
                incident.alerts.extend(tail);
            }
            incidents.push(incident);
        }
        *self.hashes() = hashes;
        Ok(incidents)
    }

    fn hash_of(&self, alerts: &[IncidentAlert]) -> u64 {
        self.hasher.hash_one(alerts)
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u64>>> {
        // A panic while holding it cannot leave it half-updated in a way that matters: at
        // worst an alert is written again.
        self.alert_hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publications decided but not yet confirmed sent.
    pub fn outbox(&self) -> Result<Vec<Publication>, ServiceError> {
        Ok(self.scan(OUTBOX)?.into_iter().map(|(_, p)| p).collect())
    }

    pub fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, ServiceError> {
        match self.db.get(format!("{LEDGER}{key}"))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ServiceError::storage(format!("ledger entry {key}: {e}"))),
            None => Ok(None),
        }
    }

    /// Applies one step's writes atomically (durable after the next flush).
    pub fn apply(&self, step: Step<'_>) -> Result<(), ServiceError> {
        let mut batch = sled::Batch::default();
        // The alert hashes this step leaves behind, applied to the cache once the batch is in.
        let mut written: Vec<(&str, Vec<u64>)> = Vec::with_capacity(step.incidents.len());
        {
            let known = self.hashes();
            // An incident evicted in the same step is only removed.
            let live = step
                .incidents
                .iter()
                .filter(|i| !step.evicted.contains(&i.id));
            for incident in live {
                let full = incident.alerts.len() / CHUNK * CHUNK;
                let head = Head {
                    incident,
                    tail: &incident.alerts[full..],
                };
                batch.insert(
                    format!("{INCIDENT}{}", incident.id).as_bytes(),
                    encode(&head)?,
                );
                let before = known.get(&incident.id).map(Vec::as_slice).unwrap_or(&[]);
                let mut after = Vec::with_capacity(full / CHUNK);
                for (i, chunk) in incident.alerts[..full].chunks(CHUNK).enumerate() {
                    let hash = self.hash_of(chunk);
                    if before.get(i) != Some(&hash) {
                        batch.insert(alert_key(&incident.id, i).as_bytes(), encode(&chunk)?);
                    }
                    after.push(hash);
                }
                for i in after.len()..before.len() {
                    batch.remove(alert_key(&incident.id, i).as_bytes());
                }
                written.push((incident.id.as_str(), after));
            }
        }
        for id in &step.evicted {
            batch.remove(format!("{INCIDENT}{id}").as_bytes());
            for key in self.db.scan_prefix(alerts_prefix(id)).keys() {
                batch.remove(key?);
            }
        }
        // Kept events are stamped like the ledger entries naming them, so pruning ages out one a
        // crash left behind.
        let stamp = step.ledger.first().map(|(_, e)| e.at);
        for (key, entry) in step.ledger {
            batch.insert(format!("{LEDGER}{key}").as_bytes(), encode(entry)?);
        }
        for p in step.outbox {
            let id = p.msg_id.as_deref().unwrap_or(p.subject.as_str());
            batch.insert(format!("{OUTBOX}{id}").as_bytes(), encode(p)?);
        }
        if !step.events.is_empty() {
            let at = stamp.unwrap_or_else(Utc::now);
            for p in step.events {
                let id = p.msg_id.as_deref().unwrap_or(p.subject.as_str());
                batch.insert(format!("{EVENTS}{id}").as_bytes(), encode_event(at, p));
            }
        }
        self.db.apply_batch(batch)?;
        self.durability.wrote();
        let mut known = self.hashes();
        for id in &step.evicted {
            known.remove(id);
        }
        for (id, hashes) in written {
            known.insert(id.to_string(), hashes);
        }
        Ok(())
    }

    /// The incident events named by `ids` that are still kept (not yet confirmed sent).
    pub fn events(&self, ids: &[String]) -> Result<Vec<Publication>, ServiceError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.db.get(format!("{EVENTS}{id}"))? {
                out.push(
                    decode_event(&v)
                        .map_err(|e| ServiceError::storage(format!("event {id}: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// Forgets incident events JetStream has acknowledged. Not counted as a write to flush: if
    /// a crash loses the removal, a redelivery republishes an event the server deduplicates,
    /// and pruning drops it in the end.
    pub fn events_sent(&self, publications: &[Publication]) -> Result<(), ServiceError> {
        let mut batch = sled::Batch::default();
        for p in publications {
            let id = p.msg_id.as_deref().unwrap_or(p.subject.as_str());
            batch.remove(format!("{EVENTS}{id}").as_bytes());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets outbox entries that were sent.
    pub fn sent(&self, publications: &[Publication]) -> Result<(), ServiceError> {
        let mut batch = sled::Batch::default();
        for p in publications {
            let id = p.msg_id.as_deref().unwrap_or(p.subject.as_str());
            batch.remove(format!("{OUTBOX}{id}").as_bytes());
        }
        self.db.apply_batch(batch)?;
        self.durability.wrote();
        Ok(())
    }

    /// Makes every write made so far durable: one fsync for all the callers waiting together.
    pub async fn flush_async(&self) -> Result<(), ServiceError> {
        let mine = self.durability.written.load(Ordering::SeqCst);
        if self.durability.covered(mine) {
            return Ok(());
        }
        let _turn = self.durability.turn.lock().await;
        if self.durability.covered(mine) {
            return Ok(()); // the flush we waited for covered our writes
        }
        let upto = self.durability.written.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| ServiceError::storage(format!("flush task: {e}")))??;
        self.durability.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Drops ledger entries (and kept events) older than `before` (far beyond any
    /// redelivery); returns how many.
    pub fn prune_ledger(&self, before: DateTime<Utc>) -> Result<usize, ServiceError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self
            .db
            .scan_prefix(LEDGER)
            .chain(self.db.scan_prefix(EVENTS))
        {
            let (key, value) = item?;
            let old = stamp_of(&value).map(|at| at < before).unwrap_or(true);
            if old {
                batch.remove(key);
                n += 1;
            }
        }
        self.db.apply_batch(batch)?;
        self.durability.wrote();
        Ok(n)
    }
}

/// The consume loop flushes this before acking a batch (see `mcplane_shared::bus::run_consumer`).
impl Ledger for PartitionStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        Ok(self.db.get(format!("{LEDGER}{key}"))?.map(|v| v.to_vec()))
    }

    fn put(&self, key: &str, output: &[u8]) -> Result<(), ServiceError> {
        self.db.insert(format!("{LEDGER}{key}"), output)?;
        self.durability.wrote();
        Ok(())
    }

    /// Usually a no-op: handling a message already flushed its writes before publishing.
    fn flush(&self) -> Result<(), ServiceError> {
        let upto = self.durability.written.load(Ordering::SeqCst);
        if self.durability.covered(upto) {
            return Ok(());
        }
        self.db.flush()?;
        self.durability.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::tests::{alert, at};
    use mcplane_shared::{AlertStatus, Severity};

    #[tokio::test]
    async fn a_step_survives_reopening_and_the_outbox_drains() {
        let dir = tempfile::tempdir().unwrap();
        let inc = Incident::open(
            "i1".into(),
            &alert("api", "a", AlertStatus::Firing, Severity::High),
            at(0),
        );
        let publication = Publication {
            subject: "s".into(),
            msg_id: Some("i1:1:summary".into()),
            traceparent: None,
            payload: "{}".into(),
            core: false,
            first: false,
        };
        let entry = LedgerEntry {
            at: at(0),
            publications: vec![publication.clone()],
            ..Default::default()
        };
        {
            let store = PartitionStore::open(dir.path()).await.unwrap();
            store
                .apply(Step {
                    incidents: vec![&inc],
                    ledger: vec![("m1", &entry)],
                    outbox: vec![&publication],
                    ..Default::default()
                })
                .unwrap();
            store.flush_async().await.unwrap();
        }
        let store = PartitionStore::open(dir.path()).await.unwrap();
        assert_eq!(store.incidents().unwrap(), vec![inc]);
        assert_eq!(
            store
                .ledger_entry("m1")
                .unwrap()
                .unwrap()
                .publications
                .len(),
            1
        );
        assert_eq!(store.outbox().unwrap(), vec![publication.clone()]);
        store.sent(&[publication]).unwrap();
        assert!(store.outbox().unwrap().is_empty());
        assert_eq!(store.prune_ledger(at(1)).unwrap(), 1);
        assert!(store.ledger_entry("m1").unwrap().is_none());
    }

    #[tokio::test]
    async fn an_alerts_events_are_kept_until_sent_and_named_by_its_ledger_entry() {
        let dir = tempfile::tempdir().unwrap();
        let event = |id: &str| Publication {
            subject: "mcplane.incidents.acme.updated".into(),
            msg_id: Some(id.into()),
            traceparent: None,
            payload: format!("{{\"id\":\"{id}\"}}"),
            core: false,
            first: false,
        };
        let (e1, e2) = (event("i1:2:updated"), event("i1:3:updated"));
        let entry = |id: &str| LedgerEntry {
            at: at(0),
            events: vec![id.to_string()],
            ..Default::default()
        };
        let (l1, l2) = (entry("i1:2:updated"), entry("i1:3:updated"));
        {
            let store = PartitionStore::open(dir.path()).await.unwrap();
            store
                .apply(Step {
                    ledger: vec![("alert:a", &l1), ("alert:b", &l2)],
                    events: vec![&e1, &e2],
                    ..Default::default()
                })
                .unwrap();
            store.flush_async().await.unwrap();
        }
        // After a restart, a redelivered alert finds its event by the id in its entry.
        let store = PartitionStore::open(dir.path()).await.unwrap();
        let found = store.ledger_entry("alert:a").unwrap().unwrap();
        assert!(found.publications.is_empty(), "the entry holds no copy");
        assert_eq!(store.events(&found.events).unwrap(), vec![e1.clone()]);
        // Once acknowledged it is forgotten: nothing left to republish.
        store.events_sent(&[e1]).unwrap();
        assert!(store.events(&found.events).unwrap().is_empty());
        assert_eq!(store.events(&l2.events).unwrap(), vec![e2]);
        // Pruning ages out the entries and an event a crash left behind alike.
        assert_eq!(store.prune_ledger(at(1)).unwrap(), 3);
        assert!(store.events(&l2.events).unwrap().is_empty());
    }

    /// An incident of `alerts` alerts, fingerprints `f1`, `f2`, ... after the first.
    fn incident_of(id: &str, alerts: usize) -> Incident {
        let mut inc = Incident::open(
            id.into(),
            &alert("api", "a", AlertStatus::Firing, Severity::High),
            at(0),
        );
        for n in 1..alerts {
            let mut another = inc.alerts[0].clone();
            another.fingerprint = format!("f{n}");
            inc.alerts.push(another);
        }
        inc
    }

    #[tokio::test]
    async fn an_incidents_alerts_are_kept_apart_and_only_the_changed_ones_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path()).await.unwrap();
        // A full chunk of its own, and one alert in the incident's record.
        let mut inc = incident_of("i1", CHUNK + 1);
        let step = |inc: &Incident| {
            store
                .apply(Step {
                    incidents: vec![inc],
                    ..Default::default()
                })
                .unwrap()
        };
        step(&inc);
        assert_eq!(store.incidents().unwrap(), vec![inc.clone()]);
        let record: serde_json::Value =
            serde_json::from_slice(&store.db.get("inc/i1").unwrap().unwrap()).unwrap();
        assert!(record.get("alerts").is_none(), "alerts inline: {record}");
        assert_eq!(record["tail"].as_array().map(Vec::len), Some(1));
        assert_eq!(store.db.scan_prefix(ALERTS).count(), 1);

        // A step that changes the last alert writes the incident's record only: the chunk,
        // altered behind the store's back, is left as it is.
        let mut altered = inc.alerts[..CHUNK].to_vec();
        altered[0].summary = "written by hand".into();
        store
            .db
            .insert(alert_key("i1", 0), serde_json::to_vec(&altered).unwrap())
            .unwrap();
        inc.alerts[CHUNK].count += 1;
        step(&inc);
        let read = store.incidents().unwrap();
        assert_eq!(read[0].alerts[0].summary, "written by hand");
        assert_eq!(read[0].alerts[CHUNK], inc.alerts[CHUNK]);
        assert_eq!(read[0].alerts.len(), CHUNK + 1);

        // Fewer alerts than a chunk: the chunk's record goes, the incident is one record.
        inc.alerts.truncate(1);
        step(&inc);
        assert_eq!(store.incidents().unwrap(), vec![inc.clone()]);
        assert_eq!(store.db.scan_prefix(ALERTS).count(), 0);

        // Evicted: the incident and every alert record go.
        store
            .apply(Step {
                evicted: vec!["i1".into()],
                ..Default::default()
            })
            .unwrap();
        assert!(store.incidents().unwrap().is_empty());
        assert_eq!(store.db.scan_prefix(ALERTS).count(), 0);
    }

    #[tokio::test]
    async fn an_incident_written_inline_by_an_earlier_version_still_reads_and_moves_apart() {
        let dir = tempfile::tempdir().unwrap();
        let inc = incident_of("i2", CHUNK + 1);
        let mut inline = serde_json::to_value(&inc).unwrap();
        inline["alerts"] = serde_json::to_value(&inc.alerts).unwrap();
        {
            let store = PartitionStore::open(dir.path()).await.unwrap();
            store
                .db
                .insert("inc/i2", serde_json::to_vec(&inline).unwrap())
                .unwrap();
            store.flush_async().await.unwrap();
            store.db.flush().unwrap();
        }
        let store = PartitionStore::open(dir.path()).await.unwrap();
        assert_eq!(store.incidents().unwrap(), vec![inc.clone()]);
        store
            .apply(Step {
                incidents: vec![&inc],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.db.scan_prefix(alerts_prefix("i2")).count(), 1);
        assert_eq!(store.incidents().unwrap(), vec![inc]);
    }

    #[tokio::test]
    async fn an_event_kept_as_json_by_an_earlier_version_still_reads_and_ages_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path()).await.unwrap();
        let event = Publication {
            subject: "mcplane.incidents.acme.updated".into(),
            msg_id: Some("i1:2:updated".into()),
            traceparent: None,
            payload: r#"{"id":"i1","summary":"a \"quoted\" word"}"#.into(),
            core: false,
            first: false,
        };
        let legacy = serde_json::json!({ "at": at(0), "publication": &event });
        store
            .db
            .insert("evt/i1:2:updated", serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        let ids = vec!["i1:2:updated".to_string()];
        assert_eq!(store.events(&ids).unwrap(), vec![event.clone()]);
        assert_eq!(
            store.prune_ledger(at(0)).unwrap(),
            0,
            "not older than itself"
        );
        assert_eq!(store.prune_ledger(at(1)).unwrap(), 1);
        assert!(store.events(&ids).unwrap().is_empty());
    }
}
