//! The model catalog query on `mcplane.model.catalog`: which models a caller may have invoked.
//!
//! The gateway asks on the caller's behalf for `GET /v1/models`; the model service answers with
//! the entries the policy in force allows that caller, by the same check its invoke step makes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Principal;

/// The question: the caller the listing is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    pub principal: Principal,
}

/// One model the fleet can route to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogEntry {
    pub id: String,
    /// The configured provider serving it.
    pub provider: String,
    /// `private` or `public_cloud`.
    pub boundary: String,
}

/// The answer: what the caller may use, and the policy version that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogAnswer {
    pub models: Vec<CatalogEntry>,
    pub policy_version: String,
}
