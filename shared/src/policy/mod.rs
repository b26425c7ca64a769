//! Authorisation by policy: who may submit which requests, have which models invoked and read
//! which data, decided by the Cedar engine over versioned policy files.
//!
//! Every service that decides asks the same [`PolicyEngine`] the same question in the same
//! words ([`Action`], [`Resource`]), so what a listing shows (`GET /v1/models`,
//! `GET /v1/capabilities`) is exactly what enforcement allows. Cedar denies whatever no
//! `permit` allows and lets any `forbid` win. Policies are validated against the schema in
//! `schema.cedarschema` before they are used, so a typo is refused when the file is pushed, not
//! found later as a silent deny. Tenancy is not left to policy: the tenant comes from the
//! credential and travels in the envelope and subjects (see `docs/ARCHITECTURE.md`).

pub mod live;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Validate};
use crate::{Classification, Principal, PrincipalKind, RequestType};

/// The schema every policy is validated against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The policy in force when none is configured or pushed.
pub const BUILTIN: &str = include_str!("builtin.cedar");

static SCHEMA_PARSED: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| format!("the built-in policy schema does not parse: {e}"))
});

/// Why a policy text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy file must declare its version on a line `// version: <name>`")]
    NoVersion,
    #[error("not valid Cedar: {0}")]
    Parse(String),
    #[error("does not match the policy schema: {0}")]
    Invalid(String),
    #[error("{0}")]
    Schema(String),
}

/// What a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Submit a request of a type (`resource`: [`Resource::RequestType`]).
    Request,
    /// Have a model invoked (`resource`: [`Resource::Model`]).
    Invoke,
    /// Read a data source, a service's record or a field.
    Read,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::Invoke => "invoke",
            Action::Read => "read",
        }
    }
}

/// What the action is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    RequestType(RequestType),
    Model {
        id: &'a str,
        provider: &'a str,
        boundary: &'a str,
    },
    DataSource(&'a str),
    Service {
        source: &'a str,
        name: &'a str,
        team: &'a str,
        tier: u8,
    },
    Field {
        source: &'a str,
        name: &'a str,
        restricted: bool,
    },
}

/// The answer, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The `@id`s (or Cedar's ids) of the policies that decided: the permits that allowed, or
    /// the forbids that denied; empty for a default deny.
    pub policies: Vec<String>,
}

/// One validated policy version, ready to decide.
///
/// An engine never changes (a new policy version is a new engine), and a decision reads
/// nothing but its [`Question`], so each engine remembers its answers: a Cedar evaluation
/// builds the entities and walks the policy set (about 20 µs), and the enrich stage alone asks
/// a dozen questions per request, nearly all asked before by the same kind of principal.
#[derive(Debug)]
pub struct PolicyEngine {
    version: String,
    digest: String,
    set: PolicySet,
    authorizer: Authorizer,
    answers: Mutex<HashMap<Question, Verdict>>,
}

/// How many answers an engine keeps; past that it forgets them all and starts again (the
/// questions of a fleet's principals and CMDB fit many times over).
const ANSWERS_KEPT: usize = 4096;

/// Everything a decision reads, owned: the key of a remembered answer.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Question {
    tenant: String,
    principal: String,
    kind: &'static str,
    roles: Vec<String>,
    action: Action,
    /// The resource's `Debug` text: names every field, strings quoted and escaped.
    resource: String,
    /// Read only for [`Action::Invoke`].
    classification: Option<&'static str>,
}

impl Question {
    fn new(
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        classification: Classification,
    ) -> Self {
        Question {
            tenant: principal.tenant.clone(),
            principal: principal.id.clone(),
            kind: kind_name(principal.kind),
            roles: principal.roles.clone(),
            action,
            resource: format!("{resource:?}"),
            classification: (action == Action::Invoke).then(|| classification_name(classification)),
        }
    }
}

impl PolicyEngine {
    /// Parses and validates a policy file's text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let version = declared_version(text).ok_or(PolicyError::NoVersion)?;
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(flatten(&e)))?;
        let schema = SCHEMA_PARSED
            .as_ref()
            .map_err(|e| PolicyError::Schema(e.clone()))?;
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result
                .validation_errors()
                .map(|e| format!("{}: {e}", e.policy_id()))
                .collect();
            return Err(PolicyError::Invalid(errors.join("; ")));
        }
        Ok(PolicyEngine {
            version,
            digest: hex::encode(&Sha256::digest(text.as_bytes())[..8]),
            set,
            authorizer: Authorizer::new(),
            answers: Mutex::new(HashMap::new()),
        })
    }

    /// The built-in policy.
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::parse(BUILTIN)
    }

    /// The version the file declares (`// version: …`); recorded with every decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The first 8 bytes of the SHA-256 of the policy text, hex: tells two texts under one
    /// version apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Is `principal` allowed `action` on `resource`? `classification` is the request's, for
    /// [`Action::Invoke`] (ignored otherwise).
    pub fn check(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        classification: Classification,
    ) -> Verdict {
        let question = Question::new(principal, action, resource, classification);
        if let Some(known) = self
            .answers
            .lock()
            .ok()
            .and_then(|answers| answers.get(&question).cloned())
        {
            return known;
        }
        match self.evaluate(principal, action, resource, classification) {
            Ok(verdict) => {
                if let Ok(mut answers) = self.answers.lock() {
                    if answers.len() >= ANSWERS_KEPT {
                        answers.clear();
                    }
                    answers.insert(question, verdict.clone());
                }
                verdict
            }
            Err(e) => {
                // Cannot happen for inputs built here; if it does, deny (fail closed) and say so.
                tracing::error!(error = %e, action = action.as_str(), "policy request not evaluable; denied");
                Verdict {
                    allowed: false,
                    policies: Vec::new(),
                }
            }
        }
    }

    /// Shorthand for `check(..).allowed`.
    pub fn allows(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        classification: Classification,
    ) -> bool {
        self.check(principal, action, resource, classification)
            .allowed
    }

    fn evaluate(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        classification: Classification,
    ) -> Result<Verdict, String> {
        let (principal_entity, mut entities) = principal_entities(principal)?;
        let (resource_uid, resource_entity) = resource_entity(resource)?;
        entities.push(resource_entity);
        let context = match action {
            Action::Invoke => Context::from_pairs([(
                "classification".to_string(),
                RestrictedExpression::new_string(classification_name(classification).into()),
            )])
            .map_err(|e| e.to_string())?,
            _ => Context::empty(),
        };
        let request = Request::new(
            principal_entity,
            uid("Action", action.as_str())?,
            resource_uid,
            context,
            None,
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        if let Some(error) = response.diagnostics().errors().next() {
            tracing::warn!(error = %error, "a policy failed to evaluate (it was skipped)");
        }
        let policies = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.set
                    .annotation(id, "id")
                    .map_or_else(|| id.to_string(), str::to_string)
            })
            .collect();
        Ok(Verdict {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies,
        })
    }
}

/// The principal's entity and its parents (roles, tenant).
fn principal_entities(principal: &Principal) -> Result<(EntityUid, Vec<Entity>), String> {
    let tenant = uid("Tenant", &principal.tenant)?;
    let mut parents = HashSet::with_capacity(principal.roles.len() + 1);
    parents.insert(tenant.clone());
    let mut entities = Vec::with_capacity(principal.roles.len() + 3);
    for role in &principal.roles {
        let role = uid("Role", role)?;
        parents.insert(role.clone());
        entities.push(Entity::new_no_attrs(role, HashSet::new()));
    }
    entities.push(Entity::new_no_attrs(tenant, HashSet::new()));
    let me = uid(
        "Principal",
        &format!("{}/{}", principal.tenant, principal.id),
    )?;
    let kind = kind_name(principal.kind);
    let attrs = HashMap::from([
        (
            "tenant".to_string(),
            RestrictedExpression::new_string(principal.tenant.clone()),
        ),
        (
            "kind".to_string(),
            RestrictedExpression::new_string(kind.to_string()),
        ),
    ]);
    entities.push(Entity::new(me.clone(), attrs, parents).map_err(|e| e.to_string())?);
    Ok((me, entities))
}

fn kind_name(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::User => "user",
        PrincipalKind::ServiceAccount => "service_account",
    }
}

fn resource_entity(resource: &Resource<'_>) -> Result<(EntityUid, Entity), String> {
    let string = |s: &str| RestrictedExpression::new_string(s.to_string());
    let (id, attrs) = match *resource {
        Resource::RequestType(t) => (uid("RequestType", t.as_str())?, HashMap::new()),
        Resource::Model {
            id,
            provider,
            boundary,
        } => (
            uid("Model", id)?,
            HashMap::from([
                ("provider".to_string(), string(provider)),
                ("boundary".to_string(), string(boundary)),
            ]),
        ),
        Resource::DataSource(name) => (uid("DataSource", name)?, HashMap::new()),
        Resource::Service {
            source,
            name,
            team,
            tier,
        } => (
            uid("Service", name)?,
            HashMap::from([
                ("source".to_string(), string(source)),
                ("team".to_string(), string(team)),
                (
                    "tier".to_string(),
                    RestrictedExpression::new_long(i64::from(tier)),
                ),
            ]),
        ),
        Resource::Field {
            source,
            name,
            restricted,
        } => (
            uid("Field", &format!("{source}.{name}"))?,
            HashMap::from([
                ("source".to_string(), string(source)),
                ("name".to_string(), string(name)),
                (
                    "classification".to_string(),
                    string(if restricted { "restricted" } else { "internal" }),
                ),
            ]),
        ),
    };
    let entity = Entity::new(id.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;
    Ok((id, entity))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Public => "public",
        Classification::Internal => "internal",
        Classification::Confidential => "confidential",
        Classification::Restricted => "restricted",
    }
}

/// The version a policy file declares on a `// version: <name>` line.
pub fn declared_version(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("//")?.trim();
        let version = rest.strip_prefix("version:")?.trim();
        (!version.is_empty() && !version.contains(char::is_whitespace)).then(|| version.to_string())
    })
}

fn flatten(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `[policy]` section: the policy file a fleet starts with (a pushed version replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A Cedar policy file; `None` means the built-in policy.
    pub file: Option<PathBuf>,
}

impl PolicyConfig {
    /// The engine for the configured file (or the built-in policy).
    pub fn load(&self, section: &str) -> Result<PolicyEngine, ConfigError> {
        let key = format!("{section}.file");
        match &self.file {
            None => PolicyEngine::builtin().map_err(|e| ConfigError::new(key, e.to_string())),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new(&key, format!("{}: {e}", path.display())))?;
                PolicyEngine::parse(&text)
                    .map_err(|e| ConfigError::new(&key, format!("{}: {e}", path.display())))
            }
        }
    }
}

impl Validate for PolicyConfig {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        self.load(section).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, roles: &[&str]) -> Principal {
        Principal {
            id: "k1".into(),
            tenant: tenant.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            kind: PrincipalKind::User,
        }
    }

    fn field(name: &str, restricted: bool) -> Resource<'_> {
        Resource::Field {
            source: "cmdb",
            name,
            restricted,
        }
    }

    #[test]
    fn a_remembered_answer_is_the_answer_and_differs_by_role_and_classification() {
        let engine = PolicyEngine::builtin().unwrap();
        let sre = principal("acme", &["sre"]);
        let desk = principal("acme", &["service-desk"]);
        let c = Classification::Internal;
        let first = engine.check(&sre, Action::Read, &field("oncall_phone", true), c);
        let again = engine.check(&sre, Action::Read, &field("oncall_phone", true), c);
        assert_eq!(first, again);
        assert!(again.allowed);
        // Same field, another role: a different question with its own answer.
        assert!(!engine.allows(&desk, Action::Read, &field("oncall_phone", true), c));
        assert_eq!(engine.answers.lock().unwrap().len(), 2);
        // Classification is part of an invoke question only.
        let read = |c| Question::new(&sre, Action::Read, &field("owner", false), c);
        assert_eq!(
            read(Classification::Internal),
            read(Classification::Restricted)
        );
        let model = Resource::Model {
            id: "m",
            provider: "p",
            boundary: "local",
        };
        let invoke = |c| Question::new(&sre, Action::Invoke, &model, c);
        assert_ne!(
            invoke(Classification::Internal),
            invoke(Classification::Restricted)
        );
    }

    #[test]
    fn remembered_answers_stay_bounded() {
        let engine = PolicyEngine::builtin().unwrap();
        let sre = principal("acme", &["sre"]);
        for i in 0..ANSWERS_KEPT + 10 {
            let name = format!("f{i}");
            engine.check(
                &sre,
                Action::Read,
                &field(&name, false),
                Classification::Internal,
            );
        }
        assert!(engine.answers.lock().unwrap().len() <= ANSWERS_KEPT);
    }

    #[test]
    fn the_builtin_policy_validates_and_lets_only_sres_read_restricted_fields() {
        let engine = PolicyEngine::builtin().unwrap();
        assert_eq!(engine.version(), "builtin-1");
        let sre = principal("acme", &["sre"]);
        let desk = principal("acme", &["service-desk"]);
        let c = Classification::Internal;
        for p in [&sre, &desk] {
            assert!(engine.allows(
                p,
                Action::Request,
                &Resource::RequestType(RequestType::Answer),
                c
            ));
            assert!(engine.allows(p, Action::Read, &field("owner", false), c));
            assert!(engine.allows(p, Action::Read, &Resource::DataSource("cmdb"), c));
        }
        let verdict = engine.check(&sre, Action::Read, &field("oncall_phone", true), c);
        assert!(verdict.allowed);
        assert_eq!(verdict.policies, vec!["sre-read-restricted-fields"]);
        let verdict = engine.check(&desk, Action::Read, &field("oncall_phone", true), c);
        assert_eq!(
            verdict,
            Verdict {
                allowed: false,
                policies: vec![]
            }
        );
        assert!(!engine.allows(&sre, Action::Read, &Resource::DataSource("payroll"), c));
    }

    #[test]
    fn forbid_wins_and_context_and_attributes_are_visible_to_policies() {
        let engine = PolicyEngine::parse(
            r#"// version: t-1
            @id("all")
            permit (principal, action, resource);
            @id("no-public-cloud-for-restricted")
            forbid (principal, action == Action::"invoke", resource)
            when { resource.boundary == "public_cloud" && context.classification == "restricted" };
            @id("desk-only-answers")
            forbid (principal in Role::"service-desk", action == Action::"request", resource)
            unless { resource == RequestType::"answer" };
            @id("no-tier0-for-globex")
            forbid (principal in Tenant::"globex", action == Action::"read", resource is Service)
            when { resource.tier == 0 };
            "#,
        )
        .unwrap();
        let desk = principal("acme", &["service-desk"]);
        let gpt = Resource::Model {
            id: "gpt-4o",
            provider: "openai",
            boundary: "public_cloud",
        };
        assert!(engine.allows(&desk, Action::Invoke, &gpt, Classification::Internal));
        let v = engine.check(&desk, Action::Invoke, &gpt, Classification::Restricted);
        assert!(!v.allowed);
        assert_eq!(v.policies, vec!["no-public-cloud-for-restricted"]);
        assert!(engine.allows(
            &desk,
            Action::Request,
            &Resource::RequestType(RequestType::Answer),
            Classification::Internal
        ));
        assert!(!engine.allows(
            &desk,
            Action::Request,
            &Resource::RequestType(RequestType::Summarize),
            Classification::Internal
        ));
        let db = Resource::Service {
            source: "cmdb",
            name: "payments-db",
            team: "data",
            tier: 0,
        };
        assert!(!engine.allows(
            &principal("globex", &[]),
            Action::Read,
            &db,
            Classification::Internal
        ));
        assert!(engine.allows(
            &principal("acme", &[]),
            Action::Read,
            &db,
            Classification::Internal
        ));
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        assert_eq!(
            PolicyEngine::parse("permit (principal, action, resource);").unwrap_err(),
            PolicyError::NoVersion
        );
        assert!(matches!(
            PolicyEngine::parse("// version: 1\npermit (principal, action, resource").unwrap_err(),
            PolicyError::Parse(_)
        ));
        // A misspelt attribute and an unknown action are schema errors, not silent denies.
        for bad in [
            "// version: 1\npermit (principal, action, resource is Field) when { resource.clasification == \"internal\" };",
            "// version: 1\npermit (principal, action == Action::\"delete\", resource);",
        ] {
            assert!(
                matches!(PolicyEngine::parse(bad).unwrap_err(), PolicyError::Invalid(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_version_line_is_found_anywhere_and_must_be_one_word() {
        assert_eq!(
            declared_version("// hello\n  //   version: 2026-11-25.1\n"),
            Some("2026-11-25.1".into())
        );
        assert_eq!(declared_version("// version: two words"), None);
        assert_eq!(declared_version("version: 1"), None);
    }

    #[test]
    fn principal_ids_with_quotes_or_slashes_cannot_break_out() {
        let engine = PolicyEngine::builtin().unwrap();
        let mut odd = principal("acme", &["sre\" , Role::\"admin"]);
        odd.id = "x\"/y".into();
        // Treated as the literal role name it is: not an SRE.
        assert!(!engine.allows(
            &odd,
            Action::Read,
            &field("oncall_phone", true),
            Classification::Internal
        ));
    }

    #[test]
    fn the_shipped_example_policy_validates() {
        let text = include_str!("../../../examples/policy.cedar");
        let engine = PolicyEngine::parse(text).unwrap();
        let desk = principal("acme", &["service-desk"]);
        assert!(!engine.allows(
            &desk,
            Action::Request,
            &Resource::RequestType(RequestType::Summarize),
            Classification::Internal
        ));
        assert!(engine.allows(
            &desk,
            Action::Request,
            &Resource::RequestType(RequestType::Classify),
            Classification::Internal
        ));
    }
}
