//! Escalation: which incidents are summarised and published on
//! `mcplane.summaries.<tenant>.<severity>`, decided by the incident's tenant.
//!
//! A managed-service provider's tenants do not agree on what wakes someone up: one pages on
//! every warning, another only on critical. So the fleet-wide `escalate_min_severity` is a
//! default that `[correlator.tenants.<tenant>]` overrides; the decision reads the tenant from
//! the incident (which came from the alert's subject), never from anything an alert says.

use std::collections::BTreeMap;
use std::sync::Arc;

use mcplane_shared::Severity;

/// The minimum severity that escalates, per tenant, with a default for every other tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    default: Severity,
    /// Shared: the timer asks for every incident on every tick, and the policy is cloned per
    /// partition.
    tenants: Arc<BTreeMap<String, Severity>>,
}

impl Default for Escalation {
    /// Everything escalates.
    fn default() -> Self {
        Escalation::at_least(Severity::Info)
    }
}

impl Escalation {
    /// `min` for every tenant.
    pub fn at_least(min: Severity) -> Self {
        Escalation {
            default: min,
            tenants: Arc::default(),
        }
    }

    /// `default` for every tenant but those in `tenants`.
    pub fn with_tenants(default: Severity, tenants: BTreeMap<String, Severity>) -> Self {
        Escalation {
            default,
            tenants: Arc::new(tenants),
        }
    }

    /// The least severe severity that escalates for `tenant`.
    pub fn min_severity(&self, tenant: &str) -> Severity {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether an incident of `tenant` at `severity` escalates. Severity orders most severe
    /// first, so "at or above the minimum" is `<=`.
    pub fn escalates(&self, tenant: &str, severity: Severity) -> bool {
        severity <= self.min_severity(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_override_wins_over_the_default_for_that_tenant_only() {
        let e = Escalation::with_tenants(
            Severity::Warning,
            BTreeMap::from([("quiet".to_string(), Severity::Critical)]),
        );
        assert!(e.escalates("acme", Severity::High));
        assert!(e.escalates("acme", Severity::Warning));
        assert!(!e.escalates("acme", Severity::Info));
        assert!(!e.escalates("quiet", Severity::High));
        assert!(e.escalates("quiet", Severity::Critical));
        assert_eq!(e.min_severity("other"), Severity::Warning);
        assert!(Escalation::default().escalates("any", Severity::Info));
    }
}
