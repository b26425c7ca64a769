//! `mcplane bench alerts`: a load generator for the alert path. It starts a nats-server (or
//! uses `--nats`) and the correlator in this process, publishes generic alerts on
//! `mcplane.alerts.in.<tenant>.generic` with many publishes in flight, and measures how fast
//! they are ingested (normalised and keyed onto partitions) and correlated (each alert in an
//! incident event), and the latency from an alert's publish to the first incident event that
//! holds it. Prints one JSON object; bounded in count and time, it stops by itself.
//!
//! Unpaced (`--rate 0`) it measures capacity, and the latencies are mostly queueing behind the
//! backlog; paced below capacity (`--rate N`) the latencies are the path's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use mcplane_shared::config::Document;
use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{Envelope, IncidentEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::args::BenchAlertsArgs;
use crate::local_nats::LocalNats;

const TENANT: &str = "bench";

/// Publish instants by alert number, and the latencies of the alerts seen in incidents.
///
/// An incident event lists only a storm's latest alerts but counts them all (`alert_count`),
/// so an alert is seen when its incident's count passes it: each service's alerts are sent, and
/// correlated, in order, and every one is distinct, so the `j`-th alert of a service is the one
/// that brings the counts of its incidents to `j + 1`.
#[derive(Default)]
struct Observed {
    latencies_us: Vec<u64>,
    last_seen: Option<Instant>,
    /// The highest `alert_count` seen per incident.
    counted: HashMap<String, u32>,
    /// Per service, how many of its alerts have been seen.
    seen: HashMap<usize, usize>,
}

/// The number of the `j`-th alert about service `s`: payload `p` holds alerts `p*k .. p*k+k-1`,
/// all about service `p mod services`.
fn nth_alert_of(s: usize, j: usize, k: usize, services: usize) -> usize {
    (s + (j / k) * services) * k + j % k
}

pub async fn run(args: BenchAlertsArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.alerts == 0 || args.services == 0 || args.per_payload == 0 {
        bail!("--alerts, --services and --per-payload must be > 0");
    }
    let data = tempfile::tempdir()?;
    let nats = match &args.nats {
        Some(_) => None,
        None => Some(LocalNats::start(&data.path().join("nats"))?),
    };
    let url = args
        .nats
        .clone()
        .or_else(|| nats.as_ref().map(|n| n.url().to_string()))
        .context("no NATS URL")?;
    let mut doc = Document::default();
    doc.set("bus.url", toml::Value::String(url));
    doc.set(
        "bus.batch_size",
        toml::Value::Integer(i64::from(args.batch_size)),
    );
    doc.set(
        "data_dir",
        toml::Value::String(data.path().display().to_string()),
    );
    doc.set(
        "correlator.partitions",
        toml::Value::Integer(i64::from(args.partitions)),
    );
    if let Some(ms) = args.linger_ms {
        let ms = i64::try_from(ms).context("--linger-ms is too large")?;
        doc.set("correlator.linger_ms", toml::Value::Integer(ms));
    }
    if args.ingest_only {
        // A replica that owns no partition: normalises and keys alerts, correlates none.
        doc.set(
            "correlator.owned_partitions",
            toml::Value::Array(Vec::new()),
        );
    }
    // No summaries during the run: the first would be due an hour after its incident opened.
    doc.set("correlator.group_wait_ms", toml::Value::Integer(3_600_000));
    doc.set("log.filter", toml::Value::String("warn".into()));
    mcplane_shared::telemetry::init_logs(&doc.common()?.log);
    let common = doc.common()?;
    let bus = mcplane_shared::bus::connect(&common.bus, "mcplane-bench").await?;
    // A clean slate when pointed at a shared server.
    for kind in [StreamKind::Alerts, StreamKind::Incidents] {
        if let Ok(s) = bus.js.get_stream(bus.subjects.stream_name(kind)).await {
            s.purge().await.ok();
        }
    }

    // The linger in effect, reported with the figures.
    let linger_ms = doc
        .section::<mcplane_correlator::config::Config>("correlator")?
        .linger_ms;
    let shutdown = CancellationToken::new();
    let correlator = tokio::spawn(mcplane_correlator::run(
        doc.service("correlator")?,
        shutdown.child_token(),
    ));

    let n = args.alerts as usize;
    let published_at: Arc<Vec<Mutex<Option<Instant>>>> =
        Arc::new((0..n).map(|_| Mutex::new(None)).collect());
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (k, services) = (args.per_payload as usize, args.services as usize);
    let mut events = bus
        .client
        .subscribe(bus.subjects.incidents(TENANT, "*"))
        .await?;
    let watcher = {
        let observed = observed.clone();
        let published_at = published_at.clone();
        tokio::spawn(async move {
            while let Some(m) = events.next().await {
                let now = Instant::now();
                let Ok(env) = Envelope::<IncidentEvent>::from_slice(&m.payload) else {
                    continue;
                };
                let Some(svc) = env
                    .body
                    .service
                    .strip_prefix("svc-")
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    continue;
                };
                let mut o = observed.lock().unwrap_or_else(|p| p.into_inner());
                let count = env.body.alert_count;
                let before = o.counted.get(&env.body.incident_id).copied().unwrap_or(0);
                if count <= before {
                    continue;
                }
                o.counted.insert(env.body.incident_id.clone(), count);
                let first = o.seen.get(&svc).copied().unwrap_or(0);
                let last = first + (count - before) as usize;
                o.seen.insert(svc, last);
                for j in first..last {
                    let i = nth_alert_of(svc, j, k, services);
                    let Some(at) = published_at.get(i) else {
                        continue;
                    };
                    let at = *at.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(at) = at {
                        o.latencies_us
                            .push(now.saturating_duration_since(at).as_micros() as u64);
                    }
                    o.last_seen = Some(now);
                }
            }
        })
    };

    // Wait for the correlator's consumers before the clock starts.
    let ingest = "correlator-ingest".to_string();
    consumer_idle(&bus, &ingest, Duration::from_secs(30)).await?;

    let subject = bus.subjects.alerts_in(TENANT, "generic");
    // Payload p holds alerts p*k .. p*k+k-1, all about service p mod --services.
    let payloads: Vec<(usize, bytes::Bytes)> = (0..n)
        .step_by(k)
        .enumerate()
        .map(|(p, first)| {
            let service = format!("svc-{}", p % services);
            let alerts: Vec<serde_json::Value> = (first..(first + k).min(n))
                .map(|i| {
                    let severity = ["critical", "high", "warning", "info"][i % 4];
                    json!({
                        "title": format!("bench alert {i}"),
                        "service": service,
                        "severity": severity,
                        "fingerprint": format!("b{i}"),
                    })
                })
                .collect();
            let payload = if k == 1 {
                alerts[0].to_string()
            } else {
                serde_json::Value::Array(alerts).to_string()
            };
            (first, payload.into())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for (first, payload) in payloads {
        while acks.len() >= args.in_flight as usize {
            if let Some(r) = acks.next().await {
                r?;
            }
        }
        if args.rate > 0 && first % 100 < k {
            // Paced: alert i is due at i / rate seconds after the start.
            let due = started + Duration::from_secs_f64(first as f64 / f64::from(args.rate));
            tokio::time::sleep_until(due.into()).await;
        }
        let now = Some(Instant::now());
        for at in &published_at[first..(first + k).min(n)] {
            *at.lock().unwrap_or_else(|p| p.into_inner()) = now;
        }
        let ack = bus.js.publish(subject.clone(), payload).await?;
        acks.push(async move { ack.await.map(|_| ()) });
        if Instant::now() > deadline {
            bail!("publishing did not finish within --max-seconds");
        }
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    let published = started.elapsed();

    // Ingested: the shared ingest consumer has nothing pending or unacknowledged.
    let remaining = deadline.saturating_duration_since(Instant::now());
    consumer_idle(&bus, &ingest, remaining).await?;
    let ingested = started.elapsed();
    // Correlated: every alert has appeared in an incident event.
    let all_correlated = || {
        let o = observed.lock().unwrap_or_else(|p| p.into_inner());
        o.latencies_us.len() >= n
    };
    while !args.ingest_only && !all_correlated() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let stopped = correlator.await;
    watcher.abort();
    let rebuilt = if args.rebuild && !args.ingest_only {
        Some(rebuild_all(&bus, &doc, data.path()).await?)
    } else {
        None
    };

    let mut o = observed.lock().unwrap_or_else(|p| p.into_inner());
    let correlated_count = o.latencies_us.len();
    let correlated = o
        .last_seen
        .map(|t| t.saturating_duration_since(started))
        .unwrap_or_default();
    o.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if o.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((o.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        o.latencies_us[idx] as f64 / 1000.0
    };
    let rate = |count: usize, d: Duration| (count as f64 / d.as_secs_f64().max(1e-9)).round();
    let mut report = json!({
        "benchmark": "alerts",
        "alerts": n,
        "services": args.services,
        "partitions": args.partitions,
        "per_payload": args.per_payload,
        "in_flight": args.in_flight,
        "offered_rate": args.rate,
        "ingest_only": args.ingest_only,
        "batch_size": args.batch_size,
        "linger_ms": linger_ms,
        "cores": std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1),
        "published_per_sec": rate(n, published),
        "ingested_per_sec": rate(n, ingested),
        "correlated": correlated_count,
        "correlated_per_sec": rate(correlated_count, correlated),
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
        "seconds": {"publish": published.as_secs_f64(), "ingest": ingested.as_secs_f64(), "correlate": correlated.as_secs_f64()},
    });
    if let Some((alerts, incidents, took)) = rebuilt {
        report["rebuild"] = json!({
            "alerts": alerts,
            "incidents": incidents,
            "seconds": took.as_secs_f64(),
            "alerts_per_sec": rate(alerts, took),
        });
    }
    println!("{report}");
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("correlator failed: {e}"),
        Err(e) => bail!("correlator task: {e}"),
    }
    if correlated_count < n && !args.ingest_only {
        bail!("only {correlated_count} of {n} alerts were correlated within --max-seconds");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Waits until the durable consumer exists and has nothing pending or unacknowledged.
async fn consumer_idle(
    bus: &mcplane_shared::bus::Bus,
    durable: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let stream_name = bus.subjects.stream_name(StreamKind::Alerts);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(stream) = bus.js.get_stream(&stream_name).await {
            if let Ok(mut consumer) = stream.get_consumer::<pull::Config>(durable).await {
                if let Ok(info) = consumer.info().await {
                    if info.num_pending == 0 && info.num_ack_pending == 0 {
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!("consumer {durable} not idle in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rebuilds every partition from the stream into fresh empty folders, as a replica restarting
/// on an empty disk would; returns the alerts replayed, the incidents restored and the time.
async fn rebuild_all(
    bus: &mcplane_shared::bus::Bus,
    doc: &Document,
    data: &std::path::Path,
) -> anyhow::Result<(usize, usize, Duration)> {
    let cfg = doc.section::<mcplane_correlator::config::Config>("correlator")?;
    let (rules, policy) = (cfg.rules()?, cfg.policy());
    let started = Instant::now();
    let (mut alerts, mut incidents) = (0, 0);
    for partition in cfg.owned() {
        let dir = data.join("rebuild").join(format!("p{partition}"));
        let store = mcplane_correlator::store::PartitionStore::open(&dir).await?;
        if let Some(r) = mcplane_correlator::rebuild::rebuild_if_empty(
            bus,
            partition,
            &store,
            &rules,
            &policy,
            chrono::Utc::now(),
        )
        .await?
        {
            alerts += r.alerts;
            incidents += r.incidents;
        }
    }
    Ok((alerts, incidents, started.elapsed()))
}
