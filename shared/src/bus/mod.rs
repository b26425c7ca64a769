//! The bus: connecting to NATS, the streams and buckets mcplane needs, publishing with
//! deduplication, and the consume loop every worker runs.
//!
//! Stage hand-offs ride JetStream, never core subscriptions (a slow core subscriber silently
//! drops messages once its buffer fills). Publishes carry `Nats-Msg-Id = <envelope id>:<stage>`
//! so the server drops the duplicates a redelivery produces, and are sent many at a time with
//! their acks awaited together (awaiting each in turn caps a stage near 7k msg/s).

mod claims;
mod connect;
mod consume;
mod discovery;
mod flow;
mod outputs;
mod payload_limit;
mod publish;
mod recorded;
mod results;
mod streams;
mod watched;

pub use claims::{Claim, Claims};
pub use connect::{connect, connect_with_inbox, version_at_least};
pub use consume::{run_batch_consumer, run_consumer, ConsumerSpec, Disposition};
pub use discovery::announce;
pub use flow::run_flowing_consumer;
pub use outputs::{append_outputs, decode_outputs, encode_outputs};
pub use payload_limit::SMALL_PAYLOAD;
pub use publish::{audit_publication, Publication};
pub use recorded::publish_once;
pub use results::{result_publications, ResultStore};
pub use watched::{follow_config_key, push_config_key, read_config_key};

use async_nats::jetstream;

use crate::config::BusConfig;
use crate::subjects::Subjects;

/// A connection to NATS with its JetStream context and the subject names in use.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub config: BusConfig,
    /// This service's readiness facts; the consume loop reports into it.
    pub health: crate::health::Health,
}

impl Bus {
    /// Wraps an existing client (tests that already hold one use this).
    pub fn from_client(client: async_nats::Client, config: BusConfig) -> Self {
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(4096)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Bus {
            health: crate::health::Health::new(client.clone()),
            client,
            js,
            subjects: Subjects::new(config.prefix.clone()),
            config,
        }
    }
}
