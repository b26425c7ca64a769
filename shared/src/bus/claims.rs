//! Fleet-wide claims of once-only effects (a model call, a Slack post).
//!
//! A redelivery may land on a replica whose sled has never seen the message, so the local
//! ledger alone cannot stop a second model call. Before such an effect a worker creates the key
//! `<envelope id>.<stage>` in the claims bucket: the create is atomic, so exactly one replica
//! wins. The winner later overwrites the claim with the effect's result, which any replica can
//! then read back instead of repeating the effect.
//!
//! A pending claim records when it was made, so a loser can tell an effect still in progress
//! (wait and look again) from one whose owner died mid-effect (in doubt: never repeat blindly).

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::Bus;
use crate::error::ServiceError;

/// Pending claims hold `pending:<unix millis>`; a result is anything else (JSON, by convention).
const PENDING_PREFIX: &[u8] = b"pending:";

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the effect and must perform it, then [`Claims::complete`] it (or
    /// [`Claims::release`] it when the effect did not happen).
    Won,
    /// Someone claimed it this long ago and has not recorded a result (in progress, or crashed
    /// while performing it: the effect may or may not have happened).
    Pending { age: Duration },
    /// The effect happened; here is its recorded result.
    Done(Bytes),
}

#[derive(Clone)]
pub struct Claims {
    kv: kv::Store,
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Claims {
    pub async fn open(bus: &Bus) -> Result<Self, ServiceError> {
        Ok(Claims {
            kv: bus.bucket(&bus.subjects.claims_bucket()).await?,
        })
    }

    pub async fn claim(&self, key: &str) -> Result<Claim, ServiceError> {
        let pending = Bytes::from(format!("pending:{}", now_millis()));
        match self.kv.create(key, pending).await {
            Ok(_) => Ok(Claim::Won),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.kv.get(key).await.map_err(ServiceError::bus)? {
                    Some(v) if !v.starts_with(PENDING_PREFIX) => Ok(Claim::Done(v)),
                    Some(v) => {
                        let since = std::str::from_utf8(&v[PENDING_PREFIX.len()..])
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .unwrap_or(0);
                        let age = u64::try_from(now_millis() - since).unwrap_or(0);
                        Ok(Claim::Pending {
                            age: Duration::from_millis(age),
                        })
                    }
                    // Released between our create and our read: the next attempt may win.
                    None => Ok(Claim::Pending {
                        age: Duration::ZERO,
                    }),
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

    /// Gives a won claim back when the effect certainly did not happen (a refused connection,
    /// a retryable error), so that a later delivery may claim it again.
    pub async fn release(&self, key: &str) -> Result<(), ServiceError> {
        self.kv
            .purge(key)
            .await
            .map_err(|e| ServiceError::bus(format!("release claim {key}: {e}")))
    }
}
