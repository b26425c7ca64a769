//! Fleet-wide claims of once-only effects (a model call, a Slack post).
//!
//! A redelivery may land on a replica whose sled has never seen the message, so the local
//! ledger alone cannot stop a second model call. Before such an effect a worker creates the key
//! `<envelope id>.<stage>` in the claims bucket: the create is atomic, so exactly one replica
//! wins. The winner later overwrites the claim with the effect's result, which any replica can
//! then read back instead of repeating the effect.

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::Bus;
use crate::error::ServiceError;

/// The value a claim holds until its effect has a result.
const PENDING: &[u8] = b"\"pending\"";

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the effect and must perform it, then [`Claims::complete`] it.
    Won,
    /// Someone claimed it before and has not recorded a result (in progress, or crashed while
    /// performing it: the effect may or may not have happened).
    Pending,
    /// The effect happened; here is its recorded result.
    Done(Bytes),
}

#[derive(Clone)]
pub struct Claims {
    kv: kv::Store,
}

impl Claims {
    pub async fn open(bus: &Bus) -> Result<Self, ServiceError> {
        Ok(Claims {
            kv: bus.bucket(&bus.subjects.claims_bucket()).await?,
        })
    }

    pub async fn claim(&self, key: &str) -> Result<Claim, ServiceError> {
        match self.kv.create(key, Bytes::from_static(PENDING)).await {
            Ok(_) => Ok(Claim::Won),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.kv.get(key).await.map_err(ServiceError::bus)? {
                    Some(v) if v.as_ref() != PENDING => Ok(Claim::Done(v)),
                    _ => Ok(Claim::Pending),
                }
            }
            Err(e) => Err(ServiceError::bus(format!("claim {key}: {e}"))),
        }
    }

    /// Records the result of a won claim.
    pub async fn complete(&self, key: &str, result: Bytes) -> Result<(), ServiceError> {
        self.kv
            .put(key, result)
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::bus(format!("complete claim {key}: {e}")))
    }
}
