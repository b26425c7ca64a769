//! The enrich step: adds the CMDB context of every service a request names or mentions.
//!
//! Context a principal may not see must never enter the request: restricted fields are added
//! only for a principal holding one of the configured roles, because every later stage (and the
//! model) sees whatever is in the envelope. The step is pure and synchronous; the shared
//! pipeline loop does the ledger, forwarding and audit around it.

use std::collections::BTreeSet;

use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::{Classification, ContextItem, Envelope, ErrorBody, ErrorCode, Exchange, Step};
use serde_json::json;

use crate::cmdb::{Cmdb, CmdbService};

/// The data source name on injected context items and in audit entries.
pub const SOURCE: &str = "cmdb";

/// What the enrich step needs for every request.
#[derive(Debug, Clone)]
pub struct EnrichStage {
    pub cmdb: Cmdb,
    pub restricted_roles: Vec<String>,
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
        let Some(principal) = env.principal.as_ref() else {
            let error = ErrorBody::new(
                ErrorCode::Forbidden,
                "the request carries no principal; only authorised requests are enriched",
            );
            return fail(env, error, json!({ "sources": [] }));
        };
        let may_see_restricted = principal
            .roles
            .iter()
            .any(|r| self.restricted_roles.iter().any(|allowed| allowed == r));

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

        let mut restricted_fields = false;
        let mut names = Vec::with_capacity(chosen.len());
        let mut items = Vec::with_capacity(chosen.len());
        for svc in chosen {
            let (data, restricted) = svc.context(may_see_restricted);
            restricted_fields |= restricted;
            names.push(svc.entry.name.clone());
            items.push(ContextItem {
                source: SOURCE.to_string(),
                subject: svc.entry.name.clone(),
                data: data.clone(),
            });
        }
        // Only this stage speaks for the CMDB: anything claiming to come from it already was not
        // put there by us and is replaced.
        env.body.context.retain(|c| c.source != SOURCE);
        env.body.context.extend(items);
        if restricted_fields {
            // Restricted context makes the whole request restricted: it must not leave the
            // boundary (the model router sends restricted data only to private providers).
            env.classification = env.classification.max(Classification::Restricted);
        }

        metrics::counter!("mcplane_enrichment_items_total", "source" => SOURCE)
            .increment(names.len() as u64);
        if !unknown.is_empty() {
            tracing::debug!(?unknown, "requested services not in the CMDB");
        }
        let mut detail = json!({
            "sources": [SOURCE],
            "services": names,
            "restricted_fields": restricted_fields,
        });
        if !unknown.is_empty() {
            detail["unknown_services"] = json!(unknown);
        }
        StageOutcome::Continue {
            env: Box::new(env),
            detail,
        }
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
            restricted_roles: vec!["sre".into()],
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
}
