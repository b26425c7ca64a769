//! Answers `mcplane.model.catalog`: the models this fleet can route to, for `GET /v1/models`.
//!
//! The model service owns the provider list, so it answers for it; the gateway asks rather
//! than reading another service's configuration.

use futures::StreamExt;
use mcplane_shared::body::catalog::{CatalogAnswer, CatalogEntry, CatalogQuery};
use mcplane_shared::bus::Bus;
use mcplane_shared::policy::live::LivePolicy;
use mcplane_shared::policy::{Action, PolicyEngine, Resource};
use mcplane_shared::{Classification, Principal, ServiceError};
use tokio_util::sync::CancellationToken;

use crate::config::ProviderConfig;

pub fn entries(providers: &[ProviderConfig]) -> Vec<CatalogEntry> {
    providers
        .iter()
        .flat_map(|p| {
            p.all_models().map(move |m| CatalogEntry {
                id: m.to_string(),
                provider: p.name.clone(),
                boundary: p.boundary().as_str().to_string(),
            })
        })
        .collect()
}

/// The catalog as `principal` may see it: exactly the models the policy in force lets it have
/// invoked (the same check the invoke step makes), and the version that decided.
pub fn answer(
    entries: &[CatalogEntry],
    policy: &PolicyEngine,
    principal: &Principal,
) -> CatalogAnswer {
    let models = entries
        .iter()
        .filter(|e| {
            policy.allows(
                principal,
                Action::Invoke,
                &Resource::Model {
                    id: &e.id,
                    provider: &e.provider,
                    boundary: &e.boundary,
                },
                Classification::default(),
            )
        })
        .cloned()
        .collect();
    CatalogAnswer {
        models,
        policy_version: policy.version().to_string(),
    }
}

/// Serves catalog requests (queue group `model`, so one replica answers) until `stop`. A query
/// without a principal is answered with an error: there is no anonymous listing.
pub async fn serve(
    bus: Bus,
    providers: Vec<ProviderConfig>,
    policy: LivePolicy,
    stop: CancellationToken,
) -> Result<(), ServiceError> {
    let entries = entries(&providers);
    let mut sub = bus
        .client
        .queue_subscribe(bus.subjects.model_catalog(), "model".into())
        .await
        .map_err(ServiceError::bus)?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = sub.next() => match msg {
                Some(msg) => {
                    let Some(reply) = msg.reply else { continue };
                    let answer = match serde_json::from_slice::<CatalogQuery>(&msg.payload) {
                        Ok(q) => serde_json::to_value(answer(&entries, &policy.current(), &q.principal))
                            .unwrap_or_default(),
                        Err(e) => serde_json::json!({"error": format!("not a catalog query: {e}")}),
                    };
                    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                    if let Err(e) = bus.client.publish(reply, bytes.into()).await {
                        tracing::warn!(error = %e, "cannot answer a catalog request");
                    }
                }
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::PrincipalKind;

    #[test]
    fn the_listing_is_what_the_policy_allows() {
        let mut local = ProviderConfig::local("local");
        local.models = vec!["local-large".into()];
        let mut cloud = ProviderConfig::local("cloud");
        cloud.model = "gpt-4o".into();
        cloud.boundary = Some(crate::config::Boundary::PublicCloud);
        let entries = entries(&[local, cloud]);
        let policy = PolicyEngine::parse(
            r#"// version: list-1
            permit (principal, action == Action::"invoke", resource)
            when { resource.boundary == "private" };
            permit (principal in Role::"sre", action == Action::"invoke", resource);
            forbid (principal, action == Action::"invoke", resource == Model::"local-large")
            unless { principal in Role::"sre" };
            "#,
        )
        .unwrap();
        let who = |roles: &[&str]| Principal {
            id: "k".into(),
            tenant: "acme".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            kind: PrincipalKind::User,
        };
        let ids =
            |v: CatalogAnswer| -> Vec<String> { v.models.into_iter().map(|m| m.id).collect() };
        assert_eq!(
            ids(answer(&entries, &policy, &who(&["desk"]))),
            vec!["mcplane-local-1"]
        );
        assert_eq!(
            ids(answer(&entries, &policy, &who(&["sre"]))),
            vec!["mcplane-local-1", "local-large", "gpt-4o"]
        );
        assert_eq!(
            answer(&entries, &policy, &who(&[])).policy_version,
            "list-1"
        );
    }
}
