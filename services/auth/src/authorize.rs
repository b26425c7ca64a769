//! The decision for one submitted request: who is asking, for which tenant, and whether the
//! request is one the pipeline should carry at all.
//!
//! Pure apart from the key store, with time passed in, so the rules read and test as a table.
//! The credential is taken out of the envelope first, whatever the outcome, so no secret is
//! ever forwarded, stored as a result or echoed to a client.

use mcplane_shared::policy::{Action, PolicyEngine, Resource};
use mcplane_shared::subjects::validate_token;
use mcplane_shared::{
    AuditOutcome, Classification, Envelope, ErrorBody, ErrorCode, Exchange, Itinerary, Principal,
    PrincipalKind,
};

use crate::config::Config;
use crate::keys::ANY_TENANT;

/// Most services one request may name (each becomes a CMDB lookup in enrichment).
pub const MAX_SERVICES: usize = 64;
/// Longest service name accepted.
const MAX_SERVICE_NAME: usize = 128;

/// What to do with a submitted request.
#[derive(Debug)]
pub enum Decision {
    /// Authenticated and valid: principal, tenant and itinerary are set; send it on.
    Forward(Box<Envelope<Exchange>>),
    /// Stop here and deliver `error` as the result. `outcome` is `Denied` when the caller is
    /// not who they claim, `Failed` when an authenticated request is invalid.
    Refuse {
        env: Box<Envelope<Exchange>>,
        error: ErrorBody,
        outcome: AuditOutcome,
    },
    /// The key store cannot be read right now: decide later rather than deny a valid key.
    Retry,
}

/// Decides one request, given what its credential resolved to
/// ([`crate::credentials::Credentials::resolve`]) and the policy in force.
pub fn decide(
    mut env: Envelope<Exchange>,
    resolved: Result<Principal, ErrorBody>,
    config: &Config,
    policy: &PolicyEngine,
) -> Decision {
    env.credential = None;
    // Only this service sets these; whatever a client put there is discarded.
    env.principal = None;
    env.itinerary = Itinerary::default();

    let principal = match resolved {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::Unavailable => return Decision::Retry,
        Err(error) => {
            // An unauthenticated caller names no tenant: its tenant field must not decide
            // whose audit trail the denial lands in.
            env.tenant.clear();
            return refuse(env, error, AuditOutcome::Denied);
        }
    };

    let acts_for_any =
        principal.kind == PrincipalKind::ServiceAccount && principal.tenant == ANY_TENANT;
    if acts_for_any {
        if validate_token(&env.tenant).is_err() {
            env.tenant.clear();
            env.principal = Some(principal);
            return refuse(
                env,
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "a service account for any tenant must name the tenant: 1-64 characters from [a-z0-9_-]",
                ),
                AuditOutcome::Failed,
            );
        }
    } else {
        env.tenant = principal.tenant.clone();
    }
    let request_type = env.body.request.request_type;
    let verdict = policy.check(
        &principal,
        Action::Request,
        &Resource::RequestType(request_type),
        Classification::default(),
    );
    env.principal = Some(principal);
    if !verdict.allowed {
        let error = ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "policy {} does not permit this principal to submit {} requests",
                policy.version(),
                request_type.as_str()
            ),
        );
        return refuse(env, error, AuditOutcome::Denied);
    }

    if let Err(message) = validate_request(&env.body, config) {
        return refuse(
            env,
            ErrorBody::new(ErrorCode::InvalidRequest, message),
            AuditOutcome::Failed,
        );
    }
    env.itinerary = Itinerary::ai_request();
    // Whatever the envelope claimed on arrival, the classification starts from the default and
    // can only be raised: by the client's own judgement here, by restricted context later.
    env.classification = env
        .body
        .request
        .classification
        .map_or(Classification::default(), |c| {
            c.max(Classification::default())
        });
    Decision::Forward(Box::new(env))
}

fn refuse(env: Envelope<Exchange>, error: ErrorBody, outcome: AuditOutcome) -> Decision {
    Decision::Refuse {
        env: Box::new(env),
        error,
        outcome,
    }
}

/// What the pipeline will not carry, whoever asks.
fn validate_request(body: &Exchange, config: &Config) -> Result<(), String> {
    let request = &body.request;
    if request.input.trim().is_empty() {
        return Err("input must not be empty".into());
    }
    if request.input.len() > config.max_input_bytes {
        return Err(format!(
            "input is {} bytes; the limit is {}",
            request.input.len(),
            config.max_input_bytes
        ));
    }
    if request.services.len() > MAX_SERVICES {
        return Err(format!(
            "{} services named; at most {MAX_SERVICES} are allowed",
            request.services.len()
        ));
    }
    if let Some(bad) = request.services.iter().find(|s| !is_service_name(s)) {
        return Err(format!(
            "service name {bad:?} is not 1-{MAX_SERVICE_NAME} characters from [A-Za-z0-9._:/-]"
        ));
    }
    Ok(())
}

/// A CMDB service name: a plain identifier, never whitespace, wildcards or control characters.
fn is_service_name(name: &str) -> bool {
    (1..=MAX_SERVICE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStore;
    use chrono::Utc;
    use mcplane_shared::{AiRequest, RequestType, Step};

    /// What the stage does: resolve the credential with the key store, then decide (under the
    /// built-in policy).
    fn decide_with(env: Envelope<Exchange>, keys: &KeyStore, config: &Config) -> Decision {
        decide_under(env, keys, config, &PolicyEngine::builtin().unwrap())
    }

    fn decide_under(
        env: Envelope<Exchange>,
        keys: &KeyStore,
        config: &Config,
        policy: &PolicyEngine,
    ) -> Decision {
        let presented = env.credential.as_deref().map(str::trim).unwrap_or_default();
        let resolved = if presented.is_empty() {
            Err(ErrorBody::new(
                ErrorCode::Unauthenticated,
                "missing credential",
            ))
        } else {
            keys.lookup(presented, Utc::now())
        };
        decide(env, resolved, config, policy)
    }

    fn request(input: &str, services: &[&str]) -> Envelope<Exchange> {
        Envelope::new(
            "",
            Exchange::new(AiRequest {
                services: services.iter().map(|s| s.to_string()).collect(),
                ..AiRequest::new(RequestType::Answer, input)
            }),
        )
    }

    fn with_key(mut env: Envelope<Exchange>, key: &str) -> Envelope<Exchange> {
        env.credential = Some(key.into());
        env
    }

    fn setup() -> (tempfile::TempDir, KeyStore, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        let (user, _) = keys
            .create("acme", vec!["sre".into()], PrincipalKind::User, None)
            .unwrap();
        let (service, _) = keys
            .create(
                "*",
                vec!["service".into()],
                PrincipalKind::ServiceAccount,
                None,
            )
            .unwrap();
        (dir, keys, user, service)
    }

    fn refused(decision: Decision) -> (Envelope<Exchange>, ErrorBody, AuditOutcome) {
        match decision {
            Decision::Refuse {
                env,
                error,
                outcome,
            } => (*env, error, outcome),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_key_sets_principal_tenant_and_itinerary_and_drops_the_credential() {
        let (_d, keys, user, _) = setup();
        let mut env = with_key(request("why is checkout slow?", &["checkout-api"]), &user);
        env.tenant = "globex".into(); // a client cannot pick another tenant
        let Decision::Forward(env) = decide_with(env, &keys, &Config::default()) else {
            panic!("expected forward");
        };
        assert_eq!(env.tenant, "acme");
        assert_eq!(env.credential, None);
        assert_eq!(
            env.principal.as_ref().unwrap().roles,
            vec!["sre".to_string()]
        );
        assert_eq!(env.itinerary.current(), Some(Step::Enrich));
        assert_eq!(env.itinerary, Itinerary::ai_request());
    }

    #[test]
    fn a_missing_or_unknown_key_is_denied_without_a_tenant() {
        let (_d, keys, _, _) = setup();
        for credential in [None, Some("   "), Some("mcp_nonsense")] {
            let mut env = request("hello", &[]);
            env.tenant = "acme".into();
            env.credential = credential.map(String::from);
            let (env, error, outcome) = refused(decide_with(env, &keys, &Config::default()));
            assert_eq!(error.code, ErrorCode::Unauthenticated);
            assert_eq!(outcome, AuditOutcome::Denied);
            assert_eq!(env.tenant, "");
            assert_eq!(env.credential, None);
            assert_eq!(env.principal, None);
        }
    }

    #[test]
    fn a_service_account_for_any_tenant_acts_for_the_named_tenant_only() {
        let (_d, keys, _, service) = setup();
        let mut env = with_key(request("summarise", &[]), &service);
        env.tenant = "acme".into();
        let Decision::Forward(env) = decide_with(env, &keys, &Config::default()) else {
            panic!("expected forward");
        };
        assert_eq!(env.tenant, "acme");
        assert_eq!(env.principal.unwrap().kind, PrincipalKind::ServiceAccount);

        for tenant in ["", "a.b", "*"] {
            let mut env = with_key(request("summarise", &[]), &service);
            env.tenant = tenant.into();
            let (env, error, outcome) = refused(decide_with(env, &keys, &Config::default()));
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{tenant:?}");
            assert_eq!(outcome, AuditOutcome::Failed);
            assert_eq!(env.tenant, "");
        }
    }

    #[test]
    fn invalid_requests_fail_with_invalid_request() {
        let (_d, keys, user, _) = setup();
        let config = Config {
            max_input_bytes: 10,
            ..Config::default()
        };
        let many: Vec<String> = (0..=MAX_SERVICES).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = "x".repeat(129);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("", vec![]),
            (" \n", vec![]),
            ("eleven byte", vec![]),
            ("ok", vec!["has space"]),
            ("ok", vec!["a>"]),
            ("ok", vec![""]),
            ("ok", vec![long.as_str()]),
            ("ok", many),
        ];
        for (input, services) in cases {
            let env = with_key(request(input, &services), &user);
            let (env, error, outcome) = refused(decide_with(env, &keys, &config));
            assert_eq!(
                error.code,
                ErrorCode::InvalidRequest,
                "{input:?} {services:?}"
            );
            assert_eq!(outcome, AuditOutcome::Failed);
            assert_eq!(
                env.tenant, "acme",
                "an authenticated failure is the tenant's"
            );
        }
        let env = with_key(request("ten bytes.", &["db.main", "ns/svc:8080"]), &user);
        assert!(matches!(
            decide_with(env, &keys, &config),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn the_policy_decides_which_request_types_a_role_may_submit() {
        let (_d, keys, user, _) = setup();
        let policy = PolicyEngine::parse(
            r#"// version: desk-1
            permit (principal, action == Action::"request", resource == RequestType::"answer");
            "#,
        )
        .unwrap();
        let env = with_key(request("why?", &[]), &user);
        assert!(matches!(
            decide_under(env, &keys, &Config::default(), &policy),
            Decision::Forward(_)
        ));
        let mut env = with_key(request("summarise it", &[]), &user);
        env.body.request.request_type = RequestType::Summarize;
        let (env, error, outcome) = refused(decide_under(env, &keys, &Config::default(), &policy));
        assert_eq!(error.code, ErrorCode::Forbidden);
        assert_eq!(outcome, AuditOutcome::Denied);
        assert!(error.message.contains("desk-1"), "{}", error.message);
        assert_eq!(
            env.tenant, "acme",
            "a denial of a known principal is its tenant's"
        );
    }
}
