//! The `[correlator]` section: how alerts are keyed onto partitions, which partitions this
//! replica owns, and the grouping and summary timing.
//!
//! `partitions` must be the same on every replica (it decides where an alert's state lives);
//! `owned_partitions` differs per replica so that together they cover every partition once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mcplane_shared::config::{ConfigError, Validate};
use mcplane_shared::Severity;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Partitions alerts are keyed onto by tenant and service.
    pub partitions: u32,
    /// The partitions this replica owns; `None` means all of them. An empty list makes an
    /// ingest-only replica.
    pub owned_partitions: Option<Vec<u32>>,
    /// What makes alerts one group, as Alertmanager's `group_by`: canonical fields (`service`,
    /// `source`, `severity`, `resource`) or label names; `["..."]` groups by all labels.
    pub group_by: Vec<String>,
    /// An alert joins an open incident of its group (or of a dependent service, see
    /// `cmdb_file`) whose last alert arrived within this many seconds.
    pub group_window_secs: u64,
    /// How long after an incident opens before its first summary is asked for, so that a
    /// burst of alerts becomes one summary (Alertmanager's `group_wait`).
    pub group_wait_ms: u64,
    /// How often an incident's alerts are looked at again for a new summary after the first
    /// (Alertmanager's `group_interval`).
    pub group_interval_secs: u64,
    /// An unchanged incident is summarised again after this long (Alertmanager's
    /// `repeat_interval`).
    pub repeat_interval_secs: u64,
    /// Whether alerts resolving (and the incident resolving) are summarised too (Alertmanager's
    /// `send_resolved`).
    pub send_resolved: bool,
    /// An alert changing state this many times within `flap_window_secs` is flapping: its
    /// further changes are counted, not turned into incident updates, until it settles.
    pub flap_threshold: u32,
    pub flap_window_secs: u64,
    /// A CMDB file (`[[services]]` with `name` and `dependencies`, e.g. `examples/cmdb.toml`):
    /// alerts on services that depend on each other join one incident within the window, and
    /// the incident names the probable root service. Every replica must read the same file.
    pub cmdb_file: Option<PathBuf>,
    /// The key the correlator presents to the pipeline when asking for a summary. Without it
    /// summaries are assembled without AI and marked degraded.
    pub service_account_key: Option<String>,
    /// Only incidents at or above this severity are summarised (and so escalated to
    /// `mcplane.summaries.<tenant>.<severity>`), unless their tenant says otherwise below.
    pub escalate_min_severity: Severity,
    /// Per-tenant overrides: `[correlator.tenants.<tenant>] escalate_min_severity = "critical"`.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// How long to wait for the pipeline's answer before publishing a summary assembled
    /// without AI instead.
    pub summary_timeout_secs: u64,
    /// How long the correlator's consumers (ingest, and each partition owner) wait for more
    /// messages when the batch in hand is not full (`bus.batch_size`), as Kafka's `linger.ms`:
    /// an owner's step is one sled write and one flush, ingest publishes and acknowledges a
    /// batch together, so under load fewer, larger batches correlate more alerts per CPU
    /// second (docs/BENCHMARKS.md). At most twice this is added to an alert's way to its
    /// incident, which waits `group_wait_ms` for its summary anyway. 0 takes what has arrived.
    pub linger_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: 8,
            owned_partitions: None,
            group_by: vec!["service".to_string()],
            group_window_secs: 600,
            group_wait_ms: 2000,
            group_interval_secs: 300,
            repeat_interval_secs: 4 * 3600,
            send_resolved: true,
            flap_threshold: 4,
            flap_window_secs: 600,
            cmdb_file: None,
            service_account_key: None,
            escalate_min_severity: Severity::Info,
            tenants: BTreeMap::new(),
            summary_timeout_secs: 120,
            linger_ms: 10,
        }
    }
}

/// One tenant's `[correlator.tenants.<tenant>]` table; what it leaves out, the fleet-wide
/// setting decides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    pub escalate_min_severity: Option<Severity>,
}

impl Config {
    /// The partitions this replica runs, sorted.
    pub fn owned(&self) -> Vec<u32> {
        match &self.owned_partitions {
            Some(list) => {
                let mut list = list.clone();
                list.sort_unstable();
                list
            }
            None => (0..self.partitions).collect(),
        }
    }

    /// The escalation thresholds: the fleet-wide one and each tenant's override.
    pub fn escalation(&self) -> crate::escalation::Escalation {
        let tenants = self
            .tenants
            .iter()
            .filter_map(|(t, c)| c.escalate_min_severity.map(|s| (t.clone(), s)))
            .collect();
        crate::escalation::Escalation::with_tenants(self.escalate_min_severity, tenants)
    }
}

/// The longest `linger_ms`: beyond a second it only delays alerts.
pub const MAX_LINGER_MS: u64 = 1000;

/// The most partitions a fleet may have (each is a consumer and a sled folder).
pub const MAX_PARTITIONS: u32 = 1024;

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(ConfigError::new(
                key("partitions"),
                format!("must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        if let Some(owned) = &self.owned_partitions {
            let mut seen = std::collections::BTreeSet::new();
            for p in owned {
                if *p >= self.partitions {
                    return Err(ConfigError::new(
                        key("owned_partitions"),
                        format!(
                            "partition {p} does not exist (partitions = {})",
                            self.partitions
                        ),
                    ));
                }
                if !seen.insert(*p) {
                    return Err(ConfigError::new(
                        key("owned_partitions"),
                        format!("partition {p} is listed twice"),
                    ));
                }
            }
        }
        if self.linger_ms > MAX_LINGER_MS {
            return Err(ConfigError::new(
                key("linger_ms"),
                format!("must be at most {MAX_LINGER_MS}"),
            ));
        }
        if self.group_window_secs == 0 {
            return Err(ConfigError::new(key("group_window_secs"), "must be > 0"));
        }
        if self.group_wait_ms > 3_600_000 {
            return Err(ConfigError::new(
                key("group_wait_ms"),
                "must be at most 3600000 (one hour)",
            ));
        }
        if self.group_by.is_empty()
            || self
                .group_by
                .iter()
                .any(|g| g.trim().is_empty() || (g == "..." && self.group_by.len() > 1))
        {
            return Err(ConfigError::new(
                key("group_by"),
                "must list field or label names, or be [\"...\"] alone",
            ));
        }
        if self.group_interval_secs == 0 {
            return Err(ConfigError::new(key("group_interval_secs"), "must be > 0"));
        }
        if self.repeat_interval_secs == 0 {
            return Err(ConfigError::new(key("repeat_interval_secs"), "must be > 0"));
        }
        if self.flap_threshold < 2 {
            return Err(ConfigError::new(
                key("flap_threshold"),
                "must be at least 2",
            ));
        }
        if self.flap_window_secs == 0 {
            return Err(ConfigError::new(key("flap_window_secs"), "must be > 0"));
        }
        if let Some(path) = &self.cmdb_file {
            mcplane_shared::topology::Topology::load(path)
                .map_err(|e| ConfigError::new(key("cmdb_file"), e))?;
        }
        for (tenant, overrides) in &self.tenants {
            // A tenant that can never appear in a subject would be a silent no-op.
            if mcplane_shared::subjects::validate_token(tenant).is_err() || tenant == "*" {
                return Err(ConfigError::new(
                    key(&format!("tenants.{tenant}")),
                    "is not a valid tenant name (lowercase letters, digits, '-' and '_')",
                ));
            }
            if overrides == &TenantConfig::default() {
                return Err(ConfigError::new(
                    key(&format!("tenants.{tenant}")),
                    "sets nothing; give escalate_min_severity or remove the table",
                ));
            }
        }
        if self.summary_timeout_secs == 0 {
            return Err(ConfigError::new(key("summary_timeout_secs"), "must be > 0"));
        }
        if self
            .service_account_key
            .as_ref()
            .is_some_and(|k| k.trim().is_empty())
        {
            return Err(ConfigError::new(
                key("service_account_key"),
                "must not be empty (leave it out to summarise without AI)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    fn err(toml: &str) -> String {
        Document::parse(toml)
            .unwrap()
            .section::<Config>("correlator")
            .unwrap_err()
            .key
    }

    #[test]
    fn defaults_apply() {
        let c = Document::parse("")
            .unwrap()
            .section::<Config>("correlator")
            .unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.owned(), (0..8).collect::<Vec<_>>());
        let c = Document::parse(
            "[correlator]\nescalate_min_severity = \"high\"\nowned_partitions = [3, 1]\n",
        )
        .unwrap()
        .section::<Config>("correlator")
        .unwrap();
        assert_eq!(c.escalate_min_severity, Severity::High);
        assert_eq!(c.owned(), vec![1, 3]);
    }

    #[test]
    fn tenant_thresholds_override_the_default_for_their_tenant() {
        let c = Document::parse(
            "[correlator]\nescalate_min_severity = \"warning\"\n\
             [correlator.tenants.globex]\nescalate_min_severity = \"critical\"\n",
        )
        .unwrap()
        .section::<Config>("correlator")
        .unwrap();
        let e = c.escalation();
        assert_eq!(e.min_severity("globex"), Severity::Critical);
        assert_eq!(e.min_severity("acme"), Severity::Warning);
    }

    #[test]
    fn tenant_threshold_errors_name_the_key() {
        assert_eq!(
            err("[correlator.tenants.globex]\nescalate_min_severity = \"loud\"\n"),
            "correlator.tenants.globex.escalate_min_severity"
        );
        assert!(
            err("[correlator.tenants.globex]\nescalate_min_severty = \"high\"\n")
                .starts_with("correlator.tenants.globex")
        );
        assert_eq!(
            err("[correlator.tenants.\"Not A Tenant\"]\nescalate_min_severity = \"high\"\n"),
            "correlator.tenants.Not A Tenant"
        );
        assert_eq!(
            err("[correlator.tenants.globex]\n"),
            "correlator.tenants.globex"
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err("[correlator]\npartitions = 0\n"),
            "correlator.partitions"
        );
        assert_eq!(
            err("[correlator]\nlinger_ms = 1001\n"),
            "correlator.linger_ms"
        );
        assert_eq!(
            err("[correlator]\nowned_partitions = [8]\n"),
            "correlator.owned_partitions"
        );
        assert_eq!(
            err("[correlator]\nowned_partitions = [1, 1]\n"),
            "correlator.owned_partitions"
        );
        assert_eq!(
            err("[correlator]\ngroup_window_secs = 0\n"),
            "correlator.group_window_secs"
        );
        assert_eq!(
            err("[correlator]\nservice_account_key = \" \"\n"),
            "correlator.service_account_key"
        );
        assert_eq!(
            err("[correlator]\nescalate_min_severity = \"loud\"\n"),
            "correlator.escalate_min_severity"
        );
        assert!(err("[correlator]\ngroup_windw_secs = 1\n").starts_with("correlator"));
        assert_eq!(err("[correlator]\ngroup_by = []\n"), "correlator.group_by");
        assert_eq!(
            err("[correlator]\ngroup_by = [\"...\", \"service\"]\n"),
            "correlator.group_by"
        );
        assert_eq!(
            err("[correlator]\nflap_threshold = 1\n"),
            "correlator.flap_threshold"
        );
        assert_eq!(
            err("[correlator]\ncmdb_file = \"/nonexistent/cmdb.toml\"\n"),
            "correlator.cmdb_file"
        );
    }
}
