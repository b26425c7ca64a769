//! The `[audit]` section.
//!
//! The audit service has little to tune: the chain lives under `data_dir/audit/chain` and is
//! rebuilt from the `MCPLANE_AUDIT` stream when that folder is lost.

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Replay the whole audit stream when the chain folder is empty but the consumer has
    /// progress (a replica that lost its disk). On by default; turn off only to start a new
    /// chain deliberately.
    pub rebuild_on_empty: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rebuild_on_empty: true,
        }
    }
}

impl Validate for Config {
    fn validate(&self, _section: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}
