//! API keys valid on every auth replica: key records (digest, tenant, roles, expiry,
//! revocation; never a key) live in the NATS KV bucket `<prefix>-keys`, one entry per key id.
//!
//! `mcplane keys --nats` writes the bucket through [`KeyBucket`]; every auth replica runs
//! [`FleetKeys::follow`], a KV watch that replays the latest record of every key and then
//! streams changes into an in-memory index, so a lookup never leaves the process and a
//! revocation reaches every replica as fast as NATS delivers it. Until the first snapshot is
//! complete the index answers `unavailable` (a lookup first waits a moment for it), never a
//! silent allow or deny. While NATS is away the last snapshot keeps answering: keys
//! are then as fresh as the last update, which is the same trade a cached JWKS makes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::{ErrorBody, ErrorCode, Principal, PrincipalKind};
use tokio_util::sync::CancellationToken;

use crate::keys::{is_key_id, new_key, new_key_id, KeyError, KeyRecord};

/// How many fresh ids to try when a create races another with the same id (48 random bits:
/// one retry is already vanishingly rare).
const CREATE_ATTEMPTS: usize = 5;
/// How many compare-and-set rounds a revocation tries against concurrent writers.
const REVOKE_ATTEMPTS: usize = 5;
/// The longest wait between two attempts to (re)establish the watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn bus_error(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Bus(format!("{what}: {e}"))
}

// ---- writing: the CLI's side -----------------------------------------------------------------

/// The key bucket, for creating, listing, revoking and importing keys.
pub struct KeyBucket {
    kv: kv::Store,
}

/// What `mcplane keys import` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub created: usize,
    pub revoked: usize,
    pub unchanged: usize,
    /// Key ids already in the bucket with another digest: left alone.
    pub conflicts: Vec<String>,
}

impl KeyBucket {
    /// The bucket on `bus`, created if missing.
    pub async fn open(bus: &Bus) -> Result<KeyBucket, KeyError> {
        let kv = bus
            .ensure_keys_bucket()
            .await
            .map_err(|e| bus_error("key bucket", e))?;
        Ok(KeyBucket { kv })
    }

    /// Mints a key and stores its record with an atomic create (a key id is never reused).
    pub async fn create(
        &self,
        tenant: &str,
        roles: Vec<String>,
        kind: PrincipalKind,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(String, KeyRecord), KeyError> {
        let (key, mut record) = new_key(tenant, roles, kind, expires_at, Utc::now())?;
        for _ in 0..CREATE_ATTEMPTS {
            let value = encode(&record)?;
            match self.kv.create(&record.key_id, value.into()).await {
                Ok(_) => return Ok((key, record)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    record.key_id = new_key_id()?;
                }
                Err(e) => return Err(bus_error("create key record", e)),
            }
        }
        Err(KeyError::Bus(
            "no free key id after several attempts".into(),
        ))
    }

    /// The latest record of `key_id` and its revision, if the key exists.
    async fn entry(&self, key_id: &str) -> Result<Option<(KeyRecord, u64)>, KeyError> {
        if !is_key_id(key_id) {
            return Ok(None);
        }
        let entry = self
            .kv
            .entry(key_id)
            .await
            .map_err(|e| bus_error("read key record", e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record = serde_json::from_slice::<KeyRecord>(&e.value)
                    .map_err(|e| KeyError::Encode(format!("key record {key_id}: {e}")))?;
                Ok(Some((record, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Marks a key revoked (compare-and-set, so a concurrent writer is never overwritten);
    /// false when there is no such key.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, KeyError> {
        for _ in 0..REVOKE_ATTEMPTS {
            let Some((record, revision)) = self.entry(key_id).await? else {
                return Ok(false);
            };
            if record.revoked {
                return Ok(true);
            }
            let revoked = KeyRecord {
                revoked: true,
                ..record
            };
            match self
                .kv
                .update(key_id, encode(&revoked)?.into(), revision)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(bus_error("revoke key", e)),
            }
        }
        Err(KeyError::Bus(format!(
            "{key_id} kept changing while being revoked"
        )))
    }

    /// Every key's latest record, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let mut ids = self
            .kv
            .keys()
            .await
            .map_err(|e| bus_error("list keys", e))?;
        let mut out = Vec::new();
        while let Some(id) = ids.next().await {
            let id = id.map_err(|e| bus_error("list keys", e))?;
            if let Some((record, _)) = self.entry(&id).await? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        Ok(out)
    }

    /// Copies key records (a key file's) into the bucket: new ids are created, a revocation
    /// is carried over, and an id the bucket already holds for another digest is reported and
    /// left alone. Running it twice changes nothing the second time.
    pub async fn import(&self, records: Vec<KeyRecord>) -> Result<ImportReport, KeyError> {
        let mut report = ImportReport::default();
        for record in records.into_iter().filter(KeyRecord::is_sane) {
            match self.entry(&record.key_id).await? {
                None => match self
                    .kv
                    .create(&record.key_id, encode(&record)?.into())
                    .await
                {
                    Ok(_) => report.created += 1,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        report.conflicts.push(record.key_id.clone())
                    }
                    Err(e) => return Err(bus_error("import key record", e)),
                },
                Some((existing, _)) if existing.hash != record.hash => {
                    report.conflicts.push(record.key_id.clone())
                }
                Some((existing, _)) if record.revoked && !existing.revoked => {
                    self.revoke(&record.key_id).await?;
                    report.revoked += 1;
                }
                Some(_) => report.unchanged += 1,
            }
        }
        Ok(report)
    }
}

fn encode(record: &KeyRecord) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(record).map_err(|e| KeyError::Encode(e.to_string()))
}

// ---- reading: every auth replica's side ------------------------------------------------------

#[derive(Debug, Default)]
struct Index {
    /// Key digest → latest record.
    by_hash: HashMap<String, KeyRecord>,
    /// Key id → digest, to drop a record's old digest entry when it changes or is deleted.
    hash_of: HashMap<String, String>,
}

/// One replica's in-memory copy of the key bucket.
#[derive(Debug, Default)]
pub struct FleetKeys {
    index: RwLock<Index>,
    /// Set once the watch has delivered the bucket's contents as they were when it started.
    ready: AtomicBool,
    loaded: tokio::sync::Notify,
}

impl FleetKeys {
    pub fn new() -> FleetKeys {
        FleetKeys::default()
    }

    /// Whether the first snapshot is in.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until the first snapshot is in.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.loaded.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            metrics::gauge!("mcplane_auth_key_bucket_ready").set(1.0);
            tracing::info!(keys = self.read().by_hash.len(), "key bucket loaded");
        }
        self.loaded.notify_waiters();
    }

    /// The verdict for a key digest at `now`: `Ok(None)` when the bucket has no such key (the
    /// caller may try its local key file), a principal, or a coded denial; `unavailable` until
    /// the bucket has been read once.
    pub fn lookup(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Principal>, ErrorBody> {
        if !self.is_ready() {
            return Err(ErrorBody::new(
                ErrorCode::Unavailable,
                "the key store is not loaded yet",
            ));
        }
        match self.read().by_hash.get(hash) {
            Some(record) => record.verdict(now).map(Some),
            None => Ok(None),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // Every write leaves the index consistent before it can panic, so a poisoned lock
        // still holds a usable index.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watched entry: a put replaces the key's record, a delete or purge drops it.
    fn apply(&self, entry: &kv::Entry) {
        let mut index = self.write();
        if let Some(old) = index.hash_of.remove(&entry.key) {
            index.by_hash.remove(&old);
        }
        if entry.operation == kv::Operation::Put {
            match serde_json::from_slice::<KeyRecord>(&entry.value) {
                Ok(record) if record.is_sane() && record.key_id == entry.key => {
                    index
                        .hash_of
                        .insert(record.key_id.clone(), record.hash.clone());
                    index.by_hash.insert(record.hash.clone(), record);
                }
                Ok(_) => tracing::warn!(
                    key = %entry.key,
                    "ignoring a key record with an invalid tenant, id or digest"
                ),
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "ignoring an unreadable key record")
                }
            }
        }
        metrics::gauge!("mcplane_auth_keys").set(index.by_hash.len() as f64);
    }

    /// Follows the key bucket until `stop`: creates it if needed, replays the latest record of
    /// every key, then applies changes as they come. A broken watch is re-established with
    /// backoff; the replay is idempotent (a delete's marker is the key's latest entry), so the
    /// index needs no reset.
    pub async fn follow(&self, bus: Bus, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Cancelled at any await: a JetStream request refused by permissions only ends
            // at its timeout.
            let watched = tokio::select! {
                _ = stop.cancelled() => return,
                watched = self.watch(&bus, &stop) => watched,
            };
            match watched {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, ready = self.is_ready(), retry_in = ?backoff, "key bucket watch failed")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One watch, until `stop` (`Ok`) or until it breaks (`Err`).
    async fn watch(&self, bus: &Bus, stop: &CancellationToken) -> Result<(), String> {
        let kv = bus.ensure_keys_bucket().await.map_err(|e| e.to_string())?;
        let mut entries = kv
            .watch_with_history(">")
            .await
            .map_err(|e| format!("watch: {e}"))?;
        // An empty bucket sends nothing to replay: the snapshot is complete already. (Asked
        // after the watch started, so a key created in between arrives through the watch.)
        let status = kv.status().await.map_err(|e| format!("status: {e}"))?;
        if status.values() == 0 {
            self.mark_ready();
        }
        loop {
            let entry = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = entries.next() => match next {
                    Some(Ok(entry)) => entry,
                    Some(Err(e)) => return Err(format!("watch: {e}")),
                    None => return Err("watch ended".into()),
                },
            };
            self.apply(&entry);
            // `delta` counts the entries still to replay: 0 means the index is current.
            if entry.delta == 0 {
                self.mark_ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_not_yet_loaded_answers_unavailable_not_a_verdict() {
        let keys = FleetKeys::new();
        let err = keys.lookup(&"0".repeat(64), Utc::now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
        keys.mark_ready();
        assert_eq!(keys.lookup(&"0".repeat(64), Utc::now()), Ok(None));
    }
}
