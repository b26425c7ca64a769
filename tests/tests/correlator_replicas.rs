//! Correlator replicas, as separate processes (the `mcplane-under-test` binary) so one can really
//! be killed: two replicas each owning half the partitions give the same incidents as one
//! replica owning all of them, and killing one of the two with SIGKILL mid-burst, then starting
//! it again, loses no alert and duplicates no incident or summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcplane_correlator::partition::partition_of_key;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, IncidentEvent, IncidentSummary, Service};
use mcplane_tests::{alertmanager_payload, eventually, stored_messages, TestFleet};

const PARTITIONS: u32 = 4;
const SERVICES: [&str; 5] = [
    "checkout",
    "payments",
    "inventory",
    "search",
    "notifications",
];
const ALERTS: [&str; 4] = [
    "HighErrorRate",
    "HighLatency",
    "PodRestarting",
    "QueueBacklog",
];
const ROUNDS: usize = 5;

/// One incident as people see it, minus what differs between runs (ids, times).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    service: String,
    revision: u32,
    alerts: BTreeSet<String>,
    summaries: usize,
}

/// A fleet without a correlator, and a correlator configuration for each replica.
async fn fleet(owned: &[&[u32]]) -> (TestFleet, Vec<Replica>) {
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::Correlator)
        .collect();
    let tf = TestFleet::start(&others, |_| {}).await;
    let sa = tf
        .doc
        .get("correlator.service_account_key")
        .and_then(|v| v.as_str())
        .expect("service account key")
        .to_string();
    let base = mcplane_tests::TEST_CONFIG.replace(
        "[correlator]\npartitions = 4\ngroup_wait_ms = 1500\ngroup_interval_secs = 3600\n",
        "",
    );
    let configs = owned
        .iter()
        .enumerate()
        .map(|(i, parts)| {
            let config = tf.data.path().join(format!("correlator-{i}.toml"));
            // Each replica its own data folder, as on separate machines.
            let data = tf.data.path().join(format!("replica-{i}"));
            std::fs::write(
                &config,
                format!(
                    "{base}\n[correlator]\npartitions = {PARTITIONS}\n\
                     owned_partitions = {parts:?}\ngroup_wait_ms = 1500\n\
                     group_interval_secs = 3600\nservice_account_key = \"{sa}\"\n"
                ),
            )
            .unwrap();
            Replica { config, data }
        })
        .collect();
    (tf, configs)
}

struct Replica {
    config: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn spawn(tf: &TestFleet, replica: &Replica) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"))
        .args(["run", "correlator", "--config"])
        .arg(&replica.config)
        .args(["--nats", &tf.nats.url(), "--data"])
        .arg(&replica.data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a correlator")
}

/// 5 services x 4 distinct alerts, each sent 5 times, through the gateway.
async fn burst(base: String, key: String) {
    let client = reqwest::Client::new();
    for _ in 0..ROUNDS {
        for service in SERVICES {
            for alert in ALERTS {
                let resp = client
                    .post(format!("{base}/v1/alerts/alertmanager"))
                    .bearer_auth(&key)
                    .json(&alertmanager_payload(service, alert, "critical"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
            }
        }
    }
}

/// Incidents opened (ids, with repeats if any was opened twice), summaries per incident, and
/// the latest shape of every incident.
async fn outcome(tf: &TestFleet) -> (Vec<String>, usize, Vec<Shape>) {
    let bus = tf.bus().await;
    let opened: Vec<String> = stored_messages(
        &bus,
        StreamKind::Incidents,
        bus.subjects.incidents("acme", "opened"),
    )
    .await
    .iter()
    .map(|p| {
        Envelope::<IncidentEvent>::from_slice(p)
            .unwrap()
            .body
            .incident_id
    })
    .collect();
    let mut summaries: HashMap<String, usize> = HashMap::new();
    for p in stored_messages(
        &bus,
        StreamKind::Summaries,
        bus.subjects.summaries("acme", "*"),
    )
    .await
    {
        let s = Envelope::<IncidentSummary>::from_slice(&p).unwrap().body;
        *summaries.entry(s.incident_id).or_default() += 1;
    }
    let mut latest: BTreeMap<String, IncidentEvent> = BTreeMap::new();
    for p in stored_messages(
        &bus,
        StreamKind::Incidents,
        bus.subjects.incidents("acme", "*"),
    )
    .await
    {
        let e = Envelope::<IncidentEvent>::from_slice(&p).unwrap().body;
        if latest
            .get(&e.incident_id)
            .is_none_or(|l| e.revision >= l.revision)
        {
            latest.insert(e.incident_id.clone(), e);
        }
    }
    let mut shapes: Vec<Shape> = latest
        .values()
        .map(|e| Shape {
            service: e.service.clone(),
            revision: e.revision,
            alerts: e.alerts.iter().map(|a| a.summary.clone()).collect(),
            summaries: summaries.get(&e.incident_id).copied().unwrap_or(0),
        })
        .collect();
    shapes.sort();
    (opened, summaries.values().sum(), shapes)
}

/// Waits until every service's incident has all its alerts and a summary, then a little
/// longer so that anything extra would show.
async fn settled(tf: &TestFleet) -> (Vec<String>, usize, Vec<Shape>) {
    let done = eventually(Duration::from_secs(60), || async {
        let (opened, summaries, shapes) = outcome(tf).await;
        let complete =
            shapes.len() >= SERVICES.len() && shapes.iter().all(|s| s.alerts.len() == ALERTS.len());
        (complete && opened.len() >= SERVICES.len() && summaries >= SERVICES.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = outcome(tf).await;
    assert!(done.is_some(), "timed out: {out:#?}");
    out
}

fn expected_shapes() -> Vec<Shape> {
    let mut shapes: Vec<Shape> = SERVICES
        .iter()
        .map(|s| Shape {
            service: s.to_string(),
            revision: ALERTS.len() as u32,
            alerts: ALERTS.iter().map(|a| format!("{a} on {s}")).collect(),
            summaries: 1,
        })
        .collect();
    shapes.sort();
    shapes
}

#[test]
fn the_burst_spreads_over_both_halves_of_the_partitions() {
    // Otherwise the two-replica tests would test one replica.
    let owners: BTreeSet<bool> = SERVICES
        .iter()
        .map(|s| partition_of_key(&format!("acme\nservice={s}"), PARTITIONS) < PARTITIONS / 2)
        .collect();
    assert_eq!(owners.len(), 2, "every service on one half");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_each_owning_half_the_partitions_give_the_same_incidents_as_one() {
    let mut results = Vec::new();
    for owned in [&[&[0u32, 1, 2, 3][..]][..], &[&[0, 1][..], &[2, 3][..]][..]] {
        let (mut tf, configs) = fleet(owned).await;
        let mut replicas: Vec<Child> = configs.iter().map(|c| spawn(&tf, c)).collect();
        burst(tf.base(), tf.user_key.clone()).await;
        let (opened, summaries, shapes) = settled(&tf).await;
        for r in &mut replicas {
            r.kill().unwrap();
            r.wait().unwrap();
        }
        tf.stop().await;
        assert_eq!(opened.len(), SERVICES.len(), "{} replica(s)", owned.len());
        results.push((owned.len(), summaries, shapes));
    }
    let (one, two) = (&results[0], &results[1]);
    assert_eq!(one.2, expected_shapes(), "one replica");
    assert_eq!(
        (one.1, &one.2),
        (two.1, &two.2),
        "two replicas, the same incidents"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_mid_burst_loses_nothing_and_duplicates_nothing() {
    let (mut tf, configs) = fleet(&[&[0, 1], &[2, 3]]).await;
    let mut first = spawn(&tf, &configs[0]);
    let mut second = spawn(&tf, &configs[1]);
    let sending = tokio::spawn(burst(tf.base(), tf.user_key.clone()));
    // SIGKILL the second replica while the burst is being correlated, then start it again.
    let bus = tf.bus().await;
    let seen = eventually(Duration::from_secs(30), || async {
        let opened = stored_messages(
            &bus,
            StreamKind::Incidents,
            bus.subjects.incidents("acme", "opened"),
        )
        .await;
        (opened.len() >= 2).then_some(())
    })
    .await;
    assert!(seen.is_some(), "no incident before the kill");
    second.kill().unwrap();
    second.wait().unwrap();
    sending.await.unwrap();
    let mut second = spawn(&tf, &configs[1]);

    let (opened, summaries, shapes) = settled(&tf).await;
    for r in [&mut first, &mut second] {
        r.kill().unwrap();
        r.wait().unwrap();
    }
    tf.stop().await;
    let distinct: BTreeSet<&String> = opened.iter().collect();
    assert_eq!(
        (opened.len(), distinct.len()),
        (SERVICES.len(), SERVICES.len()),
        "one incident per service, opened once"
    );
    assert_eq!(summaries, SERVICES.len(), "one summary per incident");
    assert_eq!(
        shapes,
        expected_shapes(),
        "every alert reached its incident"
    );
}
