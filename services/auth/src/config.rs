//! The `[auth]` section: where the key file lives and how large a request may be.
//!
//! The key folder defaults to the fleet's data folder so that `mcplane keys create --data DIR`
//! and a running auth service find the same file without further configuration.

use std::path::PathBuf;

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The folder holding `auth/keys.jsonl`; `None` means the fleet's `data_dir`.
    pub keys_dir: Option<PathBuf>,
    /// The largest request `input` accepted, in bytes.
    pub max_input_bytes: usize,
    /// OAuth 2.0 / OIDC bearer tokens, accepted next to API keys when set.
    pub jwt: Option<crate::jwt::JwtConfig>,
    pub rate_limits: crate::limits::LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keys_dir: None,
            max_input_bytes: 64 * 1024,
            jwt: None,
            rate_limits: crate::limits::LimitsConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if let Some(jwt) = &self.jwt {
            jwt.validate(&format!("{section}.jwt"))?;
        }
        self.rate_limits
            .validate(&format!("{section}.rate_limits"))?;
        if self
            .keys_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError::new(
                format!("{section}.keys_dir"),
                "must not be empty (leave it out to use data_dir)",
            ));
        }
        if self.max_input_bytes == 0 {
            return Err(ConfigError::new(
                format!("{section}.max_input_bytes"),
                "must be > 0",
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
    fn defaults_apply_and_errors_name_the_key() {
        let doc = Document::parse("").unwrap();
        assert_eq!(doc.section::<Config>("auth").unwrap(), Config::default());

        let doc = Document::parse("[auth]\nmax_input_bytes = 0\n").unwrap();
        assert_eq!(
            doc.section::<Config>("auth").unwrap_err().key,
            "auth.max_input_bytes"
        );
        let doc = Document::parse("[auth]\nkeys_dir = \"\"\n").unwrap();
        assert_eq!(
            doc.section::<Config>("auth").unwrap_err().key,
            "auth.keys_dir"
        );
        let doc = Document::parse("[auth]\nkeys_dri = \"x\"\n").unwrap();
        assert!(doc.section::<Config>("auth").is_err());
    }
}
