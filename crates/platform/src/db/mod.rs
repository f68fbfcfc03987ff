//! Database access.
//!
//! The pool is a private field of [`Db`]: no code outside this module tree can run SQL on an
//! arbitrary pooled connection. There are exactly two ways in:
//!
//! * [`OrgTx`] (module [`tenant`]): the only door to tenant data. It is built from an
//!   [`OrgPrincipal`], which only the verification functions in [`tenant`] produce, and sets the
//!   tenant for the lifetime of its transaction.
//! * [`GlobalTx`]: global tables (users, sessions). No tenant is set on it, so row-level
//!   security shows it zero rows of every tenant table.

pub mod backup;
pub mod catalog;
pub mod cluster;
pub mod failover;
pub mod outage;
pub mod provision;
pub mod region;
pub mod tenant;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use region::RegionId;
pub use tenant::UserTx;

/// The migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The role the server runs as. Migrations grant it exactly what it needs.
pub const APP_ROLE: &str = "clientflow_app";
/// The role that owns the schema and runs migrations.
pub const OWNER_ROLE: &str = "clientflow_owner";
/// A read-only role that bypasses row-level security, for operator commands that work across
/// organizations (audit verification). Never what the server runs as.
pub const AUDITOR_ROLE: &str = "clientflow_auditor";

/// How long a transaction waits for a connection while the database is known to be away.
pub const OUTAGE_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

tokio::task_local! {
    /// Set while [`Db::begin_tested`] takes a connection: the pool skips its own check, the
    /// transaction's `BEGIN` does it.
    static BEGIN_CHECKS_CONNECTION: ();
}

/// Whether a statement failed because its connection is gone (dropped by the server, reset,
/// terminated), not because of the statement: the errors of an unreachable database, except
/// the pool's own (which no other connection would change).
fn lost_connection(e: &sqlx::Error) -> bool {
    outage::is_unavailable(e) && !matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// A handle to the application database, connected as the app role: the pool of this handle's
/// region, and those of every region of the installation (see [`region`]).
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    region: RegionId,
    /// Every region's pool, this one's included; the first is the default region (the home of
    /// the global directory).
    regions: std::sync::Arc<Vec<(RegionId, PgPool)>>,
}

impl Db {
    /// Connects a pool as the app role.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // An idle connection is checked (a round trip) before it is handed out, except to
            // a transaction being begun: its `BEGIN` is the check (see `Db::begin_tested`).
            .test_before_acquire(false)
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    if BEGIN_CHECKS_CONNECTION.try_with(|_| ()).is_err() {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.application_name("clientflow"))
            .await?;
        Ok(Self::single(pool, RegionId::DEFAULT))
    }

    fn single(pool: PgPool, region: RegionId) -> Self {
        Self { regions: std::sync::Arc::new(vec![(region, pool.clone())]), pool, region }
    }

    /// The same database named as region `region` (an installation whose default region isn't
    /// `us`). Only for a handle of one region.
    pub fn named(self, region: RegionId) -> Self {
        Self::single(self.pool, region)
    }

    /// Adds the databases of further regions to this (the default region's) handle.
    pub fn with_regions(self, others: Vec<(RegionId, Db)>) -> Self {
        let mut regions = (*self.regions).clone();
        for (id, db) in others {
            regions.retain(|(r, _)| *r != id);
            regions.push((id, db.pool));
        }
        Self { regions: std::sync::Arc::new(regions), pool: self.pool, region: self.region }
    }

    /// This handle's region: where [`Db::global`] and the capability transactions run.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The default region: the home of the global directory.
    pub fn home_region(&self) -> RegionId {
        self.regions[0].0
    }

    /// Whether the installation has more than one region (the directory must be consulted).
    pub fn is_multi_region(&self) -> bool {
        self.regions.len() > 1
    }

    /// Every configured region, the default first.
    pub fn region_ids(&self) -> Vec<RegionId> {
        self.regions.iter().map(|(r, _)| *r).collect()
    }

    /// The handle of `region`'s database (global tables there, and its capability
    /// transactions); `None` when the region isn't configured.
    pub fn in_region(&self, region: RegionId) -> Option<Db> {
        if region == self.region {
            return Some(self.clone());
        }
        let pool = self.regions.iter().find(|(r, _)| *r == region)?.1.clone();
        Some(Self { pool, region, regions: self.regions.clone() })
    }

    /// The handle of the default region (the directory's database).
    pub fn home(&self) -> Db {
        self.in_region(self.home_region()).unwrap_or_else(|| self.clone())
    }

    /// One handle per region, the default first (workers and operator commands iterate them).
    pub fn every_region(&self) -> Vec<Db> {
        self.regions.iter().filter_map(|(r, _)| self.in_region(*r)).collect()
    }

    /// A transaction for global tables (no tenant context).
    pub async fn global(&self) -> Result<GlobalTx, sqlx::Error> {
        Ok(GlobalTx { tx: self.begin().await? })
    }

    /// A transaction begun with `statement` (e.g. an isolation level, or `BEGIN` followed by a
    /// setting), through the same outage bookkeeping as [`Db::begin`].
    pub(crate) async fn begin_with(
        &self,
        statement: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        Self::starting(self.begin_tested(Some(statement.into()))).await
    }

    /// Takes a connection without the pool's check and begins a transaction on it: the
    /// `BEGIN` is the check, one round trip instead of two. A connection the database has
    /// dropped since it was last used (a restart, a failover, a terminated session) fails its
    /// `BEGIN` with the connection's error; it is discarded (the pool's check on release fails
    /// too) and the next one is tried, as the pool's own check would have done. Nothing ran on
    /// the failed connection but the `BEGIN` (and the settings that go with it), so beginning
    /// again changes nothing. It tries at most one connection more than the pool holds, so a
    /// database that drops every new connection too gets an answer, the last error.
    async fn begin_tested(
        &self,
        statement: Option<std::borrow::Cow<'static, str>>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        // Every idle connection may have been dropped at once: try each, then one more.
        let mut retries = self.pool.options().get_max_connections();
        loop {
            let conn = BEGIN_CHECKS_CONNECTION.scope((), self.pool.acquire()).await?;
            // Begun in a task of its own, which finishes even when its caller is dropped (a
            // client gone, a timeout) while the `BEGIN` is on its way: the transaction is then
            // dropped whole, and rolled back. Dropped half-way instead, the connection would go
            // back to the pool inside a transaction sqlx doesn't know it began, with whatever
            // the statement had set (a tenant), for the next transaction to find.
            // (In the caller's span: what sqlx logs of it names the request.)
            let begin = tokio::spawn(tracing::Instrument::in_current_span(Transaction::begin(conn, statement.clone())));
            let begun = begin.await.map_err(|e| sqlx::Error::Protocol(format!("beginning a transaction: {e}")))?;
            match begun {
                Err(e) if retries > 0 && lost_connection(&e) => retries -= 1,
                begun => return begun,
            }
        }
    }

    /// Every transaction starts here, so the end of a database outage is noticed (and logged)
    /// by the first request that gets a connection again.
    /// While the database is known to be away, a request waits at most
    /// [`OUTAGE_ACQUIRE_TIMEOUT`] to find out again instead of the whole acquire timeout.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        Self::starting(self.begin_tested(None)).await
    }

    /// A connection outside any transaction (each statement on it is its own transaction),
    /// through the same outage bookkeeping as [`Db::begin`]. Only the tenant door's
    /// [`GateConn`](tenant::GateConn) hands one out.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        Self::starting(self.pool.acquire()).await
    }

    /// A transaction being started (or a connection taken), with the outage bookkeeping every
    /// start goes through.
    async fn starting<T>(begin: impl std::future::Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
        let tx = if outage::is_down() {
            tokio::time::timeout(OUTAGE_ACQUIRE_TIMEOUT, begin).await.map_err(|_| sqlx::Error::PoolTimedOut)??
        } else {
            begin.await?
        };
        outage::record_success();
        Ok(tx)
    }

    /// A transaction that starts with `setting` (a transaction-local `set_config`) already set,
    /// in one round trip: `BEGIN` and the setting go as one simple query. Its value is written
    /// into that query, so only values made of ASCII letters, digits and `-` (ids, digests) take
    /// this way; any other value is bound as a parameter in a second round trip.
    pub(crate) async fn begin_with_setting(
        &self,
        setting: &'static str,
        value: &str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match setting_in_begin(setting, value) {
            Some(statement) => self.begin_with(statement).await,
            None => {
                let mut tx = self.begin().await?;
                sqlx::query("SELECT set_config($1, $2, true)").bind(setting).bind(value).execute(&mut *tx).await?;
                Ok(tx)
            }
        }
    }

    /// [`Db::begin_with_setting`] on a connection already taken from the pool ([`Db::acquire`]).
    pub(crate) async fn begin_on_with_setting(
        conn: PoolConnection<Postgres>,
        setting: &'static str,
        value: &str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match setting_in_begin(setting, value) {
            Some(statement) => Transaction::begin(conn, Some(statement.into())).await,
            None => {
                let mut tx = Transaction::begin(conn, None).await?;
                sqlx::query("SELECT set_config($1, $2, true)").bind(setting).bind(value).execute(&mut *tx).await?;
                Ok(tx)
            }
        }
    }

    /// Cheap liveness query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        outage::record_success();
        Ok(())
    }

    /// (connections open, of which idle, configured maximum)
    pub fn pool_usage(&self) -> (u32, u32, u32) {
        (self.pool.size(), self.pool.num_idle() as u32, self.pool.options().get_max_connections())
    }

    /// Versions of applied migrations compared with those compiled in.
    pub async fn migration_status(&self) -> Result<MigrationStatus, sqlx::Error> {
        let applied: Vec<(i64, bool, Vec<u8>)> =
            sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        Ok(MigrationStatus::compare(&applied))
    }

    /// Facts about the role this pool connects as, for the start-up guard and `doctor`.
    pub async fn role_facts(&self) -> Result<RoleFacts, sqlx::Error> {
        role_facts(&mut *self.pool.acquire().await?).await
    }

    /// The private cluster's backups as recorded and its WAL archiver, for `/metrics`.
    pub async fn backup_status(&self) -> Result<backup::BackupStatus, sqlx::Error> {
        backup::backup_status(&mut *self.pool.acquire().await?).await
    }

    /// Closes every region's pool.
    pub async fn close(&self) {
        for (_, pool) in self.regions.iter() {
            pool.close().await;
        }
    }
}

/// `BEGIN` with `setting` set, as one simple query; `None` when `value` must be bound as a
/// parameter instead (anything but ASCII letters, digits and `-`).
fn setting_in_begin(setting: &'static str, value: &str) -> Option<String> {
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    debug_assert!(setting.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'));
    Some(format!("BEGIN; SELECT set_config('{setting}', '{value}', true)"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    Current,
    /// Compiled-in migrations not yet applied.
    Pending(Vec<i64>),
    /// The database has migrations this binary doesn't know, or a checksum differs.
    Diverged(String),
}

impl MigrationStatus {
    pub fn compare(applied: &[(i64, bool, Vec<u8>)]) -> Self {
        for (version, success, checksum) in applied {
            if !success {
                return Self::Diverged(format!("migration {version} failed part-way"));
            }
            match MIGRATOR.iter().find(|m| m.version == *version) {
                None => {
                    return Self::Diverged(format!("migration {version} is unknown to this binary"));
                }
                Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                    return Self::Diverged(format!("migration {version} was changed after it was applied"));
                }
                Some(_) => {}
            }
        }
        let pending: Vec<i64> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .filter(|v| !applied.iter().any(|(a, _, _)| a == v))
            .collect();
        if pending.is_empty() { Self::Current } else { Self::Pending(pending) }
    }
}

#[derive(Debug, Clone)]
pub struct RoleFacts {
    pub name: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    pub create_role: bool,
    pub owned_relations: i64,
}

impl RoleFacts {
    /// Why this role must not serve requests, if it must not.
    pub fn unsafe_for_runtime(&self) -> Option<String> {
        if self.superuser {
            return Some(format!("role {} is a superuser (row-level security would not apply)", self.name));
        }
        if self.bypass_rls {
            return Some(format!("role {} has BYPASSRLS", self.name));
        }
        if self.owned_relations > 0 {
            return Some(format!(
                "role {} owns {} tables/views; the app role must own nothing",
                self.name, self.owned_relations
            ));
        }
        None
    }
}

pub async fn role_facts(conn: &mut PgConnection) -> Result<RoleFacts, sqlx::Error> {
    let (name, superuser, bypass_rls, create_role): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (owned_relations,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(RoleFacts { name, superuser, bypass_rls, create_role, owned_relations })
}

/// A transaction on global tables. Row-level security hides every tenant row from it.
pub struct GlobalTx {
    tx: Transaction<'static, Postgres>,
}

impl GlobalTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for GlobalTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for GlobalTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
