//! The correlator's per-alert cost without the bus: normalising each provider format (the
//! shared fixtures), then routing an alert in a partition's book holding 1,000 open incidents
//! (a repeat counted, a new alert joining its group, an alert joining through the CMDB
//! topology), and the dedup stage's `needs_update`.
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
use mcplane_shared::{AlertStatus, CanonicalAlert, Severity};
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
