//! The `[enrichment]` section: where the CMDB lives. Who may read which of its services and
//! fields is the policy's to say (`[policy]`, `mcplane config push policy`).
//!
//! Validation loads the CMDB file itself, so a broken file (an unknown dependency, a typo in a
//! key) stops the fleet at start-up with the entry named, not at the first request.

use std::path::PathBuf;

use mcplane_shared::config::{ConfigError, Validate};
use serde::Deserialize;

use crate::cmdb::Cmdb;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The CMDB TOML file; `None` means an empty CMDB (requests pass through unenriched).
    pub cmdb_file: Option<PathBuf>,
    /// Resolved incidents remembered per tenant and service for the `incidents` history
    /// source (the newest are kept); 0 turns history off.
    pub history_per_service: usize,
}

/// The most past incidents kept (and so injected) per service.
pub const MAX_HISTORY_PER_SERVICE: usize = 50;

impl Default for Config {
    fn default() -> Self {
        Config {
            cmdb_file: None,
            history_per_service: 5,
        }
    }
}

impl Config {
    /// Loads the CMDB this configuration names; errors name `<section>.cmdb_file`.
    pub fn load_cmdb(&self, section: &str) -> Result<Cmdb, ConfigError> {
        match &self.cmdb_file {
            None => Ok(Cmdb::empty()),
            Some(path) => Cmdb::load(path).map_err(|e| {
                ConfigError::new(
                    format!("{section}.cmdb_file"),
                    format!("{}: {e}", path.display()),
                )
            }),
        }
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self
            .cmdb_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::new(
                format!("{section}.cmdb_file"),
                "must not be empty (leave it out for an empty CMDB)",
            ));
        }
        if self.history_per_service > MAX_HISTORY_PER_SERVICE {
            return Err(ConfigError::new(
                format!("{section}.history_per_service"),
                format!("must be at most {MAX_HISTORY_PER_SERVICE} (0 turns history off)"),
            ));
        }
        self.load_cmdb(section).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn defaults_apply() {
        let doc = Document::parse("").unwrap();
        let cfg = doc.section::<Config>("enrichment").unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn errors_name_the_key() {
        let doc = Document::parse("[enrichment]\ncmdb_file = \"\"\n").unwrap();
        assert_eq!(
            doc.section::<Config>("enrichment").unwrap_err().key,
            "enrichment.cmdb_file"
        );
        // Role lists moved to the policy; an old file saying so is told, not ignored.
        let doc = Document::parse("[enrichment]\nrestricted_roles = [\"sre\"]\n").unwrap();
        assert!(doc.section::<Config>("enrichment").is_err());
        let doc = Document::parse("[enrichment]\ncmdb = \"x\"\n").unwrap();
        assert!(doc.section::<Config>("enrichment").is_err());
        let doc = Document::parse("[enrichment]\nhistory_per_service = 51\n").unwrap();
        assert_eq!(
            doc.section::<Config>("enrichment").unwrap_err().key,
            "enrichment.history_per_service"
        );
    }

    #[test]
    fn a_missing_or_broken_cmdb_file_fails_validation_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let doc = Document::parse(&format!(
            "[enrichment]\ncmdb_file = {:?}\n",
            missing.display()
        ))
        .unwrap();
        assert_eq!(
            doc.section::<Config>("enrichment").unwrap_err().key,
            "enrichment.cmdb_file"
        );

        let broken = dir.path().join("cmdb.toml");
        std::fs::write(
            &broken,
            "[[services]]\nname = \"web\"\nowner = \"a\"\nteam = \"b\"\ntier = 1\n\
             description = \"c\"\ndependencies = [\"ghost\"]\n",
        )
        .unwrap();
        let doc = Document::parse(&format!(
            "[enrichment]\ncmdb_file = {:?}\n",
            broken.display()
        ))
        .unwrap();
        let err = doc.section::<Config>("enrichment").unwrap_err();
        assert_eq!(err.key, "enrichment.cmdb_file");
        assert!(err.message.contains("services[0] (web)"), "{err}");
        assert!(err.message.contains("ghost"), "{err}");
    }

    #[test]
    fn the_example_cmdb_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cmdb.toml");
        let cmdb = Cmdb::load(&path).unwrap();
        assert!(cmdb.len() >= 8);
        assert!(cmdb.get("payments-db").is_some());
    }
}
