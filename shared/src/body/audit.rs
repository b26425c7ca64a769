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
