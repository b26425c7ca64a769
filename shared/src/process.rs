//! What every service binary's `main` does: parse `--config`/`--nats`/`--data`, load and
//! validate the configuration, set up logs, turn SIGINT/SIGTERM into a graceful shutdown, and
//! run the service. Keeps each `main.rs` to a few lines.

use std::future::Future;
use std::path::PathBuf;

use clap::Parser;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{Document, ServiceConfig, Validate};
use crate::error::ServiceError;
use crate::subjects::Service;

/// The flags every service binary takes.
#[derive(Debug, Clone, Parser)]
pub struct ServiceArgs {
    /// Configuration file (TOML); `MCPLANE_*` environment variables override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// NATS server URL (overrides `bus.url`).
    #[arg(long)]
    pub nats: Option<String>,
    /// Data folder (overrides `data_dir`).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl ServiceArgs {
    /// Loads the configuration document with the flags applied on top.
    pub fn document(&self) -> Result<Document, ServiceError> {
        // Files the configuration names are resolved against its folder (`config::PATH_KEYS`).
        let mut doc = Document::load(self.config.as_deref())?;
        if let Some(url) = &self.nats {
            doc.set("bus.url", toml::Value::String(url.clone()));
        }
        if let Some(dir) = &self.data {
            doc.set("data_dir", toml::Value::String(dir.display().to_string()));
        }
        Ok(doc)
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; draining in-flight work");
        t.cancel();
    });
    token
}

/// The whole `main` of a service binary.
pub fn service_main<T, F, Fut>(service: Service, run: F) -> std::process::ExitCode
where
    T: DeserializeOwned + Default + Validate,
    F: FnOnce(ServiceConfig<T>, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    let args = ServiceArgs::parse();
    let config = match args
        .document()
        .and_then(|d| Ok(d.service::<T>(service.as_str())?))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcplane-{service}: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    crate::telemetry::init_logs(&config.common.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcplane-{service}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "service stopped with an error");
            eprintln!("mcplane-{service}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
