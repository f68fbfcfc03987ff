//! The `clientflow` command line.

#![allow(clippy::print_stdout)] // a command line prints to standard output

mod backup;
pub mod installation;
mod keys;
pub mod moving;
mod operator;
mod org_data;
pub mod residency;
mod security;
mod seed;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::access::OperatorAuthority;
use crate::audit::chain::{KnownHead, Verification};
use crate::config::{Config, TlsMode};
use crate::platform::clock::SystemClock;
use crate::platform::db::provision::{self, Mode};
use crate::platform::db::{Db, MigrationStatus};
use crate::platform::http::{server, tls};
use crate::platform::telemetry;
use crate::state::AppState;

#[derive(Parser, Debug)]
#[command(name = "clientflow", version, about = "ClientFlow: client work for agencies and service teams.")]
#[command(long_about = "ClientFlow: clients, projects, tasks, invoices, files and a client portal, \
for agencies and service teams.\n\nWith no configuration, `clientflow serve` starts a private PostgreSQL \
cluster under ./data, generates a certificate for localhost and serves https://localhost:8443.\n\n\
Configuration: a TOML file (--config, default ./clientflow.toml) and CLIENTFLOW_* environment variables \
(nested keys joined with __, e.g. CLIENTFLOW_SERVER__LISTEN=0.0.0.0:443); DATABASE_URL and REDIS_URL are \
honoured; any setting can be read from a file with a _FILE suffix. See README.md for every setting.")]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "CLIENTFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on standard output instead of text (user, org, member, api-key,
    /// seed); errors go to standard error as {"error": {...}}.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check configuration, database, roles, row-level security, Redis and certificates.
    Doctor,
    /// Read the local mail drop, list and retry outbox messages, manage the suppression list.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Deliver queued mail without serving HTTP (for running the worker as its own process).
    Worker,
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Create and list organizations.
    Org {
        #[command(subcommand)]
        command: operator::OrgCommand,
    },
    /// Add members to an organization and list them.
    Member {
        #[command(subcommand)]
        command: operator::MemberCommand,
    },
    /// Create, list and revoke an organization's API keys.
    ApiKey {
        #[command(subcommand)]
        command: operator::ApiKeyCommand,
    },
    /// Generate a realistic data set (organizations, people, clients, projects, tasks, time,
    /// invoices) for development and benchmarks.
    Seed(seed::SeedArgs),
    /// The audit log: verify the hash chains, sign their heads, apply retention.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Backups of the private cluster (pgBackRest): take one, list them, restore to a moment, run
    /// the restore drill.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// The database roles: `reset-role-passwords` after the role password file was lost.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Vulnerability disclosure: list, read and close the reports sent through /security/report.
    Security {
        #[command(subcommand)]
        command: security::SecurityCommand,
    },
    /// Envelope encryption: key status, re-sealing, rotating an organization's data key or the
    /// key-encryption key.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Print generated documentation.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Set the database roles' passwords to the ones in this data directory's
    /// secrets/postgres-roles.json (creating it if missing). Every other process of the
    /// installation then needs a copy of that file. Needs a superuser DATABASE_URL or the
    /// private cluster.
    ResetRolePasswords,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk every organization's chain (or one, with --org) and report the first broken link.
    /// Exits non-zero when any chain is broken.
    ///
    /// Besides every link and signature, a chain fails when its newest signed checkpoint is
    /// missing, or older than 80 minutes while events follow it (heads are signed at least
    /// hourly, so newer signed checkpoints were deleted). Keep a --state file (away from the
    /// server) to also catch a chain cut back to an older head.
    ///
    /// For independent verification, pin the public key kept away from the server:
    /// `--trust-only --public-key KEY`. Without --trust-only the server's own signing key is
    /// trusted too, and whoever can rewrite the database and replace that key can re-sign a
    /// rewritten chain.
    Verify {
        /// Organization id or slug (default: all organizations; needs the auditor role).
        #[arg(long)]
        org: Option<String>,
        /// A checkpoint public key to trust (base64, as `clientflow audit public-key` prints
        /// it); repeat it for keys used before a rotation. Without --trust-only, trusted
        /// besides the server's own signing key.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// Trust only the --public-key keys, not the key the server signs with (which is not
        /// even read): a checkpoint signed with any other key is a break.
        #[arg(long, requires = "public_keys")]
        trust_only: bool,
        /// A JSON file of the heads seen by the previous run: each chain must still contain
        /// its head, and the file is updated with the heads verified now (created if missing).
        #[arg(long)]
        state: Option<PathBuf>,
        /// The head seen earlier, as SEQ:HASH (printed by verify); needs --org.
        #[arg(long, requires = "org")]
        expect_head: Option<String>,
    },
    /// Sign the current head of every organization's chain (or one) now.
    Checkpoint {
        #[arg(long)]
        org: Option<String>,
    },
    /// Remove events older than the retention horizon (audit.retention_days, as written into
    /// the database by `clientflow migrate`), keeping a signed checkpoint where the chain is cut.
    Retention,
    /// Print the public key that verifies signed checkpoints (keep a copy away from the server).
    PublicKey,
}

#[derive(Subcommand, Debug)]
pub enum AllowlistCommand {
    /// Print the organization's IP allowlist (one entry per line; nothing when empty).
    Show {
        /// Organization id, or its slug (a slug needs the auditor role, CLIENTFLOW_DATABASE__AUDITOR_URL).
        #[arg(long)]
        org: String,
    },
    /// Empty the organization's IP allowlist, for Owners who locked themselves out. Recorded in
    /// the organization's audit log under the operator, with the list that was removed.
    Clear {
        /// Organization id, or its slug (a slug needs the auditor role, CLIENTFLOW_DATABASE__AUDITOR_URL).
        #[arg(long)]
        org: String,
        /// Why (recorded in the audit log), e.g. a ticket number.
        #[arg(long, default_value = "owner locked out")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// The permission matrix (docs/permissions.md).
    Permissions,
    /// The mail suppression policy: which categories each suppression reason stops
    /// (docs/operations.md).
    MailPolicy,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account with a verified email address (the operator vouches for it). The
    /// password is read from standard input with --password-stdin, or generated and printed
    /// once.
    Create {
        /// The account's email address (sign-in name).
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account.
    List,
    /// Disable an account: every session ends at once and sign-in is refused.
    Disable { email: String },
    /// Enable a disabled account again.
    Enable { email: String },
    /// Remove an account's two-factor authentication — its authenticator and recovery codes —
    /// for an owner who lost it, or whose account had someone else's enrolled. Every session of
    /// the account ends, the account is told by email, and the reset is recorded as a security
    /// event and in the audit log of each of its organizations under the operator. Confirm who
    /// is asking before running it: it leaves the password as the only factor.
    ResetTwoFactor {
        email: String,
        /// Why (recorded in the audit log), e.g. a ticket number.
        #[arg(long, default_value = "second factor lost")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// Without --state: the messages in the mail drop, oldest first. With --state: the outbox's
    /// messages in that state (queued, sent, suppressed, dead), newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Print one message of the mail drop (by the id `mail list` shows, or a unique prefix).
    Show { id: String },
    /// Queue a dead or suppressed message again, due now, with its attempts reset (a suppressed
    /// one meets the suppression list again when it is sent).
    Retry { id: uuid::Uuid },
    /// The suppression list: addresses mail is not sent to (critical mail excepted).
    Suppressions {
        #[command(subcommand)]
        command: SuppressionCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SuppressionCommand {
    /// The list, newest first; or every suppression and change of one address.
    List {
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Stop mail to an address (recorded with your note in the suppression log).
    Add {
        address: String,
        /// manual (default), hard_bounce, soft_bounce or complaint.
        #[arg(long, default_value = "manual")]
        reason: String,
        #[arg(long)]
        note: String,
    },
    /// Mail an address again: removes its suppressions (of one reason with --reason).
    Remove {
        address: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        note: String,
    },
}

pub fn main() -> ExitCode {
    crate::errors::register();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The one place the application assumes the operator's authority: whoever runs this binary
    // on the server with its credentials is the installation's operator. Commands that act
    // inside an organization take it from here; request handlers never see one.
    let operator = crate::access::OperatorAuthority::unsafe_assume_cli_operator();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => Box::pin(serve(config)).await,
            Command::Migrate => migrate(config).await,
            Command::Doctor => doctor(config).await,
            Command::Mail { command } => mail(config, cli.json, command).await,
            Command::Worker => worker(config).await,
            Command::User { command } => Box::pin(operator::user(config, cli.json, operator, command)).await,
            Command::Org { command } => Box::pin(operator::org(config, cli.json, operator, command)).await,
            Command::Member { command } => Box::pin(operator::member(config, cli.json, operator, command)).await,
            Command::ApiKey { command } => Box::pin(operator::api_key(config, cli.json, operator, command)).await,
            Command::Seed(args) => seed::run(config, cli.json, operator, args).await,
            Command::Audit { command } => audit(config, &operator, command).await,
            Command::Backup { command } => backup::run(config, cli.json, command).await,
            Command::Db { command: DbCommand::ResetRolePasswords } => reset_role_passwords(config).await,
            Command::Security { command } => security::run(config, cli.json, command).await,
            Command::Keys { command } => keys::run(config, cli.json, command).await,
            Command::Docs { command: DocsCommand::Permissions } => {
                print!("{}", crate::access::role::permissions_markdown());
                Ok(ExitCode::SUCCESS)
            }
            Command::Docs { command: DocsCommand::MailPolicy } => {
                print!("{}", crate::mail::suppression::policy_markdown());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing(&config.log);
    // From here on SIGTERM and SIGINT are ours: a stop requested during start-up still stops
    // the private cluster this process started or took over.
    let stop = server::stop_requests()?;
    let resolved = tokio::select! {
        r = provision::resolve(&config) => r?,
        // Dropping the resolution ends this process's use of the cluster (see `ClusterUse`).
        _ = server::stopped(stop.clone()) => {
            tracing::info!("stopped during start-up");
            return Ok(ExitCode::SUCCESS);
        }
    };
    tracing::info!(database = resolved.mode.describe(), "database");
    // Every way out after this point — an error, a stop during start-up, a clean shutdown —
    // goes through `finish`, which stops the private cluster unless another process uses it.
    let outcome = Box::pin(serve_with(config, &resolved, stop)).await;
    resolved.finish().await;
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// What `serve` runs once the database is resolved: migrations, the listeners, the server.
async fn serve_with(
    config: Config,
    resolved: &provision::Resolved,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let start = async {
        provision::migrate(resolved).await?;
        provision::guard_runtime_role(&resolved.app).await?;
        sync_retention_policy(resolved, config.audit.retention_days).await?;
        let db = Db::connect(
            resolved.app.clone(),
            config.database.max_connections,
            std::time::Duration::from_secs(config.database.acquire_timeout_secs),
        )
        .await?;
        // Every further region's database, provisioned and migrated like the default one.
        let (db, privileged) =
            residency::connect_regions(&config, resolved, db, config.database.max_connections).await?;
        let listening = async {
            let tls = tls::load(&config)?;
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {} (server.listen): {e}", config.server.listen))?;
            let redirect = match config.server.http_redirect_listen {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.http_redirect_listen): {e}"))?,
                ),
                None => None,
            };
            let transport = crate::mail::transport::Transport::from_config(&config.mail, &config.data_dir)
                .map_err(anyhow::Error::msg)?;
            let state = AppState::new(config.clone(), db.clone(), Arc::new(SystemClock)).await?;
            let mine = installation::Identity::of(&config, &state.sealer, &state.audit_signer.verifying_key())?;
            installation::claim(&db, &mine, &config).await?;
            let transport = crate::mail::outbox::Delivery::new(transport, state.unsubscribe.clone(), &config.mail);
            anyhow::Ok((tls, listener, redirect, transport, state))
        }
        .await;
        match listening {
            Ok(parts) => anyhow::Ok((db, privileged, parts)),
            Err(e) => {
                db.close().await;
                Err(e)
            }
        }
    };
    let (db, privileged, (tls, listener, redirect, transport, state)) = tokio::select! {
        started = start => started?,
        _ = server::stopped(stop.clone()) => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let bound = listener.local_addr()?;
    // Panics outside a request (the worker tasks, start-up) are reported too.
    state.error_reporter.install_for_process();
    if state.error_reporter.enabled() {
        tracing::info!("error reports go to Sentry (scrubbed: no cookies, tokens, bodies, e-mail or IP addresses)");
    }
    match tls.as_ref().map(|t| &t.source) {
        Some(tls::CertificateSource::Generated { cert }) => tracing::info!(
            certificate = %cert.display(),
            "generated a self-signed certificate for localhost; browsers will ask you to trust it \
             (or configure server.tls = \"files\" with your own certificate)"
        ),
        Some(tls::CertificateSource::Renewed { cert, previous }) => tracing::info!(
            certificate = %cert.display(),
            previous = %previous,
            "renewed the self-signed certificate for localhost; browsers will ask you to trust the new one"
        ),
        Some(tls::CertificateSource::Existing { cert }) => {
            tracing::info!(certificate = %cert.display(), "using the self-signed certificate for localhost")
        }
        Some(tls::CertificateSource::Files { cert }) => {
            tracing::info!(certificate = %cert.display(), "using certificate")
        }
        None => tracing::info!(
            trusted_proxies = ?config.server.trusted_proxies,
            "TLS terminated by a proxy: plain HTTP, accepted only from the trusted proxies"
        ),
    }
    let scheme = if config.server.tls == TlsMode::Proxy { "http" } else { "https" };
    tracing::info!(listen = %bound, url = %config.public_url(), "ClientFlow is ready: open {}", config.public_url());
    if config.server.tls == TlsMode::Proxy {
        tracing::info!("listening for the proxy on {scheme}://{bound}");
    }
    let redirect = redirect.map(|l| {
        tracing::info!(listen = ?l.local_addr().ok(), "plain HTTP redirects to HTTPS");
        tokio::spawn(server::serve_redirect(l, config.public_url(), server::stopped(stop.clone())))
    });
    let requests = crate::identity::requests::Settings {
        public_url: config.public_url(),
        audit_signer: Some(state.audit_signer.clone()),
    };
    let open_files = server::raise_open_file_limit();
    let (stop_worker, worker_stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::mail::outbox::run_worker(
        db.clone(),
        transport,
        state.clock.clone(),
        state.mail_wake.clone(),
        worker_stopped,
        {
            let db = db.clone();
            move |now| scheduled_work(db.clone(), requests.clone(), now)
        },
    ));
    // With a multi-host DATABASE_URL, new connections follow the primary across a failover.
    let follower = db.follow_primary(resolved.failover_hosts.clone(), stop_worker.subscribe());
    // Chain heads are signed on append, and by this sweep for organizations that went quiet.
    let signer_task = tokio::spawn(crate::access::maintenance::run_signer(
        db.clone(),
        state.audit_signer.clone(),
        state.clock.clone(),
        stop_worker.subscribe(),
    ));
    // Organization exports asked for on the Data export page, and their expiry.
    let exports = tokio::spawn(crate::privacy::export_jobs::run_worker(
        crate::privacy::export_jobs::Runner::of(&state),
        stop_worker.subscribe(),
    ));
    // Re-sealing under the newest data keys, and the purge of organizations whose deletion is due.
    let privacy_task = tokio::spawn(crate::privacy::run_maintenance(
        crate::privacy::Maintenance {
            db: db.clone(),
            keys: state.keys.clone(),
            // Every region's store and owner role: each organization is re-sealed and purged
            // where it lives.
            stores: state.storage.clone(),
            owners: privileged.owners.clone(),
            record_key: crate::privacy::record_key(&state.sealer),
            clock: state.clock.clone(),
            config: config.privacy.clone(),
            stripe: state.stripe.clone(),
            data_dir: config.data_dir.clone(),
        },
        stop_worker.subscribe(),
    ));
    // Scheduled backups and the daily restore drill of the private cluster.
    // Each region's cluster on its own schedule, into its own repository.
    let backups: Vec<_> = crate::backup::Live::every_region(resolved, &config)
        .into_iter()
        .filter(|_| config.backup.schedule)
        .map(|live| {
            tokio::spawn(crate::backup::run_schedule(
                live,
                vec![state.audit_signer.verifying_key()],
                config.database.postgres_bin_dir.clone(),
                stop_worker.subscribe(),
            ))
        })
        .collect();
    let options = server::ServeOptions::from_config(&state.config).with_metrics(&state.metrics);
    tracing::info!(
        max_connections = options.max_connections,
        open_file_limit = open_files,
        header_timeout_secs = options.header_timeout.as_secs(),
        idle_timeout_secs = options.idle_timeout.as_secs(),
        "connection limits"
    );
    let router = crate::routes::router(state);
    // A self-signed certificate is renewed while running, too: a server up for months never
    // serves an expired one.
    let renewal = tls.as_ref().and_then(|t| t.self_signed.clone()).map(|c| tokio::spawn(c.keep_renewed()));
    server::serve(listener, tls.map(|t| t.server), router, server::stopped(stop), options).await;
    if let Some(r) = renewal {
        r.abort();
    }
    if let Some(r) = redirect {
        r.abort();
    }
    let _ = stop_worker.send(true);
    let _ = worker.await;
    let _ = signer_task.await;
    let _ = exports.await;
    let _ = privacy_task.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    // A backup or drill under way is not waited for: stopping the cluster ends it, and the
    // schedule takes it again.
    for b in backups {
        b.abort();
    }
    db.close().await;
    Ok(())
}

async fn mail(config: Config, json: bool, command: MailCommand) -> anyhow::Result<ExitCode> {
    let command = match command {
        MailCommand::List { state: Some(state), limit } => return mail_outbox(&config, json, &state, limit).await,
        MailCommand::Retry { id } => return mail_retry(&config, id).await,
        MailCommand::Suppressions { command } => return suppressions(&config, json, command).await,
        other => other,
    };
    let messages = crate::mail::transport::read_maildrop(&config.data_dir);
    match command {
        MailCommand::Retry { .. } | MailCommand::Suppressions { .. } | MailCommand::List { state: Some(_), .. } => {
            unreachable!("handled above")
        }
        MailCommand::List { state: None, .. } => {
            if messages.is_empty() {
                println!(
                    "The mail drop ({}) is empty.",
                    crate::mail::transport::maildrop_dir(&config.data_dir).display()
                );
            }
            for (name, raw) in &messages {
                let header = |h: &str| {
                    raw.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix(h).map(str::trim))
                        .unwrap_or("")
                        .to_string()
                };
                println!(
                    "{}  {}  {:<32}  {}",
                    name.trim_end_matches(".eml"),
                    header("Date:"),
                    header("To:"),
                    header("Subject:")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MailCommand::Show { id } => {
            let found: Vec<_> = messages.iter().filter(|(name, _)| name.starts_with(&id)).collect();
            match found.as_slice() {
                [(_, raw)] => {
                    println!("{raw}");
                    Ok(ExitCode::SUCCESS)
                }
                [] => {
                    anyhow::bail!("no message {id} in the mail drop (see `clientflow mail list`)")
                }
                _ => anyhow::bail!("{id} matches several messages; give more of the id"),
            }
        }
    }
}

/// Runs `work` on a connection of the app role, in one transaction, and closes the pool.
async fn with_app_tx<T>(
    config: &Config,
    work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (db, resolved) = connect_app(config).await?;
    let result = async {
        let mut tx = db.global().await?;
        let out = work(&mut tx).await?;
        tx.commit().await?;
        anyhow::Ok(out)
    }
    .await;
    db.close().await;
    resolved.finish().await;
    result
}

async fn mail_outbox(config: &Config, json: bool, state: &str, limit: i64) -> anyhow::Result<ExitCode> {
    use crate::mail::outbox;
    if !outbox::STATES.contains(&state) {
        anyhow::bail!("--state must be one of {}", outbox::STATES.join(", "));
    }
    let rows = with_app_tx(config, async |tx| Ok(outbox::list(tx, state, limit.clamp(1, 10_000)).await?)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No {state} messages.");
    }
    for m in rows {
        let why = m.last_error.or(m.suppression).unwrap_or_default();
        println!(
            "{}  {}  {:<13}  attempts {:>2}  {:<32}  {}{}",
            m.id,
            m.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            m.category.as_str(),
            m.attempts,
            m.recipient,
            m.subject,
            if why.is_empty() { String::new() } else { format!("  ({why})") }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn mail_retry(config: &Config, id: uuid::Uuid) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    match with_app_tx(config, async |tx| Ok(crate::mail::outbox::retry(tx, id, now).await?)).await? {
        Some(true) => {
            println!("Message {id} is queued again; the worker sends it shortly.");
            Ok(ExitCode::SUCCESS)
        }
        Some(false) => anyhow::bail!("message {id} is neither dead nor suppressed; nothing to retry"),
        None => anyhow::bail!("no message {id} in the outbox (see `clientflow mail list --state dead`)"),
    }
}

async fn suppressions(config: &Config, json: bool, command: SuppressionCommand) -> anyhow::Result<ExitCode> {
    use crate::mail::suppression::{self, Reason};
    let reason_of = |r: &str| {
        Reason::parse(r)
            .ok_or_else(|| anyhow::anyhow!("--reason must be one of {}", Reason::ALL.map(Reason::as_str).join(", ")))
    };
    let now = time::OffsetDateTime::now_utc();
    match command {
        SuppressionCommand::List { reason, address, limit } => {
            let reason = reason.as_deref().map(reason_of).transpose()?;
            if let Some(address) = address {
                let (list, history) = with_app_tx(config, async |tx| {
                    Ok((suppression::of_address(tx, &address).await?, suppression::history(tx, &address).await?))
                })
                .await?;
                if json {
                    println!("{}", serde_json::json!({ "suppressions": list, "history": history }));
                    return Ok(ExitCode::SUCCESS);
                }
                if list.is_empty() {
                    println!("{} is not suppressed.", suppression::normalise(&address));
                }
                for s in &list {
                    println!("{}  {}  {}  {}", s.address, s.reason.as_str(), s.category, s.source);
                }
                for c in &history {
                    println!(
                        "  {}  {} {} ({})  by {}: {}",
                        c.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                        c.change,
                        c.reason,
                        c.category,
                        c.actor,
                        c.source
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let list = with_app_tx(config, async |tx| Ok(suppression::list(tx, reason, limit.clamp(1, 10_000)).await?))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("The suppression list is empty.");
            }
            for s in list {
                println!(
                    "{}  {:<32}  {:<11}  {:<13}  {}",
                    s.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    s.address,
                    s.reason.as_str(),
                    s.category,
                    s.source
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionCommand::Add { address, reason, note } => {
            let reason = reason_of(&reason)?;
            if reason == Reason::Unsubscribe {
                anyhow::bail!("unsubscribes come from their recipients; use --reason manual");
            }
            let address =
                crate::platform::types::Email::parse(&address).map_err(|m| anyhow::anyhow!("the address {m}"))?;
            let note = operator_note(&note)?;
            let added = with_app_tx(config, async |tx| {
                Ok(suppression::add(tx, address.as_str(), reason, None, &note, "operator", now).await?)
            })
            .await?;
            if added {
                println!("Suppressed {} ({}).", address.as_str(), reason.as_str());
            } else {
                println!("{} was already suppressed ({}); nothing changed.", address.as_str(), reason.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionCommand::Remove { address, reason, note } => {
            let reason = reason.as_deref().map(reason_of).transpose()?;
            let note = operator_note(&note)?;
            let removed = with_app_tx(config, async |tx| {
                Ok(suppression::remove(tx, &address, reason, None, &note, "operator", now).await?)
            })
            .await?;
            if removed.is_empty() {
                anyhow::bail!(
                    "{} has no such suppression (see `clientflow mail suppressions list --address`)",
                    address
                );
            }
            for s in removed {
                println!("Removed {} ({}, {}).", s.address, s.reason.as_str(), s.category);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The operator's reason for a change, as the log records it.
fn operator_note(note: &str) -> anyhow::Result<String> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > 500 || note.chars().any(char::is_control) {
        anyhow::bail!("--note must say why, in at most 500 characters on one line");
    }
    Ok(format!("operator: {note}"))
}

/// Connects as the app role after the same checks `serve` makes. The resolution holds this
/// process's use of a private cluster: `finish` it after closing the pool.
async fn connect_app(config: &Config) -> anyhow::Result<(Db, provision::Resolved)> {
    let (db, resolved, _) = connect_app_privileged(config).await?;
    Ok((db, resolved))
}

/// [`connect_app`], with every region's privileged roles where known.
async fn connect_app_privileged(config: &Config) -> anyhow::Result<(Db, provision::Resolved, residency::Privileged)> {
    let resolved = provision::resolve(config).await?;
    provision::migrate(&resolved).await?;
    provision::guard_runtime_role(&resolved.app).await?;
    let db = Db::connect(resolved.app.clone(), 2, std::time::Duration::from_secs(config.database.acquire_timeout_secs))
        .await?;
    let (db, privileged) = residency::connect_regions(config, &resolved, db, 2).await?;
    Ok((db, resolved, privileged))
}

/// One organization an operator command works on, and the region its data lives in.
#[derive(Debug, Clone)]
struct TargetOrg {
    id: crate::platform::ids::OrgId,
    slug: String,
    region: crate::platform::db::RegionId,
}

/// Organizations to work on, in every region: the one named, or all of them (listed through
/// each region's auditor role, the only role that sees across organizations). An organization
/// being moved is listed once, in the region the directory names.
async fn target_orgs(db: &Db, privileged: &residency::Privileged, org: Option<&str>) -> anyhow::Result<Vec<TargetOrg>> {
    let mut all = Vec::new();
    for region in db.region_ids() {
        let auditor = privileged.auditor(region).ok_or_else(|| {
            anyhow::anyhow!(
                "working across organizations needs the auditor role of every region (region {region} has none \
                 here): set CLIENTFLOW_DATABASE__AUDITOR_URL, or a privileged residency.regions.{region}.database_url \
                 (docs/operations.md, \"Database roles\")"
            )
        })?;
        let mut conn = provision::connect(auditor, "auditor role").await?;
        let rows: Vec<(crate::platform::ids::OrgId, String)> =
            sqlx::query_as("SELECT id, slug FROM organizations ORDER BY created_at, id").fetch_all(&mut conn).await?;
        sqlx::Connection::close(conn).await.ok();
        for (id, slug) in rows {
            if db.is_multi_region() && crate::access::directory::region_of(db, id).await? != region {
                continue;
            }
            all.push(TargetOrg { id, slug, region });
        }
    }
    Ok(match org {
        None => all,
        Some(wanted) => {
            let found: Vec<_> = all.into_iter().filter(|o| o.id.to_string() == wanted || o.slug == wanted).collect();
            if found.is_empty() {
                anyhow::bail!("no organization {wanted}");
            }
            found
        }
    })
}

/// The organization an operator command names: an id works with the app role alone; a slug is
/// found in the directory (several regions) or through the auditor role.
async fn named_org(
    db: &Db,
    privileged: &residency::Privileged,
    org: &str,
) -> anyhow::Result<(crate::platform::ids::OrgId, String)> {
    if let Ok(id) = org.parse::<crate::platform::ids::OrgId>() {
        return Ok((id, org.to_string()));
    }
    if db.is_multi_region() {
        let mut tx = db.home().global().await?;
        let found = crate::access::directory::by_slug(db, &mut tx, org).await?;
        tx.commit().await?;
        return found.map(|p| (p.org_id, org.to_string())).ok_or_else(|| anyhow::anyhow!("no organization {org}"));
    }
    target_orgs(db, privileged, Some(org))
        .await?
        .into_iter()
        .next()
        .map(|o| (o.id, o.slug))
        .ok_or_else(|| anyhow::anyhow!("no organization {org}"))
}

/// `clientflow org allowlist …`: the operator's recovery for Owners who locked themselves out.
pub(crate) async fn org_allowlist(
    config: Config,
    operator: &OperatorAuthority,
    command: AllowlistCommand,
) -> anyhow::Result<ExitCode> {
    let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
        .map_err(anyhow::Error::msg)?
        .applying_retention();
    let (db, resolved, privileged) = connect_app_privileged(&config).await?;
    let (wanted, reason) = match &command {
        AllowlistCommand::Show { org } => (org.clone(), "show the IP allowlist".to_string()),
        AllowlistCommand::Clear { org, reason } => (org.clone(), format!("cleared the IP allowlist ({reason})")),
    };
    let (id, label) = named_org(&db, &privileged, &wanted).await?;
    let Some(principal) = crate::access::operator(&db, operator, id, &reason).await? else {
        anyhow::bail!("no organization {wanted}");
    };
    match command {
        AllowlistCommand::Show { .. } => {
            let list = crate::tenancy::allowlist::load(&db, &principal).await?;
            if !list.is_empty() {
                println!("{}", crate::tenancy::allowlist::render(&list));
            }
        }
        AllowlistCommand::Clear { .. } => {
            let mut ctx = crate::audit::Context::system(time::OffsetDateTime::now_utc(), Some(Arc::new(signer)));
            ctx.user_agent = "clientflow cli".into();
            let removed =
                crate::tenancy::allowlist::clear(&db, &ctx, &principal).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if removed.is_empty() {
                println!("{label}: the IP allowlist was already empty");
            } else {
                println!(
                    "{label}: removed the IP allowlist ({} entries: {}); every address may sign in again",
                    removed.len(),
                    crate::tenancy::allowlist::render(&removed).replace('\n', ", ")
                );
            }
        }
    }
    db.close().await;
    resolved.finish().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit(config: Config, operator: &OperatorAuthority, command: AuditCommand) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let load_signer = || {
        crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
            .map_err(anyhow::Error::msg)
    };
    if let AuditCommand::PublicKey = command {
        let signer = load_signer()?;
        println!("{}", base64::engine::general_purpose::STANDARD.encode(signer.verifying_key().as_bytes()));
        return Ok(ExitCode::SUCCESS);
    }
    // A pinned verification never reads (or generates) the server's key: it trusts nothing
    // the server holds.
    let signer = match &command {
        AuditCommand::Verify { trust_only: true, .. } => None,
        _ => Some(load_signer()?),
    };
    let (db, resolved, privileged) = connect_app_privileged(&config).await?;
    let now = time::OffsetDateTime::now_utc();
    let code = match command {
        AuditCommand::Verify { org, public_keys, trust_only, state, expect_head } => {
            let mut keys: Vec<ed25519_dalek::VerifyingKey> = signer.iter().map(|s| s.verifying_key()).collect();
            for k in public_keys {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--public-key {:?} is not an Ed25519 public key (32 bytes of base64, as \
                             `clientflow audit public-key` prints it)",
                            k.trim()
                        )
                    })?;
                keys.push(key);
            }
            let ids: Vec<String> = keys.iter().map(crate::audit::chain::key_id).collect();
            if trust_only {
                println!("trusting only the given keys: {}", ids.join(", "));
            } else {
                println!(
                    "trusting keys: {} (the first is this server's own; pin a key kept elsewhere with \
                     --trust-only --public-key KEY)",
                    ids.join(", ")
                );
            }
            let expect_head: Option<KnownHead> = expect_head
                .map(|h| h.parse().map_err(|e: String| anyhow::anyhow!("--expect-head: {e}")))
                .transpose()?;
            let mut known = match &state {
                Some(path) => read_state(path)?,
                None => std::collections::BTreeMap::new(),
            };
            let orgs = target_orgs(&db, &privileged, org.as_deref()).await?;
            // One auditor connection per region: each organization's chain is read where it lives.
            let mut conns: Vec<(crate::platform::db::RegionId, sqlx::PgConnection)> = Vec::new();
            let started = std::time::Instant::now();
            let (mut events, mut broken) = (0u64, 0usize);
            for TargetOrg { id, slug, region } in &orgs {
                if !conns.iter().any(|(r, _)| r == region) {
                    let auditor = privileged.auditor(*region).ok_or_else(|| anyhow::anyhow!("auditor role needed"))?;
                    conns.push((*region, provision::connect(auditor, "auditor role").await?));
                }
                let conn = &mut conns.iter_mut().find(|(r, _)| r == region).expect("connected above").1;
                let remembered = known.get(&id.to_string()).cloned();
                let expected = expect_head.as_ref().or(remembered.as_ref());
                let verification = Verification::new(&keys, now).knowing(expected);
                let report = crate::audit::chain::verify_org(conn, *id, &verification).await?;
                let slug = if db.is_multi_region() { format!("{slug} [{region}]") } else { slug.clone() };
                events += report.events;
                match &report.first_break {
                    None => {
                        let head = report.head.as_ref().map(|h| format!(", head {h}")).unwrap_or_default();
                        println!(
                            "ok      {slug} ({id}): {} events, {} signed checkpoints{head}",
                            report.events, report.signed_checkpoints
                        );
                        if let Some(h) = report.head {
                            known.insert(id.to_string(), h);
                        }
                    }
                    Some(b) => {
                        broken += 1;
                        println!("BROKEN  {slug} ({id}): at event {}: {}", b.seq, b.message);
                    }
                }
            }
            // A chain the state file knows that is no longer there at all.
            if org.is_none() {
                for id in known.keys() {
                    if !orgs.iter().any(|o| &o.id.to_string() == id) {
                        broken += 1;
                        println!(
                            "BROKEN  {id}: an earlier verification saw this organization's chain and it is gone \
                             (remove it from the state file if the organization was deleted on purpose)"
                        );
                    }
                }
            }
            if let Some(path) = &state {
                write_state(path, &known)?;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "verified {} organizations, {events} events in {secs:.2} s ({:.0} events/s); {broken} broken",
                orgs.len(),
                events as f64 / secs.max(1e-9)
            );
            if broken > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        AuditCommand::Checkpoint { org } => {
            let signer = signer.ok_or_else(|| anyhow::anyhow!("audit checkpoint needs the signing key"))?;
            for TargetOrg { id, slug, .. } in target_orgs(&db, &privileged, org.as_deref()).await? {
                let Some(principal) = crate::access::operator(&db, operator, id, "audit checkpoint").await? else {
                    continue;
                };
                let mut tx = crate::access::OrgTx::begin(&db, &principal).await?;
                match crate::audit::chain::sign_head_now(&mut tx, &signer, id, now).await? {
                    Some(seq) => println!("signed  {slug}: head at event {seq} (key {})", signer.key_id()),
                    None => println!("empty   {slug}: no events yet"),
                }
                tx.commit().await?;
            }
            ExitCode::SUCCESS
        }
        AuditCommand::Retention => {
            let signer = signer.ok_or_else(|| anyhow::anyhow!("audit retention needs the signing key"))?;
            for TargetOrg { id, slug, .. } in target_orgs(&db, &privileged, None).await? {
                let Some(principal) = crate::access::operator(&db, operator, id, "audit retention").await? else {
                    continue;
                };
                let mut tx = crate::access::OrgTx::begin(&db, &principal).await?;
                let deleted = crate::audit::chain::apply_retention(&mut tx, &signer, id, now).await?;
                tx.commit().await?;
                println!("{slug}: removed {deleted} events older than the retention horizon");
            }
            ExitCode::SUCCESS
        }
        AuditCommand::PublicKey => ExitCode::SUCCESS,
    };
    db.close().await;
    resolved.finish().await;
    Ok(code)
}

/// Reads `audit verify --state`: organization id → the head seen last time. A missing file is
/// an empty state (the first run).
fn read_state(path: &std::path::Path) -> anyhow::Result<std::collections::BTreeMap<String, KnownHead>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => anyhow::bail!("--state {}: {e}", path.display()),
    };
    let raw: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--state {}: not a verify state file: {e}", path.display()))?;
    raw.into_iter()
        .map(|(org, head)| {
            let head = head.parse().map_err(|e: String| anyhow::anyhow!("--state {}: {org}: {e}", path.display()))?;
            Ok((org, head))
        })
        .collect()
}

fn write_state(path: &std::path::Path, heads: &std::collections::BTreeMap<String, KnownHead>) -> anyhow::Result<()> {
    let raw: std::collections::BTreeMap<&String, String> = heads.iter().map(|(k, v)| (k, v.to_string())).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&raw)?)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("--state {}: {e}", path.display()))
}

/// Writes `audit.retention_days` into the database's retention horizon, which only the owner
/// role may change (the app role can never make retention cut younger events). Without an
/// owner connection the database keeps its horizon, and a difference is reported.
async fn sync_retention_policy(resolved: &provision::Resolved, days: u32) -> anyhow::Result<()> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    match &resolved.owner {
        Some(owner) => {
            let mut conn = provision::connect(owner, "owner role").await?;
            sqlx::query("UPDATE audit_retention_policy SET keep_days = $1")
                .bind(days)
                .execute(&mut conn)
                .await
                .map_err(|e| anyhow::anyhow!("audit.retention_days = {days}: {e} (1 to 36500 days)"))?;
        }
        None => {
            let mut conn = provision::connect(&resolved.app, "app role").await?;
            let current: i32 =
                sqlx::query_scalar("SELECT keep_days FROM audit_retention_policy").fetch_one(&mut conn).await?;
            if current != days {
                tracing::warn!(
                    database = current,
                    configured = days,
                    "audit.retention_days differs from the database's retention horizon; run `clientflow migrate` \
                     with the owner role to apply it"
                );
            }
        }
    }
    Ok(())
}

async fn worker(config: Config) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing(&config.log);
    let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
        .map_err(anyhow::Error::msg)?
        .applying_retention();
    let stop_requests = server::stop_requests()?;
    let (db, resolved, privileged) = tokio::select! {
        connected = connect_app_privileged(&config) => connected?,
        _ = server::stopped(stop_requests.clone()) => return Ok(ExitCode::SUCCESS),
    };
    let checked = async {
        let sealer = crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
        let mine = installation::Identity::of(&config, &sealer, &signer.verifying_key())?;
        installation::claim(&db, &mine, &config).await?;
        crate::state::mail_delivery(&config)
    };
    let transport = match checked.await {
        Ok(t) => t,
        Err(e) => {
            db.close().await;
            resolved.finish().await;
            return Err(e);
        }
    };
    let reporter = crate::platform::error_reports::ErrorReporter::from_config(&config.sentry)?;
    reporter.install_for_process();
    let keys = vec![signer.verifying_key()];
    let signer = Arc::new(signer);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let requests =
        crate::identity::requests::Settings { public_url: config.public_url(), audit_signer: Some(signer.clone()) };
    let task = tokio::spawn(crate::mail::outbox::run_worker(
        db.clone(),
        transport,
        Arc::new(SystemClock),
        Arc::new(tokio::sync::Notify::new()),
        stopped,
        {
            let db = db.clone();
            move |now| scheduled_work(db.clone(), requests.clone(), now)
        },
    ));
    let exports = match (
        crate::state::region_stores(&config, &db),
        crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir),
    ) {
        (Ok(stores), Ok(sealer)) => Some(tokio::spawn(crate::privacy::export_jobs::run_worker(
            crate::privacy::export_jobs::Runner {
                db: db.clone(),
                stores,
                keys: config.privacy.keyring(&config.data_dir, &sealer),
                signer: signer.clone(),
                clock: Arc::new(SystemClock),
                data_dir: config.data_dir.clone(),
            },
            stop.subscribe(),
        ))),
        _ => None,
    };
    let signing = tokio::spawn(crate::access::maintenance::run_signer(
        db.clone(),
        signer,
        Arc::new(SystemClock),
        stop.subscribe(),
    ));
    let privacy_task = {
        let sealer = crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
        tokio::spawn(crate::privacy::run_maintenance(
            crate::privacy::Maintenance {
                db: db.clone(),
                keys: config.privacy.keyring(&config.data_dir, &sealer),
                stores: crate::state::region_stores(&config, &db)?,
                owners: privileged.owners.clone(),
                record_key: crate::privacy::record_key(&sealer),
                clock: Arc::new(SystemClock),
                config: config.privacy.clone(),
                stripe: crate::billing::stripe::StripeClient::from_config(&config.billing).map(Arc::new),
                data_dir: config.data_dir.clone(),
            },
            stop.subscribe(),
        ))
    };
    let backups: Vec<_> = crate::backup::Live::every_region(&resolved, &config)
        .into_iter()
        .filter(|_| config.backup.schedule)
        .map(|live| {
            tokio::spawn(crate::backup::run_schedule(
                live,
                keys.clone(),
                config.database.postgres_bin_dir.clone(),
                stop.subscribe(),
            ))
        })
        .collect();
    let follower = db.follow_primary(resolved.failover_hosts.clone(), stop.subscribe());
    tracing::info!("delivering queued mail and signing audit chain heads; stop with Ctrl-C");
    server::stopped(stop_requests).await;
    let _ = stop.send(true);
    let _ = task.await;
    let _ = signing.await;
    if let Some(e) = exports {
        let _ = e.await;
    }
    let _ = privacy_task.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    for b in backups {
        b.abort();
    }
    db.close().await;
    resolved.finish().await;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing(&config.log);
    let resolved = provision::resolve(&config).await?;
    if resolved.owner.is_none() {
        anyhow::bail!(
            "migrations run as the owner role: set CLIENTFLOW_DATABASE__ADMIN_URL to the clientflow_owner \
             role's connection URL"
        );
    }
    provision::migrate(&resolved).await?;
    sync_retention_policy(&resolved, config.audit.retention_days).await?;
    println!("migrations: current ({} known)", crate::platform::db::MIGRATOR.iter().count());
    resolved.finish().await;
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per check and exits non-zero when any check fails.
async fn reset_role_passwords(config: Config) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing(&config.log);
    let resolved = provision::resolve_resetting_role_passwords(&config).await?;
    let mode = resolved.mode;
    resolved.finish().await;
    if mode == Mode::AppRole {
        anyhow::bail!(
            "DATABASE_URL is the app role's: its password is the database administrator's to set, not this \
             command's (it needs a superuser DATABASE_URL or the private cluster)"
        );
    }
    println!(
        "The database roles now use the passwords in {}. Copy that file to every other process of this \
         installation before restarting them.",
        config.data_dir.join("secrets").join("postgres-roles.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `doctor`'s view of the installation identity (see `installation`): read, never written.
async fn installation_report(report: &mut Report, config: &Config, app: &sqlx::postgres::PgConnectOptions) {
    let mine = crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|sealer| {
            let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
                .map_err(anyhow::Error::msg)?;
            installation::Identity::peek(config, &sealer, &signer.verifying_key())
        });
    let mine = match mine {
        Ok(m) => m,
        Err(e) => return report.fail("installation", &format!("{e:#}")),
    };
    let recorded = match provision::connect(app, "app role").await {
        Ok(mut conn) => installation::recorded(&mut conn).await,
        Err(e) => return report.fail("installation", &e.to_string()),
    };
    match recorded {
        Ok(None) => {
            report.ok("installation", "no process has started yet (the first `serve` records its keys and file store)")
        }
        Ok(Some(recorded)) => {
            let differences = mine.differences(&recorded, config);
            if differences.is_empty() {
                report.ok(
                    "installation",
                    "this process shares the installation's master key, audit signing key and file store",
                );
            }
            for d in differences {
                report.fail("installation", &d);
            }
        }
        Err(e) => report.fail("installation", &e.to_string()),
    }
}

async fn doctor(config: Config) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    report.ok("configuration", "loaded and valid");

    // Data directory.
    match std::fs::create_dir_all(&config.data_dir).and_then(|_| {
        let probe = config.data_dir.join(".doctor-probe");
        std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe))
    }) {
        Ok(()) => report.ok("data directory", &format!("{} is writable", config.data_dir.display())),
        Err(e) => report.fail("data directory", &format!("{}: {e} (set data_dir)", config.data_dir.display())),
    }

    // Database.
    let resolved = if config.database.url.is_none() {
        match crate::platform::db::cluster::PrivateCluster::new(
            &config.data_dir,
            config.database.postgres_bin_dir.as_deref(),
            true,
        ) {
            Ok(cluster) if cluster.is_running() => {
                report.ok("database", &format!("private cluster in {} is running", cluster.root().display()));
                // Only looked at: doctor neither starts nor stops the cluster.
                provision::resolve_without_starting(&config)
                    .await
                    .map_err(|e| report.fail("database", &e.to_string()))
                    .ok()
            }
            Ok(_) => {
                report.warn("database", "private cluster is not running (`clientflow serve` starts it)");
                None
            }
            Err(e) => {
                report.fail("database", &e.to_string());
                None
            }
        }
    } else {
        match provision::resolve(&config).await {
            Ok(r) => {
                report.ok("database", r.mode.describe());
                Some(r)
            }
            Err(e) => {
                report.fail("database", &e.to_string());
                None
            }
        }
    };
    if let Some(resolved) = &resolved {
        if resolved.mode == Mode::AppRole && resolved.owner.is_none() {
            report.warn("database", "no database.admin_url: migrations can't be applied from here");
        }
        match provision::connect(&resolved.app, "app role").await {
            Ok(mut conn) => {
                match crate::platform::db::role_facts(&mut conn).await {
                    Ok(facts) => match facts.unsafe_for_runtime() {
                        None => {
                            report.ok("app role", &format!("{}: not superuser, no BYPASSRLS, owns nothing", facts.name))
                        }
                        Some(why) => report.fail("app role", &why),
                    },
                    Err(e) => report.fail("app role", &e.to_string()),
                }
                let applied: Result<Vec<(i64, bool, Vec<u8>)>, _> =
                    sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
                        .fetch_all(&mut conn)
                        .await;
                match applied.map(|a| MigrationStatus::compare(&a)) {
                    Ok(MigrationStatus::Current) => report.ok("migrations", "current"),
                    Ok(MigrationStatus::Pending(v)) => {
                        report.fail("migrations", &format!("pending {v:?}: run `clientflow migrate`"))
                    }
                    Ok(MigrationStatus::Diverged(why)) => report.fail("migrations", &why),
                    Err(_) => report.fail("migrations", "not applied yet: run `clientflow migrate`"),
                }
            }
            Err(e) => report.fail("app role", &e.to_string()),
        }
        if let Some(owner) = &resolved.owner {
            match provision::connect(owner, "owner role").await {
                Ok(mut conn) => match crate::platform::db::catalog::tenant_invariant_problems(&mut conn).await {
                    Ok(problems) if problems.is_empty() => {
                        report.ok("row-level security", "every tenant table: enabled, forced, policy WITH CHECK")
                    }
                    Ok(problems) => {
                        for p in problems {
                            report.fail("row-level security", &p);
                        }
                    }
                    Err(e) => report.fail("row-level security", &e.to_string()),
                },
                Err(e) => report.fail("owner role", &e.to_string()),
            }
        }
    }

    if let Some(resolved) = &resolved {
        installation_report(&mut report, &config, &resolved.app).await;
    }

    // Backups.
    backup_report(&mut report, &config, resolved.as_ref()).await;

    // Redis.
    match &config.redis.url {
        None => report.ok("redis", "not configured: single-node mode (in-process limiter and cache)"),
        Some(url) => match redis_ping(url.expose()).await {
            Ok(()) => report.ok("redis", "PING answered"),
            Err(e) => report.fail("redis", &format!("{e} (check redis.url / REDIS_URL)")),
        },
    }

    // Connections: what the open-file limit allows (serve raises the soft limit to the hard one).
    let open_files = server::open_file_limits().1.min(1 << 20);
    let cap = server::connection_cap(open_files, config.database.max_connections);
    let cap = config.server.max_connections.map_or(cap, |m| m.min(cap));
    let detail = format!("at most {cap} at once (open-file limit {open_files})");
    if cap < 256 {
        report.warn("connections", &format!("{detail}: raise the open-file limit (ulimit -n, LimitNOFILE)"));
    } else {
        report.ok("connections", &detail);
    }

    // security.txt: a set Expires is reviewed before it passes.
    match crate::disclosure::security_txt::doctor_check(&config, time::OffsetDateTime::now_utc()) {
        Ok(detail) => report.ok("security.txt", &detail),
        Err((true, detail)) => report.fail("security.txt", &detail),
        Err((false, detail)) => report.warn("security.txt", &detail),
    }
    if config.disclosure.notify_addresses().is_empty() {
        report.warn(
            "security reports",
            "nobody is told about new reports: set disclosure.notify (or a mailto: disclosure.contact);              `clientflow security reports list` shows them",
        );
    }

    // Certificates: they load and fit their key, and how long they have left.
    match config.server.tls {
        TlsMode::Proxy => report.ok("tls", "terminated by the trusted proxy"),
        _ => match tls::check(&config) {
            Ok(None) => report.ok("tls", "a self-signed certificate will be generated on first start"),
            Ok(Some((cert, validity))) => certificate_report(&mut report, &config, &cert, validity),
            Err(e) => report.fail("tls", &e.to_string()),
        },
    }

    report.print();
    Ok(if report.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The `backups` lines: archiving works, the newest backup is as recent as the schedule
/// promises, the last drill passed.
async fn backup_report(report: &mut Report, config: &Config, resolved: Option<&provision::Resolved>) {
    const WHAT: &str = "backups";
    if config.database.url.is_some() {
        report.ok(
            WHAT,
            "owned by the database provider (DATABASE_URL): check there that point-in-time recovery is on and covers \
             7 days",
        );
        return;
    }
    if !config.backup.enabled {
        report.warn(WHAT, "off (backup.enabled = false): no WAL archiving, no backups");
        return;
    }
    if let Err(e) = crate::platform::db::backup::installed(&config.backup) {
        report.fail(WHAT, &e.to_string());
        return;
    }
    if config.backup.retention_days < 7 {
        report.warn(
            WHAT,
            &format!(
                "backup.retention_days = {}: fewer than the 7 days of recovery promised",
                config.backup.retention_days
            ),
        );
    }
    let lives = resolved.map(|r| crate::backup::Live::every_region(r, config)).unwrap_or_default();
    if lives.is_empty() {
        report.warn(WHAT, "not checked: the private cluster is not running");
        return;
    }
    // Each region's cluster and repository (the default region's under the plain name).
    for live in &lives {
        let what = if live.region == config.residency.default_region {
            WHAT.to_string()
        } else {
            format!("backups of region {}", live.region)
        };
        let what = what.as_str();
        match crate::backup::archive_status(&live.admin).await {
            Ok(a) if a.mode == "off" => report.fail(
                what,
                "the running cluster does not archive WAL (archive_mode off): restart `clientflow serve` to turn it on",
            ),
            Ok(a) if a.failing => report.fail(
                what,
                &format!("WAL {}; see {}", a.describe(), live.repo.cluster().root().join("pgbackrest/log").display()),
            ),
            Ok(a) => report.ok(what, &format!("WAL archiving works: {}", a.describe())),
            Err(e) => report.fail(what, &format!("cannot read the WAL archiver's state: {e}")),
        }
        let listing = crate::backup::list(&live.repo, None).await;
        match listing {
            Err(e) => report.fail(what, &format!("cannot read the repository {}: {e:#}", live.repo.describe())),
            Ok(l) => {
                let allowed = f64::from(config.backup.diff_interval_hours.min(config.backup.full_interval_hours)) + 1.0;
                match l.backups.last() {
                    None => report.fail(what, "no backup in the repository yet: run `clientflow backup run`"),
                    Some(newest) => {
                        let hours = (time::OffsetDateTime::now_utc() - newest.stopped_at).as_seconds_f64() / 3600.0;
                        let detail = format!(
                            "newest backup {} is {hours:.1} hours old; recoverable from {}",
                            newest.label,
                            l.earliest_recovery.map(crate::backup::rfc3339).unwrap_or_default()
                        );
                        if hours > allowed {
                            report.fail(
                                what,
                                &format!(
                                    "{detail}: older than the schedule allows ({allowed:.0} hours); is the worker running?"
                                ),
                            );
                        } else {
                            report.ok(what, &detail);
                        }
                    }
                }
            }
        }
        match last_drill(&live.admin).await {
            Ok(None) => {
                report.warn(what, "no restore drill yet (`clientflow backup drill`; the worker runs one daily)")
            }
            Ok(Some((ok, at, detail))) => {
                let hours = (time::OffsetDateTime::now_utc() - at).as_seconds_f64() / 3600.0;
                if !ok {
                    let why = detail.get("failure").and_then(|f| f.as_str()).unwrap_or("see backup_log").to_string();
                    report.fail(what, &format!("the last restore drill ({hours:.1} hours ago) FAILED: {why}"));
                } else if hours > 2.0 * f64::from(config.backup.drill_interval_hours) + 1.0 {
                    report.warn(
                        what,
                        &format!("the last restore drill passed, {hours:.1} hours ago: the schedule is behind"),
                    );
                } else {
                    report.ok(what, &format!("the last restore drill passed {hours:.1} hours ago"));
                }
            }
            Err(e) => report.fail(what, &format!("cannot read backup_log: {e}")),
        }
    }
}

async fn last_drill(
    admin: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<Option<(bool, time::OffsetDateTime, serde_json::Value)>> {
    let mut conn = provision::connect(admin, "private cluster").await?;
    Ok(sqlx::query_as("SELECT ok, finished_at, detail FROM backup_log WHERE kind = 'drill' ORDER BY finished_at DESC, id DESC LIMIT 1")
        .fetch_optional(&mut conn)
        .await?)
}

/// One `tls` line about a certificate's validity: FAIL when expired or not yet valid, warn
/// within `tls::RENEW_WITHIN_DAYS` of the end, ok otherwise.
fn certificate_report(report: &mut Report, config: &Config, cert: &std::path::Path, validity: tls::Validity) {
    let now = time::OffsetDateTime::now_utc();
    let until = tls::format_date(validity.not_after);
    let days_left = (validity.not_after - now).whole_days();
    let self_signed = config.server.tls == TlsMode::SelfSigned;
    let what = if self_signed { "the self-signed certificate" } else { "the certificate" };
    let remedy = if self_signed {
        "`clientflow serve` renews it at start"
    } else {
        "replace server.tls_cert_file and server.tls_key_file"
    };
    let path = cert.display();
    match validity.standing(now) {
        tls::Standing::Expired => report.fail("tls", &format!("{what} {path} expired on {until}: {remedy}")),
        tls::Standing::NotYetValid => report.fail(
            "tls",
            &format!("{what} {path} is not valid before {} (check the clock)", tls::format_date(validity.not_before)),
        ),
        tls::Standing::ExpiresSoon => {
            report.warn("tls", &format!("{what} {path} expires on {until} ({days_left} days left): {remedy}"))
        }
        tls::Standing::Valid => report.ok(
            "tls",
            &format!("{what} loads and fits its key (TLS 1.3 only); valid until {until} ({days_left} days)"),
        ),
    }
}

async fn redis_ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(3), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    if pong == "PONG" { Ok(()) } else { Err(format!("unexpected reply {pong:?}")) }
}

#[derive(Default)]
struct Report {
    lines: Vec<(&'static str, String, String)>,
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: &str, detail: &str) {
        self.lines.push(("ok  ", what.to_string(), detail.to_string()));
    }
    fn warn(&mut self, what: &str, detail: &str) {
        self.lines.push(("warn", what.to_string(), detail.to_string()));
    }
    fn fail(&mut self, what: &str, detail: &str) {
        self.failed = true;
        self.lines.push(("FAIL", what.to_string(), detail.to_string()));
    }
    #[allow(clippy::print_stdout)]
    fn print(&self) {
        for (status, what, detail) in &self.lines {
            println!("{status}  {what:<20} {detail}");
        }
    }
}

/// The worker's scheduled work, each round before the outbox is delivered: account requests,
/// notification mail and digests, and the copies of repeating invoices. Returns how many
/// things it did; a database error ends the round (the next one tries again).
async fn scheduled_work(
    db: crate::platform::db::Db,
    requests: crate::identity::requests::Settings,
    now: time::OffsetDateTime,
) -> Result<usize, sqlx::Error> {
    let decided = crate::identity::requests::process_due(&db, &requests, now, 100).await?;
    let notified = crate::work::daily::run_due(&db, &requests.public_url, now).await?;
    let repeated =
        match crate::work::repeats::run_due(&db, &requests.public_url, requests.audit_signer.clone(), now).await {
            Ok(n) => n,
            // An outage is logged once, where it was noticed.
            Err(crate::platform::error::DomainError::DatabaseUnavailable) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "repeating invoices: the round stopped");
                0
            }
        };
    Ok(decided + notified + repeated)
}
