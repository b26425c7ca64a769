//! Delivering a request's final result: stored by id for `GET /v1/requests/{id}` and sent to
//! the envelope's reply subject.

use async_nats::jetstream::kv;

use super::{Bus, Publication};
use crate::body::exchange::Exchange;
use crate::envelope::Envelope;
use crate::error::ServiceError;

/// The publications that deliver a finished (or failed) request: a put into the results
/// bucket (a KV put is a publish on `$KV.<bucket>.<key>`) and the reply, durable through
/// JetStream when the reply subject is one of mcplane's own, on core NATS for a client inbox.
pub fn result_publications(
    bus: &Bus,
    env: &Envelope<Exchange>,
    stage: &str,
) -> Result<Vec<Publication>, ServiceError> {
    let payload = if env.body.vault.is_some() {
        // A request that failed between the two redaction steps still carries its sealed
        // tokens: they are for the redaction service alone, never for the client.
        let mut env = env.clone();
        env.body.vault = None;
        serde_json::to_string(&env)
    } else {
        serde_json::to_string(env)
    }
    .map_err(|e| ServiceError::Encode(e.to_string()))?;
    let mut out = vec![Publication {
        subject: format!("$KV.{}.{}", bus.subjects.results_bucket(), env.id),
        msg_id: None,
        traceparent: Some(env.trace.traceparent()),
        payload: payload.clone(),
        core: false,
        first: false,
    }];
    if let Some(reply) = &env.reply_to {
        let internal = bus.subjects.is_internal(reply);
        out.push(Publication {
            subject: reply.clone(),
            msg_id: internal.then(|| format!("{}:{}:result", env.id, stage)),
            traceparent: Some(env.trace.traceparent()),
            payload,
            core: !internal,
            first: false,
        });
    }
    Ok(out)
}

/// Reads stored results.
#[derive(Clone)]
pub struct ResultStore {
    kv: kv::Store,
}

impl ResultStore {
    pub async fn open(bus: &Bus) -> Result<Self, ServiceError> {
        Ok(ResultStore {
            kv: bus.bucket(&bus.subjects.results_bucket()).await?,
        })
    }

    pub async fn get(&self, id: &uuid::Uuid) -> Result<Option<Envelope<Exchange>>, ServiceError> {
        match self.kv.get(id.to_string()).await {
            Ok(Some(bytes)) => Envelope::<Exchange>::from_slice(&bytes)
                .map(Some)
                .map_err(|code| ServiceError::bus(format!("stored result {id}: {code}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(ServiceError::bus(e)),
        }
    }
}
