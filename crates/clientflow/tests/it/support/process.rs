//! Running the real binary and finding free ports.

use std::process::Command;

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clientflow"));
    // A clean environment: nothing from the developer's shell leaks into these runs.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn nix_kill_term(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Waits until a `serve` started with data directory `data` answers `/readyz` on `port`, and
/// returns an HTTPS client that trusts its certificate. Panics with the process's standard error
/// (when piped) if it exits first, and kills it after a minute without an answer.
pub(crate) async fn wait_ready(child: &mut std::process::Child, data: &std::path::Path, port: u16) -> reqwest::Client {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("https://localhost:{port}");
    let cert = data.join("tls/localhost.crt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.as_mut() {
                std::io::Read::read_to_string(stderr, &mut err).ok();
            }
            panic!("serve exited with {status}:\n{err}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not become ready");
        }
        if cert.exists() {
            let client = clientflow_test_support::client_for(&cert, addr).build().unwrap();
            if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
                return client;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
