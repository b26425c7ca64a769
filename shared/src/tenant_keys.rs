//! Per-tenant audit keys: the 32-byte keys that seal the payloads kept with audit entries, and
//! the seal and open operations themselves.
//!
//! Bring your own key: `MCPLANE_AUDIT_KEY_<TENANT>` (hex; the tenant upper-cased, `-` as `_`)
//! wins over the file `<keys dir>/<tenant>.key` (hex, mode 0600). When neither exists, the
//! sealing stage creates the file (as the audit service creates its signing key). Erasure is
//! destroying the key ([`TenantKeys::destroy`]): every sealed copy — in sled, in the audit
//! stream, in exports and backups — becomes unreadable at once, while the chain, which hashes
//! the ciphertext, still verifies. The key file is looked at on every seal, so a destroyed key
//! stops being used by a running fleet with its next payload: a `stat` each time, and the file
//! read again only when it is not the version read last (see [`FileStamp`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::body::audit::SealedPayload;

/// The only algorithm sealed payloads use.
pub const ALG: &str = "xchacha20poly1305";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a tenant id")]
    BadTenant(String),
    #[error("no audit key for tenant {tenant} (neither {env} nor {file})")]
    NoKey {
        tenant: String,
        env: String,
        file: String,
    },
    #[error("{source_name}: not a key (expected 64 hex digits, 32 bytes)")]
    Malformed { source_name: String },
    #[error(
        "the key of tenant {tenant} comes from {env}: remove it from the secret store that sets it"
    )]
    HeldInEnvironment { tenant: String, env: String },
    #[error("sealed with key {sealed_with}, this is key {held}: the key was destroyed or rotated")]
    OtherKey { sealed_with: String, held: String },
    #[error("the payload does not open: it was altered or moved from another entry")]
    DoesNotOpen,
    #[error("the payload is not a sealed payload: {0}")]
    NotSealed(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("no randomness: {0}")]
    Random(String),
}

/// One tenant's key. Its bytes never print.
#[derive(Clone)]
pub struct TenantKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantKey({})", self.id())
    }
}

impl TenantKey {
    pub fn from_hex(text: &str, source_name: &str) -> Result<TenantKey, KeyError> {
        let malformed = || KeyError::Malformed {
            source_name: source_name.to_string(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        Ok(TenantKey {
            bytes: bytes.try_into().map_err(|_| malformed())?,
        })
    }

    pub fn generate() -> Result<TenantKey, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(TenantKey { bytes })
    }

    /// The key's bytes, hex: only for storing it where its owner alone can read it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The key's public name: the first 8 bytes of SHA-256 over it, hex.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.bytes);
        hex::encode(&digest[..8])
    }

    /// Encrypts `payload` (as JSON) for the entry `<request id>:<stage>` of `tenant`.
    pub fn seal<T: serde::Serialize + ?Sized>(
        &self,
        tenant: &str,
        request_id: Uuid,
        stage: &str,
        payload: &T,
    ) -> Result<SealedPayload, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let plaintext =
            serde_json::to_vec(payload).map_err(|e| KeyError::NotSealed(e.to_string()))?;
        let aad = SealedPayload::associated_data(tenant, request_id, stage);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::DoesNotOpen)?;
        Ok(SealedPayload {
            alg: ALG.to_string(),
            key_id: self.id(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Decrypts a payload sealed for the entry `<request id>:<stage>` of `tenant`.
    pub fn open(
        &self,
        sealed: &SealedPayload,
        tenant: &str,
        request_id: Uuid,
        stage: &str,
    ) -> Result<serde_json::Value, KeyError> {
        self.open_as(sealed, tenant, request_id, stage)
    }

    /// [`TenantKey::open`] straight into the type that was sealed.
    pub fn open_as<T: serde::de::DeserializeOwned>(
        &self,
        sealed: &SealedPayload,
        tenant: &str,
        request_id: Uuid,
        stage: &str,
    ) -> Result<T, KeyError> {
        if sealed.alg != ALG {
            return Err(KeyError::NotSealed(format!(
                "unknown algorithm {}",
                sealed.alg
            )));
        }
        if sealed.key_id != self.id() {
            return Err(KeyError::OtherKey {
                sealed_with: sealed.key_id.clone(),
                held: self.id(),
            });
        }
        let nonce = hex::decode(&sealed.nonce)
            .ok()
            .filter(|n| n.len() == NONCE_LEN)
            .ok_or_else(|| KeyError::NotSealed("the nonce is not 24 hex-encoded bytes".into()))?;
        let ciphertext = hex::decode(&sealed.ciphertext)
            .map_err(|_| KeyError::NotSealed("the ciphertext is not hex".into()))?;
        let aad = SealedPayload::associated_data(tenant, request_id, stage);
        let plaintext = self
            .cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::DoesNotOpen)?;
        serde_json::from_slice(&plaintext).map_err(|e| KeyError::NotSealed(e.to_string()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

/// The environment variable that may hold a tenant's key.
pub fn env_var(tenant: &str) -> String {
    format!(
        "MCPLANE_AUDIT_KEY_{}",
        tenant.to_ascii_uppercase().replace('-', "_")
    )
}

/// Where the tenants' keys are: a folder of `<tenant>.key` files, and the environment.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    dir: PathBuf,
    /// The key files read so far, each with the stamp of the version read. Shared by clones.
    read: Arc<Mutex<HashMap<PathBuf, (FileStamp, TenantKey)>>>,
}

impl PartialEq for TenantKeys {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
    }
}

impl Eq for TenantKeys {}

/// What tells one version of a key file from another: a file rewritten, replaced or removed
/// has another inode, size, or modification or change time, so its key is read again (or, when
/// removed, no longer used; see [`SETTLED`] for a rewrite within the clock's granularity). One `stat` per seal instead of an open, read and close plus the
/// hex decoding: the redaction service seals two payloads per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// File times are taken from a coarse clock (a few ms), so a file rewritten in place with a key
/// of the same length right after it was read could keep its stamp. A file is therefore
/// remembered only once its last change is this old: any later change then shows as a newer
/// time (the trick git uses against "racily clean" files).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl FileStamp {
    /// Whether the file last changed long enough ago for any later change to show.
    fn settled(&self) -> bool {
        let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let newest = self.mtime.max(self.ctime).0;
        now.as_secs() as i64 >= newest.saturating_add(SETTLED.as_secs() as i64 + 1)
    }

    /// `None` where the platform gives no inode and change time: the file is then read each time.
    fn of(meta: &std::fs::Metadata) -> Option<FileStamp> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileStamp {
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }
}

impl TenantKeys {
    pub fn new(dir: impl Into<PathBuf>) -> TenantKeys {
        TenantKeys {
            dir: dir.into(),
            read: Arc::default(),
        }
    }

    /// The key in the file at `path`, `None` when there is no such file.
    fn read_file(&self, path: &Path) -> Result<Option<TenantKey>, KeyError> {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        // Stamped before reading: a file changed in between is read again next time.
        let stamp = match std::fs::metadata(path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                read.remove(path);
                return Ok(None);
            }
            Err(e) => return Err(io(path, e)),
        };
        if let (Some(stamp), Some((seen, key))) = (stamp, read.get(path)) {
            if stamp == *seen {
                return Ok(Some(key.clone()));
            }
        }
        let key = match std::fs::read_to_string(path) {
            Ok(text) => TenantKey::from_hex(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                read.remove(path);
                return Ok(None);
            }
            Err(e) => return Err(io(path, e)),
        };
        match stamp.filter(|s| s.settled()) {
            Some(stamp) => {
                read.insert(path.to_path_buf(), (stamp, key.clone()));
            }
            None => {
                read.remove(path);
            }
        }
        Ok(Some(key))
    }

    /// The default folder under a fleet's data folder.
    pub fn default_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("audit").join("tenant-keys")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key file of `tenant` (the tenant id is checked first: it names a file).
    pub fn path(&self, tenant: &str) -> Result<PathBuf, KeyError> {
        crate::subjects::validate_token(tenant)
            .map_err(|_| KeyError::BadTenant(tenant.to_string()))?;
        Ok(self.dir.join(format!("{tenant}.key")))
    }

    /// The tenant's key, from the environment or its file; `None` when it has none (never had
    /// one, or it was destroyed).
    pub fn load(&self, tenant: &str) -> Result<Option<TenantKey>, KeyError> {
        let path = self.path(tenant)?;
        let var = env_var(tenant);
        if let Ok(text) = std::env::var(&var) {
            return TenantKey::from_hex(&text, &var).map(Some);
        }
        self.read_file(&path)
    }

    /// The tenant's key, or `NoKey` naming where it was looked for.
    pub fn require(&self, tenant: &str) -> Result<TenantKey, KeyError> {
        self.load(tenant)?.ok_or_else(|| KeyError::NoKey {
            tenant: tenant.to_string(),
            env: env_var(tenant),
            file: self
                .path(tenant)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })
    }

    /// The tenant's key, creating its file (mode 0600) when it has none.
    pub fn load_or_create(&self, tenant: &str) -> Result<TenantKey, KeyError> {
        if let Some(key) = self.load(tenant)? {
            return Ok(key);
        }
        let path = self.path(tenant)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let key = TenantKey::generate()?;
        match write_new_secret(&path, &key.to_hex()) {
            Ok(()) => {
                tracing::warn!(%tenant, key_id = %key.id(), path = %path.display(), "created a new audit payload key");
                Ok(key)
            }
            // Another sealer created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.require(tenant),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Destroys the tenant's key file: overwritten with zeros, synced, removed. Returns the id
    /// of the destroyed key, `None` when there was none. A key set in the environment cannot
    /// be destroyed from here.
    pub fn destroy(&self, tenant: &str) -> Result<Option<String>, KeyError> {
        let var = env_var(tenant);
        if std::env::var_os(&var).is_some() {
            return Err(KeyError::HeldInEnvironment {
                tenant: tenant.to_string(),
                env: var,
            });
        }
        let path = self.path(tenant)?;
        let Some(key) = self.load(tenant)? else {
            return Ok(None);
        };
        // Best effort against the bytes surviving on disk; a copy-on-write or journalling
        // file system may still keep old blocks, which is why keys belong on a volume (or a
        // secret store) the operator can wipe.
        let zeros = "0".repeat(64);
        std::fs::write(&path, zeros.as_bytes()).map_err(|e| io(&path, e))?;
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.sync_all();
        }
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        Ok(Some(key.id()))
    }
}

fn io(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sealed_payload_opens_only_with_its_key_for_its_entry() {
        let key = TenantKey::generate().unwrap();
        let id = Uuid::from_u128(7);
        let payload = json!({"input": "disk full on <IP_1>"});
        let sealed = key.seal("acme", id, "redact_request", &payload).unwrap();
        assert!(!sealed.ciphertext.contains(&hex::encode("disk full")));
        assert_eq!(
            key.open(&sealed, "acme", id, "redact_request").unwrap(),
            payload
        );

        // Moved to another entry or tenant: does not open.
        assert!(matches!(
            key.open(&sealed, "acme", id, "redact_response"),
            Err(KeyError::DoesNotOpen)
        ));
        assert!(matches!(
            key.open(&sealed, "globex", id, "redact_request"),
            Err(KeyError::DoesNotOpen)
        ));
        // Altered: does not open.
        let mut altered = sealed.clone();
        let flipped = if altered.ciphertext.starts_with('0') {
            "1"
        } else {
            "0"
        };
        altered.ciphertext.replace_range(0..1, flipped);
        assert!(matches!(
            key.open(&altered, "acme", id, "redact_request"),
            Err(KeyError::DoesNotOpen)
        ));
        // Another key: named as such.
        let other = TenantKey::generate().unwrap();
        assert!(matches!(
            other.open(&sealed, "acme", id, "redact_request"),
            Err(KeyError::OtherKey { .. })
        ));
        // A fresh nonce each time: equal payloads do not look equal.
        let again = key.seal("acme", id, "redact_request", &payload).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn a_destroyed_key_is_gone_and_a_new_one_differs() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::new(dir.path().join("keys"));
        assert!(keys.load("acme").unwrap().is_none());
        let key = keys.load_or_create("acme").unwrap();
        assert_eq!(keys.require("acme").unwrap().id(), key.id(), "kept on disk");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(keys.path("acme").unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(keys.destroy("acme").unwrap(), Some(key.id()));
        assert!(keys.load("acme").unwrap().is_none());
        assert!(matches!(keys.require("acme"), Err(KeyError::NoKey { .. })));
        assert_eq!(keys.destroy("acme").unwrap(), None);
        let rotated = keys.load_or_create("acme").unwrap();
        assert_ne!(rotated.id(), key.id());
    }

    #[test]
    fn a_key_file_replaced_or_removed_behind_a_clone_is_seen_at_the_next_load() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::new(dir.path());
        // The sealer holds a clone; the operator's tool works on its own value.
        let sealer = keys.clone();
        let first = sealer.load_or_create("acme").unwrap();
        assert_eq!(sealer.require("acme").unwrap().id(), first.id());
        let path = keys.path("acme").unwrap();
        // Replaced in place by another key of the same length.
        std::fs::write(&path, "cd".repeat(32)).unwrap();
        assert_eq!(sealer.require("acme").unwrap().bytes, [0xcd; 32]);
        // Removed without `destroy`: no key, at once.
        std::fs::remove_file(&path).unwrap();
        assert!(sealer.load("acme").unwrap().is_none());
        // Destroyed through another value: the clone no longer finds it either.
        let second = sealer.load_or_create("acme").unwrap();
        assert_ne!(second.id(), first.id());
        assert_eq!(
            TenantKeys::new(dir.path()).destroy("acme").unwrap(),
            Some(second.id())
        );
        assert!(sealer.load("acme").unwrap().is_none());
    }

    #[test]
    fn a_tenant_id_cannot_name_a_file_elsewhere() {
        let keys = TenantKeys::new("/tmp/keys");
        assert!(matches!(
            keys.path("../etc/passwd"),
            Err(KeyError::BadTenant(_))
        ));
        assert!(matches!(keys.load("a/b"), Err(KeyError::BadTenant(_))));
    }

    #[test]
    fn a_bring_your_own_key_file_is_used_and_a_malformed_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::new(dir.path());
        std::fs::write(
            dir.path().join("acme.key"),
            format!("{}\n", "ab".repeat(32)),
        )
        .unwrap();
        let key = keys.load_or_create("acme").unwrap();
        assert_eq!(key.bytes, [0xab; 32]);
        std::fs::write(dir.path().join("globex.key"), "not hex").unwrap();
        assert!(matches!(
            keys.load("globex"),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(env_var("acme-eu"), "MCPLANE_AUDIT_KEY_ACME_EU");
    }
}
