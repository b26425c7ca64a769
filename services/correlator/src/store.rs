//! One partition's durable state in its own sled folder (`<data_dir>/correlator/p<n>/`), so a
//! partition can move to another replica by moving the folder (or by replaying the stream).
//!
//! Three kinds of keys in one tree, so that one atomic batch covers a whole step: `inc/<id>`
//! (an incident), `led/<key>` (a message already handled, with what it published, for
//! redeliveries) and `out/<msg id>` (an outbox of publications decided by the summary timer but
//! not yet confirmed sent). Everything is flushed before it is published or acked.
//!
//! Flushes are group commits: every write bumps a counter, and a flush first checks whether a
//! flush that started after its writes already covered them. So a batch of alerts handled
//! concurrently costs one fsync, not one each — and, more importantly, at most one flush per
//! store is ever waiting. sled 0.34's `flush_async` parks a thread of sled's own small I/O pool
//! until the data is stable, and the writes that would make it stable queue behind on that
//! same pool: a burst of concurrent `flush_async` calls deadlocked the partition (sled issue
//! 1308). The blocking `flush` therefore runs on tokio's blocking pool instead.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mcplane_shared::bus::Publication;
use mcplane_shared::ledger::Ledger;
use mcplane_shared::ServiceError;
use serde::{Deserialize, Serialize};

use crate::incident::Incident;

const INCIDENT: &str = "inc/";
const LEDGER: &str = "led/";
const OUTBOX: &str = "out/";

/// How long to keep trying to open a folder another instance (a replica shutting down, or a
/// task of this process not yet dropped) still holds.
const OPEN_PATIENCE: Duration = Duration::from_secs(15);

/// A handled message and what handling it published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub publications: Vec<Publication>,
}

/// The writes of one step, applied atomically.
#[derive(Default)]
pub struct Step<'a> {
    pub incidents: Vec<&'a Incident>,
    pub evicted: Vec<String>,
    pub ledger: Vec<(&'a str, &'a LedgerEntry)>,
    pub outbox: Vec<&'a Publication>,
}

pub struct PartitionStore {
    db: sled::Db,
    durability: Arc<Durability>,
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

    /// Every live incident.
    pub fn incidents(&self) -> Result<Vec<Incident>, ServiceError> {
        Ok(self.scan(INCIDENT)?.into_iter().map(|(_, i)| i).collect())
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
        for incident in step.incidents {
            batch.insert(
                format!("{INCIDENT}{}", incident.id).as_bytes(),
                encode(incident)?,
            );
        }
        for id in step.evicted {
            batch.remove(format!("{INCIDENT}{id}").as_bytes());
        }
        for (key, entry) in step.ledger {
            batch.insert(format!("{LEDGER}{key}").as_bytes(), encode(entry)?);
        }
        for p in step.outbox {
            let id = p.msg_id.as_deref().unwrap_or(p.subject.as_str());
            batch.insert(format!("{OUTBOX}{id}").as_bytes(), encode(p)?);
        }
        self.db.apply_batch(batch)?;
        self.durability.wrote();
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

    /// Drops ledger entries older than `before` (far beyond any redelivery); returns how many.
    pub fn prune_ledger(&self, before: DateTime<Utc>) -> Result<usize, ServiceError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.db.scan_prefix(LEDGER) {
            let (key, value) = item?;
            let old = serde_json::from_slice::<LedgerEntry>(&value)
                .map(|e| e.at < before)
                .unwrap_or(true);
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
}
