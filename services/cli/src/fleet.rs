//! The whole fleet in one process: every service's `run` on one runtime, sharing one
//! shutdown token. Used by `mcplane up`, the demo and the end-to-end tests; production runs
//! each service as its own binary (or `mcplane run <service>`) and scales them separately.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcplane_shared::config::Document;
use mcplane_shared::{Service, ServiceError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::args::{FleetArgs, RunArgs};
use crate::local_nats::{self, LocalNats};

/// The configuration file used when none is given: the repository's example, when present.
pub fn default_config_path() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("examples/mcplane.toml"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mcplane.toml"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// Loads the document for `args`: file (or the default), environment, then flags.
pub fn document(args: &FleetArgs) -> anyhow::Result<Document> {
    let path = args.config.clone().or_else(default_config_path);
    // Files named in the configuration (the CMDB, the policy) are resolved against its folder.
    let mut doc = Document::load(path.as_deref())?;
    if let Some(url) = &args.nats {
        doc.set("bus.url", toml::Value::String(url.clone()));
    }
    if let Some(addr) = &args.http {
        doc.set("gateway.http_addr", toml::Value::String(addr.to_string()));
    }
    if let Some(dir) = &args.data {
        doc.set("data_dir", toml::Value::String(dir.display().to_string()));
    }
    Ok(doc)
}

/// Validates every section up front, so a bad key is reported before anything starts.
pub fn validate(doc: &Document) -> anyhow::Result<()> {
    doc.common()?;
    doc.section::<mcplane_gateway::config::Config>("gateway")?;
    doc.section::<mcplane_auth::config::Config>("auth")?;
    doc.section::<mcplane_enrichment::config::Config>("enrichment")?;
    doc.section::<mcplane_redaction::config::Config>("redaction")?;
    doc.section::<mcplane_model::config::Config>("model")?;
    doc.section::<mcplane_audit::config::Config>("audit")?;
    doc.section::<mcplane_correlator::config::Config>("correlator")?;
    doc.section::<mcplane_notifier::config::Config>("notifier")?;
    doc.section::<mcplane_kafka_bridge::config::Config>("kafka-bridge")?;
    Ok(())
}

/// Spawns one service's `run` on the current runtime.
pub fn spawn_service(
    service: Service,
    doc: &Document,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<Result<(), ServiceError>>> {
    let name = service.as_str();
    Ok(match service {
        Service::Gateway => tokio::spawn(mcplane_gateway::run(doc.service(name)?, shutdown)),
        Service::Auth => tokio::spawn(mcplane_auth::run(doc.service(name)?, shutdown)),
        Service::Enrichment => tokio::spawn(mcplane_enrichment::run(doc.service(name)?, shutdown)),
        Service::Redaction => tokio::spawn(mcplane_redaction::run(doc.service(name)?, shutdown)),
        Service::Model => tokio::spawn(mcplane_model::run(doc.service(name)?, shutdown)),
        Service::Audit => tokio::spawn(mcplane_audit::run(doc.service(name)?, shutdown)),
        Service::Correlator => tokio::spawn(mcplane_correlator::run(doc.service(name)?, shutdown)),
        Service::Notifier => tokio::spawn(mcplane_notifier::run(doc.service(name)?, shutdown)),
        Service::KafkaBridge => {
            tokio::spawn(mcplane_kafka_bridge::run(doc.service(name)?, shutdown))
        }
    })
}

/// The always-on services, plus the optional ones whose section configures them (the Kafka
/// bridge when it has topics).
pub fn configured_services(doc: &Document) -> anyhow::Result<Vec<Service>> {
    let mut services = Service::ALL.to_vec();
    let bridge = doc.section::<mcplane_kafka_bridge::config::Config>("kafka-bridge")?;
    if bridge.is_configured() {
        services.push(Service::KafkaBridge);
    }
    Ok(services)
}

/// Which NATS server the fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsChoice {
    /// `bus.url` as configured.
    Configured,
    /// A nats-server started for this fleet.
    Own,
    /// `bus.url` if a server answers there, else one started for this fleet.
    ConfiguredOrOwn,
}

/// A running fleet.
pub struct Fleet {
    shutdown: CancellationToken,
    tasks: Vec<(Service, JoinHandle<Result<(), ServiceError>>)>,
    /// The configuration the services run with (with the URL of a server started for them).
    doc: Document,
    /// The probe listener, held until the fleet has stopped.
    _probes: Option<mcplane_shared::health::Reservation>,
    // Kept so the server lives as long as the fleet.
    _nats: Option<LocalNats>,
}

impl Fleet {
    /// Starts every service on the current runtime, with a nats-server of its own under
    /// `<data_dir>/nats` when `nats` says so.
    pub async fn start(doc: Document, nats: NatsChoice) -> anyhow::Result<Fleet> {
        let services = configured_services(&doc)?;
        Self::start_services(doc, nats, &services).await
    }

    /// Starts only `services` (tests run one service as a separate process to kill it).
    pub async fn start_services(
        mut doc: Document,
        nats: NatsChoice,
        services: &[Service],
    ) -> anyhow::Result<Fleet> {
        validate(&doc)?;
        let common = doc.common()?;
        let start_own = match nats {
            NatsChoice::Configured => false,
            NatsChoice::Own => true,
            NatsChoice::ConfiguredOrOwn => !local_nats::answers(&common.bus.url),
        };
        let nats = if start_own {
            let server = LocalNats::start(&common.data_dir.join("nats"))?;
            tracing::info!(url = server.url(), "started a local nats-server");
            doc.set("bus.url", toml::Value::String(server.url().to_string()));
            Some(server)
        } else {
            None
        };
        // Fail fast (and clearly) on an unreachable or too-old server before spawning.
        let common = doc.common()?;
        mcplane_shared::bus::connect(&common.bus, "mcplane-up")
            .await
            .context("connecting to NATS")?;
        // Hold the probe listener for the workers before spawning any, so `/readyz` is not
        // 200 while some of them have not started.
        let reservation = mcplane_shared::health::reserve(&common.telemetry, services)?;
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        for &service in services {
            tasks.push((
                service,
                spawn_service(service, &doc, shutdown.child_token())?,
            ));
        }
        Ok(Fleet {
            shutdown,
            tasks,
            doc,
            _probes: reservation,
            _nats: nats,
        })
    }

    /// The configuration the services run with.
    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// Whether any service has stopped (which in a healthy fleet means it failed).
    pub fn failed_service(&self) -> Option<Service> {
        self.tasks
            .iter()
            .find(|(_, t)| t.is_finished())
            .map(|(s, _)| *s)
    }

    /// Graceful shutdown: every service drains its in-flight work and stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut failures = Vec::new();
        for (service, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{service}: {e}")),
                Err(e) => failures.push(format!("{service}: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("services failed: {}", failures.join("; "))
        }
    }
}

/// `mcplane up`.
pub async fn up(args: FleetArgs) -> anyhow::Result<ExitCode> {
    let doc = document(&args)?;
    mcplane_shared::telemetry::init_logs(&doc.common()?.log);
    let choice = if args.nats.is_some() {
        NatsChoice::Configured
    } else {
        NatsChoice::ConfiguredOrOwn
    };
    let fleet = Fleet::start(doc, choice).await?;
    tracing::info!("mcplane is up; Ctrl-C stops it");
    let signals = mcplane_shared::process::shutdown_on_signals();
    loop {
        tokio::select! {
            _ = signals.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                if let Some(service) = fleet.failed_service() {
                    tracing::error!(%service, "a service stopped; shutting the fleet down");
                    break;
                }
            }
        }
    }
    fleet.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// `mcplane run <service>`: one service, as its own binary would run it.
pub async fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let service = Service::from_name(&args.service)
        .with_context(|| format!("unknown service {:?}", args.service))?;
    let fleet_args = FleetArgs {
        config: args.config,
        nats: args.nats,
        http: None,
        data: args.data,
    };
    let doc = document(&fleet_args)?;
    mcplane_shared::telemetry::init_logs(&doc.common()?.log);
    let shutdown = mcplane_shared::process::shutdown_on_signals();
    spawn_service(service, &doc, shutdown)?.await??;
    Ok(ExitCode::SUCCESS)
}
