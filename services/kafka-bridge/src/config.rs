//! The `[kafka-bridge]` section: which brokers, which consumer group, and for each topic the
//! tenant and alert source its records belong to.
//!
//! A topic's tenant is fixed here (the operator's word, like a tenant-scoped NATS credential)
//! or, when left out, read from each record's `mcplane-tenant` header — only for topics whose
//! producers are trusted to name any tenant. The same holds for the source.

use std::collections::{BTreeMap, BTreeSet};

use mcplane_shared::alerts;
use mcplane_shared::config::{ConfigError, Validate};
use mcplane_shared::subjects::validate_token;
use serde::Deserialize;

/// librdkafka properties the bridge sets itself: overriding them would break its guarantees.
const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group; replicas of the bridge share it and split the partitions.
    pub group_id: String,
    /// The topics to move onto the bus. Without any the bridge has nothing to do, and
    /// `mcplane up` does not start it.
    pub topics: Vec<TopicRoute>,
    /// Records published and not yet acknowledged by JetStream, at most.
    pub max_in_flight: usize,
    /// How often the acknowledged offsets are committed to Kafka.
    pub commit_interval_ms: u64,
    /// Where a group with no committed offset starts: `earliest` (nothing missed) or `latest`.
    pub auto_offset_reset: OffsetReset,
    /// Records larger than this go to the dead-letter subject (JetStream refuses messages above
    /// its `max_payload`, 1 MiB by default, and the envelope adds a little).
    pub max_record_bytes: usize,
    /// How long a graceful stop waits for publishes in flight before committing what was acked.
    pub drain_timeout_ms: u64,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `session.timeout.ms`, ...).
    pub kafka: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: String::new(),
            group_id: "mcplane-kafka-bridge".to_string(),
            topics: Vec::new(),
            max_in_flight: 1024,
            commit_interval_ms: 500,
            auto_offset_reset: OffsetReset::Earliest,
            max_record_bytes: 900 * 1024,
            drain_timeout_ms: 10_000,
            kafka: BTreeMap::new(),
        }
    }
}

/// One topic and where its records go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRoute {
    pub topic: String,
    /// The tenant of every record; `None` reads the `mcplane-tenant` header.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The alert source (`alertmanager`, `generic`, ...); `None` reads `mcplane-source`.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

impl Config {
    /// Whether there is anything to bridge (`mcplane up` starts the bridge only then).
    pub fn is_configured(&self) -> bool {
        !self.topics.is_empty()
    }

    /// The route of `topic`, if it is one of the configured topics.
    pub fn route(&self, topic: &str) -> Option<&TopicRoute> {
        self.topics.iter().find(|r| r.topic == topic)
    }
}

impl Validate for Config {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if !self.topics.is_empty() && self.brokers.trim().is_empty() {
            return Err(ConfigError::new(
                key("brokers"),
                "must name the Kafka bootstrap servers (host:port) when topics are configured",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new(key("group_id"), "must not be empty"));
        }
        let mut seen = BTreeSet::new();
        for (i, route) in self.topics.iter().enumerate() {
            let at = |k: &str| format!("{section}.topics[{i}].{k}");
            if route.topic.trim().is_empty() {
                return Err(ConfigError::new(at("topic"), "must not be empty"));
            }
            if !seen.insert(route.topic.as_str()) {
                return Err(ConfigError::new(
                    at("topic"),
                    format!("topic {:?} is listed twice", route.topic),
                ));
            }
            if let Some(tenant) = &route.tenant {
                validate_token(tenant)
                    .map_err(|_| ConfigError::new(at("tenant"), "must be 1 to 64 of [a-z0-9_-]"))?;
            }
            if let Some(source) = &route.source {
                if !alerts::is_known_source(source) {
                    return Err(ConfigError::new(
                        at("source"),
                        format!(
                            "unknown alert source {source:?}; known: {}",
                            alerts::SOURCES.join(", ")
                        ),
                    ));
                }
            }
        }
        if !(1..=65_536).contains(&self.max_in_flight) {
            return Err(ConfigError::new(
                key("max_in_flight"),
                "must be between 1 and 65536",
            ));
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::new(key("commit_interval_ms"), "must be > 0"));
        }
        if self.max_record_bytes == 0 {
            return Err(ConfigError::new(key("max_record_bytes"), "must be > 0"));
        }
        for name in self.kafka.keys() {
            if OWNED_PROPERTIES.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{section}.kafka.{name}"),
                    "is set by the bridge itself (use brokers / group_id; commits are manual)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcplane_shared::config::Document;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        Document::parse(toml)
            .unwrap()
            .section::<Config>("kafka-bridge")
    }

    #[test]
    fn a_topic_maps_to_tenant_and_source() {
        let c = parse(
            "[kafka-bridge]\nbrokers = \"k:9092\"\n\
             [[kafka-bridge.topics]]\ntopic = \"am.acme\"\ntenant = \"acme\"\nsource = \"alertmanager\"\n\
             [[kafka-bridge.topics]]\ntopic = \"shared\"\n",
        )
        .unwrap();
        assert!(c.is_configured());
        let r = c.route("am.acme").unwrap();
        assert_eq!(r.tenant.as_deref(), Some("acme"));
        assert_eq!(c.route("shared").unwrap().source, None);
        assert_eq!(c.route("other"), None);
        assert!(!Config::default().is_configured());
        assert!(parse("").is_ok(), "an absent section is valid (and idle)");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(include_str!("../../../examples/kafka-bridge.toml")).unwrap();
        assert_eq!(c.topics.len(), 2);
        assert_eq!(c.route("alerts.shared").unwrap().tenant, None);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| parse(t).unwrap_err().key;
        assert_eq!(
            err("[[kafka-bridge.topics]]\ntopic = \"t\"\n"),
            "kafka-bridge.brokers"
        );
        let base = "[kafka-bridge]\nbrokers = \"k:9092\"\n";
        assert_eq!(
            err(&format!(
                "{base}[[kafka-bridge.topics]]\ntopic = \"t\"\ntenant = \"Acme\"\n"
            )),
            "kafka-bridge.topics[0].tenant"
        );
        assert_eq!(
            err(&format!(
                "{base}[[kafka-bridge.topics]]\ntopic = \"t\"\nsource = \"nagios\"\n"
            )),
            "kafka-bridge.topics[0].source"
        );
        assert_eq!(
            err(&format!(
                "{base}[[kafka-bridge.topics]]\ntopic = \"t\"\n[[kafka-bridge.topics]]\ntopic = \"t\"\n"
            )),
            "kafka-bridge.topics[1].topic"
        );
        assert_eq!(
            err(&format!(
                "{base}kafka = {{ \"enable.auto.commit\" = \"true\" }}\n"
            )),
            "kafka-bridge.kafka.enable.auto.commit"
        );
        assert_eq!(
            err(&format!("{base}max_in_flight = 0\n")),
            "kafka-bridge.max_in_flight"
        );
        assert_eq!(
            err(&format!("{base}auto_offset_reset = \"middle\"\n")),
            "kafka-bridge.auto_offset_reset"
        );
    }
}
