//! Credential resolution over core request/reply, for callers that need a principal without
//! sending a request down the pipeline (the gateway's alert webhooks).
//!
//! Core NATS fits here: it is a query whose answer is only useful to the waiting caller, so a
//! lost message is just a retry, unlike a stage hand-off. Replicas share the queue group `auth`,
//! so each query is answered once.

use std::sync::Arc;

use async_nats::Subscriber;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::{ErrorBody, ErrorCode, Principal, ServiceError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;

/// The queue group every auth replica answers in.
pub const QUEUE_GROUP: &str = "auth";

/// `{"credential": "..."}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub credential: String,
}

/// `{"principal": {...}}` or `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReply {
    Principal(Principal),
    Error(ErrorBody),
}

/// Answers one query at time `now`. A service account for any tenant resolves with tenant `*`;
/// the caller decides which tenant it acts for.
pub async fn answer(credentials: &Credentials, payload: &[u8], now: DateTime<Utc>) -> ResolveReply {
    let request = match serde_json::from_slice::<ResolveRequest>(payload) {
        Ok(r) => r,
        Err(_) => {
            return ResolveReply::Error(ErrorBody::new(
                ErrorCode::InvalidJson,
                "expected {\"credential\": \"...\"}",
            ))
        }
    };
    match credentials.resolve(Some(&request.credential), now).await {
        Ok(principal) => ResolveReply::Principal(principal),
        Err(error) => ResolveReply::Error(error),
    }
}

/// Subscribes before `run` goes on, so the service answers as soon as it reports started.
pub async fn subscribe(bus: &Bus) -> Result<Subscriber, ServiceError> {
    let subject = bus.subjects.auth_resolve();
    let sub = bus
        .client
        .queue_subscribe(subject.clone(), QUEUE_GROUP.to_string())
        .await
        .map_err(|e| ServiceError::bus(format!("subscribe {subject}: {e}")))?;
    bus.client.flush().await.map_err(ServiceError::bus)?;
    Ok(sub)
}

/// Answers queries until `shutdown`, then unsubscribes.
pub async fn serve(
    bus: Bus,
    credentials: Arc<Credentials>,
    mut sub: Subscriber,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = sub.next() => match next {
                Some(msg) => msg,
                None => return Err(ServiceError::bus("auth resolve subscription closed")),
            },
        };
        let Some(reply_to) = msg.reply else {
            continue;
        };
        let reply = answer(&credentials, &msg.payload, Utc::now()).await;
        let outcome = match &reply {
            ResolveReply::Principal(_) => "ok",
            ResolveReply::Error(_) => "denied",
        };
        metrics::counter!("mcplane_auth_resolves_total", "outcome" => outcome).increment(1);
        let payload = match serde_json::to_vec(&reply) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a resolve reply");
                continue;
            }
        };
        if let Err(e) = bus.client.publish(reply_to, payload.into()).await {
            tracing::warn!(error = %e, "cannot send a resolve reply");
        }
    }
    if let Err(e) = sub.unsubscribe().await {
        tracing::warn!(error = %e, "unsubscribe from auth resolve failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStore;
    use mcplane_shared::PrincipalKind;

    #[tokio::test]
    async fn replies_have_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyStore::open(dir.path()).unwrap());
        let credentials = Credentials {
            keys: keys.clone(),
            fleet_keys: None,
            jwt: None,
        };
        let (key, record) = keys
            .create("acme", vec!["alerts".into()], PrincipalKind::User, None)
            .unwrap();

        let ok = answer(
            &credentials,
            format!(r#"{{"credential":"{key}"}}"#).as_bytes(),
            Utc::now(),
        )
        .await;
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["principal"]["id"], record.key_id.as_str());
        assert_eq!(json["principal"]["tenant"], "acme");

        let denied = answer(&credentials, br#"{"credential":"mcp_nope"}"#, Utc::now()).await;
        let json = serde_json::to_value(&denied).unwrap();
        assert_eq!(json["error"]["code"], "unauthenticated");

        let garbage = answer(&credentials, b"nope", Utc::now()).await;
        assert_eq!(
            serde_json::to_value(&garbage).unwrap()["error"]["code"],
            "invalid_json"
        );
    }
}
