//! The enrich step: adds the CMDB context of every service a request names or mentions, cut
//! down to what the principal may read.
//!
//! Context a principal may not see must never enter the request, because every later stage
//! (and the model) sees whatever is in the envelope: so the stage asks the policy first whether
//! the principal may read the CMDB at all, then which of the services, then which fields, and
//! copies only those. No prompt can elicit a field that was never injected. The step is pure
//! and synchronous; the shared pipeline loop does the ledger, forwarding and audit around it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::policy::{Action, PolicyEngine, Resource};
use mcplane_shared::{
    Classification, ContextItem, Envelope, ErrorBody, ErrorCode, Exchange, Principal, Step,
};
use serde_json::json;

use crate::cmdb::{Cmdb, CmdbService};
use crate::history::{self, HistoryIndex};

/// The data source name on injected context items, in policies and in audit entries.
pub const SOURCE: &str = "cmdb";

/// What the enrich step needs for every request.
#[derive(Clone)]
pub struct EnrichStage {
    pub cmdb: Cmdb,
    pub policy: LivePolicy,
    /// The `incidents` history source; `None` when `history_per_service = 0`.
    pub history: Option<Arc<HistoryIndex>>,
}

/// What the history step injected or withheld, for the audit entry.
#[derive(Default)]
struct HistoryDetail {
    services: Vec<String>,
    incidents: usize,
    withheld_source: bool,
    withheld_services: Vec<String>,
}

/// Field decisions for one request: a field's answer does not change between services.
struct FieldScope<'a> {
    policy: &'a PolicyEngine,
    principal: &'a Principal,
    classification: Classification,
    known: HashMap<(String, bool), bool>,
}

impl FieldScope<'_> {
    fn may_read(&mut self, name: &str, restricted: bool) -> bool {
        if let Some(allowed) = self.known.get(&(name.to_string(), restricted)) {
            return *allowed;
        }
        let field = Resource::Field {
            source: SOURCE,
            name,
            restricted,
        };
        let allowed = self
            .policy
            .allows(self.principal, Action::Read, &field, self.classification);
        self.known.insert((name.to_string(), restricted), allowed);
        allowed
    }
}

impl EnrichStage {
    /// Enriches one request due at `step`.
    pub fn handle(&self, mut env: Envelope<Exchange>, step: Step) -> StageOutcome {
        if step != Step::Enrich {
            let error = ErrorBody::new(
                ErrorCode::Misrouted,
                format!("the enrichment service does not perform {}", step.as_str()),
            );
            return fail(env, error, json!({ "sources": [] }));
        }
        let Some(principal) = env.principal.clone() else {
            let error = ErrorBody::new(
                ErrorCode::Forbidden,
                "the request carries no principal; only authorised requests are enriched",
            );
            return fail(env, error, json!({ "sources": [] }));
        };
        // One engine for the whole request: every answer below comes from one version.
        let policy = self.policy.current();
        // Only this stage speaks for the CMDB: anything claiming to come from it was not put
        // there by us and is dropped, whatever the policy says.
        env.body
            .context
            .retain(|c| c.source != SOURCE && c.source != history::SOURCE);
        let classification = env.classification;
        let history = self.inject_history(&mut env, &principal, &policy);

        if !policy.allows(
            &principal,
            Action::Read,
            &Resource::DataSource(SOURCE),
            classification,
        ) {
            metrics::counter!("mcplane_enrichment_withheld_total", "what" => "source").increment(1);
            let mut detail = json!({
                "sources": [],
                "withheld_sources": [SOURCE],
                "policy_version": policy.version(),
            });
            history_detail(&mut detail, &history);
            return StageOutcome::Continue {
                env: Box::new(env),
                detail,
            };
        }

        let request = &env.body.request;
        let mut chosen: Vec<&CmdbService> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in &request.services {
            match self.cmdb.get(name) {
                Some(svc) => {
                    if seen.insert(svc.entry.name.as_str()) {
                        chosen.push(svc);
                    }
                }
                None => unknown.push(name.clone()),
            }
        }
        for svc in self.cmdb.mentioned_in(&request.input) {
            if seen.insert(svc.entry.name.as_str()) {
                chosen.push(svc);
            }
        }

        let mut scope = FieldScope {
            policy: &policy,
            principal: &principal,
            classification,
            known: HashMap::new(),
        };
        let mut restricted_fields = false;
        let mut names = Vec::with_capacity(chosen.len());
        let mut withheld_services = Vec::new();
        let mut fields = BTreeSet::new();
        let mut withheld_fields = BTreeSet::new();
        let mut items = Vec::with_capacity(chosen.len());
        for svc in chosen {
            let service = Resource::Service {
                source: SOURCE,
                name: &svc.entry.name,
                team: &svc.entry.team,
                tier: svc.entry.tier,
            };
            if !policy.allows(&principal, Action::Read, &service, classification) {
                withheld_services.push(svc.entry.name.clone());
                continue;
            }
            let scoped = svc.scoped(|name, restricted| scope.may_read(name, restricted));
            restricted_fields |= scoped.restricted;
            fields.extend(scoped.fields);
            withheld_fields.extend(scoped.withheld);
            names.push(svc.entry.name.clone());
            items.push(ContextItem {
                source: SOURCE.to_string(),
                subject: svc.entry.name.clone(),
                data: scoped.data,
            });
        }
        env.body.context.extend(items);
        if restricted_fields {
            // Restricted context makes the whole request restricted: it must not leave the
            // boundary (the model router sends restricted data only to private providers).
            env.classification = env.classification.max(Classification::Restricted);
        }

        metrics::counter!("mcplane_enrichment_items_total", "source" => SOURCE)
            .increment(names.len() as u64);
        if !withheld_services.is_empty() || !withheld_fields.is_empty() {
            metrics::counter!("mcplane_enrichment_withheld_total", "what" => "field_or_service")
                .increment(1);
        }
        if !unknown.is_empty() {
            tracing::debug!(?unknown, "requested services not in the CMDB");
        }
        // Names only, never values: the audit entry says what was read, not what it said.
        let mut detail = json!({
            "sources": [SOURCE],
            "services": names,
            "fields": fields,
            "restricted_fields": restricted_fields,
            "policy_version": policy.version(),
        });
        if !withheld_fields.is_empty() {
            detail["withheld_fields"] = json!(withheld_fields);
        }
        if !withheld_services.is_empty() {
            detail["withheld_services"] = json!(withheld_services);
        }
        if !unknown.is_empty() {
            detail["unknown_services"] = json!(unknown);
        }
        history_detail(&mut detail, &history);
        StageOutcome::Continue {
            env: Box::new(env),
            detail,
        }
    }
}

impl EnrichStage {
    /// Adds the past incidents of each service the request names (the correlator names its
    /// incident's services) that the policy lets the principal read, from the request's own
    /// tenant only: the tenant is the envelope's, set by auth from the credential.
    fn inject_history(
        &self,
        env: &mut Envelope<Exchange>,
        principal: &Principal,
        policy: &PolicyEngine,
    ) -> HistoryDetail {
        let mut detail = HistoryDetail::default();
        let Some(index) = &self.history else {
            return detail;
        };
        if env.body.request.services.is_empty() {
            return detail;
        }
        let classification = env.classification;
        if !policy.allows(
            principal,
            Action::Read,
            &Resource::DataSource(history::SOURCE),
            classification,
        ) {
            detail.withheld_source = true;
            return detail;
        }
        let mut seen = BTreeSet::new();
        let mut items = Vec::new();
        for name in &env.body.request.services {
            if !seen.insert(name.as_str()) {
                continue;
            }
            // A service the CMDB does not know is judged as the least critical, unowned one.
            let (team, tier) = self
                .cmdb
                .get(name)
                .map_or(("", u8::MAX), |s| (s.entry.team.as_str(), s.entry.tier));
            let service = Resource::Service {
                source: history::SOURCE,
                name,
                team,
                tier,
            };
            if !policy.allows(principal, Action::Read, &service, classification) {
                detail.withheld_services.push(name.clone());
                continue;
            }
            let past = match index.lookup(&env.tenant, name) {
                Ok(past) => past,
                Err(e) => {
                    // History is a help, not a requirement: summarise without it.
                    tracing::warn!(service = %name, error = %e, "cannot read incident history");
                    continue;
                }
            };
            if past.is_empty() {
                continue;
            }
            detail.incidents += past.len();
            detail.services.push(name.clone());
            items.push(ContextItem {
                source: history::SOURCE.to_string(),
                subject: name.clone(),
                data: json!({ "past_incidents": past }),
            });
        }
        metrics::counter!("mcplane_enrichment_items_total", "source" => history::SOURCE)
            .increment(items.len() as u64);
        env.body.context.extend(items);
        detail
    }
}

/// Names and counts only, never the history itself.
fn history_detail(detail: &mut serde_json::Value, history: &HistoryDetail) {
    if !history.services.is_empty() {
        if let Some(sources) = detail["sources"].as_array_mut() {
            sources.push(json!(history::SOURCE));
        }
        detail["history"] = json!({
            "services": history.services,
            "incidents": history.incidents,
        });
    }
    if history.withheld_source {
        match detail["withheld_sources"].as_array_mut() {
            Some(list) => list.push(json!(history::SOURCE)),
            None => detail["withheld_sources"] = json!([history::SOURCE]),
        }
    }
    if !history.withheld_services.is_empty() {
        detail["withheld_history_services"] = json!(history.withheld_services);
    }
}

fn fail(env: Envelope<Exchange>, error: ErrorBody, detail: serde_json::Value) -> StageOutcome {
    StageOutcome::Fail {
        env: Box::new(env),
        error,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::{AiRequest, Itinerary, Principal, PrincipalKind, RequestType};

    fn stage() -> EnrichStage {
        let cmdb = Cmdb::parse(
            r#"
[[services]]
name = "checkout"
owner = "a"
team = "commerce"
tier = 1
description = "Checkout"
dependencies = ["payments-db"]

[[services]]
name = "payments-db"
owner = "b"
team = "data"
tier = 0
description = "DB"
[services.restricted]
db_host = "pg-1.internal"
"#,
        )
        .unwrap();
        EnrichStage {
            cmdb,
            policy: LivePolicy::new(PolicyEngine::builtin().unwrap()),
            history: None,
        }
    }

    fn request(input: &str, services: &[&str], roles: Option<&[&str]>) -> Envelope<Exchange> {
        let mut env = Envelope::new(
            "acme",
            Exchange::new(AiRequest {
                services: services.iter().map(|s| s.to_string()).collect(),
                ..AiRequest::new(RequestType::Answer, input)
            }),
        );
        env.itinerary = Itinerary::ai_request();
        env.principal = roles.map(|roles| Principal {
            id: "key1".into(),
            tenant: "acme".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            kind: PrincipalKind::User,
        });
        env
    }

    fn continued(outcome: StageOutcome) -> (Envelope<Exchange>, serde_json::Value) {
        match outcome {
            StageOutcome::Continue { env, detail } => (*env, detail),
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    #[test]
    fn requested_and_mentioned_services_are_injected_once_each() {
        let env = request(
            "checkout is slow; checkout again",
            &["payments-db", "ghost"],
            Some(&["viewer"]),
        );
        let (env, detail) = continued(stage().handle(env, Step::Enrich));
        let subjects: Vec<_> = env
            .body
            .context
            .iter()
            .map(|c| c.subject.as_str())
            .collect();
        assert_eq!(subjects, vec!["payments-db", "checkout"]);
        assert_eq!(env.body.context[0].data["dependents"], json!(["checkout"]));
        assert_eq!(detail["services"], json!(["payments-db", "checkout"]));
        assert_eq!(detail["unknown_services"], json!(["ghost"]));
        assert_eq!(detail["sources"], json!(["cmdb"]));
        assert_eq!(detail["restricted_fields"], json!(false));
        assert!(env.body.context[0].data.get("restricted").is_none());
    }

    #[test]
    fn restricted_fields_only_for_restricted_roles() {
        let env = request("payments-db is down", &[], Some(&["viewer", "sre"]));
        let (env, detail) = continued(stage().handle(env, Step::Enrich));
        assert_eq!(
            env.body.context[0].data["restricted"]["db_host"],
            json!("pg-1.internal")
        );
        assert_eq!(detail["restricted_fields"], json!(true));
        assert_eq!(detail["policy_version"], json!("builtin-1"));
    }

    #[test]
    fn the_policy_scopes_sources_services_and_fields() {
        let mut stage = stage();
        stage.policy = LivePolicy::new(
            PolicyEngine::parse(
                r#"// version: scoped-1
                permit (principal, action == Action::"read", resource == DataSource::"cmdb");
                permit (principal, action == Action::"read", resource is Service) when { resource.tier > 0 };
                permit (principal, action == Action::"read", resource == Field::"cmdb.team");
                "#,
            )
            .unwrap(),
        );
        let env = request("checkout and payments-db", &[], Some(&["sre"]));
        let (env, detail) = continued(stage.handle(env, Step::Enrich));
        assert_eq!(env.body.context.len(), 1);
        assert_eq!(env.body.context[0].subject, "checkout");
        assert_eq!(env.body.context[0].data, json!({"team": "commerce"}));
        assert_eq!(detail["withheld_services"], json!(["payments-db"]));
        assert_eq!(detail["fields"], json!(["team"]));
        assert_eq!(detail["policy_version"], json!("scoped-1"));
        assert_eq!(env.classification, Classification::Internal);

        stage.policy = LivePolicy::new(
            PolicyEngine::parse("// version: none-1\nforbid (principal, action, resource);")
                .unwrap(),
        );
        let env = request("checkout", &[], Some(&["sre"]));
        let (env, detail) = continued(stage.handle(env, Step::Enrich));
        assert!(env.body.context.is_empty());
        assert_eq!(detail["withheld_sources"], json!(["cmdb"]));
    }

    #[test]
    fn spoofed_cmdb_context_is_replaced() {
        let mut env = request("nothing relevant", &[], Some(&["viewer"]));
        env.body.context.push(ContextItem {
            source: "cmdb".into(),
            subject: "payments-db".into(),
            data: json!({"restricted": {"db_host": "x"}}),
        });
        let (env, _) = continued(stage().handle(env, Step::Enrich));
        assert!(env.body.context.is_empty());
    }

    #[test]
    fn a_request_without_principal_is_forbidden() {
        let env = request("checkout", &[], None);
        match stage().handle(env, Step::Enrich) {
            StageOutcome::Fail { error, .. } => assert_eq!(error.code, ErrorCode::Forbidden),
            other => panic!("expected Fail, got {other:?}"),
        }
    }

    #[test]
    fn history_of_the_named_services_comes_from_the_own_tenant_only_and_as_the_policy_allows() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(HistoryIndex::open(dir.path(), 5).unwrap());
        let mut theirs = crate::history::tests::resolved("globex", "g1", "checkout", 10);
        theirs.title = "GLOBEX SECRET".into();
        index.record_resolved(&theirs, "I", 1).unwrap();
        let mut stage = stage();
        stage.history = Some(index.clone());

        // Nothing of acme's yet: globex's history is not a fallback.
        let env = request("checkout is slow", &["checkout"], Some(&["viewer"]));
        let (env, detail) = continued(stage.handle(env, Step::Enrich));
        assert!(env.body.context.iter().all(|c| c.source != "incidents"));
        assert!(!serde_json::to_string(&env)
            .unwrap()
            .contains("GLOBEX SECRET"));
        assert!(detail.get("history").is_none());

        index
            .record_resolved(
                &crate::history::tests::resolved("acme", "a1", "checkout", 20),
                "I",
                2,
            )
            .unwrap();
        let env = request("checkout is slow", &["checkout"], Some(&["viewer"]));
        let (env, detail) = continued(stage.handle(env, Step::Enrich));
        let item = env
            .body
            .context
            .iter()
            .find(|c| c.source == "incidents")
            .expect("history injected");
        assert_eq!(item.subject, "checkout");
        assert_eq!(item.data["past_incidents"][0]["incident_id"], json!("a1"));
        assert_eq!(item.data["past_incidents"].as_array().unwrap().len(), 1);
        assert_eq!(
            detail["history"],
            json!({"services": ["checkout"], "incidents": 1})
        );
        assert_eq!(detail["sources"], json!(["cmdb", "incidents"]));

        // A policy without the incidents source: withheld, and said so in the audit detail.
        stage.policy = LivePolicy::new(
            PolicyEngine::parse(
                r#"// version: cmdb-only-1
                permit (principal, action == Action::"read", resource == DataSource::"cmdb");
                permit (principal, action == Action::"read", resource is Service);
                "#,
            )
            .unwrap(),
        );
        let env = request("checkout is slow", &["checkout"], Some(&["viewer"]));
        let (env, detail) = continued(stage.handle(env, Step::Enrich));
        assert!(env.body.context.iter().all(|c| c.source != "incidents"));
        assert_eq!(detail["withheld_sources"], json!(["incidents"]));
    }
}
