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
//!
//! It also records which process made it. A JetStream ack can be lost while the write itself is
//! stored (nats-server restarted mid-publish): the create then looks failed to its maker, and
//! the next delivery would find "someone's" pending claim and end in doubt although nothing was
//! done. A process therefore knows its own claims: one it never saw won is taken over (nothing
//! can have happened), and a result it could not record is recorded on the next delivery.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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
    /// This process's id in the pending claims it makes.
    owner: String,
    mine: Arc<Mutex<Mine>>,
}

/// The claims this process made and has not settled.
#[derive(Default)]
struct Mine {
    /// Won and not yet completed or released: the effect may be in progress here.
    held: HashSet<String>,
    /// Completed here, but the record did not reach the bucket: recorded on the next look.
    unrecorded: HashMap<String, Bytes>,
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Claims {
    pub async fn open(bus: &Bus) -> Result<Self, ServiceError> {
        Ok(Claims {
            kv: bus.bucket(&bus.subjects.claims_bucket()).await?,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            mine: Arc::default(),
        })
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, Mine> {
        self.mine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn claim(&self, key: &str) -> Result<Claim, ServiceError> {
        // What this process knows comes first: a server restarted with `kill -9` may have lost
        // its last writes (claims included) even though it acknowledged them.
        if let Some(known) = self.known_here(key).await? {
            return Ok(known);
        }
        // Reserved here before the bus is asked, so a second delivery of the same key on this
        // process waits for the first instead of taking the first's pending claim (which names
        // this process) for one abandoned here.
        if !self.mine().held.insert(key.to_string()) {
            return Ok(Claim::Pending {
                age: Duration::ZERO,
            });
        }
        let outcome = self.claim_on_bus(key).await;
        if !matches!(outcome, Ok(Claim::Won)) {
            self.mine().held.remove(key);
        }
        outcome
    }

    async fn claim_on_bus(&self, key: &str) -> Result<Claim, ServiceError> {
        let pending = Bytes::from(format!("pending:{}:{}", now_millis(), self.owner));
        match self.kv.create(key, pending).await {
            Ok(_) => Ok(Claim::Won),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.kv.get(key).await.map_err(ServiceError::bus)? {
                    Some(v) if !v.starts_with(PENDING_PREFIX) => Ok(Claim::Done(v)),
                    Some(v) => {
                        // `pending:<unix millis>[:<owner>]`
                        let text = std::str::from_utf8(&v[PENDING_PREFIX.len()..]).unwrap_or("");
                        let (since, owner) = text.split_once(':').unwrap_or((text, ""));
                        if owner == self.owner {
                            // Made here by a create whose answer was lost, and nothing here is
                            // working on it (we hold the reservation): take it over.
                            return Ok(Claim::Won);
                        }
                        let since = since.parse::<i64>().unwrap_or(0);
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

    /// A claim this process holds: done here but not yet recorded (recorded now), or in
    /// progress here. `None` when this process has nothing on it.
    async fn known_here(&self, key: &str) -> Result<Option<Claim>, ServiceError> {
        let unrecorded = self.mine().unrecorded.get(key).cloned();
        if let Some(result) = unrecorded {
            self.complete(key, result.clone()).await?;
            return Ok(Some(Claim::Done(result)));
        }
        if self.mine().held.contains(key) {
            return Ok(Some(Claim::Pending {
                age: Duration::ZERO,
            }));
        }
        Ok(None)
    }

    /// Records the result of a won claim. When the record cannot be written, the result is kept
    /// here and recorded when the claim is next looked at.
    pub async fn complete(&self, key: &str, result: Bytes) -> Result<(), ServiceError> {
        match self.kv.put(key, result.clone()).await {
            Ok(_) => {
                let mut mine = self.mine();
                mine.held.remove(key);
                mine.unrecorded.remove(key);
                Ok(())
            }
            Err(e) => {
                self.mine().unrecorded.insert(key.to_string(), result);
                Err(ServiceError::bus(format!("complete claim {key}: {e}")))
            }
        }
    }

    /// Gives a won claim back when the effect certainly did not happen (a refused connection,
    /// a retryable error), so that a later delivery may claim it again.
    pub async fn release(&self, key: &str) -> Result<(), ServiceError> {
        // Not held any more either way: a purge that did not arrive leaves a pending claim of
        // this process that nothing is working on, which the next delivery here takes over.
        self.mine().held.remove(key);
        self.kv
            .purge(key)
            .await
            .map_err(|e| ServiceError::bus(format!("release claim {key}: {e}")))
    }
}
