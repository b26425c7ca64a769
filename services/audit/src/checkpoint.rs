//! Signed checkpoints: the audit service's Ed25519 statement of "tenant T's chain had N entries
//! and its head hash was H". An auditor who keeps one can verify an export offline against it:
//! any entry modified, inserted, deleted or reordered before N, and any cut below N, shows.
//!
//! The signing key is a 32-byte seed in a file (hex), created with mode 0600 on first start
//! when absent; its public key is logged and carried in every checkpoint, but a verifier must
//! trust a key it got another way (`--public-key`), or a forger would simply sign with theirs.

use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use mcplane_shared::body::audit::Checkpoint;
use mcplane_shared::ServiceError;

use crate::chain::{ChainBreak, ChainEntry};

pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// Reads the seed at `path`, or creates one there.
    pub fn load_or_create(path: &Path) -> Result<Signer, ServiceError> {
        let seed = match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    ServiceError::Storage(format!("{}: not a hex seed: {e}", path.display()))
                })?;
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    ServiceError::Storage(format!("{}: the seed must be 32 bytes", path.display()))
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed)
                    .map_err(|e| ServiceError::Storage(format!("no randomness: {e}")))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_secret(path, &hex::encode(seed))?;
                tracing::warn!(path = %path.display(), "created a new audit signing key");
                seed
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Signer {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn sign(
        &self,
        tenant: &str,
        tree_size: u64,
        head_hash: &str,
        at: DateTime<Utc>,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            tenant: tenant.to_string(),
            tree_size,
            head_hash: head_hash.to_string(),
            at,
            public_key: self.public_hex(),
            signature: String::new(),
        };
        cp.signature = hex::encode(self.key.sign(&cp.signed_bytes()).to_bytes());
        cp
    }
}

fn write_secret(path: &Path, text: &str) -> Result<(), ServiceError> {
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
    file.sync_all()?;
    Ok(())
}

/// Checks that `cp` is signed by the trusted key.
pub fn verify_signature(cp: &Checkpoint, trusted_public_key: &str) -> Result<(), String> {
    if !cp
        .public_key
        .eq_ignore_ascii_case(trusted_public_key.trim())
    {
        return Err("the checkpoint is signed by another key than the trusted one".into());
    }
    let key_bytes: [u8; 32] = hex::decode(trusted_public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the trusted public key is not 32 hex-encoded bytes")?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| e.to_string())?;
    let sig_bytes: [u8; 64] = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 hex-encoded bytes")?;
    key.verify(&cp.signed_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| "the checkpoint's signature does not verify".to_string())
}

/// Checks a verified chain against a checkpoint: it must reach `tree_size` and have the
/// checkpoint's head hash there.
pub fn check_chain(entries: &[ChainEntry], cp: &Checkpoint) -> Result<(), ChainBreak> {
    let size = entries.len() as u64;
    if size < cp.tree_size {
        return Err(ChainBreak {
            entry: size + 1,
            reason: format!(
                "missing: the chain is cut off at {size} entries, the checkpoint covers {}",
                cp.tree_size
            ),
        });
    }
    if cp.tree_size == 0 {
        return Ok(());
    }
    let at = &entries[(cp.tree_size - 1) as usize];
    if at.hash != cp.head_hash {
        return Err(ChainBreak {
            entry: cp.tree_size,
            reason: "differs from the checkpoint's head hash: the chain was rewritten".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&dir.path().join("k")).unwrap();
        let again = Signer::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(signer.public_hex(), again.public_hex(), "the key persists");
        let cp = signer.sign("acme", 10, "ab", Utc::now());
        assert_eq!(verify_signature(&cp, &signer.public_hex()), Ok(()));

        let other = Signer::load_or_create(&dir.path().join("other")).unwrap();
        assert!(
            verify_signature(&cp, &other.public_hex()).is_err(),
            "wrong trusted key"
        );
        let forged = other.sign("acme", 10, "ab", cp.at);
        assert!(
            verify_signature(&forged, &signer.public_hex()).is_err(),
            "signed by another key"
        );
        let mut tampered = cp.clone();
        tampered.tree_size = 9;
        assert!(
            verify_signature(&tampered, &signer.public_hex()).is_err(),
            "changed after signing"
        );
    }
}
