//! The token vault: what a request's tokens stand for, kept between its two redaction steps.
//!
//! The outbound step may run on another replica, so the originals must be shared. They live
//! in the JetStream KV bucket `<prefix>-redaction-vault`, keyed `<tenant>.<request id>`, with
//! a one-hour max age, rather than in the envelope: the envelope travels through every later
//! stage (the model service among them) and is copied into the audit stream, kept for a year,
//! so even encrypted it would spread the originals far wider and longer than needed. In the
//! bucket only the redaction service may write them (NATS permissions on `$KV.<bucket>.>`),
//! they expire on their own, and are purged as soon as the answer is out.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use mcplane_shared::bus::Bus;
use mcplane_shared::ServiceError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

#[derive(Debug, Clone)]
pub struct Vault {
    kv: kv::Store,
}

fn key(tenant: &str, id: Uuid) -> String {
    format!("{tenant}.{id}")
}

impl Vault {
    /// The vault bucket, created on first use (only this service may touch it).
    pub async fn open(bus: &Bus) -> Result<Vault, ServiceError> {
        Ok(Vault {
            kv: bus.ensure_vault_bucket().await?,
        })
    }

    pub async fn put(&self, tenant: &str, id: Uuid, entry: &VaultEntry) -> Result<(), String> {
        let bytes = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        self.kv
            .put(key(tenant, id), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<VaultEntry>, String> {
        match self.kv.get(key(tenant, id)).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Forgets an entry once the answer is out (best effort: the max age removes it anyway).
    pub async fn forget(&self, tenant: &str, id: Uuid) {
        if let Err(e) = self.kv.purge(key(tenant, id)).await {
            tracing::debug!(error = %e, "vault entry not purged; it expires on its own");
        }
    }
}
