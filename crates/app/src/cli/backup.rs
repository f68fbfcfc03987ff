//! `clientflow backup …`: take a backup, list what can be recovered, restore to a moment, run
//! the restore drill (see `crate::backup`). Progress goes to standard error; the result to
//! standard output, as text or (`--json`) one JSON document. Errors with `--json` are
//! `{"error": {"kind", "message"}}` on standard error.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use crate::backup::{self as b, Live, Progress};
use crate::config::Config;
use crate::platform::db::backup::{BackupType, RestoreTarget};
use crate::platform::db::provision;

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Take a backup of the private cluster now.
    Run {
        /// full (every file), diff (changes since the newest full backup) or incr (changes
        /// since the newest backup).
        #[arg(long = "type", default_value = "full", value_parser = ["full", "diff", "incr"])]
        kind: String,
    },
    /// List the backups in the repository and the earliest and latest moments a restore can reach.
    List,
    /// Restore the backups to a moment, into a new data directory (or, stopped, over this one).
    ///
    /// The new data directory gets the restored cluster and a copy of this one's secrets, so
    /// `CLIENTFLOW_DATA_DIR=<dir> clientflow serve` runs it. The restored cluster is started
    /// once to replay WAL up to the moment, checked (catalog, audit chains) and stopped.
    Restore {
        /// The moment to recover to (RFC 3339, e.g. 2025-03-01T09:30:00Z), or `latest`.
        #[arg(long)]
        to: String,
        /// A new (missing or empty) data directory to restore into.
        #[arg(long, required_unless_present = "in_place", conflicts_with = "in_place")]
        into: Option<PathBuf>,
        /// Restore over this data directory's cluster. The server must be stopped; the current
        /// cluster is kept beside the restored one. Asks for confirmation unless --yes.
        #[arg(long)]
        in_place: bool,
        /// Confirm --in-place without asking.
        #[arg(long, requires = "in_place")]
        yes: bool,
    },
    /// Prove the backups restore: write a canary, restore the newest recovery point into a
    /// scratch cluster, check it (canary, catalog, audit chains, row counts), print the
    /// recovery point (RPO) and restore time (RTO), remove the scratch cluster. Exits non-zero
    /// when any check fails; the outcome is recorded for /metrics.
    Drill,
}

pub async fn run(config: Config, json: bool, command: BackupCommand) -> anyhow::Result<ExitCode> {
    if let Some(why) = b::not_ours(&config) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "managed_by_provider": config.database.url.is_some(), "message": why })
                )?
            );
        } else {
            println!("{why}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::new(false);
    let result = match command {
        BackupCommand::Run { kind } => run_backup(&config, &kind, &progress).await,
        BackupCommand::List => list(&config).await,
        BackupCommand::Restore { to, into, in_place, yes } => {
            restore(&config, &to, into, in_place, yes, &progress).await
        }
        BackupCommand::Drill => drill(&config, &progress).await,
    };
    match result {
        Ok((doc, text, ok)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("{text}");
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(e) if json => {
            let doc = json!({ "error": { "kind": "backup", "message": format!("{e:#}") } });
            eprintln!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}

type Outcome = anyhow::Result<(serde_json::Value, String, bool)>;

/// Starts (or joins) the private cluster with its backups set up.
async fn live(config: &Config) -> anyhow::Result<(Live, provision::Resolved)> {
    let resolved = provision::resolve(config).await?;
    provision::migrate(&resolved).await?;
    let live = Live::from_resolved(&resolved, config)
        .ok_or_else(|| anyhow::anyhow!("backups are not set up for this database"))?;
    Ok((live, resolved))
}

fn keys(config: &Config) -> anyhow::Result<Vec<ed25519_dalek::VerifyingKey>> {
    let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
        .map_err(anyhow::Error::msg)?;
    Ok(vec![signer.verifying_key()])
}

async fn run_backup(config: &Config, kind: &str, progress: &Progress) -> Outcome {
    let kind = BackupType::parse(kind).ok_or_else(|| anyhow::anyhow!("--type: full, diff or incr"))?;
    let (live, resolved) = live(config).await?;
    let result = b::take_backup(&live, kind, progress).await;
    resolved.finish().await;
    let report = result?;
    let text = format!(
        "{} backup {} taken in {:.1} s ({} of database, {} added to the repository)",
        kind.as_str(),
        report.label.as_deref().unwrap_or("?"),
        report.seconds,
        bytes(report.database_bytes),
        bytes(report.repository_bytes)
    );
    Ok((json!({ "backup": report }), text, true))
}

fn bytes(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        Some(n) if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        Some(n) => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}

async fn list(config: &Config) -> Outcome {
    // Looks at the live cluster only when it runs: listing never starts or stops it.
    let cluster = crate::platform::db::cluster::PrivateCluster::new(
        &config.data_dir,
        config.database.postgres_bin_dir.as_deref(),
        true,
    )?;
    let repo = crate::platform::db::backup::Repository::new(
        &cluster,
        &config.backup,
        &provision::secrets_dir(&config.data_dir),
    )?;
    let archiving = if cluster.is_running() { b::archive_status(&cluster.admin_options()).await.ok() } else { None };
    let listing = b::list(&repo, archiving).await?;
    let mut text = format!("repository: {} ({})\n", listing.repository, listing.status);
    if listing.backups.is_empty() {
        text.push_str("no backups yet (`clientflow backup run`, or wait for the worker's schedule)\n");
    }
    for e in &listing.backups {
        text.push_str(&format!(
            "{:<26} {:<4}  {} .. {}  {:>10}  {:>10}\n",
            e.label,
            e.kind,
            b::rfc3339(e.started_at),
            b::rfc3339(e.stopped_at),
            bytes(Some(e.database_bytes)),
            bytes(Some(e.repository_bytes))
        ));
    }
    if let (Some(from), Some(to)) = (listing.earliest_recovery, listing.latest_recovery) {
        text.push_str(&format!("recoverable: from {} to {}\n", b::rfc3339(from), b::rfc3339(to)));
    }
    if let Some(a) = &listing.archiving {
        text.push_str(&format!("archiving: {}\n", a.describe()));
    }
    let ok = listing.archiving.as_ref().is_none_or(|a| !a.failing);
    Ok((serde_json::to_value(&listing)?, text.trim_end().to_string(), ok))
}

fn parse_target(to: &str) -> anyhow::Result<RestoreTarget> {
    if to == "latest" {
        return Ok(RestoreTarget::Latest);
    }
    time::OffsetDateTime::parse(to, &time::format_description::well_known::Rfc3339).map(RestoreTarget::Time).map_err(
        |e| anyhow::anyhow!("--to {to:?}: not an RFC 3339 time such as 2025-03-01T09:30:00Z ({e}), nor `latest`"),
    )
}

async fn restore(
    config: &Config,
    to: &str,
    into: Option<PathBuf>,
    in_place: bool,
    yes: bool,
    progress: &Progress,
) -> Outcome {
    let target = parse_target(to)?;
    let keys = keys(config)?;
    let (report, kept) = match into {
        Some(into) if !in_place => (b::restore_into(config, target, &into, &keys, progress).await?, None),
        _ => {
            if !yes && !confirm_in_place(config)? {
                anyhow::bail!("not confirmed: nothing was changed");
            }
            let (report, kept) = b::restore_in_place(config, target, &keys, progress).await?;
            (report, Some(kept))
        }
    };
    let checks = &report.checks;
    let mut text = format!(
        "restored to {} into {} in {:.1} s\ncatalog checks: {}\naudit chains: {} organizations, {} events, {}",
        report.target,
        report.cluster.display(),
        report.seconds,
        if checks.catalog_problems.is_empty() { "pass".to_string() } else { checks.catalog_problems.join("; ") },
        checks.organizations,
        checks.audit_events,
        if checks.audit_breaks.is_empty() {
            "all verify".to_string()
        } else {
            checks.audit_breaks.iter().map(|(o, m)| format!("{o} broken {m}")).collect::<Vec<_>>().join("; ")
        }
    );
    match &kept {
        Some(kept) => text.push_str(&format!(
            "\nthe cluster it replaced is kept in {} (remove it once the restored data is confirmed)",
            kept.display()
        )),
        None => text.push_str(&format!(
            "\nserve it with CLIENTFLOW_DATA_DIR={} clientflow serve (stop the original first if both use the same \
             backup repository)",
            report.into.display()
        )),
    }
    let ok = checks.passed();
    Ok((json!({ "restore": report, "kept": kept, "ok": ok }), text, ok))
}

/// Asks on the terminal for the data directory's path before an in-place restore.
#[allow(clippy::print_stderr)]
fn confirm_in_place(config: &Config) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("--in-place replaces the live cluster: confirm with --yes (no terminal to ask on)");
    }
    let expected = config.data_dir.display().to_string();
    eprint!(
        "This replaces the database in {expected} with the restored one (the current one is kept beside it).\n\
         Type the data directory's path to continue: "
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == expected)
}

async fn drill(config: &Config, progress: &Progress) -> Outcome {
    let keys = keys(config)?;
    let (live, resolved) = live(config).await?;
    let report = b::drill(&live, &keys, config.database.postgres_bin_dir.as_deref(), progress).await;
    resolved.finish().await;
    let text = drill_text(&report);
    Ok((json!({ "drill": report }), text, report.ok))
}

fn drill_text(r: &b::DrillReport) -> String {
    let secs = |v: Option<f64>| v.map_or("?".to_string(), |s| format!("{s:.1} s"));
    let mut t = format!(
        "restore drill {}\nbackup: {}\nrecovery point: {} (RPO {})\nrestore time (RTO): {}",
        if r.ok { "PASSED" } else { "FAILED" },
        r.backup.as_deref().unwrap_or("none"),
        r.recovery_point.map_or("?".into(), b::rfc3339),
        secs(r.rpo_seconds),
        secs(r.rto_seconds),
    );
    if let Some(c) = &r.checks {
        t.push_str(&format!(
            "\ncopy: {} tables, {} rows, {} organizations, {} audit events",
            c.tables, c.rows, c.organizations, c.audit_events
        ));
    }
    if let Some(f) = &r.failure {
        t.push_str(&format!("\nfailure: {f}"));
    }
    t
}
