//! Reading what a stream holds, for assertions.

use std::time::Duration;

use futures::StreamExt;
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;

/// Every message stored on `filter` in the stream, read through a fresh consumer: exactly as
/// many as the consumer reports pending, so a slow fetch can never under-count.
pub async fn stored_messages(bus: &Bus, kind: StreamKind, filter: String) -> Vec<bytes::Bytes> {
    let stream = bus
        .js
        .get_stream(bus.subjects.stream_name(kind))
        .await
        .expect("stream");
    let mut consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: filter,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let pending = consumer.info().await.expect("consumer info").num_pending as usize;
    let mut out = Vec::with_capacity(pending);
    if pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.expect("messages");
    while out.len() < pending {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(m))) => out.push(m.payload.clone()),
            Ok(Some(Err(_))) => continue,
            _ => panic!("read {} of {pending} stored messages", out.len()),
        }
    }
    out
}
