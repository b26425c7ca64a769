//! Grouping rules: which alerts form one group (Alertmanager's `group_by`), where a group's
//! state lives (its partition key), and the CMDB topology that joins groups of dependent
//! services.
//!
//! The partition key is the tenant plus the group labels with `service` replaced by the
//! service's connected component in the CMDB, so that every group an incident could join
//! through the topology is owned by the same partition. The price: a CMDB that is one
//! connected graph puts all its services' alerts (per tenant and other group labels) on one
//! partition; services outside the CMDB still spread by name.

use std::collections::BTreeMap;

use mcplane_shared::topology::Topology;
use mcplane_shared::CanonicalAlert;

/// Alertmanager's `group_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `["..."]`: every label (Alertmanager's `GroupByAll`).
    All,
    /// Canonical fields (`service`, `source`, `severity`, `resource`) or label names.
    Names(Vec<String>),
}

impl GroupBy {
    pub fn from_config(names: &[String]) -> GroupBy {
        if names.iter().any(|n| n == "...") {
            GroupBy::All
        } else {
            GroupBy::Names(names.to_vec())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub group_by: GroupBy,
    pub topology: Topology,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            group_by: GroupBy::Names(vec!["service".to_string()]),
            topology: Topology::default(),
        }
    }
}

/// The value of a `group_by` name for one alert; `None` when the alert has no such label
/// (Alertmanager leaves it out of the group labels).
fn value_of<'a>(alert: &'a CanonicalAlert, name: &str) -> Option<&'a str> {
    match name {
        "service" => Some(alert.service.as_str()),
        "source" => Some(alert.source.as_str()),
        "severity" => Some(alert.severity.as_str()),
        "resource" => alert.resource.as_deref(),
        label => alert.labels.get(label).map(String::as_str),
    }
}

impl Rules {
    /// The alert's group labels (Alertmanager's `getGroupLabels`).
    pub fn group_labels(&self, alert: &CanonicalAlert) -> BTreeMap<String, String> {
        match &self.group_by {
            GroupBy::All => alert.labels.clone(),
            GroupBy::Names(names) => names
                .iter()
                .filter_map(|n| value_of(alert, n).map(|v| (n.clone(), v.to_string())))
                .collect(),
        }
    }

    /// Whether groups of different services can join through the topology.
    pub fn joins_topology(&self) -> bool {
        !self.topology.is_empty()
            && matches!(&self.group_by, GroupBy::Names(n) if n.iter().any(|n| n == "service"))
    }

    /// The key of this alert's partition (see the module docs); stable across replicas.
    pub fn partition_key(&self, alert: &CanonicalAlert) -> String {
        let mut key = alert.tenant.clone();
        let labels = match &self.group_by {
            // Grouping by every label: keep each service's groups together.
            GroupBy::All => BTreeMap::from([("service".to_string(), alert.service.clone())]),
            GroupBy::Names(_) => self.group_labels(alert),
        };
        for (name, value) in &labels {
            let value = if name == "service" {
                self.topology.component(value)
            } else {
                value.as_str()
            };
            key.push('\n');
            key.push_str(name);
            key.push('=');
            key.push_str(value);
        }
        key
    }
}

/// Alertmanager's text form of a label set: `{a="1", b="2"}`, sorted by name.
pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::tests::alert;
    use mcplane_shared::{AlertStatus, Severity};

    fn labelled(labels: &[(&str, &str)]) -> CanonicalAlert {
        let mut a = alert("api", "fp", AlertStatus::Firing, Severity::High);
        a.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        a
    }

    /// Alertmanager's `TestGroupLabels`: only the `group_by` labels, missing ones left out.
    #[test]
    fn group_labels_are_the_group_by_labels() {
        let rules = Rules {
            group_by: GroupBy::from_config(&["a".into(), "b".into(), "z".into()]),
            ..Rules::default()
        };
        let a = labelled(&[("a", "v1"), ("b", "v2"), ("c", "v3")]);
        let expected: BTreeMap<String, String> = [("a", "v1"), ("b", "v2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(rules.group_labels(&a), expected);
        assert_eq!(group_key(&expected), "{a=\"v1\", b=\"v2\"}");
    }

    /// Alertmanager's `TestGroupByAllLabels`: `...` groups by every label.
    #[test]
    fn group_by_all_takes_every_label() {
        let rules = Rules {
            group_by: GroupBy::from_config(&["...".into()]),
            ..Rules::default()
        };
        let a = labelled(&[("a", "v1"), ("b", "v2"), ("c", "v3")]);
        assert_eq!(rules.group_labels(&a), a.labels);
        assert!(!rules.joins_topology());
    }

    #[test]
    fn dependent_services_share_a_partition_key_unrelated_ones_do_not() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cmdb.toml");
        let rules = Rules {
            topology: Topology::load(&path).unwrap(),
            ..Rules::default()
        };
        let key = |service: &str| {
            rules.partition_key(&alert(service, "fp", AlertStatus::Firing, Severity::High))
        };
        assert_eq!(key("payments-db"), key("checkout"));
        assert_ne!(key("payments-db"), key("billing-batch"));
        let mut other_tenant = alert("checkout", "fp", AlertStatus::Firing, Severity::High);
        other_tenant.tenant = "globex".into();
        assert_ne!(rules.partition_key(&other_tenant), key("checkout"));
        assert!(rules.joins_topology());
    }
}
