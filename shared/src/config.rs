//! Typed configuration: one TOML file for the fleet, environment overrides, validation that
//! names the key at fault.
//!
//! Every service reads the same file and takes the common part (`[bus]`, `data_dir`, `[log]`)
//! plus its own section, so one file configures `mcplane up` and every separate binary alike.
//! Environment variables override the file: `MCPLANE_BUS__URL` sets `bus.url`,
//! `MCPLANE_GATEWAY__HTTP_ADDR` sets `gateway.http_addr` (`__` separates levels).

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize};

/// A configuration error that names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `gateway.http_addr`; the file path for file errors.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Checks a section's values beyond what their types say. `section` is the key prefix to name.
pub trait Validate {
    fn validate(&self, section: &str) -> Result<(), ConfigError>;
}

/// How to reach NATS and how to name things on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated.
    pub url: String,
    /// Subject prefix; also names streams (`MCPLANE_PIPELINE`) and KV buckets (`mcplane-results`).
    pub prefix: String,
    /// How long to keep retrying the first connection before giving up.
    pub connect_timeout_ms: u64,
    /// A NATS credentials file (`.creds`), for servers with accounts.
    pub credentials_file: Option<PathBuf>,
    /// JetStream replicas for the streams mcplane creates (1 on a single server, 3 in a cluster).
    pub stream_replicas: usize,
    /// Messages fetched per pull and processed together (one ledger flush per batch).
    pub batch_size: usize,
    /// Seconds a delivered message may stay unacknowledged before NATS redelivers it.
    pub ack_wait_secs: u64,
    /// Deliveries before a message that keeps failing is given up (and audited).
    pub max_deliver: i64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: crate::DEFAULT_PREFIX.into(),
            connect_timeout_ms: 30_000,
            credentials_file: None,
            stream_replicas: 1,
            batch_size: 256,
            ack_wait_secs: 30,
            max_deliver: 10,
        }
    }
}

impl Validate for BusConfig {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{section}.url"),
                "must not be empty",
            ));
        }
        crate::subjects::validate_token(&self.prefix).map_err(|_| {
            ConfigError::new(
                format!("{section}.prefix"),
                "must be one subject token of 1-64 characters from [a-z0-9_-]",
            )
        })?;
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError::new(
                format!("{section}.stream_replicas"),
                "must be between 1 and 5",
            ));
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(ConfigError::new(
                format!("{section}.batch_size"),
                "must be between 1 and 4096",
            ));
        }
        if self.ack_wait_secs == 0 {
            return Err(ConfigError::new(
                format!("{section}.ack_wait_secs"),
                "must be > 0",
            ));
        }
        if self.max_deliver < 1 {
            return Err(ConfigError::new(
                format!("{section}.max_deliver"),
                "must be >= 1",
            ));
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object a line, for collectors) or `pretty` (for a terminal).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `mcplane_model=debug,info`; `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `[telemetry]`: the HTTP endpoint each worker serves for probes and scrapes (`/healthz`,
/// `/readyz`, `/metrics`). Off unless `listen` is set: the fleet in one process shares one
/// listener, separate worker processes each need their own address (9464 is the convention;
/// the gateway serves the same paths on its own HTTP address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address to listen on, e.g. `0.0.0.0:9464`.
    pub listen: Option<std::net::SocketAddr>,
}

impl Validate for TelemetryConfig {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.listen.is_some_and(|a| a.port() == 0) {
            return Err(ConfigError::new(
                format!("{section}.listen"),
                "needs a fixed port (probes and scrapers must know where to ask)",
            ));
        }
        Ok(())
    }
}

/// The part of the configuration every service shares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Common {
    pub bus: BusConfig,
    /// Where services keep their sled state, one folder per service (and partition).
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// `[policy]`: the Cedar policy file the fleet starts with.
    pub policy: crate::policy::PolicyConfig,
    /// `[telemetry]`: the worker's probe and metrics endpoint.
    pub telemetry: TelemetryConfig,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            bus: BusConfig::default(),
            data_dir: PathBuf::from("./data"),
            log: LogConfig::default(),
            policy: crate::policy::PolicyConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Common {
    /// The policy engine the configuration names (the built-in policy when none); errors name
    /// `policy.file`. Services that decide call this once at start, then follow pushes.
    pub fn policy_engine(&self) -> Result<crate::policy::PolicyEngine, ConfigError> {
        self.policy.load("policy")
    }

    /// The data folder of one service.
    pub fn service_dir(&self, service: crate::Service) -> PathBuf {
        self.data_dir.join(service.as_str())
    }
}

/// A service's whole configuration: the common part and its own section.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig<T> {
    pub common: Common,
    pub service: T,
}

/// Keys holding file paths, resolved against the configuration file's folder.
pub const PATH_KEYS: [&str; 4] = [
    "enrichment.cmdb_file",
    "correlator.cmdb_file",
    "policy.file",
    "redaction.audit_keys_dir",
];

/// A parsed configuration document (file plus environment), from which sections are taken.
#[derive(Debug, Clone, Default)]
pub struct Document {
    table: toml::Table,
}

impl Document {
    /// Reads `path` (when given) and applies `MCPLANE_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut doc = match path {
            Some(p) => {
                let mut doc = Self::from_file(p)?;
                if let Some(base) = p.parent() {
                    // Files a configuration file names are relative to it, whatever the working
                    // directory of the process reading it (a container's, a test's).
                    for key in PATH_KEYS {
                        doc.resolve_path(key, base);
                    }
                }
                doc
            }
            None => Document::default(),
        };
        doc.apply_env(std::env::vars());
        Ok(doc)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::parse(&text).map_err(|e| ConfigError::new(path.display().to_string(), e.message))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::new("(file)", e.to_string().trim().to_string()))?;
        Ok(Document { table })
    }

    /// Applies overrides from `MCPLANE_<SECTION>__<KEY>=value` variables. A value that parses as
    /// a TOML value (number, boolean, array) is taken as such, anything else as a string.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("MCPLANE_") else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            self.set(&section_named(&key), parse_scalar(&value));
        }
    }

    /// Sets a dotted key, creating tables on the way (command-line flags use this).
    pub fn set(&mut self, dotted: &str, value: toml::Value) {
        let parts: Vec<&str> = dotted.split('.').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            return;
        };
        let mut table = &mut self.table;
        for part in parents {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(next) = entry else {
                return;
            };
            table = next;
        }
        table.insert(last.to_string(), value);
    }

    /// The value at a dotted key, if set.
    pub fn get(&self, dotted: &str) -> Option<&toml::Value> {
        let mut parts = dotted.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// Makes a relative path at `dotted` relative to `base` (a configuration file's folder),
    /// so a config file can name files beside it whatever the working directory.
    pub fn resolve_path(&mut self, dotted: &str, base: &Path) {
        if let Some(toml::Value::String(p)) = self.get(dotted) {
            let path = Path::new(p);
            if path.is_relative() {
                let joined = base.join(path).display().to_string();
                self.set(dotted, toml::Value::String(joined));
            }
        }
    }

    /// The common part, validated.
    pub fn common(&self) -> Result<Common, ConfigError> {
        let mut common = Common::default();
        if let Some(bus) = self.table.get("bus") {
            common.bus = deserialize(bus.clone(), "bus")?;
        }
        if let Some(dir) = self.table.get("data_dir") {
            common.data_dir = deserialize(dir.clone(), "data_dir")?;
        }
        if let Some(log) = self.table.get("log") {
            common.log = deserialize(log.clone(), "log")?;
        }
        if let Some(policy) = self.table.get("policy") {
            common.policy = deserialize(policy.clone(), "policy")?;
        }
        if let Some(telemetry) = self.table.get("telemetry") {
            common.telemetry = deserialize(telemetry.clone(), "telemetry")?;
        }
        common.bus.validate("bus")?;
        common.telemetry.validate("telemetry")?;
        Ok(common)
    }

    /// One service's section (defaults when absent), validated.
    pub fn section<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Default + Validate,
    {
        let value = match self.table.get(name) {
            Some(v) => deserialize(v.clone(), name)?,
            None => T::default(),
        };
        value.validate(name)?;
        Ok(value)
    }

    /// The common part plus one section: what a service's `run` takes.
    pub fn service<T>(&self, name: &str) -> Result<ServiceConfig<T>, ConfigError>
    where
        T: DeserializeOwned + Default + Validate,
    {
        Ok(ServiceConfig {
            common: self.common()?,
            service: self.section(name)?,
        })
    }
}

fn deserialize<T: DeserializeOwned>(value: toml::Value, key: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let full = if path == "." || path.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        ConfigError::new(full, e.into_inner().to_string())
    })
}

/// Environment names cannot hold `-`: `kafka_bridge.brokers` (from
/// `MCPLANE_KAFKA_BRIDGE__BROKERS`) means the `[kafka-bridge]` section of the service of that name.
fn section_named(key: &str) -> String {
    if let Some((section, rest)) = key.split_once('.') {
        let dashed = section.replace('_', "-");
        if dashed != section && crate::Service::from_name(&dashed).is_some() {
            return format!("{dashed}.{rest}");
        }
    }
    key.to_string()
}

fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        port: u16,
        name: String,
    }

    impl Validate for Demo {
        fn validate(&self, section: &str) -> Result<(), ConfigError> {
            if self.name == "bad" {
                return Err(ConfigError::new(format!("{section}.name"), "is bad"));
            }
            Ok(())
        }
    }

    #[test]
    fn env_overrides_the_file_and_parses_scalars() {
        let mut doc = Document::parse("[demo]\nport = 1\nname = \"a\"\n").unwrap();
        doc.apply_env([
            ("MCPLANE_DEMO__PORT".to_string(), "8080".to_string()),
            ("MCPLANE_BUS__URL".to_string(), "nats://h:1".to_string()),
            (
                "MCPLANE_KAFKA_BRIDGE__BROKERS".to_string(),
                "k1:9092".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let cfg: ServiceConfig<Demo> = doc.service("demo").unwrap();
        assert_eq!(cfg.service.port, 8080);
        assert_eq!(cfg.common.bus.url, "nats://h:1");
        assert_eq!(
            doc.get("kafka-bridge.brokers").and_then(|v| v.as_str()),
            Some("k1:9092")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let doc = Document::parse("[demo]\nport = \"x\"\n").unwrap();
        let err = doc.section::<Demo>("demo").unwrap_err();
        assert_eq!(err.key, "demo.port");

        let doc = Document::parse("[demo]\nprot = 1\n").unwrap();
        let err = doc.section::<Demo>("demo").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");

        let doc = Document::parse("[demo]\nname = \"bad\"\n").unwrap();
        assert_eq!(doc.section::<Demo>("demo").unwrap_err().key, "demo.name");

        let doc = Document::parse("[bus]\nprefix = \"a.b\"\n").unwrap();
        assert_eq!(doc.common().unwrap_err().key, "bus.prefix");
    }

    #[test]
    fn telemetry_listen_is_off_by_default_and_checked() {
        let doc = Document::parse("").unwrap();
        assert_eq!(doc.common().unwrap().telemetry.listen, None);

        let doc = Document::parse("[telemetry]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
        let listen = doc.common().unwrap().telemetry.listen.unwrap();
        assert_eq!(listen.port(), 9464);

        let doc = Document::parse("[telemetry]\nlisten = \"localhost\"\n").unwrap();
        assert_eq!(doc.common().unwrap_err().key, "telemetry.listen");

        let doc = Document::parse("[telemetry]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(doc.common().unwrap_err().key, "telemetry.listen");
    }
}
