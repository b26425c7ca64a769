//! API keys: minting, the on-disk key file, and resolving a presented key to a principal.
//!
//! A key is `mcp_` + 30 base62 characters of randomness (178.6 bits) + 6 base62 characters of
//! the CRC-32 of those 30, so a secret scanner (or this service) rejects look-alikes without a
//! lookup, as GitHub's tokens do. Keys are stored only as SHA-256 hex: a slow password hash buys
//! nothing for keys with this much entropy and would cost on every request. The store is an
//! append-only JSON-lines file rather than sled because the CLI writes it while a running auth
//! service reads it (sled locks its folder); the last line per key id wins. The file serves one
//! host (development, offline use); keys valid on every replica live in the fleet's key bucket
//! (`fleet_keys.rs`), which shares the format, the record and the verdict defined here.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use mcplane_shared::api_key::BASE62;
use mcplane_shared::subjects::validate_token;
use mcplane_shared::{ErrorBody, ErrorCode, Principal, PrincipalKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mcplane_shared::api_key::{checksum_chars, RANDOM_LEN};
#[cfg(test)]
use mcplane_shared::api_key::{crc32, CHECKSUM_LEN};
pub use mcplane_shared::api_key::{looks_like_key, KEY_LEN, KEY_PREFIX};
/// The tenant of a service account that may act for any tenant.
pub const ANY_TENANT: &str = "*";
/// How often a lookup that hits may look at the key file for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// One key's stored record: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `key_` + 12 hex digits: safe to log, names the key in audit entries and the CLI.
    pub key_id: String,
    /// SHA-256 of the whole key, lowercase hex.
    pub hash: String,
    /// The tenant the key belongs to; `*` only for a service account acting for any tenant.
    pub tenant: String,
    pub roles: Vec<String>,
    pub kind: PrincipalKind,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: bool,
}

impl KeyRecord {
    fn principal(&self) -> Principal {
        Principal {
            id: self.key_id.clone(),
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
            kind: self.kind,
        }
    }

    /// What a presented key whose digest matched this record gets at `now`. Revoked keys are
    /// as unknown ones; only an expired key says so (its holder was once trusted, and the fix
    /// differs).
    pub fn verdict(&self, now: DateTime<Utc>) -> Result<Principal, ErrorBody> {
        if self.revoked {
            return Err(invalid_key());
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(ErrorBody::new(
                ErrorCode::Unauthenticated,
                "API key expired",
            ));
        }
        Ok(self.principal())
    }

    /// Whether a record read from the file is one the service may honour (the file can be
    /// edited by hand; a bad tenant would otherwise end up in a subject).
    pub fn is_sane(&self) -> bool {
        let tenant_ok = validate_token(&self.tenant).is_ok()
            || (self.tenant == ANY_TENANT && self.kind == PrincipalKind::ServiceAccount);
        tenant_ok
            && is_key_id(&self.key_id)
            && self.hash.len() == 64
            && self.hash.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tenant {0:?}: must be 1-64 characters from [a-z0-9_-] (or \"*\" for a service account)")]
    InvalidTenant(String),
    #[error("invalid role {0:?}: must be 1-64 characters from [a-z0-9_-]")]
    InvalidRole(String),
    #[error("expiry {0} is not in the future")]
    InvalidExpiry(DateTime<Utc>),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("cannot encode key record: {0}")]
    Encode(String),
    #[error("key bucket: {0}")]
    Bus(String),
}

/// The denial for an unknown, malformed or revoked key: the same words for all three, so a
/// caller learns nothing about which keys exist.
pub fn invalid_key() -> ErrorBody {
    ErrorBody::new(ErrorCode::Unauthenticated, "invalid API key")
}

/// Validates the metadata, mints a key and builds its record (with a fresh key id; the caller
/// makes the id unique in its store). The key is returned to be shown once.
pub fn new_key(
    tenant: &str,
    roles: Vec<String>,
    kind: PrincipalKind,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(String, KeyRecord), KeyError> {
    let any_tenant = tenant == ANY_TENANT && kind == PrincipalKind::ServiceAccount;
    if !any_tenant && validate_token(tenant).is_err() {
        return Err(KeyError::InvalidTenant(tenant.to_string()));
    }
    if let Some(bad) = roles.iter().find(|r| validate_token(r).is_err()) {
        return Err(KeyError::InvalidRole(bad.clone()));
    }
    if let Some(at) = expires_at.filter(|at| *at <= now) {
        return Err(KeyError::InvalidExpiry(at));
    }
    let key = mint_key()?;
    let record = KeyRecord {
        key_id: new_key_id()?,
        hash: key_hash(&key),
        tenant: tenant.to_string(),
        roles,
        kind,
        created_at: now,
        expires_at,
        revoked: false,
    };
    Ok((key, record))
}

// ---- key format (shared::api_key) ---------------------------------------------------------

/// A fresh key: 30 uniformly random base62 characters (rejection sampling keeps them uniform)
/// and their checksum.
fn mint_key() -> Result<String, KeyError> {
    let mut random = String::with_capacity(RANDOM_LEN);
    let mut pool = [0u8; 64];
    while random.len() < RANDOM_LEN {
        getrandom::fill(&mut pool).map_err(|e| KeyError::Random(e.to_string()))?;
        // 248 = 4 × 62: bytes at or above it would bias the first characters of the alphabet.
        for &b in pool.iter().filter(|&&b| b < 248) {
            if random.len() == RANDOM_LEN {
                break;
            }
            random.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    let checksum = checksum_chars(&random);
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(&random);
    key.extend(checksum.iter().map(|&b| char::from(b)));
    Ok(key)
}

pub(crate) fn new_key_id() -> Result<String, KeyError> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(format!("key_{}", hex::encode(bytes)))
}

pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix("key_")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The stored form of a key: SHA-256, lowercase hex.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

// ---- the store -------------------------------------------------------------------------------

/// The file's identity as last read: when either changes, the file is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Latest record per key id.
    by_id: HashMap<String, KeyRecord>,
    /// Key hash → key id.
    by_hash: HashMap<String, String>,
    stamp: Option<FileStamp>,
    checked_at: Option<Instant>,
}

/// The API keys of one data folder, kept in `<dir>/auth/keys.jsonl`.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl KeyStore {
    /// Opens (creating folder and file as needed) the key file under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<KeyStore, KeyError> {
        let dir = data_dir.join("auth");
        std::fs::create_dir_all(&dir).map_err(|source| KeyError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = KeyStore {
            path: dir.join("keys.jsonl"),
            loaded: Mutex::new(Loaded::default()),
        };
        // Creating with mode 0600 here means the file never exists with looser permissions.
        store.append_file().map_err(|source| store.io(source))?;
        let mut loaded = store.lock();
        store
            .reload(&mut loaded)
            .map_err(|source| store.io(source))?;
        drop(loaded);
        Ok(store)
    }

    /// Where the keys live.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Mints a key, stores its record and returns the key (to be shown once) with the record.
    pub fn create(
        &self,
        tenant: &str,
        roles: Vec<String>,
        kind: PrincipalKind,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(String, KeyRecord), KeyError> {
        let (key, mut record) = new_key(tenant, roles, kind, expires_at, Utc::now())?;
        let mut loaded = self.lock();
        self.reload_if_changed(&mut loaded)
            .map_err(|e| self.io(e))?;
        while loaded.by_id.contains_key(&record.key_id) {
            record.key_id = new_key_id()?;
        }
        self.append(&record)?;
        self.reload(&mut loaded).map_err(|e| self.io(e))?;
        Ok((key, record))
    }

    /// Every key's latest record, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let mut loaded = self.lock();
        self.reload_if_changed(&mut loaded)
            .map_err(|e| self.io(e))?;
        let mut out: Vec<KeyRecord> = loaded.by_id.values().cloned().collect();
        out.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        Ok(out)
    }

    /// Revokes a key by id (appends its record with `revoked = true`); false when there is no
    /// such key.
    pub fn revoke(&self, key_id: &str) -> Result<bool, KeyError> {
        let mut loaded = self.lock();
        self.reload_if_changed(&mut loaded)
            .map_err(|e| self.io(e))?;
        let Some(record) = loaded.by_id.get(key_id) else {
            return Ok(false);
        };
        if record.revoked {
            return Ok(true);
        }
        let revoked = KeyRecord {
            revoked: true,
            ..record.clone()
        };
        self.append(&revoked)?;
        self.reload(&mut loaded).map_err(|e| self.io(e))?;
        Ok(true)
    }

    /// Resolves a presented key to its principal. Unknown, malformed, revoked and expired keys
    /// are all `unauthenticated`; only an expired key says so in the message (its holder was
    /// once trusted, and the fix differs). A key file that cannot be read is `unavailable`.
    pub fn lookup(&self, presented: &str, now: DateTime<Utc>) -> Result<Principal, ErrorBody> {
        if !looks_like_key(presented) {
            return Err(invalid_key());
        }
        self.lookup_digest(&key_hash(presented), now)
    }

    /// [`KeyStore::lookup`] for a key already checked and hashed.
    pub fn lookup_digest(&self, hash: &str, now: DateTime<Utc>) -> Result<Principal, ErrorBody> {
        let mut loaded = self.lock();
        let due = loaded
            .checked_at
            .is_none_or(|at| at.elapsed() >= RELOAD_INTERVAL);
        // On a miss, look again at once: the key may have been created a moment ago.
        if due || !loaded.by_hash.contains_key(hash) {
            if let Err(e) = self.reload_if_changed(&mut loaded) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the key file");
                if !loaded.by_hash.contains_key(hash) {
                    return Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        "the key store cannot be read",
                    ));
                }
            }
        }
        let record = loaded
            .by_hash
            .get(hash)
            .and_then(|id| loaded.by_id.get(id))
            .ok_or_else(invalid_key)?;
        record.verdict(now)
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // The state is rebuilt from the file on every change, so a poisoned lock holds nothing
        // that a reload would not fix.
        self.loaded.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            guard.stamp = None;
            guard
        })
    }

    fn io(&self, source: std::io::Error) -> KeyError {
        KeyError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn append_file(&self) -> std::io::Result<std::fs::File> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&self.path)
    }

    /// Appends one record as one write, so a concurrent reader sees the line whole or not at
    /// all (and skips a line still missing its newline).
    fn append(&self, record: &KeyRecord) -> Result<(), KeyError> {
        let mut line = serde_json::to_vec(record).map_err(|e| KeyError::Encode(e.to_string()))?;
        line.push(b'\n');
        let mut file = self.append_file().map_err(|e| self.io(e))?;
        file.write_all(&line).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))
    }

    fn current_stamp(&self) -> std::io::Result<Option<FileStamp>> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(Some(FileStamp {
                modified: meta.modified().ok(),
                len: meta.len(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn reload_if_changed(&self, loaded: &mut Loaded) -> std::io::Result<()> {
        let stamp = self.current_stamp()?;
        loaded.checked_at = Some(Instant::now());
        if stamp.is_some() && stamp == loaded.stamp {
            return Ok(());
        }
        self.reload(loaded)
    }

    /// Reads the whole file again. Key files are small (one line per key and revocation), so
    /// a full read is simpler than tracking offsets and survives the file being rewritten.
    fn reload(&self, loaded: &mut Loaded) -> std::io::Result<()> {
        let modified = self.current_stamp()?.and_then(|s| s.modified);
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut by_id = HashMap::new();
        // A last line without its newline is still being written: leave it for the next read
        // (the file's length will have changed by then).
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..=end]);
        for (n, line) in complete.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<KeyRecord>(line) {
                Ok(record) if record.is_sane() => {
                    by_id.insert(record.key_id.clone(), record);
                }
                Ok(record) => tracing::warn!(
                    path = %self.path.display(), line = n + 1, key_id = %record.key_id,
                    "ignoring a key record with an invalid tenant, id or hash"
                ),
                Err(e) => tracing::warn!(
                    path = %self.path.display(), line = n + 1, error = %e,
                    "ignoring an unreadable line in the key file"
                ),
            }
        }
        loaded.by_hash = by_id
            .values()
            .map(|r: &KeyRecord| (r.hash.clone(), r.key_id.clone()))
            .collect();
        loaded.by_id = by_id;
        loaded.stamp = Some(FileStamp {
            modified,
            len: complete.len() as u64,
        });
        loaded.checked_at = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as ChronoDuration;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn minted_keys_have_the_documented_shape() {
        let key = mint_key().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(KEY_LEN, 40);
        assert!(key.starts_with("mcp_"));
        assert!(key[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(looks_like_key(&key));
        assert_ne!(key, mint_key().unwrap());
    }

    #[test]
    fn look_alikes_fail_the_checksum() {
        let key = mint_key().unwrap();
        // Any single changed character in the random part is caught.
        for i in KEY_PREFIX.len()..KEY_PREFIX.len() + RANDOM_LEN {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let altered = String::from_utf8(bytes).unwrap();
            assert!(!looks_like_key(&altered), "{altered}");
        }
        // Random strings with the right prefix and length: each passes with p = 2^-32.
        let passing = (0..1000)
            .filter(|_| {
                let mut s = mint_key().unwrap()[..KEY_LEN - CHECKSUM_LEN].to_string();
                s.push_str(&mint_key().unwrap()[KEY_LEN - CHECKSUM_LEN..]);
                looks_like_key(&s)
            })
            .count();
        assert_eq!(passing, 0);
        for bad in [
            "",
            "mcp_",
            "ghp_abc",
            &key[..KEY_LEN - 1],
            &format!("{key}x"),
        ] {
            assert!(!looks_like_key(bad), "{bad:?}");
        }
        let wrong_prefix = format!("mcx_{}", &key[4..]);
        assert!(!looks_like_key(&wrong_prefix));
    }

    #[test]
    fn a_created_key_resolves_to_its_principal_and_is_stored_only_as_a_hash() {
        let (_dir, store) = store();
        let (key, record) = store
            .create("acme", vec!["sre".into()], PrincipalKind::User, None)
            .unwrap();
        assert!(is_key_id(&record.key_id));
        let principal = store.lookup(&key, Utc::now()).unwrap();
        assert_eq!(principal.id, record.key_id);
        assert_eq!(principal.tenant, "acme");
        assert_eq!(principal.roles, vec!["sre".to_string()]);
        assert_eq!(principal.kind, PrincipalKind::User);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&key));
        assert!(text.contains(&key_hash(&key)));
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = store();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unknown_and_malformed_keys_are_unauthenticated() {
        let (_dir, store) = store();
        let stranger = mint_key().unwrap();
        for presented in [stranger.as_str(), "", "Bearer x", "mcp_short"] {
            let err = store.lookup(presented, Utc::now()).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthenticated);
            assert_eq!(err.message, "invalid API key");
        }
    }

    #[test]
    fn revoked_keys_are_unauthenticated_and_the_last_line_wins() {
        let (_dir, store) = store();
        let (key, record) = store
            .create("acme", vec![], PrincipalKind::User, None)
            .unwrap();
        assert!(store.revoke(&record.key_id).unwrap());
        assert!(!store.revoke("key_000000000000").unwrap());
        let err = store.lookup(&key, Utc::now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
        assert_eq!(err.message, "invalid API key");
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        let lines = std::fs::read_to_string(store.path())
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 2, "a revocation is appended, never rewritten");
    }

    #[test]
    fn expired_keys_are_unauthenticated_and_say_so() {
        let (_dir, store) = store();
        let now = Utc::now();
        let expires = now + ChronoDuration::hours(1);
        let (key, _) = store
            .create("acme", vec![], PrincipalKind::User, Some(expires))
            .unwrap();
        assert!(store.lookup(&key, now).is_ok());
        let err = store.lookup(&key, expires).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
        assert_eq!(err.message, "API key expired");
    }

    #[test]
    fn create_validates_tenant_roles_and_expiry() {
        let (_dir, store) = store();
        assert!(matches!(
            store.create("Acme.Corp", vec![], PrincipalKind::User, None),
            Err(KeyError::InvalidTenant(_))
        ));
        assert!(matches!(
            store.create("*", vec![], PrincipalKind::User, None),
            Err(KeyError::InvalidTenant(_))
        ));
        assert!(matches!(
            store.create("acme", vec!["a b".into()], PrincipalKind::User, None),
            Err(KeyError::InvalidRole(_))
        ));
        assert!(matches!(
            store.create("acme", vec![], PrincipalKind::User, Some(Utc::now())),
            Err(KeyError::InvalidExpiry(_))
        ));
        let (key, record) = store
            .create(
                "*",
                vec!["service".into()],
                PrincipalKind::ServiceAccount,
                None,
            )
            .unwrap();
        assert_eq!(record.tenant, "*");
        assert_eq!(store.lookup(&key, Utc::now()).unwrap().tenant, "*");
    }

    #[test]
    fn keys_written_by_another_instance_are_seen_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let service = KeyStore::open(dir.path()).unwrap();
        let (early, _) = service
            .create("acme", vec![], PrincipalKind::User, None)
            .unwrap();
        assert!(service.lookup(&early, Utc::now()).is_ok());

        // The CLI appends through its own instance; the miss makes the service look again.
        let cli = KeyStore::open(dir.path()).unwrap();
        let (late, late_record) = cli
            .create("globex", vec!["viewer".into()], PrincipalKind::User, None)
            .unwrap();
        assert_eq!(service.lookup(&late, Utc::now()).unwrap().tenant, "globex");

        // A revocation by the CLI is seen once the recheck interval has passed.
        assert!(cli.revoke(&late_record.key_id).unwrap());
        service.lock().checked_at = None;
        assert_eq!(
            service.lookup(&late, Utc::now()).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn a_partial_or_corrupt_line_is_skipped_until_complete() {
        let (_dir, store) = store();
        let (key, record) = store
            .create("acme", vec![], PrincipalKind::User, None)
            .unwrap();
        let mut text = std::fs::read_to_string(store.path()).unwrap();
        text.push_str("not json\n");
        let revoked = serde_json::to_string(&KeyRecord {
            revoked: true,
            ..record
        })
        .unwrap();
        // A writer has only got half the revocation out.
        let half = &revoked[..revoked.len() / 2];
        std::fs::write(store.path(), format!("{text}{half}")).unwrap();
        store.lock().checked_at = None;
        assert!(store.lookup(&key, Utc::now()).is_ok());
        std::fs::write(store.path(), format!("{text}{revoked}\n")).unwrap();
        store.lock().checked_at = None;
        assert!(store.lookup(&key, Utc::now()).is_err());
    }
}
