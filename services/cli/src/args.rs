//! The command line's shape. Stable: tests, docs and operators rely on it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mcplane",
    version,
    about = "mcplane: a Model Control Plane on NATS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole fleet in one process (development).
    Up(FleetArgs),
    /// Run the fleet, replay examples/alerts/, send one AI request, print the incident summary
    /// and the audit verification, and exit.
    Demo(DemoArgs),
    /// Run one service (what each `mcplane-<service>` binary does).
    Run(RunArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify and inspect the audit chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write (or check) the JSON Schemas of the wire contracts.
    Schemas(SchemasArgs),
    /// Show which providers a request would be routed to, in order, and why (a dry run).
    Route(RouteArgs),
    /// Push versioned configuration to a running fleet (no restart).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A tenant's model spend today and this month.
    Usage(UsageArgs),
    /// Write a nats-server authorization block: one user per service, per tenant an alert
    /// publisher and a chat integration, and a request client, each limited to its subjects.
    NatsConfig(NatsConfigArgs),
    /// Load generators printing JSON figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Alerts/s ingested and correlated by the correlator, and the latency from an alert's
    /// publish to the incident event that holds it.
    Alerts(BenchAlertsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchAlertsArgs {
    /// How many alerts to publish (each distinct).
    #[arg(long, default_value_t = 100_000)]
    pub alerts: u32,
    /// Services they are spread over (one incident each).
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// The correlator's partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Publishes awaiting their JetStream ack at once.
    #[arg(long, default_value_t = 4096)]
    pub in_flight: u32,
    /// Messages per consumer pull (`bus.batch_size`).
    #[arg(long, default_value_t = 256)]
    pub batch_size: u32,
    /// How long the correlator's consumers wait for a fuller batch (`correlator.linger_ms`; the
    /// configuration's default, 10, when not given; 0 turns the wait off).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Run the correlator as an ingest-only replica (no partitions): measures normalising and
    /// keying alone.
    #[arg(long)]
    pub ingest_only: bool,
    /// Alerts per published payload (a generic JSON array), all about one service: a source
    /// that batches, as Alertmanager does when it sends one notification per alert group.
    /// 1 publishes one alert per message.
    #[arg(long, default_value_t = 1)]
    pub per_payload: u32,
    /// Offered load in alerts/s; 0 publishes as fast as acks allow (capacity).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Gives up after this long.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// After the run, also time rebuilding every partition from the stream into an empty
    /// folder (what a replica restarting on an empty disk does before consuming).
    #[arg(long)]
    pub rebuild: bool,
    /// An existing NATS server (default: start one in a temporary folder).
    #[arg(long)]
    pub nats: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct NatsConfigArgs {
    /// A tenant to create alert-publisher and chat-integration users for; repeat for several.
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    #[arg(long, default_value = "mcplane")]
    pub prefix: String,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fixed, well-known passwords (`change-me-<user>`) for the shipped example and compose;
    /// never for a real deployment.
    #[arg(long)]
    pub example: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// Fleet configuration file (its `[model]` section). Default: examples/mcplane.toml.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Routing rules to try instead of the configuration's (`version` and `[[rules]]`, as
    /// `mcplane config push routing` takes them).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// summarize, answer, classify or generate_article.
    #[arg(long = "type", default_value = "answer")]
    pub request_type: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// The principal's role(s); repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// public, internal, confidential or restricted.
    #[arg(long, default_value = "internal")]
    pub classification: String,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub max_latency_ms: Option<u32>,
    /// Estimated tokens, for the cost comparison of `cheapest` rules.
    #[arg(long, default_value_t = 500)]
    pub input_tokens: u32,
    #[arg(long, default_value_t = 512)]
    pub output_tokens: u32,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Push routing rules (`routing`: a TOML file with `version` and `[[rules]]`) or the
    /// authorisation policy (`policy`: a Cedar file with a `// version: <name>` line); every
    /// replica validates the new version and switches at once, and each decision records it.
    Push {
        /// What to push: `routing` or `policy`.
        what: String,
        file: PathBuf,
        /// Fleet configuration (for the bus and the providers the rules must name).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        #[arg(long)]
        nats: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub nats: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Configuration file (TOML). Default: examples/mcplane.toml when present.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// NATS URL. Without it: nats://127.0.0.1:4222 if a server answers there, else a
    /// nats-server started here.
    #[arg(long)]
    pub nats: Option<String>,
    /// HTTP listen address of the gateway (default 127.0.0.1:8080).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Data folder (default ./data).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Folder of sample alert payloads, named `NN-name.<source>.json`.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Seconds to wait for incident summaries.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// gateway, auth, enrichment, redaction, model, audit, correlator, notifier or kafka-bridge.
    pub service: String,
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub nats: Option<String>,
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// Where `mcplane keys` keeps keys: the fleet's key bucket on NATS when `--nats` or `--config`
/// is given (valid on every auth replica), else the key file under `--data` (one host).
#[derive(Debug, Clone, Args)]
pub struct KeyStoreArgs {
    /// The data folder holding `auth/keys.jsonl` (file mode).
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Use the key bucket of the fleet at this NATS URL (`nats://user:password@host:port`).
    #[arg(long)]
    pub nats: Option<String>,
    /// Use the key bucket of the fleet this configuration's `[bus]` names.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (it is shown only this once).
    Create {
        #[arg(long)]
        tenant: String,
        /// Role(s) of the key's principal; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A machine caller (the correlator, automation). With `--tenant '*'` it may act for
        /// any tenant.
        #[arg(long)]
        service_account: bool,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// List keys (ids and metadata, never the keys).
    List {
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Revoke a key by id.
    Revoke {
        key_id: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Copy the key file under `--data` into the fleet's key bucket (`--nats` or `--config`),
    /// revocations included; safe to run again.
    Import {
        #[command(flatten)]
        store: KeyStoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Exit 0 on an intact chain, non-zero naming the first bad entry otherwise. Verifies the
    /// data folder's chain, or an export (`--export`), optionally against a signed checkpoint.
    Verify {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// An export (`mcplane audit export`) to verify instead of the data folder.
        #[arg(long)]
        export: Option<PathBuf>,
        /// A checkpoint (JSON, from `mcplane audit checkpoint` or the bus) the chain must match.
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The audit service's public key (hex) the checkpoint must be signed with.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write a tenant's chain as JSON lines (for a SIEM, or to verify offline).
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a tenant's latest signed checkpoint (JSON).
    Checkpoint {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
    /// Print a tenant's entries that match (JSON lines).
    Query {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The principal id (an API key id such as `key_…`, or `jwt:<sub>`).
        #[arg(long)]
        principal: Option<String>,
        /// ok, denied or failed.
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339: entries at or after.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339: entries before.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Open each entry's sealed payload with the tenant's audit key and print it as
        /// `payload_plaintext` (or why it does not open as `payload_error`).
        #[arg(long)]
        decrypt: bool,
        /// Folder of the tenants' audit keys (default: `<data>/audit/tenant-keys`);
        /// `MCPLANE_AUDIT_KEY_<TENANT>` wins over the file.
        #[arg(long)]
        keys_dir: Option<PathBuf>,
    },
    /// Crypto-shred a tenant's kept payloads (an erasure request): destroy its audit key. The
    /// chain still verifies; the payloads sealed with the key can never be read again. A new
    /// key is created with the next payload.
    Shred {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Folder of the tenants' audit keys (default: `<data>/audit/tenant-keys`).
        #[arg(long)]
        keys_dir: Option<PathBuf>,
        /// Required: says you mean to make this tenant's payloads unreadable for good.
        #[arg(long)]
        destroy_payloads_irreversibly: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SchemasArgs {
    /// Output folder.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Do not write; exit non-zero when a file differs from the types.
    #[arg(long)]
    pub check: bool,
}
