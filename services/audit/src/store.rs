//! The chain store: each tenant's hash chain in sled, appended by the service and read by the
//! offline verifier (`mcplane audit verify`).
//!
//! Layout of `data_dir/audit/chain`: tree `chain/<tenant>` maps the big-endian sequence number
//! to the entry's JSON; tree `index` maps `<tenant>/<request id>:<stage>` to the sequence number
//! (so a redelivered event is chained once); tree `heads` maps the tenant to its last entry. The
//! three change in one transaction, so a crash never leaves a half-appended entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mcplane_shared::body::audit::Checkpoint;
use mcplane_shared::ledger::Ledger;
use mcplane_shared::{AuditEvent, ServiceError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::chain::{self, ChainBreak, ChainEntry};

/// Where a data folder keeps the audit chain.
pub fn chain_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("chain")
}

/// The last entry of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New(u64),
    /// The event was chained before (a redelivery); its sequence number.
    Duplicate(u64),
}

/// The result of a verification that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub entries: u64,
    pub head_hash: String,
}

/// Why `verify` or `entries` could not vouch for a chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    #[error("entry {entry}: not a readable chain entry: {message}")]
    Unreadable { entry: u64, message: String },
    #[error("no audit chain for tenant {tenant} in {dir}")]
    NoChain { tenant: String, dir: String },
    #[error("cannot open the audit chain in {dir}: {message}")]
    Open { dir: String, message: String },
}

pub struct ChainStore {
    db: sled::Db,
    index: sled::Tree,
    heads: sled::Tree,
    checkpoints: sled::Tree,
    chains: Mutex<HashMap<String, sled::Tree>>,
}

fn chain_tree_name(tenant: &str) -> String {
    format!("chain/{tenant}")
}

fn index_key(tenant: &str, event_key: &str) -> String {
    format!("{tenant}/{event_key}")
}

fn seq_from(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// sled's own default page cache, which offline reads (`mcplane audit verify`, `export`,
/// `query`) keep.
const DEFAULT_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

impl ChainStore {
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the chain with a page cache of `cache_bytes` (the service's `audit.cache_mib`).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(ChainStore {
            index: db.open_tree("index")?,
            heads: db.open_tree("heads")?,
            checkpoints: db.open_tree("checkpoints")?,
            db,
            chains: Mutex::new(HashMap::new()),
        })
    }

    /// Whether no tenant has any entry (a new or lost disk).
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    fn chain_tree(&self, tenant: &str) -> Result<sled::Tree, ServiceError> {
        let mut chains = self
            .chains
            .lock()
            .map_err(|_| ServiceError::storage("chain cache lock poisoned"))?;
        if let Some(t) = chains.get(tenant) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(chain_tree_name(tenant))?;
        chains.insert(tenant.to_string(), tree.clone());
        Ok(tree)
    }

    /// Appends `event` to its tenant's chain, once: a second append of the same
    /// `<request id>:<stage>` returns the first one's sequence number.
    pub fn append(&self, event: &AuditEvent) -> Result<Appended, ServiceError> {
        let mut appended = self.append_all(&[event])?;
        appended
            .pop()
            .ok_or_else(|| ServiceError::storage("append returned nothing"))
    }

    /// Appends `events` in order, each once (as [`ChainStore::append`]), with one transaction per
    /// tenant rather than one per event: a pulled batch of a busy tenant's events costs one
    /// transaction's locks and bookkeeping. Returns what happened to each, in order.
    pub fn append_all(&self, events: &[&AuditEvent]) -> Result<Vec<Appended>, ServiceError> {
        let mut out = vec![Appended::Duplicate(0); events.len()];
        // Each tenant's events, in batch order, with their positions in `events`.
        let mut by_tenant: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match by_tenant.iter_mut().find(|(t, _)| *t == e.tenant) {
                Some((_, positions)) => positions.push(i),
                None => by_tenant.push((e.tenant.as_str(), vec![i])),
            }
        }
        for (tenant, positions) in by_tenant {
            let chain_tree = self.chain_tree(tenant)?;
            let values = positions
                .iter()
                .map(|&i| {
                    let value = serde_json::to_value(events[i])
                        .map_err(|e| ServiceError::Encode(e.to_string()))?;
                    Ok((index_key(tenant, &events[i].key()), value))
                })
                .collect::<Result<Vec<_>, ServiceError>>()?;
            let result =
                (&self.index, &self.heads, &chain_tree).transaction(|(index, heads, chain)| {
                    let mut head: Option<Head> = heads
                        .get(tenant.as_bytes())?
                        .and_then(|h| serde_json::from_slice(&h).ok());
                    // Keys chained by this transaction so far: a batch may hold one event twice.
                    let mut chained: HashMap<&str, u64> = HashMap::new();
                    let mut results = Vec::with_capacity(values.len());
                    for (idx_key, value) in &values {
                        if let Some(&seq) = chained.get(idx_key.as_str()) {
                            results.push(Appended::Duplicate(seq));
                            continue;
                        }
                        if let Some(seq) = index.get(idx_key.as_bytes())? {
                            results.push(Appended::Duplicate(seq_from(&seq)));
                            continue;
                        }
                        let entry = ChainEntry::next(
                            head.as_ref().map(|h| (h.seq, h.hash.as_str())),
                            value.clone(),
                        );
                        let encoded = serde_json::to_vec(&entry)
                            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                        chain.insert(&entry.seq.to_be_bytes(), encoded)?;
                        index.insert(idx_key.as_bytes(), &entry.seq.to_be_bytes())?;
                        chained.insert(idx_key.as_str(), entry.seq);
                        results.push(Appended::New(entry.seq));
                        head = Some(Head {
                            seq: entry.seq,
                            hash: entry.hash,
                        });
                    }
                    if let Some(head) = &head {
                        let encoded = serde_json::to_vec(head)
                            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                        heads.insert(tenant.as_bytes(), encoded)?;
                    }
                    Ok(results)
                });
            let results = match result {
                Ok(r) => r,
                Err(TransactionError::Abort(message)) => return Err(ServiceError::Encode(message)),
                Err(TransactionError::Storage(e)) => return Err(e.into()),
            };
            for (&i, r) in positions.iter().zip(results) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// Makes every append durable (called on shutdown; the consume loop flushes per batch).
    pub fn flush_all(&self) -> Result<(), ServiceError> {
        self.db.flush()?;
        Ok(())
    }

    /// Reads a tenant's entries in order.
    pub fn read(&self, tenant: &str) -> Result<Vec<ChainEntry>, VerifyError> {
        let tree = self
            .db
            .open_tree(chain_tree_name(tenant))
            .map_err(|e| VerifyError::Open {
                dir: String::new(),
                message: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(tree.len());
        for (i, item) in tree.iter().enumerate() {
            let position = i as u64 + 1;
            let (_, value) = item.map_err(|e| VerifyError::Unreadable {
                entry: position,
                message: e.to_string(),
            })?;
            let entry: ChainEntry =
                serde_json::from_slice(&value).map_err(|e| VerifyError::Unreadable {
                    entry: position,
                    message: e.to_string(),
                })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Every tenant's head: (tenant, entries, head hash).
    pub fn heads(&self) -> Vec<(String, u64, String)> {
        self.heads
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let head: Head = serde_json::from_slice(&v).ok()?;
                Some((
                    String::from_utf8_lossy(&k).into_owned(),
                    head.seq,
                    head.hash,
                ))
            })
            .collect()
    }

    /// Keeps a tenant's latest checkpoint.
    pub fn record_checkpoint(&self, cp: &Checkpoint) -> Result<(), ServiceError> {
        let value = serde_json::to_vec(cp).map_err(|e| ServiceError::Encode(e.to_string()))?;
        self.checkpoints.insert(cp.tenant.as_bytes(), value)?;
        Ok(())
    }

    /// A tenant's latest checkpoint.
    pub fn latest_checkpoint(&self, tenant: &str) -> Option<Checkpoint> {
        self.checkpoints
            .get(tenant.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
    }

    /// Recomputes a tenant's chain and checks it against the recorded head.
    pub fn verify(&self, tenant: &str) -> Result<Report, VerifyError> {
        let entries = self.read(tenant)?;
        let (count, prev) = verify_entries(&entries)?;
        let head: Option<Head> = self
            .heads
            .get(tenant.as_bytes())
            .ok()
            .flatten()
            .and_then(|h| serde_json::from_slice(&h).ok());
        match head {
            Some(h) if h.seq == count && h.hash == prev => Ok(Report {
                entries: count,
                head_hash: prev,
            }),
            Some(h) if h.seq > count => Err(ChainBreak {
                entry: count + 1,
                reason: format!("missing: the chain's head records {} entries", h.seq),
            }
            .into()),
            Some(h) => Err(ChainBreak {
                entry: count,
                reason: format!(
                    "does not match the chain's head (entry {} with hash {})",
                    h.seq, h.hash
                ),
            }
            .into()),
            None if count == 0 => Err(VerifyError::NoChain {
                tenant: tenant.to_string(),
                dir: "this store".into(),
            }),
            None => Err(ChainBreak {
                entry: 1,
                reason: "the chain has entries but no recorded head".into(),
            }
            .into()),
        }
    }
}

/// Recomputes a sequence of entries from genesis: (entries, head hash), or the first bad one.
pub fn verify_entries(entries: &[ChainEntry]) -> Result<(u64, String), ChainBreak> {
    let mut prev = chain::GENESIS.to_string();
    for (i, entry) in entries.iter().enumerate() {
        chain::check(i as u64 + 1, &prev, entry)?;
        prev = entry.hash.clone();
    }
    Ok((entries.len() as u64, prev))
}

/// Reads an export (`mcplane audit export`: one entry per line, JSON).
pub fn read_export(path: &Path) -> Result<Vec<ChainEntry>, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| VerifyError::Open {
        dir: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| VerifyError::Unreadable {
                entry: i as u64 + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The chain store is the audit stage's ledger: its index records which events are chained,
/// and the consume loop flushes it once per batch before acking.
impl Ledger for ChainStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        Ok(self.index.get(key)?.map(|v| v.to_vec()))
    }

    fn put(&self, key: &str, output: &[u8]) -> Result<(), ServiceError> {
        self.index.insert(key, output)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), ServiceError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Opens the chain of a data folder for reading (the audit service must not be running on it:
/// sled lets one process hold a folder).
fn open_for_reading(data_dir: &Path) -> Result<ChainStore, VerifyError> {
    let dir = chain_dir(data_dir);
    if !dir.is_dir() {
        return Err(VerifyError::Open {
            dir: dir.display().to_string(),
            message: "no such folder (is --data the fleet's data folder?)".into(),
        });
    }
    ChainStore::open(&dir).map_err(|e| VerifyError::Open {
        dir: dir.display().to_string(),
        message: format!("{e} (a running audit service holds it; stop it or copy the folder)"),
    })
}

/// A tenant's entries, in order.
pub fn entries(data_dir: &Path, tenant: &str) -> Result<Vec<ChainEntry>, VerifyError> {
    open_for_reading(data_dir)?.read(tenant)
}

/// A tenant's latest checkpoint in a data folder.
pub fn latest_checkpoint(data_dir: &Path, tenant: &str) -> Result<Option<Checkpoint>, VerifyError> {
    Ok(open_for_reading(data_dir)?.latest_checkpoint(tenant))
}

/// Verifies a tenant's chain in a data folder; the error names the first bad entry.
pub fn verify(data_dir: &Path, tenant: &str) -> Result<Report, VerifyError> {
    if mcplane_shared::subjects::validate_token(tenant).is_err() {
        return Err(VerifyError::NoChain {
            tenant: tenant.to_string(),
            dir: "any data folder (not a valid tenant id)".into(),
        });
    }
    let store = open_for_reading(data_dir)?;
    store.verify(tenant).map_err(|e| match e {
        VerifyError::NoChain { tenant, .. } => VerifyError::NoChain {
            tenant,
            dir: chain_dir(data_dir).display().to_string(),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::AuditOutcome;

    fn event(tenant: &str, n: u128, stage: &str) -> AuditEvent {
        AuditEvent {
            request_id: uuid::Uuid::from_u128(n),
            stage: stage.into(),
            tenant: tenant.into(),
            principal: Some("key_1".into()),
            outcome: AuditOutcome::Ok,
            code: None,
            detail: serde_json::json!({"n": n as u64}),
            trace_id: "0".repeat(32),
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn appends_once_per_event_and_keeps_tenants_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChainStore::open(dir.path()).unwrap();
        assert_eq!(
            store.append(&event("a", 1, "enrich")).unwrap(),
            Appended::New(1)
        );
        assert_eq!(
            store.append(&event("a", 1, "invoke")).unwrap(),
            Appended::New(2)
        );
        assert_eq!(
            store.append(&event("b", 1, "enrich")).unwrap(),
            Appended::New(1)
        );
        assert_eq!(
            store.append(&event("a", 1, "enrich")).unwrap(),
            Appended::Duplicate(1)
        );
        assert_eq!(store.verify("a").unwrap().entries, 2);
        assert_eq!(store.verify("b").unwrap().entries, 1);
        assert!(matches!(
            store.verify("c"),
            Err(VerifyError::NoChain { .. })
        ));
    }

    #[test]
    fn a_batch_appends_in_order_per_tenant_once_each_and_chains_as_single_appends_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChainStore::open(dir.path()).unwrap();
        store.append(&event("a", 1, "enrich")).unwrap();
        let batch = [
            event("a", 2, "enrich"),
            event("b", 1, "enrich"),
            event("a", 1, "enrich"), // chained before this batch
            event("a", 2, "invoke"),
            event("a", 2, "enrich"), // twice in this batch
            event("b", 1, "invoke"),
        ];
        let refs: Vec<&AuditEvent> = batch.iter().collect();
        assert_eq!(
            store.append_all(&refs).unwrap(),
            [
                Appended::New(2),
                Appended::New(1),
                Appended::Duplicate(1),
                Appended::New(3),
                Appended::Duplicate(2),
                Appended::New(2),
            ]
        );
        assert_eq!(store.verify("a").unwrap().entries, 3);
        assert_eq!(store.verify("b").unwrap().entries, 2);
        assert!(store.append_all(&[]).unwrap().is_empty());

        // The same events appended one by one give the same chains, hash for hash.
        let single = tempfile::tempdir().unwrap();
        let one_by_one = ChainStore::open(single.path()).unwrap();
        one_by_one.append(&event("a", 1, "enrich")).unwrap();
        for e in &batch {
            one_by_one.append(e).unwrap();
        }
        for tenant in ["a", "b"] {
            assert_eq!(
                store.verify(tenant).unwrap().head_hash,
                one_by_one.verify(tenant).unwrap().head_hash
            );
        }
    }

    #[test]
    fn a_removed_last_entry_is_caught_by_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChainStore::open(dir.path()).unwrap();
        for n in 0..5 {
            store.append(&event("a", n, "invoke")).unwrap();
        }
        store
            .db
            .open_tree(chain_tree_name("a"))
            .unwrap()
            .remove(5u64.to_be_bytes())
            .unwrap();
        let err = store.verify("a").unwrap_err();
        assert!(err.to_string().starts_with("entry 5:"), "{err}");
    }
}
