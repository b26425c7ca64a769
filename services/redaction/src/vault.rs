//! The token vault: what a request's tokens stand for, kept between its two redaction steps.
//!
//! The outbound step may run on another replica, so the originals must travel or be shared.
//! They travel: the inbound step seals the request's [`VaultEntry`] (XChaCha20-Poly1305, bound
//! to the tenant and request id) into the exchange's `vault` field, and the outbound step opens
//! it and removes it before anything leaves for the client. Only the keys are shared, in the
//! JetStream KV bucket `<prefix>-redaction-vault`: one key per 30-minute epoch (`key.<epoch>`),
//! created by whichever replica needs it first and cached by every replica.
//!
//! Why the keys and not the entries: keeping each request's entry in the bucket cost two KV
//! round trips on the request's path (a put on the way in, a get on the way out, plus a purge),
//! the largest wait left in redaction (docs/BENCHMARKS.md). Sealed, the originals pass through
//! the model stage and the pipeline stream as ciphertext nobody else can open: only the
//! redaction service may read the bucket (NATS permissions on `$KV.<bucket>.>`), and a key
//! lives in it for one hour (the bucket's max age) and in a replica's cache only until its
//! epoch is two epochs old. So within an hour of sealing, every copy of the originals is
//! unreadable — the bound the per-request entries had — while a request has at least 30
//! minutes (the rest of its epoch and the next one) to come back for its tokens. A result never
//! carries the sealed field ([`mcplane_shared::bus::result_publications`] strips it), nor does
//! an audit event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use mcplane_shared::body::audit::SealedPayload;
use mcplane_shared::bus::Bus;
use mcplane_shared::tenant_keys::TenantKey;
use mcplane_shared::ServiceError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long one key seals new entries. A key opens entries until the epoch after its own ends,
/// so two epochs must fit in the bucket's max age (one hour), where it is created during its
/// own epoch.
pub const EPOCH: Duration = Duration::from_secs(30 * 60);

/// Binds a sealed entry to what it is for, beside the tenant and request id.
const PURPOSE: &str = "redaction-vault";

/// One request's vault entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VaultEntry {
    /// Token (`<EMAIL_1>`) → original.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// Values of restricted context fields: an answer repeating one is blocked.
    #[serde(default)]
    pub restricted: Vec<String>,
}

impl VaultEntry {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.restricted.is_empty()
    }
}

/// Why a sealed entry was not opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The bucket could not be reached: a passing failure, worth a retry.
    #[error("token vault unavailable: {0}")]
    Unavailable(String),
    /// Its key is gone (the request outlived its epochs) or it was not sealed by this vault for
    /// this request: retrying cannot help.
    #[error("the sealed token vault does not open: {0}")]
    DoesNotOpen(String),
}

#[derive(Debug, Clone)]
pub struct Vault {
    kv: kv::Store,
    /// Epoch → its key, for the live epochs only.
    keys: Arc<Mutex<HashMap<u64, TenantKey>>>,
}

fn epoch_at(t: SystemTime) -> u64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs / EPOCH.as_secs()
}

/// The epochs whose keys still open entries at epoch `now`: its own, the previous one, and
/// the next one (a replica whose clock runs a little ahead may already seal with it).
fn live_epochs(now: u64) -> [u64; 3] {
    [now, now.saturating_sub(1), now + 1]
}

fn key_name(epoch: u64) -> String {
    format!("key.{epoch}")
}

impl Vault {
    /// The vault bucket, created on first use (only this service may touch it).
    pub async fn open(bus: &Bus) -> Result<Vault, ServiceError> {
        Ok(Vault {
            kv: bus.ensure_vault_bucket().await?,
            keys: Arc::default(),
        })
    }

    /// Seals `entry` for request `id` of `tenant` with the current epoch's key.
    pub async fn seal(
        &self,
        tenant: &str,
        id: Uuid,
        entry: &VaultEntry,
    ) -> Result<SealedPayload, VaultError> {
        let epoch = epoch_at(SystemTime::now());
        let key = match self.cached(epoch, |e, _| e == epoch) {
            Some(key) => key,
            None => self.fetch_or_create(epoch).await?,
        };
        key.seal(tenant, id, PURPOSE, entry)
            .map_err(|e| VaultError::Unavailable(e.to_string()))
    }

    /// Opens what [`Vault::seal`] sealed for the same request, while its key lives.
    pub async fn open_sealed(
        &self,
        tenant: &str,
        id: Uuid,
        sealed: &SealedPayload,
    ) -> Result<VaultEntry, VaultError> {
        let now = epoch_at(SystemTime::now());
        let key = match self.cached(now, |_, key| key.id() == sealed.key_id) {
            Some(key) => key,
            None => {
                // Sealed by another replica, or before this one restarted: ask the bucket.
                let mut found = None;
                for epoch in live_epochs(now) {
                    if let Some(key) = self.fetch(epoch).await? {
                        if key.id() == sealed.key_id {
                            found = Some(key);
                            break;
                        }
                    }
                }
                found.ok_or_else(|| {
                    VaultError::DoesNotOpen(format!(
                        "its key {} is not among the live epochs' keys",
                        sealed.key_id
                    ))
                })?
            }
        };
        key.open_as(sealed, tenant, id, PURPOSE)
            .map_err(|e| VaultError::DoesNotOpen(e.to_string()))
    }

    /// A cached key of a live epoch passing `wanted(epoch, key)`. Keys of epochs no longer
    /// live are forgotten here, so a replica holds none for longer than the bucket does.
    fn cached(&self, now: u64, wanted: impl Fn(u64, &TenantKey) -> bool) -> Option<TenantKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|epoch, _| live_epochs(now).contains(epoch));
        keys.iter()
            .find(|(epoch, key)| wanted(**epoch, key))
            .map(|(_, key)| key.clone())
    }

    fn remember(&self, epoch: u64, key: &TenantKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(epoch, key.clone());
    }

    /// The epoch's key from the bucket, if some replica created it (and it has not expired).
    async fn fetch(&self, epoch: u64) -> Result<Option<TenantKey>, VaultError> {
        let bytes = self
            .kv
            .get(key_name(epoch))
            .await
            .map_err(|e| VaultError::Unavailable(e.to_string()))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let key = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|hex| TenantKey::from_hex(hex, &key_name(epoch)).map_err(|e| e.to_string()))
            .map_err(|e| {
                VaultError::DoesNotOpen(format!("vault key {epoch} is unreadable: {e}"))
            })?;
        self.remember(epoch, &key);
        Ok(Some(key))
    }

    /// The epoch's key, created here unless another replica was first (then theirs is used).
    async fn fetch_or_create(&self, epoch: u64) -> Result<TenantKey, VaultError> {
        if let Some(key) = self.fetch(epoch).await? {
            return Ok(key);
        }
        let key = TenantKey::generate().map_err(|e| VaultError::Unavailable(e.to_string()))?;
        match self
            .kv
            .create(key_name(epoch), key.to_hex().into_bytes().into())
            .await
        {
            Ok(_) => {
                tracing::info!(epoch, key_id = %key.id(), "new token vault key");
                self.remember(epoch, &key);
                Ok(key)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                .fetch(epoch)
                .await?
                .ok_or_else(|| VaultError::Unavailable(format!("vault key {epoch} vanished"))),
            Err(e) => Err(VaultError::Unavailable(e.to_string())),
        }
    }
}
