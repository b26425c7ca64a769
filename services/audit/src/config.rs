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
    /// How often each tenant whose chain grew gets a new signed checkpoint.
    pub checkpoint_interval_secs: u64,
    /// The Ed25519 signing seed (hex); default `data_dir/audit/signing.key`, created if absent.
    pub signing_key_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rebuild_on_empty: true,
            checkpoint_interval_secs: 60,
            signing_key_file: None,
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.checkpoint_interval_secs == 0 {
            return Err(ConfigError::new(
                format!("{section}.checkpoint_interval_secs"),
                "must be > 0",
            ));
        }
        Ok(())
    }
}
