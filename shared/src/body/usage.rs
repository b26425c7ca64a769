//! Model usage events: what a tenant's operators hear about spending.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{BodyKind, Kind};

/// A tenant's spend crossed the soft limit of a budget window; published once per window on
/// `mcplane.usage.<tenant>.budget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BudgetAlert {
    pub tenant: String,
    /// `day` or `month`.
    pub window: String,
    /// The window's period: `2026-11-25` or `2026-11`.
    pub period: String,
    /// Spent so far, in millionths of a US dollar.
    pub spent_micros: u64,
    pub soft_limit_micros: u64,
    pub hard_limit_micros: u64,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
}

impl BodyKind for BudgetAlert {
    const KIND: Kind = Kind::BudgetAlert;
}
