//! The bridge against a real Kafka-protocol broker (tansu, started by the testkit) and a real
//! nats-server: every record lands on the bus exactly once, poison records go to the
//! dead-letter subject and are committed, and a bridge killed mid-stream and started again
//! loses nothing and duplicates nothing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcplane_kafka_bridge::config::{Config, TopicRoute};
use mcplane_shared::bus::Bus;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{DeadLetter, Envelope, ErrorCode, RawAlert};
use mcplane_testkit::{service_config, stored_messages, KafkaBroker, NatsServer, Running};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use serde_json::json;

const TOPIC: &str = "alerts-acme";
const PARTITIONS: i32 = 3;
/// Group join on tansu takes up to about 25 s; everything else is quick.
const DEADLINE: Duration = Duration::from_secs(90);

struct Harness {
    kafka: KafkaBroker,
    nats: NatsServer,
    data: tempfile::TempDir,
    bus: Bus,
}

impl Harness {
    async fn start() -> Harness {
        let kafka = KafkaBroker::start();
        let nats = NatsServer::start();
        let bus = mcplane_shared::bus::connect(&mcplane_testkit::bus_config(&nats), "test")
            .await
            .unwrap();
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap())
            .create()
            .unwrap();
        let created = admin
            .create_topics(
                &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
        Harness {
            kafka,
            nats,
            data: tempfile::tempdir().unwrap(),
            bus,
        }
    }

    fn config(&self, max_in_flight: usize, commit_interval_ms: u64) -> Config {
        Config {
            brokers: self.kafka.bootstrap(),
            group_id: "mcplane-test".into(),
            topics: vec![TopicRoute {
                topic: TOPIC.into(),
                tenant: Some("acme".into()),
                source: Some("generic".into()),
            }],
            max_in_flight,
            commit_interval_ms,
            kafka: [
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "500"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Config::default()
        }
    }

    fn bridge(&self, config: Config) -> Running {
        let cfg = service_config(&self.nats, self.data.path(), config);
        Running::spawn(|s| mcplane_kafka_bridge::run(cfg, s))
    }

    /// Produces `values` round-robin over the partitions and waits for every delivery.
    async fn produce(&self, values: &[String]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka.bootstrap())
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let mut pending = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            let partition = i as i32 % PARTITIONS;
            let producer = producer.clone();
            let v = v.clone();
            pending.push(tokio::spawn(async move {
                producer
                    .send(
                        FutureRecord::to(TOPIC)
                            .key(&key)
                            .payload(&v)
                            .partition(partition),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e.to_string())
            }));
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
    }

    /// The raw alerts stored on the bus for tenant acme, by title.
    async fn stored_titles(&self) -> Vec<String> {
        stored_messages(
            &self.bus,
            StreamKind::Alerts,
            self.bus.subjects.alerts_in("acme", "generic"),
        )
        .await
        .iter()
        .map(|m| {
            let env = Envelope::<RawAlert>::from_slice(m).unwrap();
            env.body.payload["title"].as_str().unwrap().to_string()
        })
        .collect()
    }

    async fn wait_stored(&self, n: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let titles = self.stored_titles().await;
            if titles.len() >= n || started.elapsed() > DEADLINE {
                return titles;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The group's committed offsets, summed over the partitions.
    fn committed(&self) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka.bootstrap())
            .set("group.id", "mcplane-test")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition(TOPIC, p);
        }
        let committed = c.committed_offsets(list, Duration::from_secs(10)).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
            .sum()
    }
}

fn alert(i: usize) -> String {
    let service = ["checkout", "search", "payments"][i % 3];
    json!({
        "title": format!("alert {i:05}"),
        "service": service,
        "severity": "high",
        "fingerprint": format!("fp-{i}"),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_on_the_bus_exactly_once_and_poison_is_dead_lettered_and_committed() {
    let h = Harness::start().await;
    let n = 300;
    let mut values: Vec<String> = (0..n).map(alert).collect();
    values.push("{not json".into());
    values.push(json!({"service": "checkout"}).to_string()); // no title
    h.produce(&values).await;

    let bridge = h.bridge(h.config(64, 100));
    let titles = h.wait_stored(n).await;
    let expected: BTreeSet<String> = (0..n).map(|i| format!("alert {i:05}")).collect();
    assert_eq!(titles.len(), n, "every record once");
    assert_eq!(titles.iter().cloned().collect::<BTreeSet<_>>(), expected);

    let dead_filter = h.bus.subjects.alerts_dead_letter("acme", "generic");
    let started = Instant::now();
    let dead = loop {
        let dead = stored_messages(&h.bus, StreamKind::Alerts, dead_filter.clone()).await;
        if dead.len() >= 2 || started.elapsed() > DEADLINE {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut codes: Vec<ErrorCode> = dead
        .iter()
        .map(|m| Envelope::<DeadLetter>::from_slice(m).unwrap().body.code)
        .collect();
    codes.sort_by_key(|c| c.as_str());
    assert_eq!(codes, [ErrorCode::InvalidAlert, ErrorCode::InvalidJson]);

    // A graceful stop commits everything acknowledged: all records, poison ones included.
    bridge.stop().await;
    assert_eq!(h.committed(), values.len() as i64);
    assert_eq!(h.stored_titles().await.len(), n, "nothing more appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_mid_stream_and_restarted_loses_and_duplicates_nothing() {
    let h = Harness::start().await;
    let n = 3000;
    let values: Vec<String> = (0..n).map(alert).collect();
    h.produce(&values).await;

    // Every publish the bridge makes, replays included (a core subscriber sees them all;
    // the stream keeps one per Nats-Msg-Id).
    let published = Arc::new(AtomicUsize::new(0));
    let mut sub = h
        .bus
        .client
        .subscribe(h.bus.subjects.alerts_in_all())
        .await
        .unwrap();
    let counter = published.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    // Few publishes in flight and frequent commits, so the kill lands between a commit and
    // acknowledged-but-uncommitted records.
    let config = h.config(8, 20);
    let first = h.bridge(config.clone());
    // Killed while it is publishing: the moment the publishes seen pass a fifth of the records.
    let started = Instant::now();
    let at_kill = loop {
        let seen = published.load(Ordering::Relaxed);
        if seen >= n / 5 || started.elapsed() > DEADLINE {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    first.abort();
    assert!(
        at_kill > 0 && at_kill < n,
        "the kill must land mid-stream: {at_kill} of {n} published"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let committed_at_kill = h.committed();
    let stored_at_kill = h.stored_titles().await.len();
    assert!(
        committed_at_kill <= stored_at_kill as i64,
        "an offset was committed before its record was on the bus: {committed_at_kill} committed, {stored_at_kill} stored"
    );

    let second = h.bridge(config);
    let titles = h.wait_stored(n).await;
    // Give a late duplicate the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let titles_after = h.stored_titles().await;
    second.stop().await;

    let unique: BTreeSet<&String> = titles_after.iter().collect();
    assert_eq!(
        unique.len(),
        n,
        "nothing lost ({} stored at first)",
        titles.len()
    );
    assert_eq!(titles_after.len(), n, "no duplicate on the bus");
    assert_eq!(h.committed(), n as i64);
    let publishes = published.load(Ordering::Relaxed);
    assert!(publishes >= n, "{publishes} publishes for {n} records");
    eprintln!(
        "killed after {at_kill} publishes: {stored_at_kill} stored, {committed_at_kill} committed; \
         {publishes} publishes in all for {n} records (replays deduplicated by JetStream)"
    );
}
