//! The `[redaction]` section: which entity types to mask.
//!
//! Every type is on by default. The list may be narrowed (a tenant that must see IP addresses
//! in answers, say) but not emptied: a client can never skip redaction, and an empty list would
//! be exactly that by configuration.

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

use crate::detectors::EntityType;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Types to mask: any of `EMAIL`, `PHONE`, `IP`, `CARD`, `TOKEN` (case-insensitive).
    pub enabled_types: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled_types: EntityType::ALL
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = format!("{section}.enabled_types");
        if self.enabled_types.is_empty() {
            return Err(ConfigError::new(
                key,
                "must name at least one type; redaction cannot be switched off",
            ));
        }
        if let Some(bad) = self
            .enabled_types
            .iter()
            .find(|t| EntityType::from_name(t).is_none())
        {
            return Err(ConfigError::new(
                key,
                format!("unknown type `{bad}` (known: EMAIL, PHONE, IP, CARD, TOKEN)"),
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
    fn every_type_is_enabled_by_default() {
        let doc = Document::parse("").unwrap();
        let cfg = doc.section::<Config>("redaction").unwrap();
        assert_eq!(
            cfg.enabled_types,
            vec!["EMAIL", "PHONE", "IP", "CARD", "TOKEN"]
        );
        let doc = Document::parse("[redaction]\n").unwrap();
        assert_eq!(
            doc.section::<Config>("redaction").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        for text in [
            "[redaction]\nenabled_types = []\n",
            "[redaction]\nenabled_types = [\"EMAIL\", \"SSN\"]\n",
        ] {
            let doc = Document::parse(text).unwrap();
            assert_eq!(
                doc.section::<Config>("redaction").unwrap_err().key,
                "redaction.enabled_types",
                "{text}"
            );
        }
        let doc = Document::parse("[redaction]\nenabled = []\n").unwrap();
        assert!(doc.section::<Config>("redaction").is_err());
        let doc = Document::parse("[redaction]\nenabled_types = [\"email\", \"card\"]\n").unwrap();
        assert!(doc.section::<Config>("redaction").is_ok());
    }
}
