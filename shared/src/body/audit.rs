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

/// One stage's record of one message. Never holds a raw secret or raw payload.
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
    pub at: DateTime<Utc>,
}

impl AuditEvent {
    /// The key that makes an audit event unique: one entry per request and stage.
    pub fn key(&self) -> String {
        format!("{}:{}", self.request_id, self.stage)
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
