//! The `[redaction]` section: which entity types to find, what to do with each (per data
//! classification), who may see tokenised originals again, what blocks a model answer, and
//! per-tenant custom patterns, allow-lists and directory names.
//!
//! Every built-in type is on by default. The list may be narrowed (a tenant that must see IP
//! addresses in answers, say) but not emptied: a client can never skip redaction, and an empty
//! list would be exactly that by configuration. Personal data is tokenised by default (the
//! model still sees that two mentions are the same person) and credentials are masked; nobody
//! gets an original back unless `detokenize_roles` says so.

use std::collections::BTreeMap;

use mcplane_shared::config::{ConfigError, Validate};
use mcplane_shared::subjects::validate_token;
use mcplane_shared::Classification;
use serde::Deserialize;

use crate::detectors::{EntityClass, EntityType};

/// What happens to a found entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `[REDACTED:EMAIL]`: gone for good.
    Mask,
    /// `[EMAIL:3f9a1c0d2b7e]`: a keyed hash, equal for equal values within a tenant (so a
    /// model can still count distinct users) and meaningless across tenants.
    Hash,
    /// `<EMAIL_3>`: the model sees a placeholder; authorised clients get the original back.
    Tokenize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Types to find: built-in names (`EMAIL`, `AWS_ACCESS_KEY`, …) or groups (`PII`,
    /// `SECRETS`; `TOKEN` is an old name for `SECRETS`), case-insensitive.
    pub enabled_types: Vec<String>,
    /// Minimum score (0-1) for a candidate to count; context words add 0.35.
    pub score_threshold: f32,
    /// Action by type, group (`PII`, `SECRETS`) or `*`; the defaults are tokenise for PII and
    /// mask for secrets.
    pub actions: BTreeMap<String, Action>,
    /// Overrides of `actions` by the request's classification (`public`, `internal`,
    /// `confidential`, `restricted`), same keys.
    pub classification_actions: BTreeMap<String, BTreeMap<String, Action>>,
    /// Roles that get tokenised originals back, by type or `*`. Empty: nobody does.
    pub detokenize_roles: BTreeMap<String, Vec<String>>,
    /// Key of the keyed hash (any string, at least 16 bytes); required when an action is `hash`.
    pub hash_key: String,
    /// Types whose presence in a model answer blocks it (`output_blocked`) instead of being
    /// masked; default `SECRETS`.
    pub block_output: Vec<String>,
    /// Context fields (object keys, at any depth) whose values never reach the model; an
    /// answer that repeats one of them is blocked.
    pub restricted_fields: Vec<String>,
    /// Exact strings never reported (a support address printed in every ticket).
    pub allow: Vec<String>,
    /// People known to the directory or CMDB, found by dictionary match (`PERSON`).
    pub person_names: Vec<String>,
    /// Extra patterns for every tenant.
    pub patterns: Vec<CustomPattern>,
    /// Per-tenant additions, by tenant id.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Keep the redacted input and the checked answer with the audit entries of the two
    /// redaction steps, sealed with the tenant's audit key (see `mcplane_shared::tenant_keys`).
    pub audit_payloads: bool,
    /// Folder of the tenants' audit keys (`<tenant>.key`); default `data_dir/audit/tenant-keys`.
    /// `MCPLANE_AUDIT_KEY_<TENANT>` overrides a tenant's file.
    pub audit_keys_dir: Option<std::path::PathBuf>,
}

/// A configured pattern: its matches are reported as the entity `name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Upper-case entity name (`EMPLOYEE_ID`), used in tokens, masks and counts.
    pub name: String,
    /// A regex (Rust syntax, ASCII classes).
    pub regex: String,
    /// Keywords (case-insensitive) one of which must be in a text before the regex runs;
    /// without keywords the regex runs on every text.
    #[serde(default)]
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    pub allow: Vec<String>,
    pub person_names: Vec<String>,
    pub patterns: Vec<CustomPattern>,
    /// This tenant's own hash key (bring your own); otherwise one derived from `hash_key`.
    pub hash_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled_types: EntityType::ALL
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            score_threshold: 0.5,
            actions: BTreeMap::new(),
            classification_actions: BTreeMap::new(),
            detokenize_roles: BTreeMap::new(),
            hash_key: String::new(),
            block_output: vec!["SECRETS".into()],
            restricted_fields: Vec::new(),
            allow: Vec::new(),
            person_names: Vec::new(),
            patterns: Vec::new(),
            tenants: BTreeMap::new(),
            audit_payloads: true,
            audit_keys_dir: None,
        }
    }
}

/// The most rules one engine may hold (the trigger set is a 128-bit mask).
pub const MAX_RULES: usize = 128;

impl Config {
    /// The action for `kind` in a request of `classification`: the classification's override
    /// by type, group, `*`, then the same in `actions`, then the default.
    pub fn action(&self, kind: EntityType, classification: Classification) -> Action {
        let group = match kind.class() {
            EntityClass::Pii => "PII",
            EntityClass::Secret => "SECRETS",
        };
        let lookup = |map: &BTreeMap<String, Action>| {
            [kind.as_str(), group, "*"].iter().find_map(|k| {
                map.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, a)| *a)
            })
        };
        self.classification_actions
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(classification_name(classification)))
            .and_then(|(_, map)| lookup(map))
            .or_else(|| lookup(&self.actions))
            .unwrap_or(match kind.class() {
                EntityClass::Pii => Action::Tokenize,
                EntityClass::Secret => Action::Mask,
            })
    }

    /// Whether a principal with `roles` gets originals of `kind` back. Credentials never are.
    pub fn may_detokenize(&self, kind_name: &str, roles: &[String]) -> bool {
        if EntityType::from_name(kind_name).is_some_and(|k| k.class() == EntityClass::Secret) {
            return false;
        }
        self.detokenize_roles
            .iter()
            .filter(|(k, _)| k.as_str() == "*" || k.eq_ignore_ascii_case(kind_name))
            .any(|(_, allowed)| allowed.iter().any(|r| roles.contains(r)))
    }

    fn uses_hash(&self) -> bool {
        self.actions.values().any(|a| *a == Action::Hash)
            || self
                .classification_actions
                .values()
                .flat_map(|m| m.values())
                .any(|a| *a == Action::Hash)
    }

    /// Every custom name configured anywhere (for validating action keys).
    fn custom_names(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .chain(self.tenants.values().flat_map(|t| t.patterns.iter()))
            .map(|p| p.name.as_str())
    }

    fn known_key(&self, key: &str) -> bool {
        key == "*"
            || EntityType::expand(key).is_some()
            || key.eq_ignore_ascii_case(RESTRICTED)
            || self.custom_names().any(|n| n.eq_ignore_ascii_case(key))
    }
}

/// The entity name of a restricted field's value.
pub const RESTRICTED: &str = "RESTRICTED";

pub fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Public => "public",
        Classification::Internal => "internal",
        Classification::Confidential => "confidential",
        Classification::Restricted => "restricted",
    }
}

fn validate_patterns(patterns: &[CustomPattern], key: &str) -> Result<(), ConfigError> {
    for (i, p) in patterns.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && EntityType::expand(&p.name).is_none()
            && p.name != RESTRICTED;
        if !name_ok {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!(
                    "`{}` must be 1-32 characters of [A-Z0-9_] and not a built-in type",
                    p.name
                ),
            ));
        }
        if let Err(e) = regex::RegexBuilder::new(&p.regex).unicode(false).build() {
            return Err(ConfigError::new(format!("{at}.regex"), e.to_string()));
        }
        if p.regex.is_empty() || regex::Regex::new(&p.regex).is_ok_and(|r| r.is_match("")) {
            return Err(ConfigError::new(
                format!("{at}.regex"),
                "must not match the empty string",
            ));
        }
        if p.keywords.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::new(
                format!("{at}.keywords"),
                "keywords must not be empty",
            ));
        }
    }
    Ok(())
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if self.enabled_types.is_empty() {
            return Err(ConfigError::new(
                key("enabled_types"),
                "must name at least one type; redaction cannot be switched off",
            ));
        }
        if let Some(bad) = self
            .enabled_types
            .iter()
            .find(|t| EntityType::expand(t).is_none())
        {
            return Err(ConfigError::new(
                key("enabled_types"),
                format!(
                    "unknown type `{bad}` (known: {}, PII, SECRETS)",
                    known_names()
                ),
            ));
        }
        if !(self.score_threshold > 0.0 && self.score_threshold <= 1.0) {
            return Err(ConfigError::new(
                key("score_threshold"),
                "must be in (0, 1]",
            ));
        }
        for k in self.actions.keys().chain(self.detokenize_roles.keys()) {
            if !self.known_key(k) {
                return Err(ConfigError::new(
                    if self.actions.contains_key(k) {
                        key("actions")
                    } else {
                        key("detokenize_roles")
                    },
                    format!("unknown type `{k}`"),
                ));
            }
        }
        for (class, map) in &self.classification_actions {
            if !["public", "internal", "confidential", "restricted"]
                .contains(&class.to_ascii_lowercase().as_str())
            {
                return Err(ConfigError::new(
                    key("classification_actions"),
                    format!("unknown classification `{class}` (public, internal, confidential, restricted)"),
                ));
            }
            if let Some(k) = map.keys().find(|k| !self.known_key(k)) {
                return Err(ConfigError::new(
                    format!("{section}.classification_actions.{class}"),
                    format!("unknown type `{k}`"),
                ));
            }
        }
        if self.uses_hash() && self.hash_key.len() < 16 {
            return Err(ConfigError::new(
                key("hash_key"),
                "an action is `hash`: set a key of at least 16 bytes",
            ));
        }
        if let Some(bad) = self.block_output.iter().find(|t| !self.known_key(t)) {
            return Err(ConfigError::new(
                key("block_output"),
                format!("unknown type `{bad}`"),
            ));
        }
        validate_patterns(&self.patterns, &key("patterns"))?;
        for (tenant, t) in &self.tenants {
            if validate_token(tenant).is_err() {
                return Err(ConfigError::new(
                    format!("{section}.tenants.{tenant}"),
                    "tenant ids are 1-64 characters of [a-z0-9_-]",
                ));
            }
            validate_patterns(&t.patterns, &format!("{section}.tenants.{tenant}.patterns"))?;
            if t.hash_key.as_ref().is_some_and(|k| k.len() < 16) {
                return Err(ConfigError::new(
                    format!("{section}.tenants.{tenant}.hash_key"),
                    "must be at least 16 bytes",
                ));
            }
            if self.patterns.len() + t.patterns.len() + crate::detectors::builtin_rules().len()
                > MAX_RULES
            {
                return Err(ConfigError::new(
                    format!("{section}.tenants.{tenant}.patterns"),
                    format!("too many patterns (at most {MAX_RULES} rules in all)"),
                ));
            }
        }
        Ok(())
    }
}

fn known_names() -> String {
    EntityType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    #[test]
    fn every_type_is_enabled_by_default() {
        let doc = Document::parse("").unwrap();
        let cfg = doc.section::<Config>("redaction").unwrap();
        assert_eq!(cfg.enabled_types.len(), EntityType::ALL.len());
        let doc = Document::parse("[redaction]\n").unwrap();
        assert_eq!(
            doc.section::<Config>("redaction").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, bad_key) in [
            (
                "[redaction]\nenabled_types = []\n",
                "redaction.enabled_types",
            ),
            (
                "[redaction]\nenabled_types = [\"EMAIL\", \"SSNX\"]\n",
                "redaction.enabled_types",
            ),
            (
                "[redaction]\nactions = { EMAIL = \"hash\" }\n",
                "redaction.hash_key",
            ),
            (
                "[redaction]\nactions = { NOPE = \"mask\" }\n",
                "redaction.actions",
            ),
            (
                "[redaction]\nscore_threshold = 0\n",
                "redaction.score_threshold",
            ),
            (
                "[[redaction.patterns]]\nname = \"lower\"\nregex = \"x\"\n",
                "redaction.patterns[0].name",
            ),
            (
                "[[redaction.patterns]]\nname = \"EMP\"\nregex = \"(\"\n",
                "redaction.patterns[0].regex",
            ),
            (
                "[[redaction.tenants.acme.patterns]]\nname = \"EMP\"\nregex = \"a*\"\n",
                "redaction.tenants.acme.patterns[0].regex",
            ),
        ] {
            let doc = Document::parse(text).unwrap();
            assert_eq!(
                doc.section::<Config>("redaction").unwrap_err().key,
                bad_key,
                "{text}"
            );
        }
        let doc = Document::parse("[redaction]\nenabled = []\n").unwrap();
        assert!(doc.section::<Config>("redaction").is_err());
        let doc =
            Document::parse("[redaction]\nenabled_types = [\"email\", \"card\", \"secrets\"]\n")
                .unwrap();
        assert!(doc.section::<Config>("redaction").is_ok());
    }

    #[test]
    fn actions_resolve_by_classification_then_type_then_group() {
        let doc = Document::parse(concat!(
            "[redaction]\nhash_key = \"0123456789abcdef\"\n",
            "actions = { PII = \"hash\", PHONE = \"mask\" }\n",
            "classification_actions = { restricted = { \"*\" = \"mask\" } }\n",
            "detokenize_roles = { EMAIL = [\"support\"], \"*\" = [\"dpo\"] }\n",
        ))
        .unwrap();
        let cfg = doc.section::<Config>("redaction").unwrap();
        assert_eq!(
            cfg.action(EntityType::Email, Classification::Internal),
            Action::Hash
        );
        assert_eq!(
            cfg.action(EntityType::Phone, Classification::Internal),
            Action::Mask
        );
        assert_eq!(
            cfg.action(EntityType::Jwt, Classification::Internal),
            Action::Mask
        );
        assert_eq!(
            cfg.action(EntityType::Email, Classification::Restricted),
            Action::Mask
        );
        assert_eq!(
            Config::default().action(EntityType::Email, Classification::Internal),
            Action::Tokenize
        );
        assert!(cfg.may_detokenize("EMAIL", &["support".into()]));
        assert!(!cfg.may_detokenize("PHONE", &["support".into()]));
        assert!(cfg.may_detokenize("PHONE", &["dpo".into()]));
        assert!(
            !cfg.may_detokenize("JWT", &["dpo".into()]),
            "credentials never come back"
        );
    }
}
