//! The idempotency ledger: which messages a stage has already done, and what it produced.
//!
//! A redelivered message whose key is in the ledger is answered from it, never recomputed.
//! sled is a local cache here, not the only copy: anything that must happen once across the
//! fleet is also claimed in a NATS KV bucket (see [`crate::bus::Claims`]).
//!
//! sled 0.34 has no TTL, never shrinks its files after deletes, fsyncs only every 500 ms unless
//! flushed, and lets one process lock a folder. So the ledger (1) expires by rotating whole
//! folders (`gen-<unix secs>`), looking keys up in the current and the previous generation,
//! (2) is flushed by the consume loop once per batch before the batch is acked (an fsync, unless
//! opened with [`Durability::Background`]), and (3) lives in its own folder per stage and
//! partition so a partition can move between replicas.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::error::ServiceError;

/// What a stage needs from its ledger.
pub trait Ledger: Send + Sync {
    /// The stored output for `key`, if the key is done.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ServiceError>;
    /// Records `key` as done with its output (durable after the next [`Ledger::flush`]).
    fn put(&self, key: &str, output: &[u8]) -> Result<(), ServiceError>;
    /// Makes every earlier `put` durable.
    fn flush(&self) -> Result<(), ServiceError>;
    /// Periodic upkeep between batches (rotation, for the sled ledger). Cheap when not due.
    fn maintain(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// What [`Ledger::flush`] does, so what an acknowledged message's entry survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every flush (once per consumed batch, before its acks). For ledgers that are a
    /// record the fleet relies on (the audit chain, notification receipts).
    Synced,
    /// No fsync per batch: sled writes its log in the background (every 500 ms) and on close,
    /// and a flush syncs for real at most once per [`BACKGROUND_SYNC`], so a crash may lose the
    /// entries of the last moments. That periodic sync is also what notices a full or
    /// read-only disk, so readiness still follows the disk (within a second). For the request stages only,
    /// where such a loss is exactly what happens when a redelivery lands on another replica
    /// (whose ledger never saw the message), which the design already makes safe:
    /// - a message is acked only after its outputs are stored by JetStream (publish acks
    ///   awaited), so a lost entry of an acked message is never needed again;
    /// - an unacked message is redone; its outputs carry the same `Nats-Msg-Id`s
    ///   (`<id>:<stage>`, `<id>:<stage>:audit`), so JetStream drops the redo's hand-off and audit
    ///   event inside its 120 s duplicate window (the first decision stands);
    /// - the one side effect, the model call, is claimed fleet-wide in the claims bucket with its
    ///   recorded invocation, so a redo reuses it instead of calling the provider again.
    ///
    /// The fsync bought nothing fleet-wide, and cost one 3-9 ms disk flush per batch per stage.
    Background,
}

/// How often a [`Durability::Background`] ledger's flush syncs for real.
pub const BACKGROUND_SYNC: Duration = Duration::from_secs(1);

struct Generations {
    current: (i64, sled::Db),
    previous: Option<(i64, sled::Db)>,
}

/// A sled ledger in `dir`, rotated every `retention`: a key stays findable for at least
/// `retention` and at most twice that.
pub struct SledLedger {
    dir: PathBuf,
    retention: Duration,
    durability: Durability,
    gens: RwLock<Generations>,
    /// When a [`Durability::Background`] flush last synced for real.
    last_sync: Mutex<Instant>,
}

impl SledLedger {
    pub fn open(dir: impl AsRef<Path>, retention: Duration) -> Result<Self, ServiceError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let mut stamps = list_generations(&dir)?;
        stamps.sort_unstable();
        let current_stamp = match stamps.last() {
            Some(s) => *s,
            None => Utc::now().timestamp(),
        };
        let previous_stamp = stamps.iter().rev().nth(1).copied();
        for old in stamps
            .iter()
            .filter(|s| **s != current_stamp && Some(**s) != previous_stamp)
        {
            let _ = std::fs::remove_dir_all(gen_dir(&dir, *old));
        }
        let current = (current_stamp, open_db(&gen_dir(&dir, current_stamp))?);
        let previous = match previous_stamp {
            Some(s) => Some((s, open_db(&gen_dir(&dir, s))?)),
            None => None,
        };
        let ledger = SledLedger {
            dir,
            retention,
            durability: Durability::Synced,
            gens: RwLock::new(Generations { current, previous }),
            last_sync: Mutex::new(Instant::now()),
        };
        ledger.rotate_if_due()?;
        Ok(ledger)
    }

    /// Sets what [`Ledger::flush`] does (the default is [`Durability::Synced`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Starts a new generation when the current one is older than the retention, dropping the
    /// one before it. Called by the consume loop between batches.
    pub fn rotate_if_due(&self) -> Result<bool, ServiceError> {
        let now = Utc::now().timestamp();
        let due = {
            let gens = self
                .gens
                .read()
                .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
            self.retention.is_zero() || now - gens.current.0 >= self.retention.as_secs() as i64
        };
        if !due {
            return Ok(false);
        }
        let mut gens = self
            .gens
            .write()
            .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
        if !self.retention.is_zero() && now - gens.current.0 < self.retention.as_secs() as i64 {
            return Ok(false);
        }
        let stamp = now.max(gens.current.0 + 1);
        let fresh = open_db(&gen_dir(&self.dir, stamp))?;
        gens.current.1.flush()?;
        let old_current = std::mem::replace(&mut gens.current, (stamp, fresh));
        if let Some((old_stamp, old_db)) = gens.previous.replace(old_current) {
            drop(old_db);
            let _ = std::fs::remove_dir_all(gen_dir(&self.dir, old_stamp));
        }
        tracing::info!(dir = %self.dir.display(), generation = stamp, "ledger rotated");
        Ok(true)
    }
}

impl SledLedger {
    /// sled 0.34 keeps the first I/O error it meets (a full or read-only disk) and refuses every
    /// later operation on that database, so a worker would stay broken after the disk is freed.
    /// Instead the failing generation is replaced by a fresh one (tried again on every failure,
    /// so it succeeds once the disk takes writes). Its entries are given up: the ledger is a
    /// cache, and JetStream's message-id window and the fleet-wide claims still stop duplicates.
    fn after_storage_error(&self, error: sled::Error) -> ServiceError {
        let error = ServiceError::from(error);
        if let Err(e) = self.replace_current() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "ledger still not writable");
        }
        error
    }

    fn replace_current(&self) -> Result<(), ServiceError> {
        let mut gens = self
            .gens
            .write()
            .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
        let stamp = Utc::now().timestamp().max(gens.current.0 + 1);
        let fresh = open_db(&gen_dir(&self.dir, stamp)).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(gen_dir(&self.dir, stamp));
        })?;
        let (broken_stamp, broken) = std::mem::replace(&mut gens.current, (stamp, fresh));
        drop(broken);
        let _ = std::fs::remove_dir_all(gen_dir(&self.dir, broken_stamp));
        tracing::warn!(dir = %self.dir.display(), generation = stamp, "ledger reopened after a storage error");
        Ok(())
    }
}

impl Ledger for SledLedger {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        let gens = self
            .gens
            .read()
            .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
        if let Some(v) = gens.current.1.get(key)? {
            return Ok(Some(v.to_vec()));
        }
        if let Some((_, prev)) = &gens.previous {
            if let Some(v) = prev.get(key)? {
                return Ok(Some(v.to_vec()));
            }
        }
        Ok(None)
    }

    fn put(&self, key: &str, output: &[u8]) -> Result<(), ServiceError> {
        let inserted = {
            let gens = self
                .gens
                .read()
                .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
            gens.current.1.insert(key, output)
        };
        inserted
            .map(|_| ())
            .map_err(|e| self.after_storage_error(e))
    }

    fn flush(&self) -> Result<(), ServiceError> {
        if self.durability == Durability::Background {
            let mut last = self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < BACKGROUND_SYNC {
                return Ok(());
            }
            *last = Instant::now();
        }
        let flushed = {
            let gens = self
                .gens
                .read()
                .map_err(|_| ServiceError::storage("ledger lock poisoned"))?;
            gens.current.1.flush()
        };
        flushed.map(|_| ()).map_err(|e| self.after_storage_error(e))
    }

    fn maintain(&self) -> Result<(), ServiceError> {
        self.rotate_if_due().map(|_| ())
    }
}

fn gen_dir(dir: &Path, stamp: i64) -> PathBuf {
    dir.join(format!("gen-{stamp}"))
}

fn open_db(path: &Path) -> Result<sled::Db, ServiceError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(8 * 1024 * 1024)
        .open()
        .map_err(|e| ServiceError::storage(format!("{}: {e}", path.display())))
}

fn list_generations(dir: &Path) -> Result<Vec<i64>, ServiceError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(stamp) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|s| s.parse::<i64>().ok())
        {
            out.push(stamp);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = SledLedger::open(dir.path(), Duration::from_secs(3600)).unwrap();
            assert_eq!(l.get("a").unwrap(), None);
            l.put("a", b"out").unwrap();
            l.flush().unwrap();
        }
        let l = SledLedger::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(l.get("a").unwrap().as_deref(), Some(&b"out"[..]));
    }

    #[test]
    fn rotation_keeps_one_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let l = SledLedger::open(dir.path(), Duration::from_secs(0)).unwrap();
        l.put("old", b"1").unwrap();
        // Retention zero: every call rotates.
        assert!(l.rotate_if_due().unwrap());
        assert_eq!(l.get("old").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(l.rotate_if_due().unwrap());
        assert_eq!(l.get("old").unwrap(), None);
        assert!(list_generations(dir.path()).unwrap().len() <= 2);
    }
}
