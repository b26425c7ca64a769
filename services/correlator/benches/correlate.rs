//! The correlator's per-alert cost without the bus: normalising each provider format (the
//! shared fixtures), then routing an alert in a partition's book holding 1,000 open incidents
//! (a repeat counted, a new alert joining its group, an alert joining through the CMDB
//! topology), the dedup stage's `needs_update`, and writing and reading an incident event and
//! a timestamp.
//!
//! `cargo bench -p mcplane-correlator --bench correlate` prints criterion's report, then one
//! JSON line with the mean of each benchmark in nanoseconds and the alerts per second one core
//! would sustain at that mean.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion};
use mcplane_correlator::grouping::{IncidentBook, Policy};
use mcplane_correlator::notify::{needs_update, NotifyLog};
use mcplane_correlator::rules::Rules;
use mcplane_shared::alerts;
use mcplane_shared::topology::Topology;
use mcplane_shared::{
    AlertStatus, CanonicalAlert, IncidentAlert, IncidentEvent, IncidentEventKind, Severity,
};
use serde_json::{json, Value};
use uuid::Uuid;

const FIXTURES: &[&str] = &[
    "checkout-errors-and-latency.alertmanager.json",
    "checkout-p99-latency.datadog.json",
    "checkout-card-declines.pagerduty.json",
    "checkout-ecs-cpu-high.cloudwatch.json",
    "inventory-sync-lag.grafana.json",
    "search-disk-filling.generic.json",
];

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn alert(service: &str, fingerprint: &str) -> CanonicalAlert {
    CanonicalAlert {
        source: "alertmanager".into(),
        tenant: "acme".into(),
        fingerprint: fingerprint.into(),
        status: AlertStatus::Firing,
        severity: Severity::High,
        service: service.into(),
        resource: None,
        summary: format!("{fingerprint} on {service}"),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: now(),
        ends_at: None,
        links: vec![],
        original: Value::Null,
    }
}

/// A timestamp as the contracts write it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp(#[serde(with = "mcplane_shared::rfc3339")] DateTime<Utc>);

/// An `updated` event of an incident of `n` alerts, as the owner publishes and keeps it.
fn incident_event(n: usize) -> IncidentEvent {
    let alerts = (0..n)
        .map(|i| IncidentAlert {
            fingerprint: format!("{i:016x}"),
            source: "alertmanager".into(),
            service: "checkout".into(),
            status: AlertStatus::Firing,
            severity: Severity::High,
            summary: format!("checkout p99 latency above 800ms on pod checkout-{i}"),
            count: 1,
            first_seen: now() + chrono::Duration::milliseconds(i as i64 * 37),
            last_seen: now() + chrono::Duration::microseconds(i as i64 * 37_123),
            flapping: false,
        })
        .collect();
    IncidentEvent {
        incident_id: Uuid::now_v7().to_string(),
        tenant: "acme".into(),
        event: IncidentEventKind::Updated,
        revision: 7,
        service: "checkout".into(),
        services: vec!["checkout".into()],
        root_service: None,
        severity: Severity::High,
        title: "checkout: p99 latency".into(),
        alert_count: n as u32,
        alerts,
        opened_at: now(),
        updated_at: now() + chrono::Duration::seconds(90),
        resolved_at: None,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_715_677_200, 0).expect("time")
}

/// A book with 1,000 open incidents of services not in the CMDB, plus one on `checkout`.
fn book(rules: &Rules, policy: &Policy) -> IncidentBook {
    let mut book = IncidentBook::new([], rules.clone());
    for i in 0..1_000 {
        book.apply(
            Uuid::now_v7(),
            &alert(&format!("svc-{i}"), &format!("fp-{i}")),
            policy,
            now(),
        );
    }
    book.apply(Uuid::now_v7(), &alert("checkout", "co"), policy, now());
    book
}

fn main() {
    let home = std::env::temp_dir().join("mcplane-criterion");
    std::env::set_var("CRITERION_HOME", &home);
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();

    let mut group = c.benchmark_group("normalize");
    let mut names = Vec::new();
    for file in FIXTURES {
        let source = file
            .trim_end_matches(".json")
            .rsplit('.')
            .next()
            .expect("source");
        let text = std::fs::read_to_string(repo("shared/tests/fixtures/alerts").join(file))
            .expect("fixture");
        let payload: Value = serde_json::from_str(&text).expect("json");
        names.push(format!("normalize/{source}"));
        group.bench_function(source, |b| {
            b.iter(|| alerts::normalize(source, "acme", &payload, now()).expect("normalises"))
        });
    }
    group.finish();

    let policy = Policy::default();
    let topology = Topology::load(&repo("examples/cmdb.toml")).expect("cmdb");
    let rules = Rules {
        topology,
        ..Rules::default()
    };
    let base = book(&rules, &policy);
    let mut group = c.benchmark_group("book");
    let repeat = alert("svc-500", "fp-500");
    group.bench_function("repeat_counted", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |book| book.apply(Uuid::now_v7(), &repeat, &policy, now()),
            BatchSize::LargeInput,
        )
    });
    let joins = alert("svc-500", "fp-new");
    group.bench_function("joins_its_group", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |book| book.apply(Uuid::now_v7(), &joins, &policy, now()),
            BatchSize::LargeInput,
        )
    });
    let dependency = alert("payments-db", "db");
    group.bench_function("joins_by_topology", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |book| book.apply(Uuid::now_v7(), &dependency, &policy, now()),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    names.extend(
        ["repeat_counted", "joins_its_group", "joins_by_topology"].map(|n| format!("book/{n}")),
    );

    let set = |n: u32| -> BTreeSet<String> { (0..n).map(|i| format!("{i:016x}")).collect() };
    let entry = NotifyLog {
        firing: set(50),
        resolved: BTreeSet::new(),
        at: now(),
    };
    let (firing, resolved) = (set(50), BTreeSet::new());
    c.bench_function("needs_update_50_alerts", |b| {
        b.iter(|| {
            needs_update(
                Some(&entry),
                &firing,
                &resolved,
                Duration::from_secs(3600),
                true,
                now(),
            )
        })
    });
    names.push("needs_update_50_alerts".into());

    // What the owner writes and reads per alert besides its routing: an incident event of 50
    // alerts as JSON (three timestamps per alert), and one timestamp written and read by
    // chrono's own serde and by `mcplane_shared::rfc3339`, which the contracts use.
    let mut group = c.benchmark_group("codec");
    let event = incident_event(50);
    let text = serde_json::to_vec(&event).expect("encodes");
    group.bench_function("event_50_alerts_write", |b| {
        b.iter(|| serde_json::to_vec(&event).expect("encodes"))
    });
    group.bench_function("event_50_alerts_read", |b| {
        b.iter(|| serde_json::from_slice::<IncidentEvent>(&text).expect("decodes"))
    });
    let at = now() + chrono::Duration::microseconds(123_456);
    let stamp = serde_json::to_string(&at).expect("encodes");
    group.bench_function("timestamp_write_chrono", |b| {
        b.iter(|| serde_json::to_string(&at).expect("encodes"))
    });
    group.bench_function("timestamp_write_rfc3339", |b| {
        b.iter(|| serde_json::to_string(&Stamp(at)).expect("encodes"))
    });
    group.bench_function("timestamp_read_chrono", |b| {
        b.iter(|| serde_json::from_str::<DateTime<Utc>>(&stamp).expect("decodes"))
    });
    group.bench_function("timestamp_read_rfc3339", |b| {
        b.iter(|| serde_json::from_str::<Stamp>(&stamp).expect("decodes"))
    });
    group.finish();
    names.extend(
        [
            "event_50_alerts_write",
            "event_50_alerts_read",
            "timestamp_write_chrono",
            "timestamp_write_rfc3339",
            "timestamp_read_chrono",
            "timestamp_read_rfc3339",
        ]
        .map(|n| format!("codec/{n}")),
    );
    c.final_summary();

    let mut report = serde_json::Map::new();
    for name in names {
        let path = home.join(&name).join("new").join("estimates.json");
        if let Some(mean) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64())
        {
            report.insert(
                name,
                json!({"ns": mean.round(), "per_sec_one_core": (1e9 / mean).round()}),
            );
        }
    }
    println!("{}", json!({"bench": "correlate", "results": report}));
}
