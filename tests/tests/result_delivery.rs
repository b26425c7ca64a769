//! A finished request's result reaches its client's reply inbox only once it is stored: a
//! client that is told about a result can read it back by id (`GET /v1/requests/{id}`).
//!
//! The server stores a stream message after routing it, while a core NATS message goes
//! straight to its subscriber; a reply sent beside the result's KV put could therefore
//! overtake it (an auth test on a loaded CI machine once read a result back in the instant
//! between the two). Each round here queues a backlog of other puts on the results stream
//! ahead of its results, as a busy server would have, and reads each result back the moment
//! its reply arrives.

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use mcplane_shared::body::exchange::{AiRequest, Exchange, RequestType};
use mcplane_shared::bus::{self, result_publications, ResultStore};
use mcplane_shared::envelope::Envelope;
use mcplane_testkit::{bus_config, NatsServer};

const ROUNDS: usize = 100;
/// Requests finished at once in a round, as concurrent pipeline workers would.
const WIDTH: usize = 4;
/// Other results' puts queued on the stream ahead of a round's.
const BACKLOG: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_arrives_only_after_its_result_is_stored() {
    let nats = NatsServer::start();
    let config = bus_config(&nats);
    let bus = bus::connect(&config, "result-delivery-test").await.unwrap();
    bus.ensure().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.>")).await.unwrap();
    client.flush().await.unwrap();
    let results = ResultStore::open(&bus).await.unwrap();

    let bucket = bus.subjects.results_bucket();
    let filler = bytes::Bytes::from(vec![b'x'; 1024]);
    for round in 0..ROUNDS {
        let mut backlog = Vec::new();
        for i in 0..BACKLOG {
            let subject = format!("$KV.{bucket}.backlog-{round}-{i}");
            backlog.push(
                bus.js
                    .send_publish(subject, PublishMessage::build().payload(filler.clone()))
                    .await
                    .unwrap(),
            );
        }
        let mut sent = Vec::new();
        for _ in 0..WIDTH {
            let mut env = Envelope::new(
                "acme",
                Exchange::new(AiRequest::new(RequestType::Answer, "why is checkout slow?")),
            );
            env.reply_to = Some(format!("{inbox}.{}", env.id));
            let pubs = result_publications(&bus, &env, "redact_response").unwrap();
            let bus = bus.clone();
            sent.push(tokio::spawn(
                async move { bus.publish_all_owned(pubs).await },
            ));
            // Read back in the order the replies come, not the order they were sent.
        }
        for _ in 0..WIDTH {
            let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.next())
                .await
                .expect("a reply in time")
                .expect("the subscription is open");
            let env = Envelope::<Exchange>::from_slice(&reply.payload).unwrap();
            assert!(
                results.get(&env.id).await.unwrap().is_some(),
                "round {round}: the reply for {} arrived before its result was stored",
                env.id
            );
        }
        for task in sent {
            task.await.unwrap().unwrap();
        }
        for ack in backlog {
            ack.await.unwrap();
        }
    }
}
