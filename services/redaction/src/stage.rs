//! The two redaction steps of a request's itinerary: `redact_request` (the input and every
//! string of injected context, before any model sees them) and `redact_response` (the model's
//! answer, before the client sees it).
//!
//! Counts by type go into the exchange and the audit entry; the matched text never goes
//! anywhere, not even the logs.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mcplane_shared::pipeline::StageOutcome;
use mcplane_shared::{Envelope, ErrorBody, ErrorCode, Exchange, Step};
use serde_json::{json, Value};

use crate::engine::{add_counts, Counts, Redactor};

/// What the redaction steps need for every request.
#[derive(Debug, Clone)]
pub struct RedactStage {
    pub redactor: Redactor,
}

impl RedactStage {
    /// Redacts one request due at `step`.
    pub fn handle(&self, mut env: Envelope<Exchange>, step: Step) -> StageOutcome {
        let (direction, counts) = match step {
            Step::RedactRequest => ("request", self.redact_request(&mut env.body)),
            Step::RedactResponse => ("response", self.redact_response(&mut env.body)),
            other => {
                return StageOutcome::Fail {
                    error: ErrorBody::new(
                        ErrorCode::Misrouted,
                        format!("the redaction service does not perform {}", other.as_str()),
                    ),
                    env: Box::new(env),
                    detail: json!({}),
                }
            }
        };
        for (kind, n) in &counts {
            metrics::counter!("mcplane_redactions_total", "type" => *kind, "direction" => direction)
                .increment(u64::from(*n));
        }
        let owned: BTreeMap<String, u32> =
            counts.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let total: u32 = owned.values().sum();
        if total > 0 {
            tracing::debug!(direction, total, "entities masked");
        }
        let detail = json!({
            "direction": direction,
            "counts": owned,
            "total": total,
        });
        match step {
            Step::RedactRequest => env.body.redactions.request = owned,
            _ => env.body.redactions.response = owned,
        }
        StageOutcome::Continue {
            env: Box::new(env),
            detail,
        }
    }

    fn redact_request(&self, body: &mut Exchange) -> Counts {
        let mut counts = Counts::new();
        self.redact_string(&mut body.request.input, &mut counts);
        for item in &mut body.context {
            self.redact_value(&mut item.data, &mut counts);
        }
        counts
    }

    fn redact_response(&self, body: &mut Exchange) -> Counts {
        let mut counts = Counts::new();
        if let Some(response) = &mut body.response {
            self.redact_string(&mut response.text, &mut counts);
        }
        counts
    }

    fn redact_string(&self, text: &mut String, counts: &mut Counts) {
        let (out, found) = self.redactor.redact(text);
        if let Cow::Owned(masked) = out {
            *text = masked;
            add_counts(counts, &found);
        }
    }

    /// Every string value, however deep (serde_json caps nesting at 128 when parsing, so the
    /// recursion is bounded). Object keys are field names, not data, and are left alone.
    fn redact_value(&self, value: &mut Value, counts: &mut Counts) {
        match value {
            Value::String(s) => self.redact_string(s, counts),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v, counts)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact_value(v, counts)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use mcplane_shared::{AiRequest, AiResponse, ContextItem, Itinerary, RequestType, Usage};

    fn stage() -> RedactStage {
        RedactStage {
            redactor: Redactor::new(&Config::default()).unwrap(),
        }
    }

    fn exchange(input: &str) -> Envelope<Exchange> {
        let mut env = Envelope::new(
            "acme",
            Exchange::new(AiRequest::new(RequestType::Answer, input)),
        );
        env.itinerary = Itinerary::ai_request();
        env
    }

    fn continued(outcome: StageOutcome) -> (Envelope<Exchange>, Value) {
        match outcome {
            StageOutcome::Continue { env, detail } => (*env, detail),
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    #[test]
    fn request_input_and_nested_context_are_masked() {
        let mut env = exchange("alice@example.com says 10.0.0.1 is down");
        env.body.context.push(ContextItem {
            source: "cmdb".into(),
            subject: "payments-db".into(),
            data: json!({
                "owner": "carol@example.com",
                "tier": 0,
                "restricted": {"oncall_phone": "+1 415 555 0199", "hosts": ["10.0.0.2", "db.internal"]},
            }),
        });
        let (env, detail) = continued(stage().handle(env, Step::RedactRequest));
        assert_eq!(
            env.body.request.input,
            "[REDACTED:EMAIL] says [REDACTED:IP] is down"
        );
        let data = &env.body.context[0].data;
        assert_eq!(data["owner"], "[REDACTED:EMAIL]");
        assert_eq!(data["tier"], 0);
        assert_eq!(data["restricted"]["oncall_phone"], "[REDACTED:PHONE]");
        assert_eq!(
            data["restricted"]["hosts"],
            json!(["[REDACTED:IP]", "db.internal"])
        );
        let expected = BTreeMap::from([
            ("EMAIL".to_string(), 2),
            ("IP".to_string(), 2),
            ("PHONE".to_string(), 1),
        ]);
        assert_eq!(env.body.redactions.request, expected);
        assert!(env.body.redactions.response.is_empty());
        assert_eq!(detail["direction"], "request");
        assert_eq!(detail["counts"], json!({"EMAIL": 2, "IP": 2, "PHONE": 1}));
        assert_eq!(detail["total"], 5);
        assert!(!detail.to_string().contains("example.com"));
    }

    #[test]
    fn response_text_is_masked() {
        let mut env = exchange("hi");
        env.body.response = Some(AiResponse {
            text: "Use key AKIAIOSFODNN7EXAMPLE".into(),
            provider: "local".into(),
            model: "m".into(),
            usage: Usage::default(),
        });
        let (env, detail) = continued(stage().handle(env, Step::RedactResponse));
        assert_eq!(
            env.body.response.unwrap().text,
            "Use key [REDACTED:AWS_ACCESS_KEY]"
        );
        assert_eq!(
            env.body.redactions.response,
            BTreeMap::from([("AWS_ACCESS_KEY".to_string(), 1)])
        );
        assert_eq!(detail["counts"], json!({"AWS_ACCESS_KEY": 1}));
    }

    #[test]
    fn a_response_step_without_response_records_nothing() {
        let (env, detail) = continued(stage().handle(exchange("x"), Step::RedactResponse));
        assert!(env.body.redactions.response.is_empty());
        assert_eq!(detail["total"], 0);
    }
}
