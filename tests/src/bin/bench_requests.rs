//! The request-pipeline load generator: a real nats-server, every service as its own process
//! (its own `mcplane-<service>` binary when built beside this one, as a deployment runs it, else
//! this binary re-executed as `run <service>`), AI requests submitted on the bus exactly as the
//! gateway submits them, and one JSON document of figures on stdout.
//!
//! Latency is open-loop: request `i` of a run at `r` req/s is *scheduled* at `start + i/r` and
//! its latency is measured from that scheduled time to the arrival of its result, so a stalled
//! pipeline (or a stalled generator) shows up in the percentiles instead of silently slowing
//! the offered load (coordinated omission). Throughput at saturation is closed-loop: a fixed
//! number of requests in flight, each completion sending the next.
//!
//! ```sh
//! cargo build --release --bins   # the bench and every service binary
//! ./target/release/mcplane-bench-requests \
//!     [--rates 500,2000,5000] [--secs 10] [--saturation-secs 10] [--in-flight 512]
//! ```
//!
//! Per-stage latency comes from the audit events (each stage stamps `at` when it has done its
//! work): `authorize` is measured from the envelope's submission time, every other stage from
//! the previous stage's stamp, `deliver` from the last stamp to the result's arrival.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use mcplane_auth::keys::KeyStore;
use mcplane_shared::bus::{Bus, Publication};
use mcplane_shared::config::BusConfig;
use mcplane_shared::{
    AiRequest, AuditEvent, Envelope, Exchange, PrincipalKind, RequestType, Service,
};
use mcplane_testkit::{free_port, NatsServer};
use serde_json::{json, Value};
use uuid::Uuid;

/// The services a request passes through (plus audit, which records every stage). The
/// correlator and notifier run too, idle, so their RSS is reported.
const SERVICES: [Service; 8] = Service::ALL;

struct Options {
    rates: Vec<u64>,
    secs: u64,
    saturation_secs: u64,
    in_flight: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        rates: vec![500, 2000, 5000],
        secs: 10,
        saturation_secs: 10,
        in_flight: 512,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rates" => {
                o.rates = value
                    .split(',')
                    .map(|r| r.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .context("--rates: comma-separated requests per second")?
            }
            "--secs" => o.secs = value.parse().context("--secs")?,
            "--saturation-secs" => {
                o.saturation_secs = value.parse().context("--saturation-secs")?
            }
            "--in-flight" => o.in_flight = value.parse().context("--in-flight")?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    // Re-executed as one service of the fleet.
    if std::env::args().nth(1).as_deref() == Some("run") {
        return mcplane_cli::main();
    }
    let runtime = match mcplane_tests::bench_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    mcplane_tests::print_report(runtime.block_on(bench()))
}

/// The fleet's processes, killed when dropped.
struct FleetProcesses {
    children: Vec<(Service, Child)>,
    /// `per-service` when every service ran its own binary, else `combined`.
    binaries: &'static str,
}

impl Drop for FleetProcesses {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_config(nats: &NatsServer, data: &Path) -> anyhow::Result<PathBuf> {
    let keys = KeyStore::open(data)?;
    let (sa_key, _) = keys.create(
        "*",
        vec!["service".into()],
        PrincipalKind::ServiceAccount,
        None,
    )?;
    let cmdb = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cmdb.toml");
    let config = format!(
        r#"data_dir = "{data}"
[log]
format = "json"
filter = "error"
[bus]
url = "{url}"
[gateway]
http_addr = "127.0.0.1:{http}"
[auth.rate_limits]
principal_per_sec = 0.0
tenant_per_sec = 0.0
[enrichment]
cmdb_file = "{cmdb}"
[correlator]
service_account_key = "{sa_key}"
[[model.providers]]
name = "local"
kind = "local"
model = "mcplane-local-1"
"#,
        data = data.display(),
        url = nats.url(),
        http = free_port(),
    );
    let path = data.join("bench.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Which program runs a service: its own binary (`mcplane-<service>`) when it was built beside
/// this one, as a deployment runs it, else this binary re-executed as `run <service>`. The
/// difference matters for RSS: a process maps the pages of its program that it touches, and the
/// combined binary carries every service's code.
fn service_command(exe: &Path, service: Service) -> (Command, &'static str) {
    let own = exe.with_file_name(format!("mcplane-{service}"));
    if own.is_file() {
        (Command::new(own), "per-service")
    } else {
        let mut combined = Command::new(exe);
        combined.args(["run", service.as_str()]);
        (combined, "combined")
    }
}

fn start_fleet(nats: &NatsServer, config: &Path, data: &Path) -> anyhow::Result<FleetProcesses> {
    let exe = std::env::current_exe()?;
    let mut fleet = FleetProcesses {
        children: Vec::new(),
        binaries: "per-service",
    };
    for service in SERVICES {
        let (mut command, binaries) = service_command(&exe, service);
        if binaries == "combined" {
            fleet.binaries = binaries;
        }
        let child = command
            .arg("--config")
            .arg(config)
            .args(["--nats", &nats.url(), "--data"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {service}"))?;
        fleet.children.push((service, child));
    }
    Ok(fleet)
}

/// A process's memory from `/proc/<pid>/status`: resident in all (`VmRSS`), its peak
/// (`VmHWM`), and the resident part that is anonymous (heap, stacks: the process's own) versus
/// file-backed (its program's pages, shared with every process mapping the same file).
struct Rss {
    rss_kib: u64,
    peak_kib: u64,
    anon_kib: u64,
    file_kib: u64,
}

fn process_rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")?,
    })
}

impl Rss {
    fn json(&self) -> Value {
        json!({
            "rss_mib": mib(self.rss_kib),
            "peak_mib": mib(self.peak_kib),
            "anon_mib": mib(self.anon_kib),
            "file_mib": mib(self.file_kib),
        })
    }
}

/// Results and audit stamps as they arrive.
#[derive(Default)]
struct Observed {
    /// Request id → (scheduled instant, sent instant).
    pending: HashMap<Uuid, (Instant, Instant)>,
    /// Latency from the scheduled time, in microseconds.
    from_scheduled: Vec<u64>,
    /// Latency from the moment the submission was handed to the client, in microseconds.
    from_sent: Vec<u64>,
    errors: HashMap<String, u64>,
    /// Per request: submission time and each stage's stamp.
    stamps: HashMap<Uuid, Vec<(String, chrono::DateTime<chrono::Utc>)>>,
    submitted_at: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    result_at: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    completed: u64,
}

struct Client {
    bus: Bus,
    inbox: String,
    key: String,
    observed: Arc<Mutex<Observed>>,
    done: Arc<tokio::sync::Notify>,
}

impl Client {
    async fn start(url: &str, key: String) -> anyhow::Result<Arc<Client>> {
        let config = BusConfig {
            url: url.to_string(),
            ..Default::default()
        };
        let bus = mcplane_shared::bus::connect(&config, "bench").await?;
        let inbox = bus.client.new_inbox();
        let mut replies = bus.client.subscribe(format!("{inbox}.*")).await?;
        let mut audits = bus.client.subscribe(bus.subjects.audit("bench")).await?;
        bus.client.flush().await?;
        let client = Arc::new(Client {
            bus,
            inbox,
            key,
            observed: Arc::new(Mutex::new(Observed::default())),
            done: Arc::new(tokio::sync::Notify::new()),
        });
        let c = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = replies.next().await {
                let now = Instant::now();
                let wall = chrono::Utc::now();
                let Ok(env) = Envelope::<Exchange>::from_slice(&msg.payload) else {
                    continue;
                };
                let Ok(mut o) = c.observed.lock() else { return };
                let Some((scheduled, sent)) = o.pending.remove(&env.id) else {
                    continue;
                };
                o.from_scheduled
                    .push(now.duration_since(scheduled).as_micros() as u64);
                o.from_sent
                    .push(now.duration_since(sent).as_micros() as u64);
                o.result_at.insert(env.id, wall);
                o.completed += 1;
                if let Some(e) = env.body.error {
                    *o.errors.entry(e.code.to_string()).or_default() += 1;
                }
                drop(o);
                c.done.notify_waiters();
            }
        });
        let c = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = audits.next().await {
                let Ok(env) = Envelope::<AuditEvent>::from_slice(&msg.payload) else {
                    continue;
                };
                if let Ok(mut o) = c.observed.lock() {
                    o.stamps
                        .entry(env.body.request_id)
                        .or_default()
                        .push((env.body.stage, env.body.at));
                }
            }
        });
        Ok(client)
    }

    /// Submits one request scheduled at `scheduled`, as the gateway does: JetStream publish
    /// with its ack awaited, the result coming back on this client's inbox.
    async fn submit(&self, scheduled: Instant) -> anyhow::Result<()> {
        let mut request = AiRequest::new(
            RequestType::Answer,
            "Why is checkout slow? Customer jane.doe@example.com reported it at 10:02.",
        );
        request.services = vec!["checkout".into()];
        let mut env = Envelope::new("", Exchange::new(request));
        env.credential = Some(self.key.clone());
        env.reply_to = Some(format!("{}.{}", self.inbox, env.id));
        let publication =
            Publication::envelope(self.bus.subjects.requests_submit(), &env, "gateway")?;
        if let Ok(mut o) = self.observed.lock() {
            o.pending.insert(env.id, (scheduled, Instant::now()));
            o.submitted_at.insert(env.id, env.time);
        }
        self.bus.publish_all(&[publication]).await?;
        Ok(())
    }

    fn reset(&self) -> Observed {
        match self.observed.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => Observed::default(),
        }
    }

    fn outstanding(&self) -> usize {
        self.observed.lock().map(|o| o.pending.len()).unwrap_or(0)
    }

    fn completed(&self) -> u64 {
        self.observed.lock().map(|o| o.completed).unwrap_or(0)
    }

    /// Waits until every submitted request has its result, or `timeout`.
    async fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.outstanding();
            if left == 0 || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn percentiles_ms(samples: &mut [u64]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1000.0
    };
    json!({
        "n": samples.len(),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p99_9": at(0.999),
        "max": at(1.0),
    })
}

/// Per-stage latency from the audit stamps of the completed requests.
fn stage_latencies(o: &Observed) -> Value {
    let mut per_stage: HashMap<String, Vec<u64>> = HashMap::new();
    for (id, stamps) in &o.stamps {
        let (Some(submitted), Some(result)) = (o.submitted_at.get(id), o.result_at.get(id)) else {
            continue;
        };
        let mut stamps = stamps.clone();
        stamps.sort_by_key(|(_, at)| *at);
        let mut previous = *submitted;
        for (stage, at) in stamps {
            let micros = (at - previous).num_microseconds().unwrap_or(0).max(0) as u64;
            per_stage.entry(stage).or_default().push(micros);
            previous = at;
        }
        let micros = (*result - previous).num_microseconds().unwrap_or(0).max(0) as u64;
        per_stage.entry("deliver".into()).or_default().push(micros);
    }
    let order = [
        "authorize",
        "enrich",
        "redact_request",
        "invoke",
        "redact_response",
        "deliver",
    ];
    let mut out = serde_json::Map::new();
    for stage in order {
        if let Some(mut samples) = per_stage.remove(stage) {
            out.insert(stage.to_string(), percentiles_ms(&mut samples));
        }
    }
    Value::Object(out)
}

/// Open loop at `rate` for `secs`.
async fn fixed_rate(client: &Arc<Client>, rate: u64, secs: u64) -> anyhow::Result<Value> {
    client.reset();
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(10);
    let mut send_errors = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let c = client.clone();
        tasks.spawn(async move { c.submit(scheduled).await });
        while let Some(done) = tasks.try_join_next() {
            if !matches!(done, Ok(Ok(()))) {
                send_errors += 1;
            }
        }
    }
    let offered_secs = start.elapsed().as_secs_f64();
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(Ok(()))) {
            send_errors += 1;
        }
    }
    client.drain(Duration::from_secs(30)).await;
    // The audit stamps of the last requests may trail their results a little.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut o = client.reset();
    // Still queued in the pipeline 30 s after the last submission (an overloaded run).
    let lost = o.pending.len();
    Ok(json!({
        "offered_per_sec": rate,
        "achieved_offer_per_sec": (total as f64 / offered_secs).round(),
        "requests": total,
        "completed": o.completed,
        "unanswered_after_30s": lost,
        "send_errors": send_errors,
        "error_codes": o.errors,
        "latency_ms_from_scheduled": percentiles_ms(&mut o.from_scheduled),
        "latency_ms_from_sent": percentiles_ms(&mut o.from_sent),
        "stages_ms": stage_latencies(&o),
    }))
}

/// Closed loop: `in_flight` requests outstanding for `secs`.
async fn saturation(client: &Arc<Client>, in_flight: usize, secs: u64) -> anyhow::Result<Value> {
    client.reset();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        // Counted here, not from the pending map: a spawned submission registers itself only
        // once it runs.
        while sent - client.completed() < in_flight as u64 && Instant::now() < end {
            let c = client.clone();
            tokio::spawn(async move { c.submit(Instant::now()).await });
            sent += 1;
            // Let the publisher tasks run between submissions.
            if sent.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        let notified = client.done.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let completed_in_window = client.completed();
    let elapsed = start.elapsed().as_secs_f64();
    let lost = client.drain(Duration::from_secs(30)).await;
    let mut o = client.reset();
    Ok(json!({
        "in_flight": in_flight,
        "secs": elapsed,
        "completed_per_sec": (completed_in_window as f64 / elapsed).round(),
        "sent": sent,
        "unanswered": lost,
        "error_codes": o.errors,
        "latency_ms": percentiles_ms(&mut o.from_sent),
    }))
}

async fn bench() -> anyhow::Result<Value> {
    let opts = options()?;
    let nats = NatsServer::start();
    let data = tempfile::tempdir()?;
    let config = write_config(&nats, data.path())?;
    let (key, _) = KeyStore::open(data.path())?.create(
        "bench",
        vec!["sre".into()],
        PrincipalKind::User,
        None,
    )?;
    let fleet = start_fleet(&nats, &config, data.path())?;
    let client = Client::start(&nats.url(), key).await?;

    // Warm up until a request comes back (every service connected, streams and consumers made).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.submit(Instant::now()).await.ok();
        if client.drain(Duration::from_secs(2)).await == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the fleet never answered a request");
        }
    }
    for _ in 0..200 {
        client.submit(Instant::now()).await?;
    }
    client.drain(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = |label: &str| {
        let mut out = serde_json::Map::new();
        for (service, child) in &fleet.children {
            if let Some(rss) = process_rss(child.id()) {
                out.insert(service.to_string(), rss.json());
            }
        }
        if let Some(rss) = nats.pid().and_then(process_rss) {
            out.insert("nats-server".into(), rss.json());
        }
        json!({ label: out })
    };
    let idle_rss = rss("idle_after_warmup");

    let mut runs = Vec::new();
    for rate in &opts.rates {
        runs.push(fixed_rate(&client, *rate, opts.secs).await?);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let saturated = saturation(&client, opts.in_flight, opts.saturation_secs).await?;
    let after = rss("after_load");

    Ok(json!({
        "benchmark": "request pipeline (gateway submission path on the bus → authorize → enrich → redact_request → invoke (local provider) → redact_response → result), every service its own process",
        "machine": machine(),
        "fixed_rates": runs,
        "saturation": saturated,
        "service_binaries": fleet.binaries,
        "rss": [idle_rss, after],
    }))
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cpus": cpus,
        "cpu": model,
        "loadavg_at_end": load.trim(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}
