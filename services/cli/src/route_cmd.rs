//! `mcplane route`: which providers a request would get, in order, and why — the same
//! decision function the model stage runs, without sending anything. Offline, so provider
//! health is not consulted: every circuit counts as closed and no latency is known.

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use mcplane_model::config::Config;
use mcplane_model::routing::{ProviderView, RouteInput, RoutingConfig};
use mcplane_shared::{Classification, RequestType};
use serde::de::DeserializeOwned;

use crate::args::{FleetArgs, RouteArgs};
use crate::fleet;

fn parse_enum<T: DeserializeOwned>(what: &str, value: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| anyhow!("unknown {what} {value:?}"))
}

pub fn run(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let doc = fleet::document(&FleetArgs {
        config: args.config.clone(),
        nats: None,
        http: None,
        data: None,
    })?;
    let model: Config = doc.section("model")?;
    let rules = match &args.rules {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            mcplane_model::live::parse(&text, &model.providers)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => model.routing.clone(),
    };
    let request_type: RequestType = parse_enum("request type", &args.request_type)?;
    let classification: Classification = parse_enum("classification", &args.classification)?;
    let views: Vec<ProviderView<'_>> = model
        .providers
        .iter()
        .map(|config| ProviderView {
            config,
            available: true,
            p95_ms: None,
        })
        .collect();
    let input = RouteInput {
        id: uuid::Uuid::now_v7(),
        request_type,
        tenant: &args.tenant,
        roles: &args.roles,
        classification,
        max_latency_ms: args.max_latency_ms,
        model: args.model.as_deref(),
        input_tokens: args.input_tokens,
        output_tokens: args.output_tokens,
    };
    let decision = RoutingConfig::decide(&rules, &views, &input);
    let costs: serde_json::Map<String, serde_json::Value> = decision
        .order
        .iter()
        .map(|i| {
            let p = &model.providers[*i];
            (
                p.name.clone(),
                serde_json::json!({
                    "boundary": p.boundary().as_str(),
                    "estimated_cost_usd": p.cost_micros(args.input_tokens, args.output_tokens) as f64 / 1e6,
                }),
            )
        })
        .collect();
    let out = serde_json::json!({
        "decision": decision,
        "candidates": costs,
        "health": "not consulted (offline dry run: every circuit counted as closed)",
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if decision.order.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
