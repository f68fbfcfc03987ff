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
        /// The region whose cluster to back up (each region has its own repository); default: all.
        #[arg(long)]
        region: Option<String>,
    },
    /// List the backups in the repository and the earliest and latest moments a restore can reach.
    List {
        /// The region whose repository to list; default: all.
        #[arg(long)]
        region: Option<String>,
    },
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
        /// The region whose backups to restore (default: the default region). A further
        /// region's cluster is restored to `regions/<region>` under --into.
        #[arg(long)]
        region: Option<String>,
    },
    /// Prove the backups restore: write a canary, restore the newest recovery point into a
    /// scratch cluster, check it (canary, catalog, audit chains, row counts), print the
    /// recovery point (RPO) and restore time (RTO), remove the scratch cluster. Exits non-zero
    /// when any check fails; the outcome is recorded for /metrics.
    Drill {
        /// The region whose backups to drill; default: all.
        #[arg(long)]
        region: Option<String>,
    },
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
        BackupCommand::Run { kind, region } => run_backup(&config, &kind, region.as_deref(), &progress).await,
        BackupCommand::List { region } => list(&config, region.as_deref()).await,
        BackupCommand::Restore { to, into, in_place, yes, region } => {
            let region = match region.as_deref() {
                Some(r) => b::regions_named(&config, Some(r)).map(|r| r[0]),
                None => Ok(config.residency.default_region),
            };
            match region {
                Ok(region) => restore(&config, region, &to, into, in_place, yes, &progress).await,
                Err(e) => Err(e),
            }
        }
        BackupCommand::Drill { region } => drill(&config, region.as_deref(), &progress).await,
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

/// Starts (or joins) every region's private cluster with its backups set up: the named
/// region's (or every region's) backups.
async fn live(config: &Config, region: Option<&str>) -> anyhow::Result<(Vec<Live>, provision::Resolved)> {
    let regions = b::regions_named(config, region)?;
    for r in &regions {
        // A region on a server of its own has no backups of ours: say so rather than skip it.
        if region.is_some() {
            b::region_repository(config, *r)?;
        }
    }
    let resolved = provision::resolve(config).await?;
    let lives = async {
        provision::migrate(&resolved).await?;
        let regional = super::residency::resolve_regions(config, &resolved).await?;
        super::residency::migrate_regions(&regional).await?;
        let lives: Vec<Live> =
            Live::every_region(&resolved, config).into_iter().filter(|l| regions.contains(&l.region)).collect();
        if lives.is_empty() {
            anyhow::bail!("backups are not set up for this database");
        }
        anyhow::Ok(lives)
    }
    .await;
    match lives {
        Ok(lives) => Ok((lives, resolved)),
        Err(e) => {
            resolved.finish().await;
            Err(e)
        }
    }
}

fn keys(config: &Config) -> anyhow::Result<Vec<ed25519_dalek::VerifyingKey>> {
    let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
        .map_err(anyhow::Error::msg)?;
    Ok(vec![signer.verifying_key()])
}

async fn run_backup(config: &Config, kind: &str, region: Option<&str>, progress: &Progress) -> Outcome {
    let kind = BackupType::parse(kind).ok_or_else(|| anyhow::anyhow!("--type: full, diff or incr"))?;
    let (lives, resolved) = live(config, region).await?;
    let mut reports = Vec::new();
    let mut failure = None;
    for live in &lives {
        match b::take_backup(live, kind, progress).await {
            Ok(r) => reports.push((live.region, r)),
            Err(e) => {
                failure = Some(e.context(format!("region {}", live.region)));
                break;
            }
        }
    }
    resolved.finish().await;
    if let Some(e) = failure {
        return Err(e);
    }
    let text: Vec<String> = reports
        .iter()
        .map(|(region, report)| {
            format!(
                "region {region}: {} backup {} taken in {:.1} s ({} of database, {} added to the repository)",
                kind.as_str(),
                report.label.as_deref().unwrap_or("?"),
                report.seconds,
                bytes(report.database_bytes),
                bytes(report.repository_bytes)
            )
        })
        .collect();
    let doc = json!({
        // The default region's (or the one named) as before; every region's under `regions`.
        "backup": reports.first().map(|(_, r)| r),
        "regions": reports.iter().map(|(region, r)| json!({ "region": region, "backup": r })).collect::<Vec<_>>(),
    });
    Ok((doc, text.join("\n"), true))
}

fn bytes(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        Some(n) if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        Some(n) => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}

async fn list(config: &Config, region: Option<&str>) -> Outcome {
    let mut listings = Vec::new();
    for r in b::regions_named(config, region)? {
        let repo = match b::region_repository(config, r) {
            Ok(repo) => repo,
            // Every region: those whose backups are their own server's are said so in the text.
            Err(e) if region.is_none() && r != config.residency.default_region => {
                listings.push((None, format!("region {r}: {e:#}")));
                continue;
            }
            Err(e) => return Err(e),
        };
        let (mut listing, text, ok) = list_one(&repo).await?;
        listing.region = Some(r);
        listings.push((Some((listing, ok)), format!("region {r}\n{text}")));
    }
    let ok = listings.iter().all(|(l, _)| l.as_ref().is_none_or(|(_, ok)| *ok));
    let text = listings.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("\n\n");
    let mut all: Vec<b::Listing> = listings.into_iter().filter_map(|(l, _)| l.map(|(l, _)| l)).collect();
    if all.len() == 1 {
        // One region (or one named): the listing as it always was.
        return Ok((serde_json::to_value(all.remove(0))?, text, ok));
    }
    Ok((json!({ "regions": all }), text, ok))
}

/// One repository's listing (looks at its live cluster only when it runs: listing never starts
/// or stops a cluster).
async fn list_one(repo: &crate::platform::db::backup::Repository) -> anyhow::Result<(b::Listing, String, bool)> {
    let cluster = repo.cluster();
    let archiving = if cluster.is_running() { b::archive_status(&cluster.admin_options()).await.ok() } else { None };
    let listing = b::list(repo, archiving).await?;
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
    let text = text.trim_end().to_string();
    Ok((listing, text, ok))
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
    region: crate::platform::db::RegionId,
    to: &str,
    into: Option<PathBuf>,
    in_place: bool,
    yes: bool,
    progress: &Progress,
) -> Outcome {
    let target = parse_target(to)?;
    let keys = keys(config)?;
    let (report, kept) = match into {
        Some(into) if !in_place => (b::restore_into(config, region, target, &into, &keys, progress).await?, None),
        _ => {
            if !yes && !confirm_in_place(config)? {
                anyhow::bail!("not confirmed: nothing was changed");
            }
            let (report, kept) = b::restore_in_place(config, region, target, &keys, progress).await?;
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

async fn drill(config: &Config, region: Option<&str>, progress: &Progress) -> Outcome {
    let keys = keys(config)?;
    let (lives, resolved) = live(config, region).await?;
    let mut reports = Vec::new();
    for live in &lives {
        progress.step(&format!("region {}: restore drill", live.region));
        reports.push((live.region, b::drill(live, &keys, config.database.postgres_bin_dir.as_deref(), progress).await));
    }
    resolved.finish().await;
    let ok = reports.iter().all(|(_, r)| r.ok);
    let text: Vec<String> = reports.iter().map(|(region, r)| format!("region {region}: {}", drill_text(r))).collect();
    let doc = json!({
        "drill": reports.first().map(|(_, r)| r),
        "regions": reports.iter().map(|(region, r)| json!({ "region": region, "drill": r })).collect::<Vec<_>>(),
        "ok": ok,
    });
    Ok((doc, text.join("\n\n"), ok))
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
