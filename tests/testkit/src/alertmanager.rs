//! A real Prometheus Alertmanager for tests, run from Debian's `prometheus-alertmanager`
//! binary with its own configuration and storage folder on free loopback ports (never the
//! packaged service), killed when dropped.
//!
//! The binary is `$ALERTMANAGER_BIN`, else `/usr/bin/prometheus-alertmanager`;
//! `scripts/ensure-alertmanager.sh` (sourced by `scripts/test.sh`) installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The Alertmanager binary to use.
pub fn alertmanager_bin() -> PathBuf {
    std::env::var_os("ALERTMANAGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-alertmanager"))
}

/// A running Alertmanager. Killed when dropped.
pub struct Alertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (its YAML) and waits until `/-/ready` answers.
    pub fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir for alertmanager");
        let config_file = dir.path().join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("write alertmanager.yml");
        let log = dir.path().join("alertmanager.log");
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("alertmanager log");
            let mut child = Command::new(alertmanager_bin())
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // A single instance: no gossip port to collide with other tests.
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e} (run scripts/test.sh, or set ALERTMANAGER_BIN)",
                        alertmanager_bin().display()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if ready(port) {
                    return Alertmanager {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("alertmanager did not start; its log:\n{text}");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Alertmanager logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

/// Whether `GET /-/ready` answers 200, with a plain blocking request (no HTTP client needed).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    matches!(s.read(&mut head), Ok(n) if n >= 12 && head[9..12] == *b"200")
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
