//! The batch consumer's linger (`ConsumerSpec::linger`, the correlator's `linger_ms`), against
//! a real nats-server: messages that trickle in within the linger become one batch, a full
//! batch is handed over at once, and shutdown hands over the batch in hand instead of waiting.
//!
//! The linger is a minute, far longer than the test may take, so a batch that was held for it
//! fails the test by its timeouts rather than by a measured duration.

use std::time::Duration;

use mcplane_shared::bus::{self, run_batch_consumer, ConsumerSpec, Disposition};
use mcplane_shared::config::BusConfig;
use mcplane_shared::subjects::StreamKind;
use mcplane_testkit::{bus_config, NatsServer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LINGER: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(20);

async fn publish(bus: &bus::Bus, subject: &str, n: usize) {
    for i in 0..n {
        bus.js
            .publish(subject.to_string(), format!("m{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

async fn next_batch(sizes: &mut mpsc::UnboundedReceiver<usize>, what: &str) -> usize {
    tokio::time::timeout(PATIENCE, sizes.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no batch handed over within {PATIENCE:?}"))
        .expect("the consumer is running")
}

#[tokio::test]
async fn lingering_gathers_a_trickle_never_holds_a_full_batch_and_drains_on_shutdown() {
    let nats = NatsServer::start();
    let config = BusConfig {
        batch_size: 5,
        ..bus_config(&nats)
    };
    let bus = bus::connect(&config, "linger-test").await.unwrap();
    bus.ensure().await.unwrap();
    let subject = bus.subjects.alerts_partition(0, "acme");
    let spec = ConsumerSpec {
        stream: StreamKind::Alerts,
        durable: "linger-test".into(),
        filters: vec![bus.subjects.alerts_partition_all(0)],
        linger: LINGER,
    };
    let (tx, mut sizes) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn({
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        async move {
            run_batch_consumer(&bus, spec, None, shutdown, move |batch| {
                let tx = tx.clone();
                async move {
                    tx.send(batch.len()).ok();
                    vec![Disposition::Ack; batch.len()]
                }
            })
            .await
        }
    });

    // A full batch (bus.batch_size = 5) goes to the handler without waiting out the linger.
    publish(&bus, &subject, 5).await;
    let mut first = 0;
    while first < 5 {
        first += next_batch(&mut sizes, "a full batch").await;
    }
    assert_eq!(first, 5);

    // Messages arriving one by one, 50 ms apart, are one batch: without the linger each would
    // be handed over as it came (the consumer is idle and pulling when the first arrives).
    for i in 0..4 {
        publish(&bus, &subject, 1).await;
        if i < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The fifth fills the batch, which is then handed over at once.
    publish(&bus, &subject, 1).await;
    assert_eq!(next_batch(&mut sizes, "a trickle").await, 5);

    // Shutdown during a linger hands over what is in hand (drain) and stops the consumer.
    publish(&bus, &subject, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    assert_eq!(
        next_batch(&mut sizes, "the batch in hand at shutdown").await,
        2
    );
    tokio::time::timeout(PATIENCE, consumer)
        .await
        .expect("the consumer stops on shutdown")
        .unwrap()
        .unwrap();
}
