//! `clientflow security reports list|show|close`: the operator's side of vulnerability
//! reports (`disclosure::reports`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::disclosure::reports;

#[derive(Subcommand, Debug)]
pub enum SecurityCommand {
    /// Vulnerability reports sent through /security/report.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReportsCommand {
    /// The newest reports (reference, status, received, reporter, summary).
    List {
        /// open or closed (default: both).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One report with its text (opened with the installation's master key).
    Show { reference: String },
    /// Close a report once it is answered; the note is shown to the reporter on their status page.
    Close {
        reference: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[allow(clippy::print_stdout)]
pub async fn run(config: Config, json: bool, command: SecurityCommand) -> anyhow::Result<ExitCode> {
    let SecurityCommand::Reports { command } = command;
    match command {
        ReportsCommand::List { status, limit } => {
            if let Some(s) = status.as_deref()
                && !matches!(s, "open" | "closed")
            {
                anyhow::bail!("--status must be open or closed");
            }
            let rows = super::with_app_tx(&config, async |tx| {
                Ok(reports::list(tx, status.as_deref(), limit.clamp(1, 10_000)).await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            if rows.is_empty() {
                println!("No reports.");
            }
            for r in rows {
                println!(
                    "{}  {:<6}  {}  {:<32}  {}",
                    r.reference,
                    r.status,
                    crate::backup::rfc3339(r.created_at),
                    r.reporter_email,
                    r.summary
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Show { reference } => {
            let sealer = crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
            let keys = config.privacy.keyring(&config.data_dir, &sealer);
            let report = super::with_app_tx(&config, async |tx| reports::show(tx, &keys, &reference).await).await?;
            let Some(r) = report else {
                anyhow::bail!("no report {reference} (see `clientflow security reports list`)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("Reference:  {}", r.row.reference);
            println!("Status:     {}", r.row.status);
            println!("Received:   {}", crate::backup::rfc3339(r.row.created_at));
            if let Some(at) = r.closed_at {
                println!("Closed:     {}  {}", crate::backup::rfc3339(at), r.resolution);
            }
            println!("From:       {} {}", r.reporter_name, r.row.reporter_email);
            println!("Address:    {}", r.ip.as_deref().unwrap_or("-"));
            println!("User agent: {}", r.user_agent);
            println!("Summary:    {}", r.row.summary);
            println!("\n{}", r.details);
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Close { reference, note } => {
            let now = time::OffsetDateTime::now_utc();
            match super::with_app_tx(&config, async |tx| reports::close(tx, &reference, &note, now).await).await? {
                Some(true) => {
                    println!("Report {} is closed.", reference.trim().to_ascii_uppercase());
                    Ok(ExitCode::SUCCESS)
                }
                Some(false) => anyhow::bail!("report {reference} is closed already"),
                None => anyhow::bail!("no report {reference} (see `clientflow security reports list`)"),
            }
        }
    }
}
