//! Routing rules and the routing decision: which providers may serve a request, in what order.
//!
//! Rules are versioned configuration: the first rule whose `match` fits the request names the
//! candidate providers and a strategy to order them; the rest of the order is the fallback.
//! Two things hold whatever the rules say: restricted data never goes to a public-cloud
//! provider, and a provider whose circuit is open is skipped. The decision is a pure function
//! of the rules, the providers' health and the request, so the dry-run command, the benchmark
//! and the stage all call the same code, and every decision can explain itself.

use std::collections::BTreeMap;

use mcplane_shared::{Classification, RequestType};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Boundary, ProviderConfig};

/// The rules, as a file's `[model.routing]` or as pushed with `mcplane config push routing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Recorded with every decision (and so in the audit chain).
    pub version: String,
    pub rules: Vec<Rule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            version: "default".into(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: Match,
    #[serde(default)]
    pub strategy: Strategy,
    /// Candidates in priority order; empty means every provider, in configuration order.
    #[serde(default)]
    pub providers: Vec<String>,
    /// For `weighted`: each candidate's share (unlisted candidates weigh 0: fallback only).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// For `cheapest`: the p95 latency a provider must have shown to be preferred.
    #[serde(default)]
    pub latency_slo_ms: Option<u32>,
}

/// What a rule matches; an empty list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    pub request_types: Vec<RequestType>,
    pub tenants: Vec<String>,
    /// Matches a principal holding any of these roles.
    pub roles: Vec<String>,
    pub classifications: Vec<Classification>,
    /// Matches requests that ask for an answer within at most this many milliseconds.
    pub max_latency_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In the listed order.
    #[default]
    Priority,
    /// One candidate by weight (stable per request), the rest in order as fallbacks.
    Weighted,
    /// By observed p95 latency, lowest first (unmeasured providers first, to measure them).
    LowestLatency,
    /// By estimated cost, among those meeting the latency objective first.
    Cheapest,
}

/// What routing needs to know about a request.
#[derive(Debug, Clone)]
pub struct RouteInput<'a> {
    pub id: Uuid,
    pub request_type: RequestType,
    pub tenant: &'a str,
    pub roles: &'a [String],
    pub classification: Classification,
    pub max_latency_ms: Option<u32>,
    pub model: Option<&'a str>,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// A provider as routing sees it at the moment of the decision.
#[derive(Debug, Clone, Copy)]
pub struct ProviderView<'a> {
    pub config: &'a ProviderConfig,
    /// False while its circuit is open.
    pub available: bool,
    pub p95_ms: Option<u32>,
}

/// A provider left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    pub provider: String,
    pub reason: String,
}

/// Which providers serve a request, in order, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The routing version that decided.
    pub version: String,
    /// The rule that matched; `None` when none did (every provider, in order).
    pub rule: Option<String>,
    pub strategy: Strategy,
    /// Provider names in the order they will be tried.
    pub candidates: Vec<String>,
    pub excluded: Vec<Exclusion>,
    /// Indexes into the provider list, matching `candidates`.
    #[serde(skip)]
    pub order: Vec<usize>,
    /// The policy version that decided which models the caller may have invoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

impl Match {
    fn fits(&self, input: &RouteInput<'_>) -> bool {
        (self.request_types.is_empty() || self.request_types.contains(&input.request_type))
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t == input.tenant))
            && (self.roles.is_empty() || self.roles.iter().any(|r| input.roles.contains(r)))
            && (self.classifications.is_empty()
                || self.classifications.contains(&input.classification))
            && self
                .max_latency_ms
                .is_none_or(|limit| input.max_latency_ms.is_some_and(|want| want <= limit))
    }
}

impl RoutingConfig {
    /// Checks the rules against the configured providers; the error is (key, message).
    pub fn validate(&self, providers: &[ProviderConfig]) -> Result<(), (String, String)> {
        if self.version.trim().is_empty() {
            return Err(("version".into(), "must not be empty".into()));
        }
        let known = |name: &str| providers.iter().any(|p| p.name == name);
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("rules[{i}].{field}");
            if rule.name.trim().is_empty() || !names.insert(rule.name.as_str()) {
                return Err((key("name"), "must be non-empty and unique".into()));
            }
            if let Some(bad) = rule.providers.iter().find(|p| !known(p)) {
                return Err((key("providers"), format!("no provider named {bad:?}")));
            }
            if let Some(bad) = rule
                .weights
                .keys()
                .find(|p| !known(p) || (!rule.providers.is_empty() && !rule.providers.contains(p)))
            {
                return Err((
                    key("weights"),
                    format!("{bad:?} is not a candidate of this rule"),
                ));
            }
            if rule.strategy == Strategy::Weighted && rule.weights.values().all(|w| *w == 0) {
                return Err((
                    key("weights"),
                    "a weighted rule needs a positive weight".into(),
                ));
            }
        }
        Ok(())
    }

    /// Decides which providers serve `input`, in order.
    pub fn decide(&self, providers: &[ProviderView<'_>], input: &RouteInput<'_>) -> Decision {
        let rule = self.rules.iter().find(|r| r.matches.fits(input));
        let pool: Vec<usize> = match rule {
            Some(r) if !r.providers.is_empty() => r
                .providers
                .iter()
                .filter_map(|name| providers.iter().position(|p| &p.config.name == name))
                .collect(),
            _ => (0..providers.len()).collect(),
        };
        let mut excluded = Vec::new();
        let mut order = Vec::with_capacity(pool.len());
        for i in pool {
            let p = &providers[i];
            let reason = if input.classification >= Classification::Restricted
                && p.config.boundary() == Boundary::PublicCloud
            {
                Some("restricted data stays inside the boundary: this provider is public cloud")
            } else if !p.available {
                Some("circuit open")
            } else {
                None
            };
            match reason {
                Some(r) => excluded.push(Exclusion {
                    provider: p.config.name.clone(),
                    reason: r.into(),
                }),
                None => order.push(i),
            }
        }
        let strategy = rule.map(|r| r.strategy).unwrap_or_default();
        match (strategy, rule) {
            (Strategy::Priority, _) | (_, None) => {}
            (Strategy::Weighted, Some(r)) => {
                let weight = |i: &usize| {
                    u128::from(*r.weights.get(&providers[*i].config.name).unwrap_or(&0))
                };
                let total: u128 = order.iter().map(weight).sum();
                if total > 0 {
                    let mut pick = input.id.as_u128() % total;
                    if let Some(pos) = order.iter().position(|i| {
                        let w = weight(i);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    }) {
                        let chosen = order.remove(pos);
                        order.insert(0, chosen);
                    }
                }
            }
            (Strategy::LowestLatency, _) => {
                order.sort_by_key(|i| providers[*i].p95_ms.map_or((0, 0), |ms| (1, ms)));
            }
            (Strategy::Cheapest, Some(r)) => {
                let slo = r.latency_slo_ms.or(input.max_latency_ms);
                order.sort_by_key(|i| {
                    let p = &providers[*i];
                    let meets = match (slo, p.p95_ms) {
                        (Some(slo), Some(ms)) => ms <= slo,
                        _ => true,
                    };
                    (
                        !meets,
                        p.config
                            .cost_micros(input.input_tokens, input.output_tokens),
                    )
                });
            }
        }
        if let Some(model) = input.model {
            // The model the client asked for comes first, among the providers allowed to serve it.
            order.sort_by_key(|i| !providers[*i].config.all_models().any(|m| m == model));
        }
        Decision {
            version: self.version.clone(),
            rule: rule.map(|r| r.name.clone()),
            strategy,
            candidates: order
                .iter()
                .map(|i| providers[*i].config.name.clone())
                .collect(),
            excluded,
            order,
            policy_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn provider(name: &str, boundary: Boundary, cost: f64) -> ProviderConfig {
        let mut p = ProviderConfig::local(name);
        p.kind = ProviderKind::Openai;
        p.model = format!("{name}-model");
        p.boundary = Some(boundary);
        p.input_cost_per_mtok = cost;
        p.output_cost_per_mtok = cost;
        p
    }

    fn providers() -> Vec<ProviderConfig> {
        vec![
            provider("cloud-big", Boundary::PublicCloud, 10.0),
            provider("cloud-small", Boundary::PublicCloud, 0.5),
            provider("private", Boundary::Private, 2.0),
        ]
    }

    fn views(ps: &[ProviderConfig]) -> Vec<ProviderView<'_>> {
        ps.iter()
            .map(|config| ProviderView {
                config,
                available: true,
                p95_ms: None,
            })
            .collect()
    }

    fn input(classification: Classification) -> RouteInput<'static> {
        RouteInput {
            id: Uuid::from_u128(7),
            request_type: RequestType::Summarize,
            tenant: "acme",
            roles: &[],
            classification,
            max_latency_ms: None,
            model: None,
            input_tokens: 1000,
            output_tokens: 500,
        }
    }

    fn rules(text: &str) -> RoutingConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn without_rules_every_provider_is_tried_in_order() {
        let ps = providers();
        let d = RoutingConfig::default().decide(&views(&ps), &input(Classification::Internal));
        assert_eq!(d.candidates, ["cloud-big", "cloud-small", "private"]);
        assert_eq!(d.rule, None);
    }

    #[test]
    fn restricted_data_never_goes_to_public_cloud_whatever_the_rules_say() {
        let ps = providers();
        let r = rules("[[rules]]\nname = \"all\"\nproviders = [\"cloud-big\", \"private\"]\n");
        let d = r.decide(&views(&ps), &input(Classification::Restricted));
        assert_eq!(d.candidates, ["private"]);
        assert_eq!(d.excluded[0].provider, "cloud-big");
        assert!(d.excluded[0].reason.contains("restricted"));
    }

    #[test]
    fn open_circuits_are_skipped() {
        let ps = providers();
        let mut v = views(&ps);
        v[0].available = false;
        let d = RoutingConfig::default().decide(&v, &input(Classification::Internal));
        assert_eq!(d.candidates, ["cloud-small", "private"]);
        assert_eq!(d.excluded[0].reason, "circuit open");
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let ps = providers();
        let r = rules(
            "version = \"v7\"\n\
             [[rules]]\nname = \"sre-fast\"\nmatch = { roles = [\"sre\"], max_latency_ms = 500 }\nproviders = [\"cloud-small\"]\n\
             [[rules]]\nname = \"summaries\"\nmatch = { request_types = [\"summarize\"] }\nproviders = [\"private\", \"cloud-big\"]\n",
        );
        let d = r.decide(&views(&ps), &input(Classification::Internal));
        assert_eq!(
            (d.rule.as_deref(), d.version.as_str()),
            (Some("summaries"), "v7")
        );
        assert_eq!(d.candidates, ["private", "cloud-big"]);

        let roles = ["sre".to_string()];
        let mut fast = input(Classification::Internal);
        fast.roles = &roles;
        fast.max_latency_ms = Some(300);
        assert_eq!(
            r.decide(&views(&ps), &fast).rule.as_deref(),
            Some("sre-fast")
        );
        fast.max_latency_ms = Some(900);
        assert_eq!(
            r.decide(&views(&ps), &fast).rule.as_deref(),
            Some("summaries")
        );
    }

    #[test]
    fn weighted_split_follows_the_weights_and_is_stable_per_request() {
        let ps = providers();
        let r = rules(
            "[[rules]]\nname = \"split\"\nstrategy = \"weighted\"\nproviders = [\"cloud-big\", \"cloud-small\"]\nweights = { cloud-big = 1, cloud-small = 3 }\n",
        );
        let mut counts = BTreeMap::new();
        for n in 0..4000u128 {
            let mut i = input(Classification::Internal);
            i.id = Uuid::from_u128(n * 7919);
            let d = r.decide(&views(&ps), &i);
            assert_eq!(d.candidates.len(), 2, "the other stays as the fallback");
            *counts.entry(d.candidates[0].clone()).or_insert(0) += 1;
            assert_eq!(d, r.decide(&views(&ps), &i));
        }
        assert_eq!(counts["cloud-big"], 1000);
        assert_eq!(counts["cloud-small"], 3000);
    }

    #[test]
    fn lowest_latency_and_cheapest_use_observed_p95() {
        let ps = providers();
        let mut v = views(&ps);
        v[0].p95_ms = Some(200);
        v[1].p95_ms = Some(900);
        v[2].p95_ms = Some(400);
        let r = rules("[[rules]]\nname = \"fast\"\nstrategy = \"lowest_latency\"\n");
        let d = r.decide(&v, &input(Classification::Internal));
        assert_eq!(d.candidates, ["cloud-big", "private", "cloud-small"]);

        let r =
            rules("[[rules]]\nname = \"cheap\"\nstrategy = \"cheapest\"\nlatency_slo_ms = 500\n");
        let d = r.decide(&v, &input(Classification::Internal));
        // cloud-small is cheapest but misses the objective: it becomes the last resort.
        assert_eq!(d.candidates, ["private", "cloud-big", "cloud-small"]);
    }

    #[test]
    fn a_requested_model_goes_first_among_allowed_providers() {
        let ps = providers();
        let mut i = input(Classification::Internal);
        i.model = Some("private-model");
        let d = RoutingConfig::default().decide(&views(&ps), &i);
        assert_eq!(d.candidates[0], "private");
    }

    #[test]
    fn validation_names_the_rule_field() {
        let ps = providers();
        let bad = rules("[[rules]]\nname = \"w\"\nstrategy = \"weighted\"\n");
        assert_eq!(bad.validate(&ps).unwrap_err().0, "rules[0].weights");
        let bad = rules(
            "[[rules]]\nname = \"x\"\nproviders = [\"private\"]\nweights = { cloud-big = 1 }\n",
        );
        assert_eq!(bad.validate(&ps).unwrap_err().0, "rules[0].weights");
    }
}
