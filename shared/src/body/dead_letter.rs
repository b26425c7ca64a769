//! Dead letters: records a bridge took off an external feed but could never turn into an
//! alert. They are published (and the record's offset committed) so one bad record cannot stall
//! its partition forever, and kept with a stable error code so an operator can see why.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{BodyKind, Kind};
use crate::error::ErrorCode;

/// Where a dead record came from in its feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordOrigin {
    /// `kafka` for the Kafka bridge.
    pub system: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record key as text (lossy UTF-8), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A record that could not become an alert, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// The service that gave up on the record (`kafka-bridge`).
    pub service: String,
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
    pub origin: RecordOrigin,
    /// The record's value as text (lossy UTF-8), at most 64 KiB of it.
    pub payload: String,
    /// Whether `payload` was cut to fit.
    #[serde(default)]
    pub truncated: bool,
}

impl BodyKind for DeadLetter {
    const KIND: Kind = Kind::DeadLetter;
}
