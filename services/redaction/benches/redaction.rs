//! Detection quality and speed on the generated corpus, printed as JSON:
//! `cargo bench -p mcplane-redaction --bench redaction`.
//!
//! Quality is span-level precision, recall and F1 per entity type and overall; speed is
//! single-threaded MB/s of `find` over the whole corpus (so per core), and over the same corpus
//! with only its entity-free samples (the common case on the hot path). A plain binary rather
//! than criterion because the figures that matter are a JSON report, not a timing histogram.

use std::time::{Duration, Instant};

use mcplane_redaction::config::Config;
use mcplane_redaction::corpus::{evaluate, generate, Sample, PEOPLE};
use mcplane_redaction::{Engine, Redactor};

/// CPU time this thread has run, from the scheduler's own accounting (Linux), so that the
/// figure is per core even on a machine busy with other work; wall-clock elsewhere.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// (MB/s of CPU time, MB/s of wall-clock time).
fn throughput(engine: &Engine, samples: &[Sample]) -> (f64, f64) {
    let bytes: usize = samples.iter().map(|s| s.text.len()).sum();
    let mut found = 0usize;
    // Warm the lazy DFA caches, then run for at least two seconds.
    for s in samples {
        found += engine.find(&s.text).len();
    }
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut rounds = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        for s in samples {
            found += std::hint::black_box(engine.find(std::hint::black_box(&s.text))).len();
        }
        rounds += 1;
    }
    std::hint::black_box(found);
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => wall,
    };
    let total = bytes as f64 * f64::from(rounds) / 1e6;
    (
        (total / cpu * 10.0).round() / 10.0,
        (total / wall * 10.0).round() / 10.0,
    )
}

/// `--fixed-rounds N [--entity-free]`: N untimed passes of `find` over the corpus (or its
/// entity-free samples), printing only what was found. Run under
/// `valgrind --tool=cachegrind` with two values of N, the difference in instructions divided by
/// the difference in bytes is the engine's instructions per byte: a figure that, unlike MB/s,
/// does not move with the load of a shared machine.
fn fixed_rounds(args: &[String]) -> Option<(u32, bool)> {
    let at = args.iter().position(|a| a == "--fixed-rounds")?;
    let rounds = args.get(at + 1)?.parse().ok()?;
    Some((rounds, args.iter().any(|a| a == "--entity-free")))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let redactor = Redactor::new(&Config {
        person_names: PEOPLE.iter().map(|s| s.to_string()).collect(),
        ..Config::default()
    })
    .expect("default configuration builds");
    let engine = redactor.engine("bench");
    let corpus = generate(2026, 4000);
    if let Some((rounds, entity_free)) = fixed_rounds(&args) {
        let set: Vec<&Sample> = corpus
            .iter()
            .filter(|s| !entity_free || s.spans.is_empty())
            .collect();
        let mut found = 0usize;
        for _ in 0..rounds {
            for s in &set {
                found += std::hint::black_box(engine.find(std::hint::black_box(&s.text))).len();
            }
        }
        let bytes: usize = set.iter().map(|s| s.text.len()).sum();
        let out = serde_json::json!({"rounds": rounds, "bytes_per_round": bytes, "found": found});
        println!("{out}");
        return;
    }
    let report = evaluate(engine, &corpus);
    let clean: Vec<Sample> = corpus
        .iter()
        .filter(|s| s.spans.is_empty())
        .cloned()
        .collect();
    let corpus_speed = throughput(engine, &corpus);
    let clean_speed = throughput(engine, &clean);
    let out = serde_json::json!({
        "corpus": {"seed": 2026, "samples": report.samples, "bytes": report.bytes,
                   "labelled_entities": report.overall.true_positives + report.overall.false_negatives},
        "overall": report.overall,
        "by_type": report.by_type,
        "throughput_mb_s_per_core": {
            "corpus": corpus_speed.0,
            "entity_free_samples": clean_speed.0,
        },
        "throughput_mb_s_wall_clock": {
            "corpus": corpus_speed.1,
            "entity_free_samples": clean_speed.1,
        },
        "examples": report.examples,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
