//! A real Kafka-protocol broker for tests: tansu with in-memory storage, on a free loopback
//! port, killed when dropped.
//!
//! The binary is `$TANSU_BIN`, else `tansu` on the PATH; `scripts/ensure-kafka.sh` (sourced by
//! `scripts/test.sh`) installs one. tansu cannot pick its own port and report it, so a port
//! is chosen free and the start retried on another when the broker dies at bind.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The tansu binary to use.
pub fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tansu"))
}

/// A running tansu broker. Killed when dropped.
pub struct KafkaBroker {
    child: Child,
    port: u16,
}

impl KafkaBroker {
    /// Starts a broker with memory storage and waits until it accepts connections.
    pub fn start() -> KafkaBroker {
        for _ in 0..5 {
            let port = free_port();
            let listener = format!("tcp://127.0.0.1:{port}");
            let mut child = Command::new(tansu_bin())
                .arg("broker")
                .arg("--listener-url")
                .arg(&listener)
                .arg("--advertised-listener-url")
                .arg(&listener)
                .arg("--storage-engine")
                .arg("memory://tansu/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e} (run scripts/test.sh, or set TANSU_BIN)",
                        tansu_bin().display()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break; // lost the port to someone else: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Ours only if it is still alive once the port answers.
                    std::thread::sleep(Duration::from_millis(50));
                    if child.try_wait().ok().flatten().is_none() {
                        return KafkaBroker { child, port };
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("tansu did not start on any of 5 ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
