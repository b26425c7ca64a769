//! Configuration that changes without a restart: a key of the config bucket that every replica
//! watches. `mcplane config push` writes a new version; each replica applies it in one step.

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Bus;
use crate::ServiceError;

/// Calls `apply` with the key's current value (if any), then with every new value, until
/// `stop`. A deleted key keeps whatever is in force. Watching starts before the first read, so a
/// push in between is seen either way.
pub async fn follow_config_key(
    bus: &Bus,
    key: &str,
    stop: CancellationToken,
    mut apply: impl FnMut(&[u8]),
) -> Result<(), ServiceError> {
    let kv = bus.bucket(&bus.subjects.config_bucket()).await?;
    let mut watch = kv.watch(key).await.map_err(ServiceError::bus)?;
    if let Ok(Some(value)) = kv.get(key).await {
        apply(&value);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = watch.next() => match next {
                Some(Ok(entry)) if entry.operation == Operation::Put => apply(&entry.value),
                Some(Ok(_)) => tracing::warn!(key, "pushed configuration deleted; the version in force stays"),
                Some(Err(e)) => tracing::warn!(key, error = %e, "configuration watch error"),
                None => {
                    tracing::warn!(key, "configuration watch ended; re-watching");
                    watch = kv.watch(key).await.map_err(ServiceError::bus)?;
                }
            }
        }
    }
}

/// Writes a new value for `key` and returns the bucket revision.
pub async fn push_config_key(bus: &Bus, key: &str, value: &[u8]) -> Result<u64, ServiceError> {
    let kv = bus.bucket(&bus.subjects.config_bucket()).await?;
    kv.put(key, value.to_vec().into())
        .await
        .map_err(ServiceError::bus)
}

/// The key's current value, if any.
pub async fn read_config_key(bus: &Bus, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
    let kv = bus.bucket(&bus.subjects.config_bucket()).await?;
    kv.get(key)
        .await
        .map(|v| v.map(|b| b.to_vec()))
        .map_err(ServiceError::bus)
}
