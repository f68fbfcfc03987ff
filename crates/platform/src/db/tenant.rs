//! The tenant door.
//!
//! [`OrgTx`] is the only way Rust code reaches tenant tables. It is opened with a principal:
//! a value of a type implementing [`TenantPrincipal`], which names the organization. Opening it
//! sets `app.org_id` with `set_config(…, true)` — local to the transaction — so a pooled
//! connection never carries one tenant's context into another request. Row-level security does
//! the rest: every tenant table's policy compares `organization_id` with that setting, and with
//! no setting no rows are visible.
//!
//! The platform doesn't know who may act in an organization; the application does. It
//! implements [`TenantPrincipal`] for exactly one type, its verified principal (with private
//! fields, made only by its verification functions), and uses `OrgTx<ThatPrincipal>` as its
//! transaction type; its repositories take that type, so a transaction opened with anything
//! else reaches none of them. The verification functions themselves need transactions with a
//! capability set (an API key's digest, an invitation token's…) before any principal exists:
//! they get them through [`GateTx`], which takes a [`GateKey`], and a [`GateKey`] is assumed by
//! name (`GateKey::unsafe_assume_access_layer`). The application's door test scans its sources:
//! the trait is implemented, and the key assumed, only in its access layer.
//!
//! The pool stays private to `platform::db` (E0616): no SQL runs on a raw pooled connection.
//!
//! ```compile_fail,E0616
//! async fn f(db: &clientflow_platform::db::Db) {
//!     let mut conn = db.pool.acquire().await.unwrap();
//!     sqlx::query("SELECT * FROM clients").execute(&mut *conn).await.unwrap();
//! }
//! ```
//!
//! The twin: the same query through [`GlobalTx`](super::GlobalTx) compiles, and sees zero rows
//! of `clients`, because it sets no tenant.
//!
//! ```no_run
//! async fn f(db: &clientflow_platform::db::Db) {
//!     let mut conn = db.global().await.unwrap();
//!     sqlx::query("SELECT * FROM clients").execute(&mut *conn).await.unwrap();
//! }
//! ```
//!
//! A gate key can't be made up (E0451): its field is private.
//!
//! ```compile_fail,E0451
//! use clientflow_platform::db::tenant::GateKey;
//! let _key = GateKey { _private: () };
//! ```
//!
//! The twin: assumed by name, as only the access layer does.
//!
//! ```no_run
//! use clientflow_platform::db::tenant::GateKey;
//! let _key = GateKey::unsafe_assume_access_layer();
//! ```

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};

use super::Db;
use super::region::{RegionId, unknown_region};
use crate::ids::{OrgId, UserId};

/// A value that may open its organization's transaction. Implemented by the application's
/// verified principal, and by nothing else (its door test checks).
pub trait TenantPrincipal: Clone + Send + Sync + 'static {
    fn org_id(&self) -> OrgId;
    /// The region whose database holds the organization's rows, as the directory said when the
    /// principal was verified: the only database [`OrgTx::begin`] opens for it.
    fn region(&self) -> RegionId;
}

/// A value that may open a transaction acting for one signed-in user across organizations
/// ([`UserTx`]). Implemented by the application's verified user, and by nothing else.
pub trait UserPrincipal {
    fn user_id(&self) -> UserId;
}

/// A transaction inside one organization.
pub struct OrgTx<P: TenantPrincipal> {
    /// Always present until the transaction is committed or rolled back (moved out then).
    tx: Option<Transaction<'static, Postgres>>,
    principal: P,
    /// Set when this transaction is a part of the request's own (see [`with_request_tx`]):
    /// its slot, and where this part began.
    request: Option<(RequestSlot, PartStart)>,
    /// The default region (the directory's): whether this transaction also reaches the
    /// directory's tables is `region() == home_region()`.
    home: RegionId,
    /// Nothing has been written in this transaction since it began (see
    /// [`OrgTx::with_nothing_written`]).
    nothing_written: bool,
    /// Whether PostgreSQL lets this transaction write (see [`OrgTx::finish`]).
    writes: Writes,
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writes {
    /// An ordinary transaction.
    #[default]
    Allowed,
    /// Begun `READ ONLY`: PostgreSQL refuses every write in it (a table, a sequence, a lock on a
    /// row), so it never holds anything to commit and ending it by rolling back loses nothing
    /// ([`OrgTx::finish`]). What a request of a safe method runs in.
    Refused,
}

impl Writes {
    /// The statement that begins a transaction of this kind.
    fn begin(self) -> &'static str {
        match self {
            Writes::Allowed => "BEGIN",
            Writes::Refused => "BEGIN READ ONLY",
        }
    }
}

/// Where a part of a request transaction began, to undo it back to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PartStart {
    /// A savepoint of that name.
    Savepoint(String),
    /// The beginning of the transaction, in which nothing had been written: undoing the part
    /// is beginning the transaction again, with the same tenant.
    TransactionStart,
}

tokio::task_local! {
    /// The request transaction of the task running a request, if its caller opened one.
    static REQUEST_TX: RequestSlot;
}

/// Where the request transaction waits between the `OrgTx`s that take part in it.
#[derive(Clone)]
struct RequestSlot {
    org_id: OrgId,
    state: std::sync::Arc<std::sync::Mutex<SlotState>>,
}

#[derive(Default)]
struct SlotState {
    tx: Option<Transaction<'static, Postgres>>,
    /// A part dropped without committing: where it began, to roll back to before the
    /// transaction is used again (a `Drop` can't run SQL).
    abandoned: Option<PartStart>,
    /// Names the savepoints.
    parts: u32,
    /// Nothing has been written in the transaction yet: no part has committed, and its opener
    /// wrote nothing. The next part then needs no savepoint (one round trip less).
    nothing_written: bool,
    /// Whether the transaction may write: undoing a part that began at its start begins it
    /// again as it was begun (a read-only transaction must not come back able to write).
    writes: Writes,
}

impl RequestSlot {
    fn new(org_id: OrgId, tx: Transaction<'static, Postgres>, nothing_written: bool, writes: Writes) -> Self {
        let state = SlotState { tx: Some(tx), nothing_written, writes, ..Default::default() };
        Self { org_id, state: std::sync::Arc::new(std::sync::Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writes(&self) -> Writes {
        self.lock().writes
    }

    /// The transaction (if it is here), what must be rolled back in it first, and where the
    /// next part begins: at the transaction's start while nothing has been written in it (an
    /// abandoned part that began there leaves nothing written either, once undone), else at a
    /// savepoint of its own.
    fn take(&self) -> Option<(Transaction<'static, Postgres>, Option<PartStart>, PartStart)> {
        let mut state = self.lock();
        let tx = state.tx.take()?;
        state.parts += 1;
        let start = if state.nothing_written {
            PartStart::TransactionStart
        } else {
            PartStart::Savepoint(format!("cf_part_{}", state.parts))
        };
        Some((tx, state.abandoned.take(), start))
    }

    /// The transaction back, after a part that `committed` (and may have written) or not.
    fn put(&self, tx: Transaction<'static, Postgres>, abandoned: Option<PartStart>, committed: bool) {
        let mut state = self.lock();
        state.tx = Some(tx);
        state.abandoned = abandoned;
        if committed {
            state.nothing_written = false;
        }
    }
}

/// Runs one statement without parameters (savepoints can't take any).
async fn statement(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::query(&sql).execute(conn).await?;
    Ok(())
}

/// Runs statements without parameters as one simple query (one round trip).
async fn statements(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    // A `&str` with no arguments goes as a simple query, several statements at once (as the
    // statement that begins a transaction with its settings does).
    sqlx::Executor::execute(conn, sql.as_str()).await?;
    Ok(())
}

/// Rolls a request transaction back to where a part began (a part that was dropped or rolled
/// back). At the transaction's start, nothing had been written: the transaction is rolled back
/// and begun again on the same connection, as it was begun (`writes`) and with the tenant set
/// as it was (one simple query; the transaction stays open for what comes next, and the tenant
/// is an id, written into it).
async fn undo(
    tx: &mut Transaction<'static, Postgres>,
    start: &PartStart,
    org_id: OrgId,
    writes: Writes,
) -> Result<(), sqlx::Error> {
    match start {
        PartStart::Savepoint(savepoint) => {
            statement(tx, format!("ROLLBACK TO SAVEPOINT {savepoint}")).await?;
            statement(tx, format!("RELEASE SAVEPOINT {savepoint}")).await
        }
        PartStart::TransactionStart => {
            let begin = writes.begin();
            statements(tx, format!("ROLLBACK; {begin}; SELECT set_config('{TENANT_SETTING}', '{org_id}', true)")).await
        }
    }
}

/// Runs `work` with `tx` as the request's transaction.
///
/// Inside `work`, [`OrgTx::begin`] for the same organization takes part in `tx` instead of
/// opening a transaction of its own: it begins a savepoint. Its [`OrgTx::commit`] keeps the
/// part's work, to commit with the request; its rollback, or dropping it
/// (as `?` does on an error), undoes exactly its part. While nothing has been written in `tx`
/// (it was declared so with [`OrgTx::with_nothing_written`], and no part has committed yet), a
/// part begins without a savepoint, one round trip less: undoing it is beginning the
/// transaction again on the same connection with the same tenant, which loses nothing. So
/// each service call is as atomic as it was on its own, and when `work` is done the caller
/// gets the transaction back to add what it must and commit once: the request's effects, and
/// the caller's record of them, become durable together or not at all, in one database
/// transaction. An `Idempotency-Key`'s stored answer is written this way (`api::idempotency`),
/// and every organization page and API request is one transaction (the route guard's).
///
/// An `OrgTx` opened while another holds the request transaction (nested), or for another
/// organization, is an ordinary transaction of its own. [`abandon_request_tx`] rolls the whole
/// request transaction back (the caller then gets `Ok(None)`). An `Err` means the transaction
/// can't be trusted any more (a dropped part could not be undone): nothing of it is committed,
/// and the caller must not answer as if it were.
pub async fn with_request_tx<P: TenantPrincipal, F: std::future::Future>(
    tx: OrgTx<P>,
    work: F,
) -> (F::Output, Result<Option<OrgTx<P>>, sqlx::Error>) {
    let (home, nothing_written, writes) = (tx.home, tx.nothing_written, tx.writes);
    let (tx, principal) = tx.into_parts();
    let org_id = principal.org_id();
    let slot = RequestSlot::new(org_id, tx, nothing_written, writes);
    let output = REQUEST_TX.scope(slot.clone(), work).await;
    let back = match slot.take() {
        Some((mut tx, abandoned, _)) => match abandoned {
            // Dropping `tx` on failure rolls everything back.
            Some(start) => undo(&mut tx, &start, org_id, writes).await.map(|()| Some(tx)),
            None => Ok(Some(tx)),
        },
        None => Ok(None),
    };
    let nothing_written = slot.lock().nothing_written;
    (
        output,
        back.map(|tx| tx.map(|tx| OrgTx { tx: Some(tx), principal, request: None, home, nothing_written, writes })),
    )
}

/// Rolls back the whole transaction of the request this task runs, if there is one (every
/// part of it, committed or not): the request must leave no trace.
pub async fn abandon_request_tx() {
    let taken = REQUEST_TX.try_with(|slot| slot.take()).ok().flatten();
    if let Some((tx, _, _)) = taken
        && let Err(e) = tx.rollback().await
    {
        tracing::warn!(error = %e, "rolling back an abandoned request");
    }
}

impl<P: TenantPrincipal> OrgTx<P> {
    pub async fn begin(db: &Db, principal: &P) -> Result<Self, sqlx::Error> {
        let org_id = principal.org_id();
        let joined = REQUEST_TX
            .try_with(|slot| (slot.org_id == org_id).then(|| slot.take().map(|taken| (slot.clone(), taken))))
            .ok()
            .flatten()
            .flatten();
        if let Some((slot, (mut tx, abandoned, start))) = joined {
            // The tenant was set when the request transaction was opened, and so was whether it
            // may write.
            let writes = slot.writes();
            // An error leaves the request transaction broken: it is gone (rolled back as it drops).
            if let Some(earlier) = &abandoned {
                undo(&mut tx, earlier, org_id, writes).await?;
            }
            if let PartStart::Savepoint(savepoint) = &start {
                statement(&mut tx, format!("SAVEPOINT {savepoint}")).await?;
            }
            return Ok(Self {
                tx: Some(tx),
                principal: principal.clone(),
                request: Some((slot, start)),
                home: db.home_region(),
                nothing_written: false,
                writes,
            });
        }
        // The organization's own region, whichever region's handle the caller holds.
        let db = db.in_region(principal.region()).ok_or_else(|| unknown_region(principal.region()))?;
        let tx = db.begin_with_setting(TENANT_SETTING, &org_id.to_string()).await?;
        Ok(Self::of_its_own(tx, principal.clone(), db.home_region(), Writes::Allowed))
    }

    /// A transaction of its own (never a part of a request's, unlike [`OrgTx::begin`]) that
    /// begins only if `precondition`, one statement run just before its `BEGIN` in the same
    /// round trip, succeeds. The precondition's error is returned as it is, and leaves the
    /// connection outside any transaction: statements before a `BEGIN` in one simple query
    /// are an implicit transaction, which the error rolls back, and the `BEGIN` never runs.
    /// For a check that decides whether a kept principal still stands (an API key's access
    /// epoch), at no round trip of its own. The precondition is written into the query: its
    /// caller builds it from values it controls, never from request input.
    /// `writes` says whether the transaction may write.
    pub async fn begin_if(db: &Db, principal: &P, precondition: &str, writes: Writes) -> Result<Self, sqlx::Error> {
        debug_assert!(!precondition.contains(';'), "one statement: {precondition}");
        Self::of_its_own_begun_by(db, principal, &format!("{precondition}; {}", writes.begin()), writes).await
    }

    /// A transaction of its own in its principal's region, begun by `begin` (the `BEGIN` and
    /// what goes with it, which `writes` describes) and the tenant, in one simple query.
    async fn of_its_own_begun_by(db: &Db, principal: &P, begin: &str, writes: Writes) -> Result<Self, sqlx::Error> {
        let db = db.in_region(principal.region()).ok_or_else(|| unknown_region(principal.region()))?;
        let tx = db
            .begin_with(format!("{begin}; SELECT set_config('{TENANT_SETTING}', '{}', true)", principal.org_id()))
            .await?;
        Ok(Self::of_its_own(tx, principal.clone(), db.home_region(), writes))
    }

    /// A transaction of its own (not a part of a request's), as just begun (`writes` as it was).
    fn of_its_own(tx: Transaction<'static, Postgres>, principal: P, home: RegionId, writes: Writes) -> Self {
        Self { tx: Some(tx), principal, request: None, home, nothing_written: false, writes }
    }

    /// The region this transaction runs in (its principal's).
    pub fn region(&self) -> RegionId {
        self.principal.region()
    }

    /// Whether this transaction runs in the directory's database (the default region), where
    /// the global directory can be written in the same transaction.
    pub fn in_directory_region(&self) -> bool {
        self.principal.region() == self.home
    }

    /// A read-only transaction that sees one snapshot of the organization from its first query
    /// to its end (`REPEATABLE READ`): what a consistent export reads while others write.
    /// Never a part of a request transaction.
    pub async fn begin_snapshot(db: &Db, principal: &P) -> Result<Self, sqlx::Error> {
        Self::of_its_own_begun_by(db, principal, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", Writes::Refused)
            .await
    }

    /// Declares that nothing has been written in this transaction since it began: it has only
    /// read, and set its settings (the tenant), and holds no lock it must keep (a row lock
    /// takes a transaction id, which the check below sees; an advisory lock doesn't). Made the
    /// request transaction, its first part then needs no savepoint: undoing that part is
    /// beginning the transaction again with the same tenant ([`with_request_tx`]). A wrong
    /// claim would let undoing a part take earlier writes with it, so debug builds (every test)
    /// check it against the database.
    pub async fn with_nothing_written(mut self) -> Result<Self, sqlx::Error> {
        if cfg!(debug_assertions) {
            let written: bool = sqlx::query_scalar("SELECT txid_current_if_assigned() IS NOT NULL")
                .fetch_one(&mut **self.tx.as_mut().expect("an open transaction"))
                .await?;
            assert!(!written, "with_nothing_written on a transaction that has written");
        }
        self.nothing_written = true;
        Ok(self)
    }

    pub fn org_id(&self) -> OrgId {
        self.principal.org_id()
    }

    pub fn principal(&self) -> &P {
        &self.principal
    }

    fn into_parts(mut self) -> (Transaction<'static, Postgres>, P) {
        debug_assert!(self.request.is_none(), "a request transaction can't be nested");
        let tx = self.tx.take().expect("an open transaction");
        self.request = None;
        (tx, self.principal.clone())
    }

    /// Commits; a part of a request transaction is kept for the request to commit.
    ///
    /// The part's savepoint is left in place rather than released: the request's `COMMIT`
    /// commits it with everything else, parts run one after another so only the latest
    /// savepoint is ever rolled back to, and releasing it would cost a round trip per part
    /// without freeing anything (its subtransaction id, if it wrote, stays either way).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let tx = self.tx.take().expect("an open transaction");
        match self.request.take() {
            Some((slot, _start)) => {
                slot.put(tx, None, true);
                Ok(())
            }
            None => tx.commit().await,
        }
    }

    /// Ends the transaction as [`OrgTx::commit`] does, unless it was begun `READ ONLY`
    /// ([`Writes::Refused`]) and is one of its own. Such a transaction holds nothing to commit,
    /// so it is rolled back instead, without waiting for it: its `ROLLBACK` goes out with the
    /// check the pool makes of a connection as it takes it back, in that check's round trip
    /// rather than one of its own, and the pool hands the connection out again only once both
    /// are answered. How a read-only request ends (`routes::in_request_tx`).
    pub async fn finish(mut self) -> Result<(), sqlx::Error> {
        if self.writes == Writes::Refused && self.request.is_none() {
            // Dropping a sqlx transaction queues its `ROLLBACK` on the connection.
            drop(self.tx.take());
            return Ok(());
        }
        self.commit().await
    }

    /// Whether this transaction may write.
    pub fn writes(&self) -> Writes {
        self.writes
    }

    /// Rolls back; a part of a request transaction undoes only its own work.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let mut tx = self.tx.take().expect("an open transaction");
        match self.request.take() {
            Some((slot, start)) => {
                undo(&mut tx, &start, self.principal.org_id(), self.writes).await?;
                slot.put(tx, None, false);
                Ok(())
            }
            None => tx.rollback().await,
        }
    }
}

impl<P: TenantPrincipal> Drop for OrgTx<P> {
    /// A part of a request transaction dropped without commit or rollback is undone before the
    /// transaction is used again; an ordinary transaction rolls back as it drops.
    fn drop(&mut self) {
        if let (Some(tx), Some((slot, start))) = (self.tx.take(), self.request.take()) {
            slot.put(tx, Some(start), false);
        }
    }
}

impl<P: TenantPrincipal> Deref for OrgTx<P> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.tx.as_ref().expect("an open transaction")
    }
}

impl<P: TenantPrincipal> DerefMut for OrgTx<P> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.tx.as_mut().expect("an open transaction")
    }
}

/// A transaction acting for one signed-in user across organizations: it sees that user's own
/// memberships (and the organizations they belong to) and no tenant data.
pub struct UserTx {
    tx: Transaction<'static, Postgres>,
    user_id: UserId,
}

impl UserTx {
    pub async fn begin(db: &Db, user: &impl UserPrincipal) -> Result<Self, sqlx::Error> {
        let user_id = user.user_id();
        let tx = db.begin_with_setting(Capability::User.setting(), &user_id.to_string()).await?;
        Ok(Self { tx, user_id })
    }

    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for UserTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for UserTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// The settings the row-level security policies read, besides the tenant: each one makes a
/// narrow set of rows visible to whoever presents the right value (migrations 0001–0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `app.user_id`: the user's own memberships and organizations.
    User,
    /// `app.api_key_hash`: the one API key with this digest.
    ApiKeyHash,
    /// `app.invitation_token`: the one open invitation with this token's digest.
    InvitationToken,
    /// `app.contact_form_slug`: the one organization with this slug, while its form is on.
    ContactFormSlug,
    /// `app.stripe_customer`: the one billing account of this Stripe customer (migration 0031).
    StripeCustomer,
    /// `app.invitee_email`: the open invitations to this (verified) email address, and the
    /// names of their organizations (migration 0026).
    InviteeEmail,
}

impl Capability {
    fn setting(self) -> &'static str {
        match self {
            Capability::User => "app.user_id",
            Capability::ApiKeyHash => "app.api_key_hash",
            Capability::InvitationToken => "app.invitation_token",
            Capability::ContactFormSlug => "app.contact_form_slug",
            Capability::StripeCustomer => "app.stripe_customer",
            Capability::InviteeEmail => "app.invitee_email",
        }
    }
}

/// The access layer's key to [`GateTx`]: assumed by name, in one place (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct GateKey {
    _private: (),
}

impl GateKey {
    /// Asserts that the code running is the application's access layer, which verifies
    /// principals, and hands out the key to capability transactions.
    ///
    /// Not `unsafe` in Rust's memory sense: the prefix marks a way past the door's types, so
    /// that every use stands out in review (and the application's door test fails on any use
    /// outside its access layer).
    pub fn unsafe_assume_access_layer() -> Self {
        Self { _private: () }
    }
}

/// A transaction that sets capabilities and tenants itself: what verifying a principal needs
/// before there is one (look up an API key by its digest, then read inside its organization).
pub struct GateTx {
    tx: Transaction<'static, Postgres>,
    /// The organization [`GateTx::switch_to_tenant`] (or [`GateTx::begin_in_tenant_of`], as
    /// [`GateTx::tenant_reported`] confirmed) left as the only setting, until another setting
    /// changes: [`GateTx::into_org_tx`] then has nothing left to set. (The access layer
    /// changes settings only through these methods, never by hand through the connection.)
    switched: Option<OrgId>,
    /// The region whose database this transaction runs in: only a principal of that region
    /// continues in it ([`GateTx::into_org_tx`]).
    region: RegionId,
    home: RegionId,
    /// Begun by [`GateTx::begin_in_tenant_of`] with no setting changed since: the tenant is the
    /// only setting, whichever organization it is ([`GateTx::tenant_reported`] learns which).
    resolved: bool,
}

impl GateTx {
    /// A capability transaction in `db`'s region.
    pub async fn begin(db: &Db, _key: &GateKey) -> Result<Self, sqlx::Error> {
        Ok(Self { tx: db.begin().await?, switched: None, region: db.region(), home: db.home_region(), resolved: false })
    }

    /// The region this transaction runs in.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// [`GateTx::begin`] with `capability` already set, in the same round trip.
    pub async fn begin_with(db: &Db, _key: &GateKey, capability: Capability, value: &str) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: db.begin_with_setting(capability.setting(), value).await?,
            switched: None,
            region: db.region(),
            home: db.home_region(),
            resolved: false,
        })
    }

    /// A transaction already inside the organization a capability leads to, in one round trip
    /// (one simple query): `BEGIN`, `capability` set to `value`, the tenant set to the
    /// organization that `tenant_of` names — a query of at most one `uuid`, run while the
    /// capability is set, so it sees exactly what the capability makes visible — and the
    /// capability cleared again, each a statement of its own in that order. No row is found: no
    /// tenant (the empty setting), and the transaction sees nothing of any organization.
    ///
    /// Once the caller has read, in its first query, a row that only that organization's tenant
    /// could see together with `current_setting('app.org_id', true)`, it tells
    /// [`GateTx::tenant_reported`], and [`GateTx::into_org_tx`] has nothing left to set.
    ///
    /// The value is written into the query, so only values made of ASCII letters, digits and
    /// `-` (ids, digests) take the single round trip; any other value is bound as a parameter,
    /// in statements of their own.
    pub async fn begin_in_tenant_of(
        db: &Db,
        key: &GateKey,
        capability: Capability,
        value: &str,
        tenant_of: &'static str,
    ) -> Result<Self, sqlx::Error> {
        let setting = capability.setting();
        let resolve = format!("SELECT set_config('{TENANT_SETTING}', coalesce(({tenant_of})::text, ''), true)");
        let clear = format!("SELECT set_config('{setting}', '', true)");
        let mut gate = if value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            let tx = db
                .begin_with(format!("BEGIN; SELECT set_config('{setting}', '{value}', true); {resolve}; {clear}"))
                .await?;
            Self { tx, switched: None, region: db.region(), home: db.home_region(), resolved: true }
        } else {
            let mut gate = Self::begin_with(db, key, capability, value).await?;
            statement(&mut gate.tx, resolve).await?;
            statement(&mut gate.tx, clear).await?;
            gate
        };
        gate.resolved = true;
        Ok(gate)
    }

    /// The tenant [`GateTx::begin_in_tenant_of`] set, as the transaction reported it
    /// (`current_setting('app.org_id', true)`) in the caller's first query: when that is
    /// `org_id` and nothing was set since, `org_id` is the only setting of the transaction.
    /// Anything else changes nothing ([`GateTx::into_org_tx`] then sets the tenant itself).
    pub fn tenant_reported(&mut self, org_id: OrgId, reported: Option<&str>) {
        if self.resolved && reported.is_some_and(|r| r == org_id.to_string()) {
            self.switched = Some(org_id);
        }
    }

    /// Sets a capability for the rest of the transaction (an empty value clears it).
    pub async fn set(&mut self, capability: Capability, value: &str) -> Result<(), sqlx::Error> {
        self.switched = None;
        self.resolved = false;
        set_capability(&mut self.tx, capability, value).await
    }

    /// Makes `org_id` the tenant for the rest of the transaction.
    pub async fn set_tenant(&mut self, org_id: OrgId) -> Result<(), sqlx::Error> {
        self.switched = None;
        self.resolved = false;
        set_tenant(&mut self.tx, org_id).await
    }

    /// Clears every capability and makes `org_id` the tenant, in one statement: once a
    /// capability has found what it was for (an API key's row), the rest happens inside that
    /// key's organization and nothing else.
    pub async fn switch_to_tenant(&mut self, org_id: OrgId) -> Result<(), sqlx::Error> {
        self.switched = None;
        self.resolved = false;
        only_tenant(&mut self.tx, org_id).await?;
        self.switched = Some(org_id);
        Ok(())
    }

    /// Clears the tenant.
    pub async fn clear_tenant(&mut self) -> Result<(), sqlx::Error> {
        self.switched = None;
        self.resolved = false;
        tenant_setting(&mut self.tx, None).await
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Turns this transaction into `principal`'s organization transaction (the tenant set to
    /// its organization, every capability cleared): a principal verified inside it goes on in
    /// the same transaction, so a request's verification and its work can be one transaction.
    /// A principal of another region is refused: its rows aren't in this database.
    pub async fn into_org_tx<P: TenantPrincipal>(mut self, principal: P) -> Result<OrgTx<P>, sqlx::Error> {
        if principal.region() != self.region {
            return Err(sqlx::Error::Protocol(format!(
                "a principal of region {} can't continue in a transaction of region {}",
                principal.region(),
                self.region
            )));
        }
        if self.switched != Some(principal.org_id()) {
            only_tenant(&mut self.tx, principal.org_id()).await?;
        }
        Ok(OrgTx::of_its_own(self.tx, principal, self.home, Writes::Allowed))
    }
}

/// A pooled connection outside any transaction, for the access layer's single statements on
/// tables no row-level security guards and no capability opens (with more than one region, the
/// session and its directory entry: `sessions`, `users`, `organization_directory`). Each
/// statement on it is a transaction of its own (autocommit), so such a read costs no `BEGIN`
/// and no `COMMIT`, and no transaction of the directory's database stays open while the request
/// goes on in another region's. It reads as the same role a [`GateTx`] does (the app role), with
/// no tenant and no capability set: a `set_config(…, true)` made in a statement on it lasts only
/// for that statement, so nothing carries over to the connection's next user. Taken with the gate
/// key, like a [`GateTx`]; [`GateConn::begin_with`] goes on in a transaction on the same
/// connection.
pub struct GateConn {
    conn: sqlx::pool::PoolConnection<Postgres>,
    region: RegionId,
    home: RegionId,
}

impl GateConn {
    /// A connection of `db`'s region.
    pub async fn acquire(db: &Db, _key: &GateKey) -> Result<Self, sqlx::Error> {
        Ok(Self { conn: db.acquire().await?, region: db.region(), home: db.home_region() })
    }

    /// The region this connection's database belongs to.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// A [`GateTx`] on this same connection, begun with `capability` set (one round trip, as
    /// [`GateTx::begin_with`]).
    pub async fn begin_with(self, capability: Capability, value: &str) -> Result<GateTx, sqlx::Error> {
        let tx = Db::begin_on_with_setting(self.conn, capability.setting(), value).await?;
        Ok(GateTx { tx, switched: None, region: self.region, home: self.home, resolved: false })
    }
}

impl Deref for GateConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for GateConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Deref for GateTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for GateTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Sets the tenant on a connection inside a transaction. Code outside the platform reaches this
/// only through [`GateTx::set_tenant`] (access layer) or by writing account events with
/// [`set_tenant_in`].
async fn set_tenant(conn: &mut PgConnection, org_id: OrgId) -> Result<(), sqlx::Error> {
    tenant_setting(conn, Some(org_id)).await
}

/// The setting row-level security reads the tenant from.
const TENANT_SETTING: &str = "app.org_id";

/// The one statement that sets or clears `app.org_id` (apart from the `BEGIN` that opens an
/// [`OrgTx`] with it, [`Db::begin_with_setting`]); `true`: local to the transaction, so a
/// pooled connection never carries a tenant into its next transaction.
async fn tenant_setting(conn: &mut PgConnection, org_id: Option<OrgId>) -> Result<(), sqlx::Error> {
    let value = org_id.map(|o| o.to_string()).unwrap_or_default();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(value).execute(conn).await?;
    Ok(())
}

/// The tenant of a connection the access layer holds inside its own transaction (an account
/// event written to each of a user's organizations, in the caller's transaction).
pub async fn set_tenant_in(_key: &GateKey, conn: &mut PgConnection, org_id: Option<OrgId>) -> Result<(), sqlx::Error> {
    tenant_setting(conn, org_id).await
}

/// Every capability cleared and `org_id` the tenant, in one round trip.
async fn only_tenant(conn: &mut PgConnection, org_id: OrgId) -> Result<(), sqlx::Error> {
    // Built once: this runs on every organization page and API request.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        const CLEARED: [Capability; 5] = [
            Capability::User,
            Capability::ApiKeyHash,
            Capability::InvitationToken,
            Capability::ContactFormSlug,
            Capability::InviteeEmail,
        ];
        let mut sql = String::from("SELECT set_config('app.org_id', $1, true)");
        for capability in CLEARED {
            sql.push_str(&format!(", set_config('{}', '', true)", capability.setting()));
        }
        sql
    });
    sqlx::query(SQL.as_str()).bind(org_id.to_string()).execute(conn).await?;
    Ok(())
}

/// Sets a capability on a connection inside the access layer's own transaction.
pub async fn set_capability_in(
    _key: &GateKey,
    conn: &mut PgConnection,
    capability: Capability,
    value: &str,
) -> Result<(), sqlx::Error> {
    set_capability(conn, capability, value).await
}

async fn set_capability(conn: &mut PgConnection, capability: Capability, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, $2, true)").bind(capability.setting()).bind(value).execute(conn).await?;
    Ok(())
}
