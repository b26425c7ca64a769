//! The one envelope every bus message travels in.
//!
//! The envelope is generic over its body so that a stage decodes straight into the type it
//! expects (parse at the edge, then trust the type); `kind` names the body type on the wire and is
//! checked against [`BodyKind::KIND`] when decoding, so a message on the wrong subject is a poison
//! message, not a silently mis-read one.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorCode, ServiceError};

/// The type of an envelope's body, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An AI request moving through the governed pipeline ([`crate::Exchange`]).
    Exchange,
    /// An alert as a monitoring tool sent it ([`crate::RawAlert`]).
    RawAlert,
    /// An alert normalised to mcplane's canonical form ([`crate::CanonicalAlert`]).
    Alert,
    /// The canonical alerts of one raw message that fall on one partition ([`crate::AlertBatch`]).
    AlertBatch,
    /// A change in an incident's life ([`crate::IncidentEvent`]).
    Incident,
    /// An incident summary for the people on call ([`crate::IncidentSummary`]).
    Summary,
    /// One stage's record of what it did ([`crate::AuditEvent`]).
    Audit,
    /// A tenant's model spend crossed a budget's soft limit ([`crate::BudgetAlert`]).
    BudgetAlert,
    /// A signed statement of a tenant's audit chain ([`crate::body::audit::Checkpoint`]).
    Checkpoint,
    /// A record a bridge could never turn into an alert ([`crate::DeadLetter`]).
    DeadLetter,
}

/// Ties a body type to its [`Kind`].
pub trait BodyKind: Serialize + DeserializeOwned {
    const KIND: Kind;
}

/// W3C trace context (`traceparent`), carried in the envelope and in the NATS headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits: the span that published this message.
    pub span_id: String,
}

impl TraceContext {
    /// A new trace with a random trace id and span id.
    pub fn new_root() -> Self {
        let a = Uuid::new_v4().simple().to_string();
        let b = Uuid::new_v4().simple().to_string();
        TraceContext {
            trace_id: a,
            span_id: b[..16].to_string(),
        }
    }

    /// The same trace, with a new span id for the next hop.
    pub fn child(&self) -> Self {
        let b = Uuid::new_v4().simple().to_string();
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: b[..16].to_string(),
        }
    }

    /// The `traceparent` header value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// Parses a `traceparent` header; `None` when it is not a valid version-00 value.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace, 32) || !hex(span, 16) || trace.bytes().all(|b| b == b'0')
        {
            return None;
        }
        Some(TraceContext {
            trace_id: trace.to_ascii_lowercase(),
            span_id: span.to_ascii_lowercase(),
        })
    }
}

/// Who is asking: resolved by the auth service, never taken from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Principal {
    /// Stable principal id (for API keys, the key id; never the key itself).
    pub id: String,
    /// The one tenant this principal belongs to.
    pub tenant: String,
    pub roles: Vec<String>,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    /// A machine caller such as the correlator. A service account whose tenant is `*` may act
    /// for the tenant named in the envelope (the correlator summarises every tenant's incidents;
    /// the tenant there comes from a subject that NATS permissions already isolate).
    ServiceAccount,
}

/// How sensitive the data in a message is; the model router keeps restricted data private.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// One stop on a request's routing slip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Inject the context the principal may see (enrichment service).
    Enrich,
    /// Redact the request before any model sees it (redaction service).
    RedactRequest,
    /// Route to a provider and invoke the model (model service).
    Invoke,
    /// Redact the response before the client sees it (redaction service).
    RedactResponse,
}

impl Step {
    /// The service that performs this step.
    pub fn service(self) -> crate::Service {
        use crate::Service;
        match self {
            Step::Enrich => Service::Enrichment,
            Step::RedactRequest | Step::RedactResponse => Service::Redaction,
            Step::Invoke => Service::Model,
        }
    }

    /// The name used in ledgers, audit entries and `Nats-Msg-Id`s.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Enrich => "enrich",
            Step::RedactRequest => "redact_request",
            Step::RedactResponse => "redact_response",
            Step::Invoke => "invoke",
        }
    }
}

/// The routing slip: written by the auth service, advanced by each stage. After the last step
/// the result is delivered to the envelope's `reply_to` and stored for `GET /v1/requests/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Itinerary {
    pub steps: Vec<Step>,
    /// Index of the step to perform next; equal to `steps.len()` when the slip is done.
    pub next: usize,
}

impl Itinerary {
    /// The fixed itinerary of an AI request: a client can never skip redaction or audit.
    pub fn ai_request() -> Self {
        Itinerary {
            steps: vec![
                Step::Enrich,
                Step::RedactRequest,
                Step::Invoke,
                Step::RedactResponse,
            ],
            next: 0,
        }
    }

    pub fn current(&self) -> Option<Step> {
        self.steps.get(self.next).copied()
    }

    /// Moves past the current step and returns the one after it, if any.
    pub fn advance(&mut self) -> Option<Step> {
        if self.next < self.steps.len() {
            self.next += 1;
        }
        self.current()
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.steps.len()
    }
}

/// Every bus message: id (UUIDv7), tenant, kind, time, trace context, principal,
/// classification, itinerary, reply subject and body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<B> {
    /// UUIDv7: time-ordered, also the request id in logs and the key of every ledger.
    pub id: Uuid,
    /// The tenant the data belongs to; empty only on a request not yet authenticated.
    pub tenant: String,
    pub kind: Kind,
    #[serde(with = "crate::rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub time: DateTime<Utc>,
    pub trace: TraceContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    #[serde(default)]
    pub classification: Classification,
    #[serde(default)]
    pub itinerary: Itinerary,
    /// Where the final result goes: a core inbox (`_INBOX.…`) or an internal stream subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The caller's bearer credential, only between the gateway and the auth service, which
    /// removes it before the request goes any further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub body: B,
}

impl<B: BodyKind> Envelope<B> {
    /// A new envelope with a fresh UUIDv7, the current time and a new trace.
    pub fn new(tenant: impl Into<String>, body: B) -> Self {
        Self::new_at(Uuid::now_v7(), Utc::now(), tenant, body)
    }

    /// A new envelope with the id and time given (for tests and deterministic replays).
    pub fn new_at(id: Uuid, time: DateTime<Utc>, tenant: impl Into<String>, body: B) -> Self {
        Envelope {
            id,
            tenant: tenant.into(),
            kind: B::KIND,
            time,
            trace: TraceContext::new_root(),
            principal: None,
            classification: Classification::default(),
            itinerary: Itinerary::default(),
            reply_to: None,
            credential: None,
            body,
        }
    }

    /// Serialises to JSON bytes.
    pub fn to_bytes(&self) -> Result<bytes::Bytes, ServiceError> {
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .map_err(|e| ServiceError::Encode(e.to_string()))
    }

    /// Decodes JSON bytes, checking that the kind on the wire matches `B`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ErrorCode> {
        let env: Envelope<B> =
            serde_json::from_slice(bytes).map_err(|_| ErrorCode::InvalidEnvelope)?;
        if env.kind != B::KIND {
            return Err(ErrorCode::InvalidEnvelope);
        }
        Ok(env)
    }

    /// A derived envelope for another body (same tenant, trace, principal, classification),
    /// with a fresh id.
    pub fn derive<C: BodyKind>(&self, body: C) -> Envelope<C> {
        Envelope {
            id: Uuid::now_v7(),
            tenant: self.tenant.clone(),
            kind: C::KIND,
            time: Utc::now(),
            trace: self.trace.child(),
            principal: self.principal.clone(),
            classification: self.classification,
            itinerary: Itinerary::default(),
            reply_to: None,
            credential: None,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawAlert;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let t = TraceContext::new_root();
        assert_eq!(TraceContext::from_traceparent(&t.traceparent()), Some(t));
        assert_eq!(TraceContext::from_traceparent("00-xyz-abc-01"), None);
        assert_eq!(
            TraceContext::from_traceparent(
                "00-00000000000000000000000000000000-0000000000000001-01"
            ),
            None
        );
    }

    #[test]
    fn itinerary_advances_to_done() {
        let mut it = Itinerary::ai_request();
        assert_eq!(it.current(), Some(Step::Enrich));
        assert_eq!(it.advance(), Some(Step::RedactRequest));
        assert_eq!(it.advance(), Some(Step::Invoke));
        assert_eq!(it.advance(), Some(Step::RedactResponse));
        assert_eq!(it.advance(), None);
        assert!(it.is_done());
        assert_eq!(it.advance(), None);
    }

    #[test]
    fn decoding_checks_the_kind() {
        let raw = RawAlert {
            source: "generic".into(),
            payload: serde_json::json!({"title": "x"}),
            received_at: Utc::now(),
        };
        let env = Envelope::new("acme", raw);
        let bytes = env.to_bytes().unwrap();
        assert!(Envelope::<RawAlert>::from_slice(&bytes).is_ok());
        assert_eq!(
            Envelope::<crate::Exchange>::from_slice(&bytes).err(),
            Some(ErrorCode::InvalidEnvelope)
        );
        assert_eq!(
            Envelope::<RawAlert>::from_slice(b"{not json").err(),
            Some(ErrorCode::InvalidEnvelope)
        );
    }
}
