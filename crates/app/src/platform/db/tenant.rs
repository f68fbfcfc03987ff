//! The tenant door.
//!
//! [`OrgTx`] is the only way Rust code reaches tenant tables. It can only be opened with an
//! [`OrgPrincipal`], and an `OrgPrincipal` has private fields and no public constructor: the
//! verification functions in this module are the only places one is made. Opening the
//! transaction sets `app.org_id` with `set_config(…, true)` — local to the transaction — so a
//! pooled connection never carries one tenant's context into another request. Row-level
//! security does the rest: every tenant table's policy compares `organization_id` with that
//! setting, and with no setting no rows are visible.
//!
//! Forgetting the tenant is a compile error:
//!
//! ```compile_fail
//! // No public constructor: a principal can't be made up.
//! let p = clientflow::platform::db::OrgPrincipal { };
//! ```
//!
//! ```compile_fail
//! // The pool is private: there is no way to run tenant SQL without `OrgTx`.
//! async fn f(db: &clientflow::platform::db::Db) { let _ = &db.pool; }
//! ```
//!
//! ```compile_fail
//! // Tenant repositories take `&mut OrgTx`, not a global transaction.
//! async fn f(db: &clientflow::platform::db::Db) {
//!     let mut tx = db.global().await.unwrap();
//!     clientflow::work::clients::repo::list(&mut tx, 10).await.unwrap();
//! }
//! ```
//!
//! The same code with a principal compiles:
//!
//! ```no_run
//! async fn f(db: &clientflow::platform::db::Db, p: &clientflow::platform::db::OrgPrincipal) {
//!     let mut tx = clientflow::platform::db::OrgTx::begin(db, p).await.unwrap();
//!     clientflow::work::clients::repo::list(&mut tx, 10).await.unwrap();
//! }
//! ```

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};

use super::Db;
use crate::identity::AuthenticatedUser;
use crate::platform::ids::{ClientId, OrgId, UserId};
use crate::tenancy::role::Role;

/// Who is acting, for authorization and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    /// An operator running the `clientflow` CLI on the server.
    System(String),
}

/// A principal verified to act inside one organization with one role.
#[derive(Debug, Clone)]
pub struct OrgPrincipal {
    org_id: OrgId,
    actor: Actor,
    role: Role,
    /// For the Client role: the one client record this user may see.
    client_id: Option<ClientId>,
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
            Actor::System(_) => None,
        }
    }
}

/// Verifies that `user` is an active member of `org_id` and returns the principal, or `None`
/// when they are not (unknown organization, no membership, suspended): callers answer 404
/// so that a foreign organization can't be told apart from a missing one.
pub async fn verify_member(
    db: &Db,
    user: &AuthenticatedUser,
    org_id: OrgId,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = UserTx::begin(db, user).await?;
    let row: Option<(Role, Option<ClientId>)> = sqlx::query_as(
        "SELECT m.role, m.client_id FROM memberships m \
         WHERE m.organization_id = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(org_id)
    .bind(user.id())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(role, client_id)| OrgPrincipal {
        org_id,
        actor: Actor::User(user.id()),
        role,
        client_id,
    }))
}

/// The operator of this installation acting on an organization from the command line. The
/// CLI runs on the server with the server's own credentials; its actions are audited under a
/// system actor. Returns `None` when the organization doesn't exist.
pub async fn operator(
    db: &Db,
    org_id: OrgId,
    reason: &str,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System(format!("operator: {reason}")),
        role: Role::Owner,
        client_id: None,
    };
    let mut tx = OrgTx::begin(db, &principal).await?;
    let exists: Option<(OrgId,)> = sqlx::query_as("SELECT id FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(exists.map(|_| principal))
}

/// A transaction inside one organization.
pub struct OrgTx {
    tx: Transaction<'static, Postgres>,
    principal: OrgPrincipal,
}

impl OrgTx {
    pub async fn begin(db: &Db, principal: &OrgPrincipal) -> Result<Self, sqlx::Error> {
        let mut tx = db.pool.begin().await?;
        set_tenant(&mut tx, principal.org_id).await?;
        Ok(Self {
            tx,
            principal: principal.clone(),
        })
    }

    /// Opens the transaction that creates a new organization: its tenant is the fresh id,
    /// and the creator becomes its Owner in the same transaction.
    pub async fn begin_new_organization(
        db: &Db,
        creator: NewOrgCreator<'_>,
    ) -> Result<Self, sqlx::Error> {
        let org_id = OrgId::new();
        let actor = match creator {
            NewOrgCreator::User(u) => Actor::User(u.id()),
            NewOrgCreator::Operator(reason) => Actor::System(format!("operator: {reason}")),
        };
        let principal = OrgPrincipal {
            org_id,
            actor,
            role: Role::Owner,
            client_id: None,
        };
        Self::begin(db, &principal).await
    }

    pub fn org_id(&self) -> OrgId {
        self.principal.org_id
    }

    pub fn principal(&self) -> &OrgPrincipal {
        &self.principal
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// Who creates a new organization.
pub enum NewOrgCreator<'a> {
    User(&'a AuthenticatedUser),
    Operator(&'a str),
}

impl Deref for OrgTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for OrgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A transaction acting for one signed-in user across organizations: it sees that user's own
/// memberships (and the organizations they belong to) and no tenant data.
pub struct UserTx {
    tx: Transaction<'static, Postgres>,
    user_id: UserId,
}

impl UserTx {
    pub async fn begin(db: &Db, user: &AuthenticatedUser) -> Result<Self, sqlx::Error> {
        let mut tx = db.pool.begin().await?;
        sqlx::query("SELECT set_config('app.user_id', $1, true)")
            .bind(user.id().to_string())
            .execute(&mut *tx)
            .await?;
        Ok(Self {
            tx,
            user_id: user.id(),
        })
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

/// The one place the tenant is set. `true`: local to the transaction.
async fn set_tenant(conn: &mut PgConnection, org_id: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('app.org_id', $1, true)")
        .bind(org_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
