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
