//! Results coming back to the replica that holds the client's connection.
//!
//! Each gateway replica subscribes once, at start-up, to its own inbox `<inbox>.*`; a request's
//! `reply_to` is `<inbox>.<id>`, and the result is handed to whichever handler is waiting for
//! that id. One wildcard subscription instead of one per request keeps the per-request cost at a
//! map insert. Core NATS may drop a reply (slow consumer, reconnect): the handler then answers
//! 202 and the client fetches the stored result, so a lost reply costs latency, never data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::Subscriber;
use futures::StreamExt;
use mcplane_shared::{Envelope, Exchange, ServiceError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Envelope<Exchange>>>>>;

/// The requests of this replica that wait for their result.
#[derive(Clone)]
pub struct Replies {
    inbox: String,
    waiters: Waiters,
}

/// A registered wait for one request's result; dropping it withdraws the registration.
pub struct Waiter {
    id: Uuid,
    waiters: Waiters,
    receiver: oneshot::Receiver<Envelope<Exchange>>,
}

impl Waiter {
    /// The result, or `None` if the dispatcher stopped first.
    pub async fn result(&mut self) -> Option<Envelope<Exchange>> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&self.id);
        }
    }
}

impl Replies {
    /// Subscribes to a fresh inbox of `client`; the returned subscription goes to [`Replies::dispatch`].
    pub async fn subscribe(
        client: &async_nats::Client,
    ) -> Result<(Self, Subscriber), ServiceError> {
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| ServiceError::bus(format!("subscribe {inbox}.*: {e}")))?;
        client.flush().await.map_err(ServiceError::bus)?;
        let replies = Replies {
            inbox,
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        Ok((replies, subscriber))
    }

    /// The reply subject of request `id`.
    pub fn reply_to(&self, id: Uuid) -> String {
        format!("{}.{id}", self.inbox)
    }

    /// Registers a wait for request `id`; call before publishing the request.
    pub fn wait_for(&self, id: Uuid) -> Waiter {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id, sender);
        }
        Waiter {
            id,
            waiters: self.waiters.clone(),
            receiver,
        }
    }

    /// Hands each reply to its waiter until `shutdown`, then unsubscribes.
    pub async fn dispatch(&self, mut subscriber: Subscriber, shutdown: CancellationToken) {
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = subscriber.next() => match next {
                    Some(msg) => msg,
                    None => {
                        tracing::error!(inbox = %self.inbox, "reply subscription closed");
                        break;
                    }
                },
            };
            self.deliver(&msg.subject, &msg.payload);
        }
        if let Err(e) = subscriber.unsubscribe().await {
            tracing::debug!(error = %e, "unsubscribe from the reply inbox failed");
        }
        // Waiters still registered see their channel close and answer 202.
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.clear();
        }
    }

    fn deliver(&self, subject: &str, payload: &[u8]) {
        let Some(id) = subject
            .rsplit('.')
            .next()
            .and_then(|token| Uuid::parse_str(token).ok())
        else {
            tracing::warn!(%subject, "reply on a subject without a request id");
            return;
        };
        let env = match Envelope::<Exchange>::from_slice(payload) {
            Ok(env) if env.id == id => env,
            Ok(env) => {
                tracing::warn!(request_id = %id, body_id = %env.id, "reply for another request; ignored");
                return;
            }
            Err(code) => {
                tracing::warn!(request_id = %id, %code, "undecodable reply; the client can fetch the stored result");
                return;
            }
        };
        let sender = self.waiters.lock().ok().and_then(|mut w| w.remove(&id));
        match sender {
            // The receiver may have timed out just now; the stored result still serves it.
            Some(sender) => {
                let _ = sender.send(env);
            }
            None => tracing::debug!(request_id = %id, "reply after its waiter left"),
        }
    }

    #[cfg(test)]
    fn detached(inbox: &str) -> Self {
        Replies {
            inbox: inbox.to_string(),
            waiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::{AiRequest, RequestType};

    fn exchange(id: Uuid) -> Envelope<Exchange> {
        let request = AiRequest::new(RequestType::Answer, "why");
        Envelope::new_at(id, chrono::Utc::now(), "acme", Exchange::new(request))
    }

    #[tokio::test]
    async fn a_reply_reaches_the_waiter_of_its_id_only() {
        let replies = Replies::detached("_INBOX.x");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut wa = replies.wait_for(a);
        let _wb = replies.wait_for(b);
        let env = exchange(a);
        replies.deliver(&replies.reply_to(a), &env.to_bytes().unwrap());
        assert_eq!(wa.result().await.map(|e| e.id), Some(a));
        assert_eq!(replies.waiters.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn dropping_a_waiter_withdraws_it_and_late_replies_are_ignored() {
        let replies = Replies::detached("_INBOX.x");
        let id = Uuid::now_v7();
        drop(replies.wait_for(id));
        assert!(replies.waiters.lock().unwrap().is_empty());
        replies.deliver(&replies.reply_to(id), &exchange(id).to_bytes().unwrap());
        replies.deliver("_INBOX.x.not-a-uuid", b"{}");
        replies.deliver(&replies.reply_to(id), b"garbage");
    }

    #[tokio::test]
    async fn a_reply_whose_body_names_another_id_is_ignored() {
        let replies = Replies::detached("_INBOX.x");
        let id = Uuid::now_v7();
        let _w = replies.wait_for(id);
        replies.deliver(
            &replies.reply_to(id),
            &exchange(Uuid::now_v7()).to_bytes().unwrap(),
        );
        assert_eq!(replies.waiters.lock().unwrap().len(), 1);
    }
}
