//! `mcplane demo`: the whole story in one command. Starts the fleet with its own nats-server,
//! replays the sample alerts through the gateway, sends one AI request, prints the incident
//! summaries and the AI answer, stops the fleet and verifies the audit chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use mcplane_auth::keys::KeyStore;
use mcplane_shared::{Envelope, IncidentSummary, PrincipalKind};
use serde_json::{json, Value};

use crate::args::DemoArgs;
use crate::fleet::{self, Fleet, NatsChoice};

const TENANT: &str = "demo";

fn alerts_dir(args: &DemoArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.alerts {
        return Ok(dir.clone());
    }
    [
        PathBuf::from("examples/alerts"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alerts"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .context("no examples/alerts folder here; pass --alerts DIR")
}

/// Sample files are named `NN-what.<source>.json`.
fn sample_alerts(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            let source = stem.rsplit('.').next()?.to_string();
            (stem.contains('.') && mcplane_shared::alerts::is_known_source(&source))
                .then_some((source, p))
        })
        .collect())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut fleet_args = args.fleet.clone();
    let data = fleet_args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/demo"));
    if data.exists() && args.fleet.data.is_none() {
        std::fs::remove_dir_all(&data).with_context(|| format!("clearing {}", data.display()))?;
    }
    std::fs::create_dir_all(&data)?;
    fleet_args.data = Some(data.clone());
    let http = match fleet_args.http {
        Some(addr) => addr,
        None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
    };
    fleet_args.http = Some(http);
    let mut doc = fleet::document(&fleet_args)?;
    if std::env::var_os("RUST_LOG").is_none() {
        doc.set("log.filter", toml::Value::String("warn".into()));
    }
    doc.set("log.format", toml::Value::String("pretty".into()));
    mcplane_shared::telemetry::init_logs(&doc.common()?.log);

    // Keys: one for the demo user, one service account for the correlator.
    let keys = KeyStore::open(&data)?;
    let (user_key, _) = keys.create(TENANT, vec!["sre".into()], PrincipalKind::User, None)?;
    let (sa_key, _) = keys.create(
        "*",
        vec!["service".into()],
        PrincipalKind::ServiceAccount,
        None,
    )?;
    doc.set(
        "correlator.service_account_key",
        toml::Value::String(sa_key),
    );

    println!("== mcplane demo ==");
    println!("data folder: {}", data.display());
    let choice = if args.fleet.nats.is_some() {
        NatsChoice::Configured
    } else {
        NatsChoice::Own
    };
    let fleet = Fleet::start(doc.clone(), choice).await?;
    let result = drive(&args, fleet.document(), http, &user_key).await;
    fleet.stop().await?;
    let (summaries, answer_ok) = result?;

    println!("\n== audit ==");
    let verified = match mcplane_audit::store::verify(&data, TENANT) {
        Ok(report) => {
            println!(
                "audit chain for tenant {TENANT}: {} entries verified, head {}",
                report.entries, report.head_hash
            );
            true
        }
        Err(e) => {
            println!("audit chain for tenant {TENANT}: FAILED: {e}");
            false
        }
    };
    if summaries == 0 || !answer_ok || !verified {
        println!("\ndemo FAILED");
        return Ok(ExitCode::FAILURE);
    }
    println!("\ndemo OK");
    Ok(ExitCode::SUCCESS)
}

/// Replays alerts, sends the request and collects summaries; returns (summaries, answer ok).
async fn drive(
    args: &DemoArgs,
    doc: &mcplane_shared::config::Document,
    http: std::net::SocketAddr,
    user_key: &str,
) -> anyhow::Result<(usize, bool)> {
    let common = doc.common()?;
    let bus = mcplane_shared::bus::connect(&common.bus, "mcplane-demo").await?;
    let mut summaries_sub = bus
        .client
        .subscribe(bus.subjects.summaries(TENANT, "*"))
        .await?;
    let mut opened_sub = bus
        .client
        .subscribe(bus.subjects.incidents(TENANT, "opened"))
        .await?;

    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway did not become ready at {base}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("\n== alerts ==");
    let dir = alerts_dir(args)?;
    for (source, path) in sample_alerts(&dir)? {
        let body = std::fs::read(&path)?;
        let resp = client
            .post(format!("{base}/v1/alerts/{source}"))
            .bearer_auth(user_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        println!(
            "POST /v1/alerts/{source} {} -> {status} {text}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
    }

    println!("\n== AI request ==");
    let request = json!({
        "type": "answer",
        "input": "Customer jane.doe@example.com (+44 20 7946 0958) says checkout fails after \
                  payment and card 4111 1111 1111 1111 was charged twice. What should we check?",
        "services": ["checkout"],
    });
    println!("request: {request}");
    let resp = client
        .post(format!("{base}/v1/requests"))
        .bearer_auth(user_key)
        .json(&request)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    println!("status: {status}");
    println!("{}", serde_json::to_string_pretty(&body)?);
    let answer_ok = status.is_success() && body.get("response").is_some();

    println!("\n== incident summaries ==");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let (mut opened, mut summaries) = (0usize, 0usize);
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        tokio::select! {
            Some(_) = opened_sub.next() => { opened += 1; last_change = Instant::now(); }
            Some(msg) = summaries_sub.next() => {
                summaries += 1;
                last_change = Instant::now();
                match Envelope::<IncidentSummary>::from_slice(&msg.payload) {
                    Ok(env) => print_summary(&env.body),
                    Err(code) => println!("(undecodable summary: {code})"),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let settled = last_change.elapsed() > Duration::from_secs(3);
                if summaries > 0 && summaries >= opened && settled {
                    break;
                }
            }
        }
    }
    println!("{opened} incidents opened, {summaries} summaries published");
    Ok((summaries, answer_ok))
}

fn print_summary(s: &IncidentSummary) {
    println!(
        "\n[{}] {} (incident {}, rev {}, {} alerts{})",
        s.severity.as_str(),
        s.title,
        s.incident_id,
        s.revision,
        s.alert_count,
        if s.degraded {
            ", assembled without AI"
        } else {
            ""
        }
    );
    for line in s.summary.lines() {
        println!("  {line}");
    }
}
