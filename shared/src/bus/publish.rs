//! Publishing: one [`Publication`] per outgoing message, sent together with their acks
//! awaited together.

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use super::Bus;
use crate::body::audit::{AuditEvent, AuditOutcome};
use crate::envelope::{BodyKind, Envelope};
use crate::error::{ErrorCode, ServiceError};

/// One message to publish. Serialisable, so a stage can keep its outputs in the ledger and
/// re-send exactly the same bytes (with the same `Nats-Msg-Id`) when a message is redelivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub subject: String,
    /// `Nats-Msg-Id` for JetStream deduplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// W3C `traceparent` header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// JSON text of the message.
    pub payload: String,
    /// Publish on core NATS (a client's reply inbox) instead of through JetStream.
    #[serde(default)]
    pub core: bool,
    /// Sent before the other publications of the same batch. Audit events are, so a tenant's
    /// chain lists a request's stages in the order they happened: the server reads one
    /// connection's messages in order and queues each stream's in order, so this stage's audit
    /// event is queued on the audit stream before the hand-off exists, hence before the next
    /// stage can audit. The acks of the whole batch are awaited together (the hand-off does not
    /// wait for the audit ack); a failed audit publish still fails the batch, so the input is
    /// not acked and is redone (the hand-off then deduplicated by its `Nats-Msg-Id`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
}

impl Publication {
    /// A JetStream publication of an envelope, deduplicated by `<envelope id>:<stage>`.
    pub fn envelope<B: BodyKind>(
        subject: impl Into<String>,
        env: &Envelope<B>,
        stage: &str,
    ) -> Result<Self, ServiceError> {
        let payload =
            serde_json::to_string(env).map_err(|e| ServiceError::Encode(e.to_string()))?;
        Ok(Publication {
            subject: subject.into(),
            msg_id: Some(format!("{}:{}", env.id, stage)),
            traceparent: Some(env.trace.traceparent()),
            payload,
            core: false,
            first: false,
        })
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(id) = &self.msg_id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        if let Some(tp) = &self.traceparent {
            headers.insert("traceparent", tp.as_str());
        }
        headers
    }
}

/// An audit event for one stage's handling of `env`, as a publication on
/// `mcplane.audit.<tenant>` (deduplicated by `<request id>:<stage>:audit`).
pub fn audit_publication<B: BodyKind>(
    bus: &Bus,
    env: &Envelope<B>,
    stage: &str,
    outcome: AuditOutcome,
    code: Option<ErrorCode>,
    detail: serde_json::Value,
) -> Result<Publication, ServiceError> {
    let tenant = if env.tenant.is_empty() {
        "_unauthenticated"
    } else {
        env.tenant.as_str()
    };
    let event = AuditEvent {
        request_id: env.id,
        stage: stage.to_string(),
        tenant: tenant.to_string(),
        principal: env.principal.as_ref().map(|p| p.id.clone()),
        outcome,
        code,
        detail,
        trace_id: env.trace.trace_id.clone(),
        at: chrono::Utc::now(),
    };
    let mut audit_env = env.derive(event);
    audit_env.tenant = tenant.to_string();
    let mut publication = Publication::envelope(bus.subjects.audit(tenant), &audit_env, stage)?;
    publication.msg_id = Some(format!("{}:{}:audit", env.id, stage));
    publication.first = true;
    Ok(publication)
}

impl Bus {
    /// Publishes every publication, JetStream ones with their acks awaited together; those
    /// marked [`Publication::first`] are sent before the others.
    pub async fn publish_all(&self, publications: &[Publication]) -> Result<(), ServiceError> {
        let firsts = publications.iter().filter(|p| p.first);
        let others = publications.iter().filter(|p| !p.first);
        self.publish_batch(firsts.chain(others).map(|p| Outgoing {
            subject: p.subject.clone(),
            headers: p.headers(),
            payload: bytes::Bytes::from(p.payload.clone()),
            core: p.core,
        }))
        .await
    }

    /// [`Bus::publish_all`] for publications the caller no longer needs: their payloads move
    /// into the messages instead of being copied.
    pub async fn publish_all_owned(
        &self,
        mut publications: Vec<Publication>,
    ) -> Result<(), ServiceError> {
        // Stable: the order within the firsts and within the others is kept.
        publications.sort_by_key(|p| !p.first);
        self.publish_batch(publications.into_iter().map(|p| Outgoing {
            headers: p.headers(),
            subject: p.subject,
            payload: bytes::Bytes::from(p.payload),
            core: p.core,
        }))
        .await
    }

    async fn publish_batch(
        &self,
        publications: impl Iterator<Item = Outgoing>,
    ) -> Result<(), ServiceError> {
        let mut acks = Vec::new();
        for p in publications {
            if p.core {
                self.client
                    .publish_with_headers(p.subject.clone(), p.headers, p.payload)
                    .await
                    .map_err(|e| ServiceError::bus(format!("publish {}: {e}", p.subject)))?;
            } else {
                let ack = self
                    .js
                    .send_publish(
                        p.subject.clone(),
                        PublishMessage::build()
                            .payload(p.payload)
                            .headers(p.headers),
                    )
                    .await
                    .map_err(|e| ServiceError::bus(format!("publish {}: {e}", p.subject)))?;
                acks.push((p.subject, ack));
            }
        }
        for (subject, ack) in acks {
            ack.await
                .map_err(|e| ServiceError::bus(format!("publish ack {subject}: {e}")))?;
        }
        Ok(())
    }

    /// Publishes one envelope through JetStream and waits for the ack.
    pub async fn publish_envelope<B: BodyKind>(
        &self,
        subject: impl Into<String>,
        env: &Envelope<B>,
        stage: &str,
    ) -> Result<(), ServiceError> {
        self.publish_all(&[Publication::envelope(subject, env, stage)?])
            .await
    }
}

/// One message on its way out.
struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
    core: bool,
}
