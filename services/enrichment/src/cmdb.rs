//! The CMDB: services, their owners and their dependency graph, loaded once from a TOML file.
//!
//! Everything a request needs is computed at load time (the reverse edges, the JSON each
//! service contributes with and without its restricted fields, and one regex that finds service
//! names mentioned in free text), so enriching a request is lookups and clones, never parsing.
//! A file that names an unknown dependency is refused as a whole rather than loaded in part.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Why a CMDB file cannot be used; the message names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdbError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("not valid CMDB TOML: {0}")]
    Parse(String),
    #[error("services[{index}] ({name}): {message}")]
    Entry {
        index: usize,
        name: String,
        message: String,
    },
    #[error("cannot build the service-name matcher: {0}")]
    Matcher(String),
}

/// The file format: `[[services]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CmdbFile {
    #[serde(default)]
    services: Vec<ServiceEntry>,
}

/// One `[[services]]` entry as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub name: String,
    pub owner: String,
    pub team: String,
    pub tier: u8,
    pub description: String,
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Free-form fields only principals with a restricted role may see.
    #[serde(default)]
    pub restricted: BTreeMap<String, String>,
}

/// A service ready to be injected: its entry and its precomputed ordinary fields.
#[derive(Debug, Clone)]
pub struct CmdbService {
    pub entry: ServiceEntry,
    /// Services that depend on this one.
    pub dependents: Vec<String>,
    /// The ordinary (classification "internal") fields, as injected.
    internal: Map<String, Value>,
}

/// A service's context cut down to the fields a caller may read.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoped {
    pub data: Value,
    /// Fields included, in order.
    pub fields: Vec<String>,
    /// Fields left out because the caller may not read them.
    pub withheld: Vec<String>,
    /// Whether any restricted field was included.
    pub restricted: bool,
}

impl CmdbService {
    /// The fields `may_read(name, restricted)` allows; restricted ones under `restricted`.
    /// Only what is allowed is copied, so nothing else can reach the request.
    pub fn scoped(&self, mut may_read: impl FnMut(&str, bool) -> bool) -> Scoped {
        let mut data = Map::with_capacity(self.internal.len() + 1);
        let mut fields = Vec::with_capacity(self.internal.len());
        let mut withheld = Vec::new();
        for (name, value) in &self.internal {
            if may_read(name, false) {
                data.insert(name.clone(), value.clone());
                fields.push(name.clone());
            } else {
                withheld.push(name.clone());
            }
        }
        let mut restricted = Map::new();
        for (name, value) in &self.entry.restricted {
            if may_read(name, true) {
                restricted.insert(name.clone(), Value::String(value.clone()));
                fields.push(name.clone());
            } else {
                withheld.push(name.clone());
            }
        }
        let any_restricted = !restricted.is_empty();
        if any_restricted {
            data.insert("restricted".into(), Value::Object(restricted));
        }
        Scoped {
            data: Value::Object(data),
            fields,
            withheld,
            restricted: any_restricted,
        }
    }
}

/// The loaded CMDB.
#[derive(Debug, Clone, Default)]
pub struct Cmdb {
    services: Vec<CmdbService>,
    /// Lower-cased name to index in `services`.
    by_name: HashMap<String, usize>,
    /// Whole-word, case-insensitive matcher of every service name; `None` for an empty CMDB.
    mentions: Option<Regex>,
}

impl Cmdb {
    /// An empty CMDB: enrichment adds nothing.
    pub fn empty() -> Self {
        Cmdb::default()
    }

    /// Reads and validates a CMDB file.
    pub fn load(path: &Path) -> Result<Self, CmdbError> {
        let text = std::fs::read_to_string(path).map_err(|e| CmdbError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses and validates CMDB TOML text.
    pub fn parse(text: &str) -> Result<Self, CmdbError> {
        let file: CmdbFile =
            toml::from_str(text).map_err(|e| CmdbError::Parse(e.to_string().trim().to_string()))?;
        Self::from_entries(file.services)
    }

    /// Validates entries and precomputes everything a request needs.
    pub fn from_entries(entries: Vec<ServiceEntry>) -> Result<Self, CmdbError> {
        let mut by_name = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let bad = |message: String| CmdbError::Entry {
                index,
                name: entry.name.clone(),
                message,
            };
            validate_entry(entry).map_err(bad)?;
            if by_name
                .insert(entry.name.to_ascii_lowercase(), index)
                .is_some()
            {
                return Err(bad("the name is used by an earlier service".into()));
            }
        }
        let mut dependents: Vec<BTreeSet<String>> = vec![BTreeSet::new(); entries.len()];
        for (index, entry) in entries.iter().enumerate() {
            for dep in &entry.dependencies {
                let Some(&target) = by_name.get(&dep.to_ascii_lowercase()) else {
                    return Err(CmdbError::Entry {
                        index,
                        name: entry.name.clone(),
                        message: format!("dependency `{dep}` is not a service in the CMDB"),
                    });
                };
                if target == index {
                    return Err(CmdbError::Entry {
                        index,
                        name: entry.name.clone(),
                        message: "a service cannot depend on itself".into(),
                    });
                }
                dependents[target].insert(entry.name.clone());
            }
        }
        let services = entries
            .into_iter()
            .zip(dependents)
            .map(|(entry, dependents)| {
                let dependents: Vec<String> = dependents.into_iter().collect();
                let mut internal = Map::new();
                internal.insert("owner".into(), json!(entry.owner));
                internal.insert("team".into(), json!(entry.team));
                internal.insert("tier".into(), json!(entry.tier));
                internal.insert("description".into(), json!(entry.description));
                internal.insert("dependencies".into(), json!(entry.dependencies));
                internal.insert("dependents".into(), json!(dependents));
                if let Some(url) = &entry.runbook {
                    internal.insert("runbook".into(), Value::String(url.clone()));
                }
                CmdbService {
                    entry,
                    dependents,
                    internal,
                }
            })
            .collect::<Vec<_>>();
        let mentions = mention_matcher(services.iter().map(|s| s.entry.name.as_str()))?;
        Ok(Cmdb {
            services,
            by_name,
            mentions,
        })
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The service with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&CmdbService> {
        self.index_of(name).map(|i| &self.services[i])
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        match self.by_name.get(name) {
            Some(i) => Some(*i),
            None => self.by_name.get(&name.to_ascii_lowercase()).copied(),
        }
    }

    /// The CMDB services `text` mentions as whole words, in order of first mention, each once.
    pub fn mentioned_in<'a>(&'a self, text: &str) -> Vec<&'a CmdbService> {
        let Some(matcher) = &self.mentions else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for m in matcher.find_iter(text) {
            if let Some(i) = self.index_of(m.as_str()) {
                if seen.insert(i) {
                    out.push(&self.services[i]);
                }
            }
        }
        out
    }
}

fn validate_entry(entry: &ServiceEntry) -> Result<(), String> {
    let name = entry.name.as_str();
    if name.is_empty() || name.len() > 128 {
        return Err("name must be 1 to 128 characters".into());
    }
    // Names are matched as whole words in request text, so they must be word-like.
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "name must be letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
                .into(),
        );
    }
    for (field, value) in [
        ("owner", &entry.owner),
        ("team", &entry.team),
        ("description", &entry.description),
    ] {
        if value.trim().is_empty() {
            return Err(format!("{field} must not be empty"));
        }
    }
    if let Some(url) = &entry.runbook {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("runbook `{url}` must be an http(s) URL"));
        }
    }
    if let Some(key) = entry.restricted.keys().find(|k| k.trim().is_empty()) {
        return Err(format!("restricted field name `{key}` must not be empty"));
    }
    Ok(())
}

/// One case-insensitive alternation of every name with word boundaries; longer names first so
/// `payments-db` wins over `payments` where both would match at the same place.
fn mention_matcher<'a>(names: impl Iterator<Item = &'a str>) -> Result<Option<Regex>, CmdbError> {
    let mut names: Vec<&str> = names.collect();
    if names.is_empty() {
        return Ok(None);
    }
    names.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    let alternation = names
        .iter()
        .map(|n| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let pattern = format!(r"(?i)(?-u:\b)(?:{alternation})(?-u:\b)");
    regex::RegexBuilder::new(&pattern)
        .size_limit(64 * 1024 * 1024)
        .build()
        .map(Some)
        .map_err(|e| CmdbError::Matcher(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[[services]]
name = "checkout"
owner = "alice@example.com"
team = "commerce"
tier = 1
description = "Checkout API"
runbook = "https://runbooks.example.com/checkout"
dependencies = ["payments", "payments-db"]

[[services]]
name = "payments"
owner = "bob@example.com"
team = "payments"
tier = 1
description = "Payment orchestration"
dependencies = ["payments-db"]

[[services]]
name = "payments-db"
owner = "carol@example.com"
team = "data"
tier = 0
description = "Postgres cluster for payments"

[services.restricted]
db_host = "pg-payments-1.internal:5432"
"#;

    fn sample() -> Cmdb {
        Cmdb::parse(SAMPLE).unwrap()
    }

    #[test]
    fn loads_services_and_computes_dependents() {
        let cmdb = sample();
        assert_eq!(cmdb.len(), 3);
        let db = cmdb.get("payments-db").unwrap();
        assert_eq!(db.dependents, vec!["checkout", "payments"]);
        let public = db.scoped(|_, restricted| !restricted);
        assert!(!public.restricted);
        assert!(public.data.get("restricted").is_none());
        assert_eq!(public.withheld, vec!["db_host"]);
        assert_eq!(public.data["dependents"], json!(["checkout", "payments"]));
        let full = db.scoped(|_, _| true);
        assert!(full.restricted);
        assert_eq!(
            full.data["restricted"]["db_host"],
            json!("pg-payments-1.internal:5432")
        );
        assert_eq!(
            cmdb.get("checkout").unwrap().scoped(|_, _| true).data["runbook"],
            json!("https://runbooks.example.com/checkout")
        );
        assert!(cmdb
            .get("payments")
            .unwrap()
            .scoped(|_, _| true)
            .data
            .get("runbook")
            .is_none());
    }

    #[test]
    fn only_the_fields_allowed_are_copied() {
        let cmdb = sample();
        let db = cmdb.get("payments-db").unwrap();
        let scoped = db.scoped(|name, _| name == "team" || name == "db_host");
        assert_eq!(scoped.fields, vec!["team", "db_host"]);
        assert_eq!(
            scoped.data,
            json!({"team": "data", "restricted": {"db_host": "pg-payments-1.internal:5432"}})
        );
        assert!(scoped.withheld.contains(&"owner".to_string()));
    }

    #[test]
    fn a_service_without_restricted_fields_never_reports_them() {
        let cmdb = sample();
        assert!(!cmdb.get("checkout").unwrap().scoped(|_, _| true).restricted);
    }

    #[test]
    fn unknown_dependency_is_refused_naming_the_entry() {
        let text = SAMPLE.replace(
            r#"dependencies = ["payments-db"]"#,
            r#"dependencies = ["ledger"]"#,
        );
        let err = Cmdb::parse(&text).unwrap_err();
        assert_eq!(
            err,
            CmdbError::Entry {
                index: 1,
                name: "payments".into(),
                message: "dependency `ledger` is not a service in the CMDB".into()
            }
        );
        assert!(err.to_string().contains("services[1] (payments)"), "{err}");
    }

    #[test]
    fn duplicate_self_dependency_and_bad_fields_are_refused() {
        let dup = format!("{SAMPLE}\n[[services]]\nname = \"Checkout\"\nowner = \"x\"\nteam = \"y\"\ntier = 2\ndescription = \"z\"\n");
        assert!(matches!(
            Cmdb::parse(&dup),
            Err(CmdbError::Entry { index: 3, .. })
        ));

        let selfdep = SAMPLE.replace(
            r#"dependencies = ["payments-db"]"#,
            r#"dependencies = ["payments"]"#,
        );
        assert!(Cmdb::parse(&selfdep)
            .unwrap_err()
            .to_string()
            .contains("itself"));

        let bad_runbook = SAMPLE.replace("https://runbooks", "runbooks");
        assert!(Cmdb::parse(&bad_runbook)
            .unwrap_err()
            .to_string()
            .contains("runbook"));

        let bad_name = SAMPLE.replace(r#"name = "checkout""#, r#"name = "check out""#);
        assert!(matches!(
            Cmdb::parse(&bad_name),
            Err(CmdbError::Entry { index: 0, .. })
        ));

        let unknown_key = SAMPLE.replace("tier = 0", "tier = 0\ncolour = \"red\"");
        assert!(matches!(
            Cmdb::parse(&unknown_key),
            Err(CmdbError::Parse(_))
        ));

        let bad_tier = SAMPLE.replace("tier = 0", "tier = 300");
        assert!(matches!(Cmdb::parse(&bad_tier), Err(CmdbError::Parse(_))));
    }

    #[test]
    fn empty_file_is_an_empty_cmdb() {
        let cmdb = Cmdb::parse("").unwrap();
        assert!(cmdb.is_empty());
        assert!(cmdb.mentioned_in("checkout is down").is_empty());
    }

    fn mentioned(cmdb: &Cmdb, text: &str) -> Vec<String> {
        cmdb.mentioned_in(text)
            .into_iter()
            .map(|s| s.entry.name.clone())
            .collect()
    }

    #[test]
    fn mentions_are_whole_words_case_insensitive_in_order() {
        let cmdb = sample();
        assert_eq!(
            mentioned(
                &cmdb,
                "Payments latency is up since checkout deployed; payments again"
            ),
            vec!["payments", "checkout"]
        );
        assert_eq!(mentioned(&cmdb, "CHECKOUT 500s"), vec!["checkout"]);
        assert_eq!(mentioned(&cmdb, "(checkout)."), vec!["checkout"]);
    }

    #[test]
    fn mentions_ignore_names_inside_other_words() {
        let cmdb = sample();
        assert!(mentioned(&cmdb, "checkouts and prepayments and checkout_v2").is_empty());
    }

    #[test]
    fn the_longest_name_wins_at_one_place() {
        let cmdb = sample();
        assert_eq!(
            mentioned(&cmdb, "payments-db connections exhausted"),
            vec!["payments-db"]
        );
        assert_eq!(
            mentioned(&cmdb, "payments-db and payments"),
            vec!["payments-db", "payments"]
        );
    }
}
