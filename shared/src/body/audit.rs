//! What every stage records about what it did; the audit service chains these per tenant.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{BodyKind, Kind};
use crate::error::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Ok,
    Denied,
    Failed,
}

/// One stage's record of one message. Never holds a raw secret or a readable payload: a payload
/// worth keeping travels only sealed, as a [`SealedPayload`] at `detail.payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEvent {
    /// Unique per (request, stage): `<request id>:<stage>` is also its `Nats-Msg-Id`.
    pub request_id: Uuid,
    pub stage: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub outcome: AuditOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Stage-specific facts: data sources read, provider and model, redaction counts, ...
    #[serde(default)]
    pub detail: serde_json::Value,
    pub trace_id: String,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
}

impl AuditEvent {
    /// The key that makes an audit event unique: one entry per request and stage.
    pub fn key(&self) -> String {
        format!("{}:{}", self.request_id, self.stage)
    }
}

/// Where an audit event's `detail` carries its [`SealedPayload`], when the stage kept one.
pub const PAYLOAD_DETAIL_KEY: &str = "payload";

/// A payload kept with an audit entry, encrypted with the tenant's audit key
/// (XChaCha20-Poly1305, a random 24-byte nonce per payload). The associated data binds it to
/// its tenant and entry ([`SealedPayload::associated_data`]), so a ciphertext moved to another
/// entry or tenant does not open. The chain hashes these bytes, not the plaintext: destroying
/// the tenant's key erases the payloads and leaves the chain verifiable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedPayload {
    /// `xchacha20poly1305`.
    pub alg: String,
    /// Which tenant key sealed it: the first 8 bytes (hex) of SHA-256 over the key, so an
    /// operator holding a key (or a rotated one) can tell whether it is the right one.
    pub key_id: String,
    /// Hex, 24 bytes.
    pub nonce: String,
    /// Hex: the encrypted JSON payload followed by the 16-byte tag.
    pub ciphertext: String,
}

impl SealedPayload {
    /// The associated data: `mcplane-audit-payload-v1\n<tenant>\n<request id>:<stage>`.
    pub fn associated_data(tenant: &str, request_id: Uuid, stage: &str) -> Vec<u8> {
        format!("mcplane-audit-payload-v1\n{tenant}\n{request_id}:{stage}").into_bytes()
    }
}

impl BodyKind for AuditEvent {
    const KIND: Kind = Kind::Audit;
}

/// A signed statement of a tenant's audit chain at one point: its size and head hash, signed
/// with the audit service's Ed25519 key. Published on `mcplane.audit.checkpoints.<tenant>`;
/// an auditor holding one can prove an export is the chain it vouched for (nothing modified,
/// inserted, removed or cut off before `tree_size`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Checkpoint {
    pub tenant: String,
    /// Entries covered: the chain's entries 1..=tree_size.
    pub tree_size: u64,
    /// The hash of entry `tree_size`.
    pub head_hash: String,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature, hex, over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// What the signature covers: `mcplane-checkpoint-v1\n<tenant>\n<tree_size>\n<head_hash>\n<at>`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "mcplane-checkpoint-v1\n{}\n{}\n{}\n{}",
            self.tenant,
            self.tree_size,
            self.head_hash,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
        .into_bytes()
    }
}

impl BodyKind for Checkpoint {
    const KIND: Kind = Kind::Checkpoint;
}
