//! `mcplane config push` and `mcplane usage`: talking to a running fleet's configuration and
//! budget buckets.

use std::process::ExitCode;

use anyhow::{bail, Context};
use mcplane_model::budget::Budgets;
use mcplane_model::config::Config;

use crate::args::{ConfigCommand, FleetArgs, UsageArgs};
use crate::fleet;

async fn connect(
    config: Option<std::path::PathBuf>,
    nats: Option<String>,
) -> anyhow::Result<(mcplane_shared::bus::Bus, Config)> {
    let doc = fleet::document(&FleetArgs {
        config,
        nats,
        http: None,
        data: None,
    })?;
    let model: Config = doc.section("model")?;
    let bus = mcplane_shared::bus::connect(&doc.common()?.bus, "mcplane-cli")
        .await
        .context("connecting to NATS")?;
    Ok((bus, model))
}

pub async fn push(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Push {
        what,
        file,
        config,
        nats,
    } = cmd;
    if what != "routing" && what != "policy" {
        bail!("unknown configuration {what:?}; known: routing, policy");
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let (bus, model) = connect(config, nats).await?;
    if what == "policy" {
        return match mcplane_shared::policy::live::push(&bus, &text).await {
            Ok((engine, revision)) => {
                println!(
                    "pushed policy version {} (sha256 {}…) as revision {revision}",
                    engine.version(),
                    engine.digest()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("mcplane: policy refused: {e}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    match mcplane_model::live::push(&bus, &text, &model.providers).await {
        Ok((rules, revision)) => {
            println!(
                "pushed routing version {} ({} rules) as revision {revision}",
                rules.version,
                rules.rules.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("mcplane: routing rules refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let (bus, model) = connect(args.config, args.nats).await?;
    let budgets = Budgets::new(
        bus.bucket(&bus.subjects.budgets_bucket()).await?,
        model.budgets,
    );
    let windows = budgets.usage(&args.tenant, chrono::Utc::now()).await?;
    let out: Vec<serde_json::Value> = windows
        .iter()
        .map(|(w, spend)| {
            serde_json::json!({
                "window": w.name,
                "period": w.period,
                "spent_usd": spend.cost_micros as f64 / 1e6,
                "hard_limit_usd": w.hard_micros.map(|m| m as f64 / 1e6),
                "soft_limit_usd": w.soft_micros.map(|m| m as f64 / 1e6),
                "requests": spend.requests,
                "input_tokens": spend.input_tokens,
                "output_tokens": spend.output_tokens,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"tenant": args.tenant, "usage": out}))?
    );
    Ok(ExitCode::SUCCESS)
}
