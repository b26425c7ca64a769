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
    /// The chain store's page cache (sled's), in MiB: what a busy audit worker's memory grows
    /// towards. sled's own default is 1024; appends touch only each tenant's last pages and the
    /// index, so 64 bounds memory without slowing them (even at 16 the request pipeline's
    /// saturation was unchanged, `docs/BENCHMARKS.md`). Offline reads keep sled's default.
    pub cache_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rebuild_on_empty: true,
            checkpoint_interval_secs: 60,
            signing_key_file: None,
            cache_mib: 64,
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
        if !(1..=1 << 20).contains(&self.cache_mib) {
            return Err(ConfigError::new(
                format!("{section}.cache_mib"),
                "must be between 1 and 1048576 (MiB)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn defaults_and_errors_name_the_key() {
        let doc = Document::parse("[audit]\n").unwrap();
        assert_eq!(doc.section::<Config>("audit").unwrap(), Config::default());
        let doc = Document::parse("[audit]\ncache_mib = 64\n").unwrap();
        assert_eq!(doc.section::<Config>("audit").unwrap().cache_mib, 64);
        for (text, bad_key) in [
            ("[audit]\ncache_mib = 0\n", "audit.cache_mib"),
            (
                "[audit]\ncheckpoint_interval_secs = 0\n",
                "audit.checkpoint_interval_secs",
            ),
        ] {
            let doc = Document::parse(text).unwrap();
            assert_eq!(
                doc.section::<Config>("audit").unwrap_err().key,
                bad_key,
                "{text}"
            );
        }
    }
}
