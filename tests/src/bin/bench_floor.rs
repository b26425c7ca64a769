//! The bus floor: the cheapest pipeline of mcplane's shape, with none of mcplane's work in it.
//!
//! Every message crosses `--stages` stages, each its own process with a durable pull consumer
//! on a file-backed JetStream work queue, forwarding with a JetStream publish whose ack it
//! awaits before acking what it consumed, up to `--in-hand` messages at once (the request
//! stages' flowing loop). With `--audit` each stage also publishes one event to a second,
//! file-backed stream and awaits both acks together (as the request stages do). With
//! `--final-stored` the last stage's output is a stored JetStream publish too (as the
//! correlator's incident event is); otherwise it is a plain NATS publish (as a result reply).
//! Streams are file-backed, as mcplane's are; `--memory` keeps them in memory instead.
//! No JSON, no sled, no policy, no redaction: whatever this measures, mcplane cannot beat it
//! on the same machine with the same hops.
//!
//! ```sh
//! cargo build --release -p mcplane-tests --bin mcplane-bench-floor
//! # the request path: five hand-offs, an audit event per stage
//! ./target/release/mcplane-bench-floor --stages 5 --audit --rates 500,2000
//! # the alert path: raw alert, partition message, incident event
//! ./target/release/mcplane-bench-floor --stages 2 --final-stored --rates 20000,50000
//! ```
//!
//! Latency is open-loop (message `i` of a run at `r`/s is scheduled at `start + i/r` and timed
//! from then), throughput at saturation closed-loop (`--in-flight` messages kept in flight).

use std::future::IntoFuture;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use mcplane_testkit::NatsServer;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

struct Options {
    stages: usize,
    audit: bool,
    final_stored: bool,
    memory: bool,
    rates: Vec<u64>,
    secs: u64,
    saturation_secs: u64,
    in_flight: usize,
    in_hand: usize,
    payload_bytes: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        stages: 5,
        audit: false,
        final_stored: false,
        memory: false,
        rates: vec![500, 2000],
        secs: 10,
        saturation_secs: 10,
        in_flight: 512,
        in_hand: 256,
        payload_bytes: 1024,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--audit" => o.audit = true,
            "--final-stored" => o.final_stored = true,
            "--memory" => o.memory = true,
            _ => {
                let value = args
                    .next()
                    .with_context(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--stages" => o.stages = value.parse().context("--stages")?,
                    "--rates" => {
                        o.rates = value
                            .split(',')
                            .filter(|r| !r.trim().is_empty())
                            .map(|r| r.trim().parse::<u64>())
                            .collect::<Result<_, _>>()
                            .context("--rates: comma-separated messages per second")?
                    }
                    "--secs" => o.secs = value.parse().context("--secs")?,
                    "--saturation-secs" => {
                        o.saturation_secs = value.parse().context("--saturation-secs")?
                    }
                    "--in-flight" => o.in_flight = value.parse().context("--in-flight")?,
                    "--in-hand" => o.in_hand = value.parse().context("--in-hand")?,
                    "--payload-bytes" => {
                        o.payload_bytes = value.parse().context("--payload-bytes")?
                    }
                    other => bail!("unknown flag {other}"),
                }
            }
        }
    }
    if o.stages == 0 {
        bail!("--stages must be at least 1");
    }
    Ok(o)
}

const HAND_OFF: &str = "floor.s";
const AUDIT: &str = "floor.audit";
const OUT: &str = "floor.out";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match mcplane_tests::bench_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Re-executed as one stage: `stage <index> <url> <stages> <audit> <final-stored> <in-hand>`.
    if args.get(1).map(String::as_str) == Some("stage") {
        return match runtime.block_on(stage(&args[2..])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stage failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    mcplane_tests::print_report(options().and_then(|o| runtime.block_on(bench(o))))
}

/// One stage: consume `floor.s.<i>`, forward to the next stage (or out), ack.
async fn stage(args: &[String]) -> anyhow::Result<()> {
    let [index, url, stages, audit, final_stored, in_hand] = args else {
        bail!("stage <index> <url> <stages> <audit> <final-stored> <in-hand>");
    };
    let index: usize = index.parse()?;
    let stages: usize = stages.parse()?;
    let audit = audit == "true";
    let final_stored = final_stored == "true";
    let in_hand: usize = in_hand.parse()?;
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("FLOOR").await?;
    let consumer: consumer::PullConsumer = stream
        .get_consumer(&format!("s{index}"))
        .await
        .map_err(|e| anyhow::anyhow!("consumer s{index}: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_hand)
        .messages()
        .await?;
    let last = index + 1 == stages;
    let next_subject = if last {
        OUT.to_string()
    } else {
        format!("{HAND_OFF}.{}", index + 1)
    };
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => {
                let done: anyhow::Result<()> = done;
                done?;
            }
            next = messages.next(), if pending.len() < in_hand => {
                let Some(message) = next else { break };
                let message = message.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
                let js = js.clone();
                let client = client.clone();
                let next_subject = next_subject.clone();
                pending.push(async move {
                    let id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default();
                    let audit_ack = if audit {
                        let mut headers = HeaderMap::new();
                        headers.insert("Nats-Msg-Id", format!("{id}:audit{index}").as_str());
                        Some(
                            js.publish_with_headers(format!("{AUDIT}.{index}"), headers, message.payload.clone())
                                .await?,
                        )
                    } else {
                        None
                    };
                    if last && !final_stored {
                        client.publish(next_subject, message.payload.clone()).await?;
                    } else {
                        let mut headers = HeaderMap::new();
                        headers.insert("Nats-Msg-Id", format!("{id}:{}", index + 1).as_str());
                        let ack = js
                            .publish_with_headers(next_subject, headers, message.payload.clone())
                            .await?;
                        ack.await?;
                    }
                    if let Some(ack) = audit_ack {
                        ack.await?;
                    }
                    message.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    Ok(())
                });
            }
        }
    }
    Ok(())
}

struct Stages(Vec<Child>);

impl Drop for Stages {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn bench(o: Options) -> anyhow::Result<Value> {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    // File storage, as mcplane's streams use; `--memory` shows what the disk path costs.
    let storage = if o.memory {
        stream::StorageType::Memory
    } else {
        stream::StorageType::File
    };
    let config = |name: &str, subject: String, retention| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention,
        storage,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    // The hand-offs are a work queue, as mcplane's pipeline stream is.
    let work_queue = stream::RetentionPolicy::WorkQueue;
    let stream = js
        .create_stream(config("FLOOR", format!("{HAND_OFF}.*"), work_queue))
        .await?;
    let limits = stream::RetentionPolicy::Limits;
    if o.final_stored {
        js.create_stream(config("FLOOR_OUT", OUT.to_string(), limits))
            .await?;
    }
    if o.audit {
        js.create_stream(config("FLOOR_AUDIT", format!("{AUDIT}.*"), limits))
            .await?;
    }
    for i in 0..o.stages {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("s{i}")),
                filter_subject: format!("{HAND_OFF}.{i}"),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: (o.in_hand as i64 * 8).max(1024),
                ..Default::default()
            })
            .await?;
    }
    let exe = std::env::current_exe()?;
    let mut children = Stages(Vec::new());
    for i in 0..o.stages {
        children.0.push(
            Command::new(&exe)
                .args([
                    "stage".to_string(),
                    i.to_string(),
                    server.url(),
                    o.stages.to_string(),
                    o.audit.to_string(),
                    o.final_stored.to_string(),
                    o.in_hand.to_string(),
                ])
                .stdin(Stdio::null())
                .spawn()
                .context("start a stage")?,
        );
    }

    let payload = bytes::Bytes::from(vec![b'x'; o.payload_bytes.max(8)]);
    let mut sequence = 0u64;
    // Warm-up: every stage's consumer is pulling and every connection is hot.
    run_fixed(&client, &js, &payload, &mut sequence, 200, 1, 60).await?;

    let mut fixed = Vec::new();
    for &rate in &o.rates {
        let n = rate * o.secs;
        let latencies = run_fixed(&client, &js, &payload, &mut sequence, rate, o.secs, 30).await?;
        fixed.push(json!({
            "offered_per_sec": rate,
            "sent": n,
            "completed": latencies.len(),
            "latency_ms": percentiles(latencies),
        }));
    }
    let saturation = run_closed(&client, &js, &payload, &mut sequence, &o).await?;
    Ok(json!({
        "bench": "bus-floor",
        "stages": o.stages,
        "audit_event_per_stage": o.audit,
        "final_output_stored": o.final_stored,
        "storage": if o.memory { "memory" } else { "file" },
        "stored_messages_per_item": o.stages
            + usize::from(o.final_stored)
            + if o.audit { o.stages } else { 0 },
        "payload_bytes": payload.len(),
        "in_hand_per_stage": o.in_hand,
        "fixed_rate": fixed,
        "saturation": saturation,
    }))
}

/// Sends `rate * secs` messages open-loop and returns each one's latency in milliseconds
/// from its scheduled send time to its arrival out of the last stage.
async fn run_fixed(
    client: &async_nats::Client,
    js: &jetstream::Context,
    payload: &bytes::Bytes,
    sequence: &mut u64,
    rate: u64,
    secs: u64,
    grace_secs: u64,
) -> anyhow::Result<Vec<f64>> {
    let n = (rate * secs) as usize;
    let first = *sequence;
    *sequence += n as u64;
    let mut out = client.subscribe(OUT).await?;
    client.flush().await?;
    let start = Instant::now() + Duration::from_millis(20);
    let scheduled = move |i: usize| start + Duration::from_secs_f64(i as f64 / rate as f64);
    let sender = {
        let js = js.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            let acks = Arc::new(Semaphore::new(4096));
            for i in 0..n {
                tokio::time::sleep_until(scheduled(i).into()).await;
                let Ok(permit) = acks.clone().acquire_owned().await else {
                    break;
                };
                if let Some(ack) = send_numbered(&js, &payload, first + i as u64).await {
                    tokio::spawn(async move {
                        let _ = ack.await;
                        drop(permit);
                    });
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(n);
    let deadline = scheduled(n) + Duration::from_secs(grace_secs);
    while latencies.len() < n {
        match tokio::time::timeout_at(deadline.into(), out.next()).await {
            Ok(Some(m)) => {
                let Some(seq) = sequence_of(&m.payload) else {
                    continue;
                };
                if seq < first || seq >= first + n as u64 {
                    continue;
                }
                let i = (seq - first) as usize;
                latencies.push(Instant::now().duration_since(scheduled(i)).as_secs_f64() * 1e3);
            }
            _ => break,
        }
    }
    sender.await?;
    Ok(latencies)
}

/// Keeps `in_flight` messages in the pipeline for `saturation_secs`, each arrival sending the
/// next, and reports the rate of arrivals.
async fn run_closed(
    client: &async_nats::Client,
    js: &jetstream::Context,
    payload: &bytes::Bytes,
    sequence: &mut u64,
    o: &Options,
) -> anyhow::Result<Value> {
    let mut out = client.subscribe(OUT).await?;
    client.flush().await?;
    let send = |seq: u64| async move {
        if let Some(ack) = send_numbered(js, payload, seq).await {
            tokio::spawn(ack.into_future());
        }
    };
    let first = *sequence;
    let mut sent_at = std::collections::HashMap::new();
    for _ in 0..o.in_flight {
        sent_at.insert(*sequence, Instant::now());
        send(*sequence).await;
        *sequence += 1;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(o.saturation_secs);
    let mut done = 0u64;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        match tokio::time::timeout_at(end.into(), out.next()).await {
            Ok(Some(m)) => {
                let Some(seq) = sequence_of(&m.payload) else {
                    continue;
                };
                if seq < first {
                    continue;
                }
                if let Some(at) = sent_at.remove(&seq) {
                    latencies.push(at.elapsed().as_secs_f64() * 1e3);
                    done += 1;
                    sent_at.insert(*sequence, Instant::now());
                    send(*sequence).await;
                    *sequence += 1;
                }
            }
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "in_flight": o.in_flight,
        "seconds": secs,
        "completed": done,
        "per_sec": (done as f64 / secs).round(),
        "latency_ms": percentiles(latencies),
    }))
}

/// Publishes message number `seq` into the first stage (the number in its first eight bytes,
/// its msg id derived from it); the ack still to come, or `None` when the publish failed.
async fn send_numbered(
    js: &jetstream::Context,
    payload: &bytes::Bytes,
    seq: u64,
) -> Option<jetstream::context::PublishAckFuture> {
    let mut body = payload.to_vec();
    body[..8].copy_from_slice(&seq.to_be_bytes());
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("m{seq}").as_str());
    match js
        .publish_with_headers(format!("{HAND_OFF}.0"), headers, body.into())
        .await
    {
        Ok(ack) => Some(ack),
        Err(e) => {
            eprintln!("publish failed: {e}");
            None
        }
    }
}

/// The sequence number a message was sent with: its first eight bytes.
fn sequence_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

fn percentiles(mut ms: Vec<f64>) -> Value {
    if ms.is_empty() {
        return json!(null);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        (ms[i] * 1000.0).round() / 1000.0
    };
    json!({ "p50": at(0.50), "p99": at(0.99), "p99_9": at(0.999), "max": at(1.0) })
}
