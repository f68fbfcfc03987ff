//! The verified principal: who is acting inside one organization, with which role and
//! permissions. Its fields are visible only inside the access layer, whose verification
//! functions (one module per kind of principal) are the only places one is made; it is the one
//! type that opens the tenant door ([`OrgTx`]).
//!
//! A principal can't be made up elsewhere: its fields are private (E0451), even when every one
//! of them is given a valid value.
//!
//! ```compile_fail,E0451
//! use clientflow::access::{Actor, OrgPrincipal};
//! use clientflow::platform::ids::OrgId;
//! use clientflow::access::role::{PermissionSet, Role};
//! let _p = OrgPrincipal {
//!     org_id: OrgId::new(),
//!     actor: Actor::System("made up".into()),
//!     role: Role::Owner,
//!     client_id: None,
//!     permissions: PermissionSet::default(),
//!     scope_user: None,
//! };
//! ```
//!
//! The twin: the same paths and values are all public (the field names are the ones the access
//! layer's own constructors use); only the struct literal is refused.
//!
//! ```no_run
//! use clientflow::access::{Actor, OrgPrincipal};
//! use clientflow::platform::ids::{ClientId, OrgId, UserId};
//! use clientflow::access::role::{PermissionSet, Role};
//! let _values: (OrgId, Actor, Role, Option<ClientId>, PermissionSet, Option<UserId>) =
//!     (OrgId::new(), Actor::System("made up".into()), Role::Owner, None, PermissionSet::default(), None);
//! let _type: Option<OrgPrincipal> = None;
//! ```
//!
//! Nor can the operator's authority, the one value that opens any organization as its Owner,
//! be made up (E0451):
//!
//! ```compile_fail,E0451
//! use clientflow::access::{self, OperatorAuthority};
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let authority = OperatorAuthority { _private: () };
//!     let _ = access::operator(db, &authority, org, "reason").await;
//! }
//! ```
//!
//! and without it there is no way to call [`operator`] (E0061, wrong number of arguments):
//!
//! ```compile_fail,E0061
//! use clientflow::access;
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let _ = access::operator(db, org, "reason").await;
//! }
//! ```
//!
//! The twin: the operator's authority assumed by name. In the application only the CLI's entry
//! point does this; a test scans the sources for it.
//!
//! ```no_run
//! use clientflow::access::{self, OperatorAuthority};
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let authority = OperatorAuthority::unsafe_assume_cli_operator();
//!     let _ = access::operator(db, &authority, org, "reason").await;
//! }
//! ```
//!
//! Tenant repositories take `&mut OrgTx`, not a global transaction (E0308, mismatched types):
//!
//! ```compile_fail,E0308
//! async fn f(db: &clientflow::platform::db::Db) {
//!     let mut tx = db.global().await.unwrap();
//!     clientflow::work::clients::repo::list(&mut tx, 10).await.unwrap();
//! }
//! ```
//!
//! The twin: the same call with a verified principal's `OrgTx` compiles.
//!
//! ```no_run
//! async fn f(db: &clientflow::platform::db::Db, p: &clientflow::access::OrgPrincipal) {
//!     let mut tx = clientflow::access::OrgTx::begin(db, p).await.unwrap();
//!     clientflow::work::clients::repo::list(&mut tx, 10).await.unwrap();
//! }
//! ```

use sqlx::PgConnection;

use super::role::{Permission, PermissionSet, Role, default_permissions, effective_permissions};
use super::user::AuthenticatedUser;
pub use crate::audit::Actor;
use crate::platform::db::tenant::TenantPrincipal;
use crate::platform::db::{Db, RegionId};
use crate::platform::ids::{ClientId, OrgId, UserId};

/// The application's transaction inside one organization: the tenant door opened by a verified
/// principal.
pub type OrgTx = crate::platform::db::tenant::OrgTx<OrgPrincipal>;

/// A principal verified to act inside one organization with one role.
#[derive(Debug, Clone)]
pub struct OrgPrincipal {
    pub(super) org_id: OrgId,
    pub(super) actor: Actor,
    pub(super) role: Role,
    /// For the Client role: the one client record this user may see.
    pub(super) client_id: Option<ClientId>,
    /// Effective permissions (role, organization customization, member overrides).
    pub(super) permissions: PermissionSet,
    /// For API keys: the user who created the key (a Member-role key sees their projects).
    pub(super) scope_user: Option<UserId>,
    /// The region whose database holds the organization (from the directory): the only one
    /// its tenant door opens.
    pub(super) region: RegionId,
}

/// The projects a principal may see and work in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectScope {
    /// Every project of the organization (Owner, Admin, Manager).
    All,
    /// Projects this user is a member of.
    MemberOf(UserId),
    /// The client portal: projects of this client that are visible to the client.
    Client(ClientId),
    Nothing,
}

impl OrgPrincipal {
    pub fn org_id(&self) -> OrgId {
        self.org_id
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn client_id(&self) -> Option<ClientId> {
        self.client_id
    }

    pub fn user_id(&self) -> Option<UserId> {
        match &self.actor {
            Actor::User(id) => Some(*id),
            Actor::ApiKey(_) | Actor::System(_) => None,
        }
    }

    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }

    /// Which projects this principal works in. Resource-level rules live in the queries
    /// (`work::scope_sql`), not in checks after fetching.
    pub fn project_scope(&self) -> ProjectScope {
        match self.role {
            Role::Owner | Role::Admin | Role::Manager => ProjectScope::All,
            Role::Member => match (&self.actor, self.scope_user) {
                (Actor::User(id), _) => ProjectScope::MemberOf(*id),
                // A Member-role API key works in its creator's projects.
                (_, Some(id)) => ProjectScope::MemberOf(id),
                (_, None) => ProjectScope::Nothing,
            },
            Role::Client => match self.client_id {
                Some(c) => ProjectScope::Client(c),
                None => ProjectScope::Nothing,
            },
        }
    }

    /// The person this principal acts for: the user themselves, or the member who created an
    /// API key (a key never holds more than that person's role). Records that need a person
    /// (time entries, project membership of a new project) and "one's own" rules use this.
    pub fn on_behalf_of(&self) -> Option<UserId> {
        match &self.actor {
            Actor::User(id) => Some(*id),
            Actor::ApiKey(_) => self.scope_user,
            Actor::System(_) => None,
        }
    }

    pub fn api_key_id(&self) -> Option<uuid::Uuid> {
        match &self.actor {
            Actor::ApiKey(id) => Some(*id),
            _ => None,
        }
    }

    pub fn permissions(&self) -> PermissionSet {
        self.permissions
    }

    /// The region the organization's data lives in.
    pub fn region(&self) -> RegionId {
        self.region
    }
}

impl TenantPrincipal for OrgPrincipal {
    fn org_id(&self) -> OrgId {
        self.org_id
    }

    fn region(&self) -> RegionId {
        self.region
    }
}

impl crate::audit::Acting for OrgPrincipal {
    fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// Loads the organization's customization of `role` and the member's overrides (inside a
/// transaction whose tenant is already set).
pub(super) async fn load_permissions(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    role: Role,
) -> Result<PermissionSet, sqlx::Error> {
    if !super::role::customizable(role) {
        return Ok(default_permissions(role));
    }
    let parse = |rows: Vec<(String, bool)>| -> Vec<(Permission, bool)> {
        rows.into_iter().filter_map(|(p, g)| p.parse().ok().map(|p| (p, g))).collect()
    };
    let role_rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT permission, granted FROM role_permissions WHERE organization_id = $1 AND role = $2")
            .bind(org_id)
            .bind(role)
            .fetch_all(&mut *conn)
            .await?;
    let member_rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT permission, granted FROM member_permissions WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(effective_permissions(role, &parse(role_rows), &parse(member_rows)))
}

/// The authority of this installation's operator: a person on the server running the
/// `clientflow` command line with the server's own database credentials.
///
/// Holding one lets code open any organization as its Owner ([`operator`],
/// [`NewOrgCreator::Operator`]), bypassing every check a request goes through. It has a private
/// field, so the only way to get one is [`OperatorAuthority::unsafe_assume_cli_operator`].
#[derive(Debug, Clone)]
pub struct OperatorAuthority {
    _private: (),
}

impl OperatorAuthority {
    /// Asserts that the code running is the operator's command line, and hands out the
    /// operator's authority.
    ///
    /// Not `unsafe` in Rust's memory sense: the prefix marks a bypass of the tenant door's
    /// authorization, so that every use stands out in review. The application calls it in one
    /// place, the CLI's entry point (`cli.rs`); tests and benchmarks call it to seed data. A test
    /// (`it::door::only_the_cli_assumes_the_operator_authority`) scans `crates/app/src` and
    /// fails when it appears anywhere else, so a request handler can never hold one.
    pub fn unsafe_assume_cli_operator() -> Self {
        Self { _private: () }
    }
}

/// The operator of this installation acting on an organization from the command line. The
/// CLI runs on the server with the server's own credentials; its actions are audited under a
/// system actor. Returns `None` when the organization doesn't exist.
pub async fn operator(
    db: &Db,
    _authority: &OperatorAuthority,
    org_id: OrgId,
    reason: &str,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System(format!("operator: {reason}")),
        role: Role::Owner,
        client_id: None,
        permissions: default_permissions(Role::Owner),
        scope_user: None,
        region: super::directory::region_of(db, org_id).await?,
    };
    if_exists(db, principal).await
}

/// The operator acting on an organization's copy in a region the directory doesn't (yet, or
/// any more) name for it: moving an organization between regions (`clientflow org move`)
/// writes its "moved" event in the new region before the directory switches, and reads what is
/// left in the old one. Returns `None` when the organization has no row in that region.
pub async fn operator_in_region(
    db: &Db,
    _authority: &OperatorAuthority,
    org_id: OrgId,
    region: RegionId,
    reason: &str,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System(format!("operator: {reason}")),
        role: Role::Owner,
        client_id: None,
        permissions: default_permissions(Role::Owner),
        scope_user: None,
        region,
    };
    if_exists(db, principal).await
}

/// The principal, if its organization exists (looked up through its own door).
pub(super) async fn if_exists(db: &Db, principal: OrgPrincipal) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = OrgTx::begin(db, &principal).await?;
    let exists: Option<(OrgId,)> = sqlx::query_as("SELECT id FROM organizations WHERE id = $1")
        .bind(principal.org_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(exists.map(|_| principal))
}

/// A system principal of the server's own scheduled work, holding no permission at all: it can
/// open the organization's transaction and nothing a permission check guards. The rounds run
/// region by region, so the organization is in `db`'s region. `None` when the organization
/// doesn't exist.
async fn system_without_permissions(db: &Db, org_id: OrgId, name: &str) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System(name.into()),
        role: Role::Member,
        client_id: None,
        permissions: PermissionSet::of(&[]),
        scope_user: None,
        region: db.region(),
    };
    if_exists(db, principal).await
}

/// The server's own scheduled audit maintenance (signing quiet chain heads,
/// `audit::chain::sign_due_heads`): a system principal holding no permission at all. It can
/// open the organization's transaction, which is all signing a head needs, and nothing a
/// permission check guards. Returns `None` when the organization doesn't exist.
pub async fn audit_maintenance(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    system_without_permissions(db, org_id, "audit maintenance").await
}

/// The server's own scheduled notification work (mailing waiting notifications with each
/// person's preference as it is at send time, the daily digest): a system principal holding no
/// permission at all. It opens the organization's transaction and reads and writes through it;
/// who receives what is decided by the notification and digest code. Returns `None` when the
/// organization doesn't exist.
pub async fn scheduled_notifier(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    system_without_permissions(db, org_id, "scheduled notifications").await
}

/// The server's own repeating of invoices (`work::repeats`): on a repeat's day it copies the
/// repeated invoice, sends the copy and mails it when the repeat says so. A system principal
/// holding the invoice permissions that takes and nothing else; what is copied, and when, was
/// decided by the person who set the repeat up (who needed those permissions to do it).
/// Returns `None` when the organization doesn't exist.
pub async fn scheduled_invoicing(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("repeating invoices".into()),
        role: Role::Member,
        client_id: None,
        permissions: PermissionSet::of(&[
            Permission::InvoicesRead,
            Permission::InvoicesCreate,
            Permission::InvoicesUpdate,
        ]),
        scope_user: None,
        region: db.region(),
    };
    if_exists(db, principal).await
}

/// The mail worker reading (and, once sent, removing) the files attached to a queued message
/// (`mail::outbox`, an invoice's PDF): a system principal holding no permission at all, like
/// [`audit_maintenance`]. Returns `None` when the organization doesn't exist.
pub async fn mail_delivery(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    system_without_permissions(db, org_id, "mail delivery").await
}

/// The server's own re-sealing of an organization's values under its newest data key
/// (`privacy::keys`): a system principal holding no permission at all, like
/// [`audit_maintenance`]. Returns `None` when the organization doesn't exist.
pub async fn key_maintenance(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    system_without_permissions(db, org_id, "key maintenance").await
}

/// Opens the one transaction that imports an exported organization (`clientflow org import`):
/// its tenant is the archive's organization id, which must not exist in this installation yet
/// (the import refuses otherwise, before writing anything).
pub async fn begin_import(db: &Db, _authority: &OperatorAuthority, org_id: OrgId) -> Result<OrgTx, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("operator: org import".into()),
        role: Role::Owner,
        client_id: None,
        permissions: default_permissions(Role::Owner),
        scope_user: None,
        // Imported into `db`'s region (the default region from the command line).
        region: db.region(),
    };
    OrgTx::begin(db, &principal).await
}

/// Who creates a new organization.
pub enum NewOrgCreator<'a> {
    User(&'a AuthenticatedUser),
    /// The operator's command line, with the reason recorded as the actor.
    Operator(&'a OperatorAuthority, &'a str),
}

/// Opens the transaction that creates a new organization: its tenant is the fresh id,
/// and the creator becomes its Owner in the same transaction. The organization lives in `db`'s
/// region (`db.in_region(chosen)` for another one than the default).
pub async fn begin_new_organization(db: &Db, creator: NewOrgCreator<'_>) -> Result<OrgTx, sqlx::Error> {
    let org_id = OrgId::new();
    let actor = match creator {
        NewOrgCreator::User(u) => {
            super::directory::project_user(db, db.region(), u.id()).await?;
            Actor::User(u.id())
        }
        NewOrgCreator::Operator(_authority, reason) => Actor::System(format!("operator: {reason}")),
    };
    let principal = OrgPrincipal {
        org_id,
        actor,
        role: Role::Owner,
        client_id: None,
        permissions: default_permissions(Role::Owner),
        scope_user: None,
        region: db.region(),
    };
    OrgTx::begin(db, &principal).await
}
