//! A real `redis-server` for a test: on a free port of 127.0.0.1, without persistence, killed
//! when dropped.
//!
//! Only the systems we don't run ourselves are faked (docs/ARCHITECTURE.md); Redis is ours, so
//! the rate-limiter tests speak to the real thing, including its death and return.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the binary is looked for first; `REDIS_SERVER` overrides, then `PATH`.
const DEFAULT_BINARY: &str = "/usr/bin/redis-server";
const READY_DEADLINE: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free random port and waits until it answers `PING`.
    ///
    /// A free port is found by binding port 0 and letting it go; another process may take it
    /// in between, in which case the server exits and another port is tried.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = Self::try_start(port).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server on this port (for a "Redis came back" test after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> Self {
        // The old server's port can take a moment to be released after a kill.
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(server) = Self::try_start(port).await {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL, as a crash would) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn try_start(port: u16) -> Option<Self> {
        let child = Command::new(binary())
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            // Nothing should land in the test's working directory.
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run redis-server ({}): {e}", binary()));
        let mut server = Self { child: Some(child), port };
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                // Exited: most likely the port was taken.
                server.child = None;
                return None;
            }
            if ping(port).await {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill();
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> String {
    if let Ok(path) = std::env::var("REDIS_SERVER") {
        return path;
    }
    if std::path::Path::new(DEFAULT_BINARY).exists() { DEFAULT_BINARY.to_string() } else { "redis-server".to_string() }
}

/// Whether `redis-server` can be run here (the benchmark skips its Redis part otherwise).
pub fn available() -> bool {
    Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// One `PING` in RESP, answered `+PONG`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(true)))
}
