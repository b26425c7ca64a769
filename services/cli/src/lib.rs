//! The `mcplane` command line: the fleet in one process for development (`up`), the demo,
//! API keys, audit verification, JSON Schemas, and one service at a time (`run`).
//!
//! This crate is the composition root: the only crate that depends on every service. Services
//! never depend on each other; they meet only on the bus.

mod args;
mod audit_cmd;
mod bench_alerts;
mod config_cmd;
mod demo;
pub mod fleet;
mod keys_cmd;
pub mod local_nats;
mod nats_config_cmd;
mod route_cmd;
mod schemas_cmd;

use std::process::ExitCode;

use clap::Parser;

pub use args::{BenchCommand, Cli, Command};

/// Entry point of the `mcplane` binary (also used by the test suite's copy of it).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => runtime()?.block_on(fleet::up(args)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Run(args) => runtime()?.block_on(fleet::run_one(args)),
        Command::Keys(cmd) => keys_cmd::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Schemas(args) => schemas_cmd::run(args),
        Command::Route(args) => route_cmd::run(args),
        Command::Config(cmd) => runtime()?.block_on(config_cmd::push(cmd)),
        Command::Usage(args) => runtime()?.block_on(config_cmd::usage(args)),
        Command::NatsConfig(args) => nats_config_cmd::run(args),
        Command::Bench(BenchCommand::Alerts(args)) => runtime()?.block_on(bench_alerts::run(args)),
    }
}
