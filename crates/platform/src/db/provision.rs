//! From configuration to a migrated database and an app-role connection.
//!
//! Three ways to get there:
//!
//! 1. **Nothing configured**: start the private cluster under the data directory, create the
//!    owner and app roles and the `clientflow` database in it, migrate as the owner.
//! 2. **`DATABASE_URL` of a superuser**: the same provisioning against that server. Role
//!    passwords are generated once and kept in `<data_dir>/secrets/postgres-roles.json`; they
//!    are sent to the server as SCRAM verifiers, never in the clear.
//! 3. **`DATABASE_URL` of the app role** (production): used as is. Migrations need the owner
//!    role's URL in `database.admin_url`; without it, pending migrations stop the start-up
//!    with a message saying so.
//!
//! In every case the server refuses to run if its runtime role is a superuser, has
//! `BYPASSRLS` or owns any table: row-level security must apply to it.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::RegionId;
use super::backup::{BackupError, Repository};
use super::cluster::{ClusterError, ClusterUse, PrivateCluster};
use super::{APP_ROLE, AUDITOR_ROLE, MIGRATOR, MigrationStatus, OWNER_ROLE};
use crate::config::{PlatformSettings, ResidencyConfig};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("cannot connect to PostgreSQL ({target}): {cause}. {hint}")]
    Connect { target: String, cause: String, hint: String },
    #[error("database setup: {0}")]
    Sql(String),
    #[error("migrations: {0}")]
    Migrate(String),
    #[error(
        "refusing to serve: {0}. Point DATABASE_URL at the unprivileged clientflow_app role (docs/operations.md, \"Database roles\")"
    )]
    UnsafeRuntimeRole(String),
    #[error(
        "the database roles {roles} already exist with passwords other than those in {file}: another ClientFlow \
         process of this installation (or an earlier data directory) created them. Every process of one installation \
         shares that file: copy it from the first process's data directory (secrets/postgres-roles.json). If that file \
         is lost, `clientflow db reset-role-passwords` makes this one the installation's (then copy it to every other process)"
    )]
    RolePasswords { roles: String, file: String },
    #[error("{0}")]
    Io(String),
}

impl From<sqlx::Error> for SetupError {
    fn from(e: sqlx::Error) -> Self {
        SetupError::Sql(e.to_string())
    }
}

/// How to reach the database once set up.
#[derive(Debug)]
pub struct Resolved {
    /// The app role: what the server runs as.
    pub app: PgConnectOptions,
    /// The owner role, when known: what migrations run as.
    pub owner: Option<PgConnectOptions>,
    /// The auditor role, when known: operator commands that read across organizations.
    pub auditor: Option<PgConnectOptions>,
    /// This process's use of the private cluster, when that is what we use: dropping it (or
    /// [`Resolved::finish`]) stops the cluster unless another process still uses it.
    pub cluster: Option<ClusterUse>,
    /// The private cluster's backups, when they are on (`backup.enabled`).
    pub backups: Option<Repository>,
    pub mode: Mode,
    /// Every host of a multi-host `DATABASE_URL`, in order (empty for one host): the server
    /// follows the primary among them (`db::failover`).
    pub failover_hosts: Vec<super::failover::Host>,
    /// With the private cluster: every further region without a `database_url`, each in a
    /// private cluster of its own with its own backups (physical backups are of a whole cluster,
    /// so a region sharing the default region's cluster would be in its backups).
    pub regions: Vec<RegionCluster>,
}

/// A further region's own private cluster: its roles, this process's use of it, its backups.
#[derive(Debug)]
pub struct RegionCluster {
    pub region: RegionId,
    pub app: PgConnectOptions,
    pub owner: Option<PgConnectOptions>,
    pub auditor: Option<PgConnectOptions>,
    pub cluster: Option<ClusterUse>,
    pub backups: Option<Repository>,
}

/// The further regions that get a private cluster of their own: those without a `database_url`.
pub fn private_regions(residency: &ResidencyConfig) -> Vec<RegionId> {
    residency
        .regions
        .iter()
        .filter(|(_, r)| r.database_url.is_none())
        .filter_map(|(name, _)| RegionId::parse(name))
        .filter(|r| *r != residency.default_region)
        .collect()
}

/// Where a further region's private cluster lives: `<data_dir>/regions/<region>` (the cluster
/// itself in its `postgres` directory, like the default region's under the data directory).
pub fn region_data_dir(data_dir: &Path, region: RegionId) -> PathBuf {
    data_dir.join("regions").join(region.as_str())
}

/// The private cluster of `region` (the default one's under the data directory, a further
/// one's under [`region_data_dir`]) and its backup repository, described without starting
/// anything; `None` for a region whose database is not a private cluster (`database_url`).
pub fn region_repository(config: &impl PlatformSettings, region: RegionId) -> Result<Option<Repository>, SetupError> {
    let (Some(backup), None) = (config.backup(), &config.database().url) else { return Ok(None) };
    let bin_dir = config.database().postgres_bin_dir.as_deref();
    let secrets_dir = config.data_dir().join("secrets");
    let residency = config.residency();
    if residency.is_none_or(|r| r.default_region == region) {
        let cluster = PrivateCluster::new(config.data_dir(), bin_dir, true)?;
        let naming = Naming::home();
        return Ok(Some(Repository::named(&cluster, backup, &secrets_dir, &naming.stanza, &naming.passphrase_file)?));
    }
    let residency = residency.expect("checked above");
    if !private_regions(residency).contains(&region) {
        return Ok(None);
    }
    let cluster = PrivateCluster::new(&region_data_dir(config.data_dir(), region), bin_dir, true)?;
    let naming = Naming::region(residency, region);
    Ok(Some(Repository::named(
        &cluster,
        &residency.backup_config(region, backup),
        &secrets_dir,
        &naming.stanza,
        &naming.passphrase_file,
    )?))
}

/// How a cluster's backups are named: stanza and generated passphrase file.
struct Naming {
    stanza: String,
    passphrase_file: String,
}

impl Naming {
    fn home() -> Self {
        Self { stanza: crate::config::STANZA.into(), passphrase_file: super::backup::PASSPHRASE_FILE.into() }
    }

    fn region(residency: &ResidencyConfig, region: RegionId) -> Self {
        Self {
            stanza: residency.backup_stanza(region),
            passphrase_file: format!("{}-{region}", super::backup::PASSPHRASE_FILE),
        }
    }
}

/// Starts (unless `start` is false) a private cluster with its backups and provisions its roles
/// and `database`.
async fn start_private_cluster(
    mut cluster: PrivateCluster,
    backup: Option<crate::config::BackupConfig>,
    naming: Naming,
    secrets_dir: &Path,
    database: Option<&str>,
    start: bool,
    roles: Roles,
) -> Result<RegionCluster, SetupError> {
    let backups = match &backup {
        Some(b) if b.enabled => {
            Some(Repository::named(&cluster, b, secrets_dir, &naming.stanza, &naming.passphrase_file)?)
        }
        _ => None,
    };
    if let Some(repo) = &backups {
        let (settings, env) = repo.archiving();
        cluster = cluster.with_settings(settings, env);
    }
    let (admin, in_use) = if start {
        if let Some(repo) = backups.clone() {
            // The archive command reads this file: it must exist before the cluster starts.
            let prepared = tokio::task::spawn_blocking(move || {
                repo.cluster().prepare()?;
                repo.write_config()
            });
            prepared.await.map_err(|e| SetupError::Io(e.to_string()))??;
        }
        // Taken inside the blocking task: if this future is dropped (a stop requested
        // during start-up), the use still ends, and stops what it started.
        let in_use = tokio::task::spawn_blocking(move || cluster.ensure_running())
            .await
            .map_err(|e| SetupError::Io(e.to_string()))??;
        if in_use.cluster().is_linked() {
            tracing::info!(cluster = %in_use.cluster().root().display(), "private PostgreSQL cluster");
        }
        if backups.is_some() && in_use.started() {
            // The checkpointer starts while the server is still in recovery and then
            // sleeps a whole checkpoint_timeout before it first looks at
            // archive_timeout; a checkpoint wakes it, so a quiet system's recovery
            // point is bounded by archive_timeout from the start.
            let mut conn = connect(&in_use.cluster().admin_options(), "private cluster").await?;
            sqlx::query("CHECKPOINT").execute(&mut conn).await?;
            conn.close().await.ok();
        }
        (in_use.cluster().admin_options(), Some(in_use))
    } else {
        (cluster.admin_options(), None)
    };
    // On an error the use is dropped, which stops the cluster if nobody else uses it.
    let provisioned = provision_with(&admin, secrets_dir, database, roles).await?;
    if start && let Some(repo) = backups.clone() {
        // Creating the stanza is idempotent. A repository that can't be reached doesn't
        // stop the start: archiving then fails, which `doctor` and `/metrics` report.
        match tokio::task::spawn_blocking(move || repo.stanza_create()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "backups: cannot create the pgBackRest stanza"),
            Err(e) => tracing::error!(error = %e, "backups: cannot create the pgBackRest stanza"),
        }
    }
    Ok(RegionCluster {
        region: RegionId::DEFAULT,
        app: provisioned.app,
        owner: Some(provisioned.owner),
        auditor: Some(provisioned.auditor),
        cluster: in_use,
        backups,
    })
}

/// Refuses to start a region's own cluster while its database is still in the default
/// region's cluster (the layout before regions had clusters of their own): it would be in the
/// default region's backups, and the region's new cluster would start empty.
async fn refuse_region_in_home_cluster(
    home: &RegionCluster,
    residency: &ResidencyConfig,
    region: RegionId,
) -> Result<(), SetupError> {
    let Some(cluster) = home.cluster.as_ref().map(|u| u.cluster().clone()) else { return Ok(()) };
    let name = residency.database_name(region);
    let mut conn = connect(&cluster.admin_options(), "private cluster").await?;
    let found: Option<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    conn.close().await.ok();
    if found.is_some() {
        return Err(SetupError::Io(format!(
            "region {region}'s database {name} is in the default region's private cluster ({}), whose backups \
             would hold it: each further region has a cluster of its own ({}). Move it once: stop every clientflow \
             process, `pg_dump --format=custom` it from the default cluster and drop it there, start ClientFlow \
             (it creates the region's cluster and database), then `pg_restore --data-only` the dump into it as \
             the owner role (docs/operations.md, \"Regions\")",
            cluster.root().display(),
            region_data_dir(Path::new("<data_dir>"), region).join("postgres").display()
        )));
    }
    Ok(())
}

/// Ends the uses of the private clusters (the default region's and further regions').
async fn finish_uses(home: Option<ClusterUse>, regions: Vec<ClusterUse>) {
    for cluster in regions.into_iter().chain(home) {
        match tokio::task::spawn_blocking(move || cluster.end()).await {
            Ok(Ok(true)) => tracing::info!("stopped the private PostgreSQL cluster"),
            Ok(Ok(false)) => tracing::debug!("a private PostgreSQL cluster is still in use by another process"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not stop a private PostgreSQL cluster"),
            Err(e) => tracing::warn!(error = %e, "could not stop a private PostgreSQL cluster"),
        }
    }
}

impl Resolved {
    /// Ends this process's use of the private cluster (if any), stopping it when no other
    /// process uses it. Call it after closing the pools.
    pub async fn finish(mut self) {
        let regions = self.regions.iter_mut().filter_map(|r| r.cluster.take()).collect();
        finish_uses(self.cluster.take(), regions).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PrivateCluster,
    Provisioned,
    AppRole,
}

impl Mode {
    pub fn describe(self) -> &'static str {
        match self {
            Mode::PrivateCluster => "private PostgreSQL cluster under the data directory (Unix socket only)",
            Mode::Provisioned => "DATABASE_URL (superuser): ClientFlow provisioned its owner and app roles",
            Mode::AppRole => "DATABASE_URL (app role)",
        }
    }
}

/// Works out the connections for `config`, starting the private cluster and provisioning
/// roles when that is the mode. Doesn't migrate.
pub async fn resolve(config: &impl PlatformSettings) -> Result<Resolved, SetupError> {
    // Boxed: every process awaits it at start, starting one cluster per region.
    Box::pin(resolve_with(config, true, Roles::Keep)).await
}

/// Like [`resolve`], making this process's role passwords the installation's
/// (`clientflow db reset-role-passwords`, after the password file was lost).
pub async fn resolve_resetting_role_passwords(config: &impl PlatformSettings) -> Result<Resolved, SetupError> {
    Box::pin(resolve_with(config, true, Roles::Reset)).await
}

/// What provisioning does to roles that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roles {
    /// Keep their passwords; refuse when this process's differ.
    Keep,
    /// Set them to this process's.
    Reset,
}

/// Like [`resolve`], for a check that must not change what runs (`doctor`): a private cluster
/// that isn't running is an error rather than started, and this process takes no part in its
/// lifecycle (it never stops it).
pub async fn resolve_without_starting(config: &impl PlatformSettings) -> Result<Resolved, SetupError> {
    Box::pin(resolve_with(config, false, Roles::Keep)).await
}

async fn resolve_with(config: &impl PlatformSettings, start: bool, roles: Roles) -> Result<Resolved, SetupError> {
    let secrets_dir = config.data_dir().join("secrets");
    match &config.database().url {
        None => {
            // Boxed: every command's start-up awaits this, once per region.
            let home = Box::pin(start_private_cluster(
                PrivateCluster::new(config.data_dir(), config.database().postgres_bin_dir.as_deref(), true)?,
                config.backup().cloned(),
                Naming::home(),
                &secrets_dir,
                None,
                start,
                roles,
            ))
            .await?;
            let mut regions = Vec::new();
            if let Some(residency) = config.residency() {
                for region in private_regions(residency) {
                    let started = async {
                        refuse_region_in_home_cluster(&home, residency, region).await?;
                        Box::pin(start_private_cluster(
                            PrivateCluster::new(
                                &region_data_dir(config.data_dir(), region),
                                config.database().postgres_bin_dir.as_deref(),
                                true,
                            )?,
                            config.backup().map(|b| residency.backup_config(region, b)),
                            Naming::region(residency, region),
                            &secrets_dir,
                            Some(&residency.database_name(region)),
                            start,
                            roles,
                        ))
                        .await
                    }
                    .await;
                    match started {
                        Ok(c) => regions.push(RegionCluster { region, ..c }),
                        Err(e) => {
                            // What was started is stopped (when nobody else uses it).
                            finish_uses(home.cluster, regions.into_iter().filter_map(|r| r.cluster).collect()).await;
                            return Err(e);
                        }
                    }
                }
            }
            Ok(Resolved {
                app: home.app,
                owner: home.owner,
                auditor: home.auditor,
                cluster: home.cluster,
                backups: home.backups,
                mode: Mode::PrivateCluster,
                failover_hosts: Vec::new(),
                regions,
            })
        }
        Some(url) => {
            let (options, failover_hosts) = parse_primary_url(url.expose(), "database.url (DATABASE_URL)").await?;
            let mut conn = connect(&options, "DATABASE_URL").await?;
            let facts = super::role_facts(&mut conn).await?;
            conn.close().await.ok();
            if facts.superuser {
                let provisioned = provision_with(&options, &secrets_dir, options.get_database(), roles).await?;
                return Ok(Resolved {
                    app: provisioned.app,
                    owner: Some(provisioned.owner),
                    auditor: Some(provisioned.auditor),
                    cluster: None,
                    backups: None,
                    mode: Mode::Provisioned,
                    failover_hosts,
                    regions: Vec::new(),
                });
            }
            let owner = match &config.database().admin_url {
                Some(admin) => Some(parse_primary_url(admin.expose(), "database.admin_url").await?.0),
                None => None,
            };
            let auditor = match &config.database().auditor_url {
                Some(url) => Some(parse_primary_url(url.expose(), "database.auditor_url").await?.0),
                None => None,
            };
            Ok(Resolved {
                app: options,
                owner,
                auditor,
                cluster: None,
                backups: None,
                mode: Mode::AppRole,
                failover_hosts,
                regions: Vec::new(),
            })
        }
    }
}

/// Applies pending migrations as the owner role, or explains why it can't.
pub async fn migrate(resolved: &Resolved) -> Result<MigrationStatus, SetupError> {
    match &resolved.owner {
        Some(owner) => {
            run_migrations(owner).await?;
            Ok(MigrationStatus::Current)
        }
        None => {
            let mut conn = connect(&resolved.app, "DATABASE_URL").await?;
            let applied: Vec<(i64, bool, Vec<u8>)> =
                sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
            let status = MigrationStatus::compare(&applied);
            match &status {
                MigrationStatus::Current => Ok(status),
                MigrationStatus::Pending(v) => Err(SetupError::Migrate(format!(
                    "{} migration(s) pending ({v:?}) and no owner-role connection to apply them: set \
                     CLIENTFLOW_DATABASE__ADMIN_URL to the clientflow_owner role and run `clientflow migrate`",
                    v.len()
                ))),
                MigrationStatus::Diverged(why) => Err(SetupError::Migrate(why.clone())),
            }
        }
    }
}

/// Runs the compiled-in migrations on `owner` (sqlx takes an advisory lock, so concurrent
/// starts are safe).
pub async fn run_migrations(owner: &PgConnectOptions) -> Result<(), SetupError> {
    let mut conn = connect(owner, "owner role").await?;
    MIGRATOR.run(&mut conn).await.map_err(|e| SetupError::Migrate(e.to_string()))?;
    conn.close().await.ok();
    Ok(())
}

/// Refuses a runtime role to which row-level security would not apply.
pub async fn guard_runtime_role(app: &PgConnectOptions) -> Result<(), SetupError> {
    let mut conn = connect(app, "app role").await?;
    let facts = super::role_facts(&mut conn).await?;
    conn.close().await.ok();
    match facts.unsafe_for_runtime() {
        Some(why) => Err(SetupError::UnsafeRuntimeRole(why)),
        None => Ok(()),
    }
}

pub struct Provisioned {
    pub owner: PgConnectOptions,
    pub app: PgConnectOptions,
    pub auditor: PgConnectOptions,
    pub database: String,
}

/// Creates (or updates) the owner and app roles and the database, as a superuser.
///
/// `database`: the database named in the URL, used unless it is a maintenance database
/// (`postgres`, `template1`), in which case `clientflow` is created.
pub async fn provision(
    admin: &PgConnectOptions,
    secrets_dir: &Path,
    database: Option<&str>,
) -> Result<Provisioned, SetupError> {
    provision_with(admin, secrets_dir, database, Roles::Keep).await
}

async fn provision_with(
    admin: &PgConnectOptions,
    secrets_dir: &Path,
    database: Option<&str>,
    roles: Roles,
) -> Result<Provisioned, SetupError> {
    let database = match database {
        Some(db) if !matches!(db, "postgres" | "template0" | "template1") => db.to_string(),
        _ => "clientflow".to_string(),
    };
    let passwords = RolePasswords::load_or_create(secrets_dir)?;
    let mut conn = connect(admin, "admin").await?;
    match roles {
        Roles::Keep => ensure_roles(&mut conn, &passwords).await?,
        Roles::Reset => reset_role_passwords(&mut conn, &passwords).await?,
    }
    let exists: Option<(String,)> = sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let created = sqlx::query(&format!("CREATE DATABASE {} OWNER {OWNER_ROLE}", quote_ident(&database)))
            .execute(&mut conn)
            .await;
        if let Err(e) = created {
            // Another process may have created it in the meantime.
            let exists: Option<(String,)> = sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname = $1")
                .bind(&database)
                .fetch_optional(&mut conn)
                .await?;
            if exists.is_none() {
                return Err(e.into());
            }
        }
    }
    conn.close().await.ok();
    prepare_database(admin, &database).await?;
    Ok(Provisioned {
        owner: role_options(admin, OWNER_ROLE, &passwords.owner, &database),
        app: role_options(admin, APP_ROLE, &passwords.app, &database),
        auditor: role_options(admin, AUDITOR_ROLE, &passwords.auditor, &database),
        database,
    })
}

/// Schema privileges and connect rights on a database the owner role will migrate. The app
/// role may not create temporary tables: it never needs one, and one named like a table a
/// function reads could shadow it (`migrations/0058`).
pub async fn prepare_database(admin: &PgConnectOptions, database: &str) -> Result<(), SetupError> {
    let mut conn = connect(&admin.clone().database(database), "admin").await?;
    let db = quote_ident(database);
    for stmt in [
        format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
        format!("REVOKE TEMPORARY ON DATABASE {db} FROM {APP_ROLE}"),
        format!("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {OWNER_ROLE}"),
        format!("GRANT CONNECT ON DATABASE {db} TO {APP_ROLE}"),
        format!("GRANT CONNECT ON DATABASE {db} TO {AUDITOR_ROLE}"),
        format!("GRANT ALL ON SCHEMA public TO {OWNER_ROLE}"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_string(),
    ] {
        sqlx::query(&stmt).execute(&mut conn).await?;
    }
    conn.close().await.ok();
    Ok(())
}

/// Creates the roles if missing, with this process's passwords, under an advisory lock so
/// concurrent starts don't race. Roles that exist keep their passwords: every process of one
/// installation shares `postgres-roles.json`, and a process whose file differs (another data
/// directory, a lost file) is refused with a message saying what to share, instead of quietly
/// resetting the passwords the running processes use. [`reset_role_passwords`] is the explicit
/// way to make this file's passwords the installation's.
pub async fn ensure_roles(conn: &mut PgConnection, passwords: &RolePasswords) -> Result<(), SetupError> {
    with_provision_lock(conn, async |conn: &mut PgConnection| {
        let mut differing = Vec::new();
        for (role, password) in passwords.each() {
            match stored_password(conn, role).await? {
                None => {
                    let verifier = scram_verifier(password);
                    sqlx::query(&format!("CREATE ROLE {role} {} PASSWORD '{verifier}'", role_attributes(role)))
                        .execute(&mut *conn)
                        .await?;
                }
                Some(stored) => {
                    sqlx::query(&format!("ALTER ROLE {role} {}", role_attributes(role))).execute(&mut *conn).await?;
                    match stored {
                        // A role someone created without a password: nobody can be using it.
                        None => {
                            let verifier = scram_verifier(password);
                            sqlx::query(&format!("ALTER ROLE {role} PASSWORD '{verifier}'"))
                                .execute(&mut *conn)
                                .await?;
                        }
                        Some(verifier) if verifier_matches(&verifier, password) => {}
                        Some(_) => differing.push(role),
                    }
                }
            }
        }
        if differing.is_empty() {
            Ok(())
        } else {
            Err(SetupError::RolePasswords { roles: differing.join(", "), file: passwords.source.display().to_string() })
        }
    })
    .await
}

/// Sets the roles' passwords to this process's (`clientflow db reset-role-passwords`): for an
/// installation whose password file was lost. Every other process must then get this file.
pub async fn reset_role_passwords(conn: &mut PgConnection, passwords: &RolePasswords) -> Result<(), SetupError> {
    with_provision_lock(conn, async |conn: &mut PgConnection| {
        for (role, password) in passwords.each() {
            let verifier = scram_verifier(password);
            let verb = if stored_password(conn, role).await?.is_some() { "ALTER" } else { "CREATE" };
            sqlx::query(&format!("{verb} ROLE {role} {} PASSWORD '{verifier}'", role_attributes(role)))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    })
    .await
}

async fn with_provision_lock<T>(
    conn: &mut PgConnection,
    f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, SetupError>,
) -> Result<T, SetupError> {
    sqlx::query("SELECT pg_advisory_lock(hashtext('clientflow:provision'))").execute(&mut *conn).await?;
    let result = f(&mut *conn).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('clientflow:provision'))").execute(&mut *conn).await?;
    result
}

/// The auditor reads across organizations (audit verification, retention): it bypasses
/// row-level security but is granted SELECT only, on a few tables.
fn role_attributes(role: &str) -> &'static str {
    if role == AUDITOR_ROLE {
        "LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT"
    } else {
        "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"
    }
}

/// `None`: no such role; `Some(None)`: a role without a password; else its stored verifier
/// (`pg_authid` is readable by the superuser that provisions).
async fn stored_password(conn: &mut PgConnection, role: &str) -> Result<Option<Option<String>>, SetupError> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(p,)| p))
}

/// Whether `password` is the one a stored SCRAM-SHA-256 verifier was made from (recomputed with
/// its salt and iteration count; any other format counts as different).
fn verifier_matches(stored: &str, password: &str) -> bool {
    let parse = || {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, _) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        Some((iterations.parse::<u32>().ok()?, B64.decode(salt).ok()?))
    };
    match parse() {
        Some((iterations, salt)) if (1..=1_000_000).contains(&iterations) => {
            let ours = scram_verifier_with(password, &salt, iterations);
            bool::from(subtle::ConstantTimeEq::ct_eq(ours.as_bytes(), stored.as_bytes()))
        }
        _ => false,
    }
}

/// The same server as `admin`, as `role` on `database`.
pub fn role_options(admin: &PgConnectOptions, role: &str, password: &str, database: &str) -> PgConnectOptions {
    admin.clone().username(role).password(password).database(database)
}

/// Passwords of the provisioned roles, kept under the data directory (mode 0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct RolePasswords {
    pub owner: String,
    pub app: String,
    /// The auditor role (read-only across tenants, for operator commands).
    #[serde(default = "fresh_password")]
    pub auditor: String,
    /// Where they are kept (for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

impl RolePasswords {
    fn each(&self) -> [(&'static str, &str); 3] {
        [(OWNER_ROLE, &self.owner), (APP_ROLE, &self.app), (AUDITOR_ROLE, &self.auditor)]
    }
}

fn fresh_password() -> String {
    random_hex(32)
}

impl RolePasswords {
    pub fn load_or_create(secrets_dir: &Path) -> Result<Self, SetupError> {
        let path = secrets_dir.join("postgres-roles.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut loaded: RolePasswords = serde_json::from_str(&text)
                .map_err(|e| SetupError::Io(format!("{} is damaged ({e}); remove it to regenerate", path.display())))?;
            if !text.contains("\"auditor\"") {
                // Written before the auditor role existed: keep its new password.
                crate::fsutil::write_private(
                    &path,
                    serde_json::to_string_pretty(&loaded).unwrap_or_default().as_bytes(),
                )
                .map_err(SetupError::Io)?;
            }
            loaded.source = path;
            return Ok(loaded);
        }
        let fresh =
            RolePasswords { owner: random_hex(32), app: random_hex(32), auditor: random_hex(32), source: path.clone() };
        crate::fsutil::write_private(&path, serde_json::to_string_pretty(&fresh).unwrap_or_default().as_bytes())
            .map_err(SetupError::Io)?;
        Ok(fresh)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A SCRAM-SHA-256 verifier (RFC 5802 / 7677) in PostgreSQL's storage format, so the password
/// itself never travels to the server or into its statement log.
pub fn scram_verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    scram_verifier_with(password, &salt, 4096)
}

fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    type HmacSha256 = Hmac<Sha256>;
    let hmac = |key: &[u8], data: &[u8]| -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    };
    // PBKDF2-HMAC-SHA256, one block.
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &block);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        for (s, x) in salted.iter_mut().zip(u.iter()) {
            *s ^= x;
        }
    }
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", B64.encode(salt), B64.encode(stored_key), B64.encode(server_key))
}

/// A URL that may name several hosts (libpq's `host1:port1,host2:port2`): the options pointed at
/// the one that is a primary now, and every host (empty for a single-host URL).
pub async fn parse_primary_url(
    url: &str,
    setting: &str,
) -> Result<(PgConnectOptions, Vec<super::failover::Host>), SetupError> {
    let Some((first, hosts)) = super::failover::split_hosts(url) else {
        return Ok((parse_url(url, setting)?, Vec::new()));
    };
    let options = parse_url(&first, setting)?;
    match super::failover::find_primary(&options, &hosts).await {
        Some(primary) => Ok((primary, hosts)),
        None => Err(SetupError::Connect {
            target: setting.to_string(),
            cause: format!(
                "none of its {} hosts ({}) is a primary accepting writes",
                hosts.len(),
                hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", ")
            ),
            hint: "Check that one of them is running and promoted, and the URL's user and password".into(),
        }),
    }
}

pub fn parse_url(url: &str, setting: &str) -> Result<PgConnectOptions, SetupError> {
    PgConnectOptions::from_str(url).map_err(|e| SetupError::Connect {
        target: setting.to_string(),
        cause: format!("not a valid PostgreSQL URL ({e})"),
        hint: "Expected postgres://user:password@host:5432/database".into(),
    })
}

/// One connection with statement logging off (provisioning statements carry verifiers).
pub async fn connect(options: &PgConnectOptions, what: &str) -> Result<PgConnection, SetupError> {
    options.clone().disable_statement_logging().connect().await.map_err(|e| SetupError::Connect {
        target: format!(
            "{what}: {}@{}",
            options.get_username(),
            options.get_socket().map(|s| s.display().to_string()).unwrap_or_else(|| format!(
                "{}:{}",
                options.get_host(),
                options.get_port()
            ))
        ),
        cause: e.to_string(),
        hint: "Check that PostgreSQL is running and the URL's user, password and database are right".into(),
    })
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where `serve` keeps per-install secrets.
pub fn secrets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_matches_rfc7677_vector() {
        // RFC 7677 §3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = scram_verifier_with("pencil", &salt, 4096);
        // Expected keys computed independently (Python hashlib.pbkdf2_hmac + hmac).
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
