//! The two redaction steps of a request's itinerary: `redact_request` (the input and every
//! string of injected context, before any model sees them) and `redact_response` (the model's
//! answer, before the client sees it).
//!
//! On the way in, entities are masked, hashed or tokenised as configured for their type and the
//! request's classification; restricted context fields are removed whole; token originals and
//! restricted values are sealed into the exchange by the [`Vault`]. On the way out, that seal
//! is opened and removed; an answer carrying a credential or a restricted value is blocked
//! (`output_blocked`), as is one whose seal no longer opens; other entities the model produced
//! are masked, and the tokens are put back only for the types the principal's roles may see.
//! Counts by type go into the exchange and the audit entry; matched text never goes anywhere,
//! not even the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mcplane_shared::body::audit::PAYLOAD_DETAIL_KEY;
use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::tenant_keys::TenantKeys;
use mcplane_shared::{Envelope, ErrorBody, ErrorCode, Exchange, Step};
use serde_json::{json, Value};

use crate::actions::{apply, detokenize, tenant_hash_key, Tokens};
use crate::config::{Action, Config, RESTRICTED};
use crate::detectors::EntityType;
use crate::engine::{Counts, Redactor};
use crate::vault::{Vault, VaultEntry, VaultError};

/// A vault that cannot be written is a passing failure: try again shortly.
const VAULT_RETRY: Duration = Duration::from_secs(1);
/// Restricted values shorter than this are too common to block an answer on.
const MIN_RESTRICTED_LEN: usize = 4;

/// What the redaction steps need for every request.
#[derive(Debug, Clone)]
pub struct RedactStage {
    pub redactor: Redactor,
    pub config: Config,
    /// `None` only in unit tests: tokens are then minted but never restored.
    pub vault: Option<Vault>,
    /// Where the tenants' audit keys are; `None`: no payload is kept with audit entries.
    pub payload_keys: Option<TenantKeys>,
}

/// Why an answer is not delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub reason: &'static str,
    pub types: Vec<String>,
}

impl RedactStage {
    pub fn new(config: Config, vault: Option<Vault>) -> Result<RedactStage, crate::RedactorError> {
        Ok(RedactStage {
            redactor: Redactor::new(&config)?,
            config,
            vault,
            payload_keys: None,
        })
    }

    /// Redacts one request due at `step`.
    pub async fn handle(&self, mut env: Envelope<Exchange>, step: Step) -> StageOutcome {
        match step {
            Step::RedactRequest => {
                let (counts, entry) = self.redact_request(&mut env);
                // Sealed whenever a restricted field was removed, even with nothing to keep: the
                // way back then knows a missing seal was lost, not never made.
                let seal = !entry.is_empty() || counts.contains_key(RESTRICTED);
                if let (Some(vault), true) = (&self.vault, seal) {
                    match vault.seal(&env.tenant, env.id, &entry).await {
                        Ok(sealed) => env.body.vault = Some(sealed),
                        Err(e) => {
                            tracing::warn!(error = %e, "token vault unavailable; retrying");
                            return StageOutcome::Retry(VAULT_RETRY);
                        }
                    }
                }
                env.body.redactions.request = owned(&counts);
                let kept = json!({ "input": env.body.request.input });
                let sealed = self.seal(&env, step, kept);
                self.continued(env, "request", &counts, sealed)
            }
            Step::RedactResponse => {
                // Taken out whatever happens next: the sealed tokens never leave for the client.
                let had_restricted = env.body.redactions.request.contains_key(RESTRICTED);
                let entry = match (env.body.vault.take(), &self.vault) {
                    // Restricted values were removed on the way in, but their seal is gone
                    // (dropped by a stage that predates the field): nothing to check against.
                    (None, Some(_)) if had_restricted => Err(Blocked {
                        reason: "vault_missing",
                        types: Vec::new(),
                    }),
                    (None, _) | (Some(_), None) => Ok(VaultEntry::default()),
                    (Some(sealed), Some(vault)) => {
                        match vault.open_sealed(&env.tenant, env.id, &sealed).await {
                            Ok(entry) => Ok(entry),
                            Err(VaultError::Unavailable(e)) => {
                                tracing::warn!(error = %e, "token vault unavailable; retrying");
                                return StageOutcome::Retry(VAULT_RETRY);
                            }
                            Err(e @ VaultError::DoesNotOpen(_)) => {
                                tracing::warn!(error = %e, "the request's token vault does not open; its answer is withheld");
                                Err(Blocked {
                                    reason: "vault_unreadable",
                                    types: Vec::new(),
                                })
                            }
                        }
                    }
                };
                match entry.and_then(|entry| self.redact_response(&mut env, &entry)) {
                    Ok((counts, restored, checked)) => {
                        env.body.redactions.response = owned(&counts);
                        let mut extra = json!({ "restored": restored });
                        if let Some(answer) = checked {
                            let sealed = self.seal(&env, step, json!({ "answer": answer }));
                            if let (Some(e), Value::Object(more)) = (extra.as_object_mut(), sealed)
                            {
                                e.extend(more);
                            }
                        }
                        self.continued(env, "response", &counts, extra)
                    }
                    Err(blocked) => {
                        metrics::counter!("mcplane_redaction_blocked_total", "reason" => blocked.reason)
                            .increment(1);
                        // The answer is withheld whole: the client gets the coded error only.
                        env.body.response = None;
                        let message = if blocked.types.is_empty() {
                            "the answer was withheld: the request's token vault was lost or \
                             expired, so it could not be checked for restricted values"
                                .to_string()
                        } else {
                            format!(
                                "the answer was withheld: it carried {} the client may not see",
                                blocked.types.join(", ")
                            )
                        };
                        StageOutcome::Fail {
                            error: ErrorBody::new(ErrorCode::OutputBlocked, message),
                            detail: json!({
                                "direction": "response",
                                "blocked": blocked.reason,
                                "types": blocked.types,
                            }),
                            env: Box::new(env),
                        }
                    }
                }
            }
            other => StageOutcome::Fail {
                error: ErrorBody::new(
                    ErrorCode::Misrouted,
                    format!("the redaction service does not perform {}", other.as_str()),
                ),
                env: Box::new(env),
                detail: json!({}),
            },
        }
    }

    /// The audit detail that keeps `payload` sealed with the tenant's key: `{"payload": …}`,
    /// or `{"payload_withheld": reason}` when it cannot be sealed (the request goes on; a
    /// missing payload is logged and counted, never replaced by plaintext).
    fn seal(&self, env: &Envelope<Exchange>, step: Step, payload: Value) -> Value {
        let Some(keys) = &self.payload_keys else {
            return json!({});
        };
        // The key is read from disk each time so that a destroyed key stops being used at once.
        let sealed = keys
            .load_or_create(&env.tenant)
            .and_then(|key| key.seal(&env.tenant, env.id, step.as_str(), &payload));
        match sealed {
            Ok(sealed) => json!({ PAYLOAD_DETAIL_KEY: sealed }),
            Err(e) => {
                metrics::counter!("mcplane_audit_payloads_withheld_total").increment(1);
                tracing::error!(error = %e, "cannot seal the audit payload; kept without it");
                json!({ "payload_withheld": "no usable tenant audit key" })
            }
        }
    }

    fn continued(
        &self,
        env: Envelope<Exchange>,
        direction: &'static str,
        counts: &Counts,
        extra: Value,
    ) -> StageOutcome {
        for (kind, n) in counts {
            metrics::counter!("mcplane_redactions_total", "type" => *kind, "direction" => direction)
                .increment(u64::from(*n));
        }
        let total: u32 = counts.values().sum();
        if total > 0 {
            tracing::debug!(direction, total, "entities redacted");
        }
        let mut detail = json!({
            "direction": direction,
            "counts": owned(counts),
            "total": total,
        });
        if let (Some(d), Value::Object(more)) = (detail.as_object_mut(), extra) {
            d.extend(more);
        }
        StageOutcome::Continue {
            env: Box::new(env),
            detail,
        }
    }

    /// The inbound step, pure: rewrites input and context, returns the counts and what the
    /// vault must keep.
    pub fn redact_request(&self, env: &mut Envelope<Exchange>) -> (Counts, VaultEntry) {
        let engine = self.redactor.engine(&env.tenant);
        let key = tenant_hash_key(&self.config, &env.tenant);
        let classification = env.classification;
        let action = |s: &crate::Span| self.config.action(s.kind, classification);
        let mut tokens = Tokens::default();
        let mut counts = Counts::new();
        let mut restricted = BTreeSet::new();
        let redact = |text: &mut String, tokens: &mut Tokens, counts: &mut Counts| {
            let spans = engine.find(text);
            if let Some(out) = apply(text, &spans, action, &key, Some(tokens), counts) {
                *text = out;
            }
        };
        redact(&mut env.body.request.input, &mut tokens, &mut counts);
        for item in &mut env.body.context {
            walk(
                &mut item.data,
                false,
                &self.config.restricted_fields,
                &mut |s, restricted_field| {
                    if restricted_field {
                        if s.len() >= MIN_RESTRICTED_LEN {
                            restricted.insert(s.clone());
                        }
                        *s = format!("[REDACTED:{RESTRICTED}]");
                        *counts.entry(RESTRICTED).or_insert(0) += 1;
                    } else {
                        redact(s, &mut tokens, &mut counts);
                    }
                },
            );
        }
        let entry = VaultEntry {
            tokens: tokens.originals,
            restricted: restricted.into_iter().collect(),
        };
        (counts, entry)
    }

    /// The outbound step, pure: blocks, masks and restores. Returns the counts of what the
    /// model's answer carried, how many tokens were put back, and the answer as checked
    /// (masked, tokens not yet restored: what the audit trail may keep).
    pub fn redact_response(
        &self,
        env: &mut Envelope<Exchange>,
        entry: &VaultEntry,
    ) -> Result<(Counts, u32, Option<String>), Blocked> {
        let engine = self.redactor.engine(&env.tenant);
        let mut counts = Counts::new();
        let mut checked = None;
        if let Some(response) = &mut env.body.response {
            let spans = engine.find(&response.text);
            let blocking: BTreeSet<String> = spans
                .iter()
                .filter(|s| self.blocks_output(s.kind))
                .map(|s| s.kind.as_str().to_string())
                .collect();
            if !blocking.is_empty() {
                return Err(Blocked {
                    reason: "secret_in_output",
                    types: blocking.into_iter().collect(),
                });
            }
            if entry
                .restricted
                .iter()
                .any(|v| response.text.contains(v.as_str()))
            {
                return Err(Blocked {
                    reason: "restricted_field",
                    types: vec![RESTRICTED.to_string()],
                });
            }
            let key = tenant_hash_key(&self.config, &env.tenant);
            let classification = env.classification;
            let action = |s: &crate::Span| match self.config.action(s.kind, classification) {
                // The model made this one up or knew it: no client sent it, nobody gets it back.
                Action::Tokenize => Action::Mask,
                other => other,
            };
            if let Some(out) = apply(&response.text, &spans, action, &key, None, &mut counts) {
                response.text = out;
            }
            checked = Some(response.text.clone());
        }
        let roles = env
            .principal
            .as_ref()
            .map(|p| p.roles.clone())
            .unwrap_or_default();
        let allowed = |kind: &str| self.config.may_detokenize(kind, &roles);
        let mut restored = 0;
        let mut restore = |text: &mut String| {
            if let Some((out, n)) = detokenize(text, &entry.tokens, allowed) {
                *text = out;
                restored += n;
            }
        };
        if let Some(response) = &mut env.body.response {
            restore(&mut response.text);
        }
        restore(&mut env.body.request.input);
        for item in &mut env.body.context {
            walk(&mut item.data, false, &[], &mut |s, _| restore(s));
        }
        Ok((counts, restored, checked))
    }

    fn blocks_output(&self, kind: EntityType) -> bool {
        self.config.block_output.iter().any(|name| {
            name.eq_ignore_ascii_case(kind.as_str())
                || EntityType::expand(name).is_some_and(|kinds| kinds.contains(&kind))
        })
    }
}

fn owned(counts: &Counts) -> BTreeMap<String, u32> {
    counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Calls `f` on every string value, however deep (serde_json caps nesting at 128 when parsing,
/// so the recursion is bounded), saying whether it sits under a restricted field. Object keys
/// are field names, not data, and are left alone.
fn walk(
    value: &mut Value,
    restricted: bool,
    fields: &[String],
    f: &mut impl FnMut(&mut String, bool),
) {
    match value {
        Value::String(s) => f(s, restricted),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| walk(v, restricted, fields, f)),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let r = restricted || fields.iter().any(|name| name == k);
                walk(v, r, fields, f);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::{
        AiRequest, AiResponse, ContextItem, Itinerary, Principal, PrincipalKind, RequestType, Usage,
    };

    fn stage(config: Config) -> RedactStage {
        RedactStage::new(config, None).unwrap()
    }

    fn exchange(input: &str, roles: &[&str]) -> Envelope<Exchange> {
        let mut env = Envelope::new(
            "acme",
            Exchange::new(AiRequest::new(RequestType::Answer, input)),
        );
        env.itinerary = Itinerary::ai_request();
        env.principal = Some(Principal {
            id: "key_000000000001".into(),
            tenant: "acme".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            kind: PrincipalKind::User,
        });
        env
    }

    fn answer(env: &mut Envelope<Exchange>, text: &str) {
        env.body.response = Some(AiResponse {
            text: text.into(),
            provider: "local".into(),
            model: "m".into(),
            usage: Usage::default(),
        });
    }

    fn continued(outcome: StageOutcome) -> (Envelope<Exchange>, Value) {
        match outcome {
            StageOutcome::Continue { env, detail } => (*env, detail),
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn request_input_and_nested_context_are_tokenised_and_restricted_fields_removed() {
        let config = Config {
            restricted_fields: vec!["salary".into()],
            ..Config::default()
        };
        let mut env = exchange(
            "alice@example.com says 10.0.0.1 is down; alice@example.com",
            &[],
        );
        env.body.context.push(ContextItem {
            source: "cmdb".into(),
            subject: "payments-db".into(),
            data: json!({
                "owner": "carol@example.com",
                "tier": 0,
                "restricted": {"oncall_phone": "+1 415 555 0199", "hosts": ["10.0.0.2", "db.internal"], "salary": "95000 EUR"},
            }),
        });
        let (env, detail) = continued(stage(config).handle(env, Step::RedactRequest).await);
        assert_eq!(
            env.body.request.input,
            "<EMAIL_1> says <IP_1> is down; <EMAIL_1>"
        );
        let data = &env.body.context[0].data;
        assert_eq!(data["owner"], "<EMAIL_2>");
        assert_eq!(data["tier"], 0);
        assert_eq!(data["restricted"]["oncall_phone"], "<PHONE_1>");
        assert_eq!(
            data["restricted"]["hosts"],
            json!(["<IP_2>", "db.internal"])
        );
        assert_eq!(data["restricted"]["salary"], "[REDACTED:RESTRICTED]");
        assert_eq!(
            detail["counts"],
            json!({"EMAIL": 3, "IP": 2, "PHONE": 1, "RESTRICTED": 1})
        );
        assert_eq!(detail["total"], 7);
        assert!(!detail.to_string().contains("example.com"));
    }

    #[tokio::test]
    async fn payloads_are_kept_sealed_after_redaction_and_open_only_with_the_tenant_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::new(dir.path());
        let mut s = stage(Config::default());
        s.payload_keys = Some(keys.clone());
        let env = exchange("alice@example.com says 10.0.0.1 is down", &[]);
        let id = env.id;
        let (mut env, detail) = continued(s.handle(env, Step::RedactRequest).await);
        assert!(
            !detail.to_string().contains("alice"),
            "no plaintext: {detail}"
        );
        let sealed: mcplane_shared::body::audit::SealedPayload =
            serde_json::from_value(detail[PAYLOAD_DETAIL_KEY].clone()).unwrap();
        let key = keys.require("acme").unwrap();
        assert_eq!(sealed.key_id, key.id());
        assert_eq!(
            key.open(&sealed, "acme", id, "redact_request").unwrap(),
            json!({"input": "<EMAIL_1> says <IP_1> is down"})
        );

        env.itinerary.advance();
        answer(&mut env, "call bob@example.org about <IP_1>");
        let (_, detail) = continued(s.handle(env, Step::RedactResponse).await);
        let sealed_answer: mcplane_shared::body::audit::SealedPayload =
            serde_json::from_value(detail[PAYLOAD_DETAIL_KEY].clone()).unwrap();
        let opened = key
            .open(&sealed_answer, "acme", id, "redact_response")
            .unwrap();
        assert_eq!(
            opened,
            json!({"answer": "call [REDACTED:EMAIL] about <IP_1>"})
        );

        // Shredded: the kept payloads no longer open with anything the operator holds.
        keys.destroy("acme").unwrap();
        assert!(keys.load("acme").unwrap().is_none());
    }

    #[test]
    fn tokens_come_back_only_for_authorised_roles_and_model_made_entities_are_masked() {
        let config = Config {
            detokenize_roles: BTreeMap::from([("EMAIL".into(), vec!["support".into()])]),
            ..Config::default()
        };
        let s = stage(config);
        for (roles, expected) in [
            (
                &["support"][..],
                "Write to jane@example.com (not [REDACTED:EMAIL]) about <IP_1>.",
            ),
            (
                &["viewer"][..],
                "Write to <EMAIL_1> (not [REDACTED:EMAIL]) about <IP_1>.",
            ),
        ] {
            let mut env = exchange("jane@example.com sees errors from 10.1.2.3", roles);
            let (_, entry) = s.redact_request(&mut env);
            answer(
                &mut env,
                "Write to <EMAIL_1> (not bob@example.org) about <IP_1>.",
            );
            let (counts, _, _) = s.redact_response(&mut env, &entry).unwrap();
            assert_eq!(env.body.response.as_ref().unwrap().text, expected);
            assert_eq!(counts, Counts::from([("EMAIL", 1)]));
        }
    }

    #[tokio::test]
    async fn an_answer_with_a_secret_is_blocked_with_a_code_and_no_secret_in_the_audit_detail() {
        let mut env = exchange("hi", &["sre"]);
        answer(&mut env, "Use key AKIAIOSFODNN7EXAMPLE");
        match stage(Config::default())
            .handle(env, Step::RedactResponse)
            .await
        {
            StageOutcome::Fail { env, error, detail } => {
                assert_eq!(error.code, ErrorCode::OutputBlocked);
                assert!(env.body.response.is_none());
                assert_eq!(detail["blocked"], "secret_in_output");
                assert_eq!(detail["types"], json!(["AWS_ACCESS_KEY"]));
                assert!(!detail.to_string().contains("AKIA") && !error.message.contains("AKIA"));
            }
            other => panic!("expected Fail, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_repeating_a_restricted_value_is_blocked() {
        let s = stage(Config {
            restricted_fields: vec!["salary".into()],
            ..Config::default()
        });
        let mut env = exchange("what does the owner earn?", &[]);
        env.body.context.push(ContextItem {
            source: "hr".into(),
            subject: "x".into(),
            data: json!({"salary": "95000 EUR"}),
        });
        let (_, entry) = s.redact_request(&mut env);
        answer(&mut env, "They earn 95000 EUR a year.");
        let blocked = s.redact_response(&mut env, &entry).unwrap_err();
        assert_eq!(blocked.reason, "restricted_field");
    }

    #[tokio::test]
    async fn a_response_step_without_response_records_nothing() {
        let (env, detail) = continued(
            stage(Config::default())
                .handle(exchange("x", &[]), Step::RedactResponse)
                .await,
        );
        assert!(env.body.redactions.response.is_empty());
        assert_eq!(detail["total"], 0);
    }
}
