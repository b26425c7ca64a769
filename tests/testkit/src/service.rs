//! One service's `run` driven by a test: the configuration it gets against a test server, and
//! a handle that stops it gracefully and fails the test if it did not stop cleanly.

use std::future::Future;
use std::path::Path;

use mcplane_shared::config::{BusConfig, Common, ServiceConfig};
use mcplane_shared::ServiceError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::NatsServer;

/// Bus settings for tests: the server's URL and a short ack wait, so redeliveries come fast.
pub fn bus_config(nats: &NatsServer) -> BusConfig {
    BusConfig {
        url: nats.url(),
        ack_wait_secs: 5,
        ..Default::default()
    }
}

/// A service's configuration against `nats`, keeping its state under `data`.
pub fn service_config<T>(nats: &NatsServer, data: &Path, service: T) -> ServiceConfig<T> {
    ServiceConfig {
        common: Common {
            bus: bus_config(nats),
            data_dir: data.to_path_buf(),
            ..Default::default()
        },
        service,
    }
}

/// A service running on the test's runtime.
pub struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl Running {
    /// Spawns `run(shutdown)`, e.g. `Running::spawn(|s| mcplane_model::run(config, s))`.
    pub fn spawn<F, Fut>(run: F) -> Running
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Running { shutdown, task }
    }

    /// Asks the service to drain and stop; panics unless it stopped without an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("service task panicked")
            .expect("service stopped with an error");
    }
}

impl Running {
    /// Kills the service as a crash would: its task is aborted mid-work, nothing drains and
    /// nothing is committed or acknowledged on the way out.
    pub fn abort(self) {
        self.task.abort();
    }
}
