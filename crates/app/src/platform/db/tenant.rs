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
//! Forgetting the tenant is a compile error. Stable rustdoc doesn't check the error codes of
//! `compile_fail` examples, so each one below has a twin that compiles and differs only in the
//! one forbidden step: the examples fail for the reason they name, not for a typo.
//!
//! A principal can't be made up: its fields are private (E0451), even when every one of them
//! is given a valid value.
//!
//! ```compile_fail,E0451
//! use clientflow::platform::db::tenant::{Actor, OrgPrincipal};
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
//! The twin: the same paths and values are all public (the field names are the ones this
//! module's own constructors use); only the struct literal is refused.
//!
//! ```no_run
//! use clientflow::platform::db::tenant::{Actor, OrgPrincipal};
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
//! use clientflow::platform::db::tenant::{self, OperatorAuthority};
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let authority = OperatorAuthority { _private: () };
//!     let _ = tenant::operator(db, &authority, org, "reason").await;
//! }
//! ```
//!
//! and without it there is no way to call [`operator`] (E0061, wrong number of arguments):
//!
//! ```compile_fail,E0061
//! use clientflow::platform::db::tenant;
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let _ = tenant::operator(db, org, "reason").await;
//! }
//! ```
//!
//! The twin: the operator's authority assumed by name. In the application only the CLI's entry
//! point does this; a test scans the sources for it.
//!
//! ```no_run
//! use clientflow::platform::db::tenant::{self, OperatorAuthority};
//! async fn f(db: &clientflow::platform::db::Db, org: clientflow::platform::ids::OrgId) {
//!     let authority = OperatorAuthority::unsafe_assume_cli_operator();
//!     let _ = tenant::operator(db, &authority, org, "reason").await;
//! }
//! ```
//!
//! The pool is private (E0616): no SQL runs on a raw pooled connection.
//!
//! ```compile_fail,E0616
//! async fn f(db: &clientflow::platform::db::Db) {
//!     let mut conn = db.pool.acquire().await.unwrap();
//!     sqlx::query("SELECT * FROM clients").execute(&mut *conn).await.unwrap();
//! }
//! ```
//!
//! The twin: the same query through [`GlobalTx`](super::GlobalTx) compiles, and sees zero rows
//! of `clients`, because it sets no tenant.
//!
//! ```no_run
//! async fn f(db: &clientflow::platform::db::Db) {
//!     let mut conn = db.global().await.unwrap();
//!     sqlx::query("SELECT * FROM clients").execute(&mut *conn).await.unwrap();
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
//! async fn f(db: &clientflow::platform::db::Db, p: &clientflow::platform::db::OrgPrincipal) {
//!     let mut tx = clientflow::platform::db::OrgTx::begin(db, p).await.unwrap();
//!     clientflow::work::clients::repo::list(&mut tx, 10).await.unwrap();
//! }
//! ```

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};

use super::Db;
use crate::access::role::{Permission, PermissionSet, Role, default_permissions, effective_permissions};
use crate::identity::AuthenticatedUser;
use crate::platform::ids::{ClientId, OrgId, UserId};

/// Who is acting, for authorization and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    /// An organization API key (its id).
    ApiKey(uuid::Uuid),
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
    /// Effective permissions (role, organization customization, member overrides).
    permissions: PermissionSet,
    /// For API keys: the user who created the key (a Member-role key sees their projects).
    scope_user: Option<UserId>,
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
}

/// Loads the organization's customization of `role` and the member's overrides (inside a
/// transaction whose tenant is already set).
async fn load_permissions(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    role: Role,
) -> Result<PermissionSet, sqlx::Error> {
    if !crate::access::role::customizable(role) {
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

/// Verifies that `user` is an active member of `org_id` and returns the principal, or `None`
/// when they are not (unknown organization, no membership, suspended): callers answer 404
/// so that a foreign organization can't be told apart from a missing one.
pub async fn verify_member(
    db: &Db,
    user: &AuthenticatedUser,
    org_id: OrgId,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = db.begin().await?;
    set_tenant(&mut tx, org_id).await?;
    let row: Option<(Role, Option<ClientId>)> = sqlx::query_as(
        "SELECT m.role, m.client_id FROM memberships m \
         WHERE m.organization_id = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(org_id)
    .bind(user.id())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((role, client_id)) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let permissions = load_permissions(&mut tx, org_id, user.id(), role).await?;
    tx.commit().await?;
    Ok(Some(OrgPrincipal { org_id, actor: Actor::User(user.id()), role, client_id, permissions, scope_user: None }))
}

/// Like [`verify_member`], finding the organization by its slug among the user's own
/// organizations (a slug of an organization they don't belong to is simply not found).
pub async fn verify_member_by_slug(
    db: &Db,
    user: &AuthenticatedUser,
    slug: &str,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = UserTx::begin(db, user).await?;
    let org: Option<(OrgId,)> = sqlx::query_as(
        "SELECT o.id FROM organizations o JOIN memberships m ON m.organization_id = o.id \
         WHERE o.slug = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(slug)
    .bind(user.id())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match org {
        Some((org_id,)) => verify_member(db, user, org_id).await,
        None => Ok(None),
    }
}

/// An open invitation, found by its token (for someone who is not a member yet).
#[derive(Debug, Clone)]
pub struct OpenInvitation {
    pub organization_id: OrgId,
    pub id: uuid::Uuid,
    pub email: String,
    pub role: Role,
    pub organization_name: String,
}

/// Looks up an open invitation by token. The invitee is not a member, so row-level security
/// hides the invitation from every tenant context; presenting the token's digest (the
/// `invitation_by_token` policy) makes exactly that invitation readable in this transaction.
pub async fn find_invitation(
    db: &Db,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OpenInvitation>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('app.invitation_token', $1, true)")
        .bind(hex::encode(crate::platform::crypto::sha256(token.as_bytes())))
        .execute(&mut *tx)
        .await?;
    let row: Option<(OrgId, uuid::Uuid, String, Role, String)> = sqlx::query_as(
        "SELECT i.organization_id, i.id, i.email, i.role, o.name FROM invitations i \
         JOIN organizations o ON o.id = i.organization_id \
         WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.declined_at IS NULL \
           AND i.revoked_at IS NULL AND i.expires_at > $2",
    )
    .bind(&crate::platform::crypto::sha256(token.as_bytes())[..])
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(organization_id, id, email, role, organization_name)| OpenInvitation {
        organization_id,
        id,
        email,
        role,
        organization_name,
    }))
}

/// The transaction that accepts an invitation: the invited person is not a member yet, so the
/// principal is the invitee acting on that one invitation, with no permissions at all. The
/// token is checked again inside the transaction (the caller can't forge an invitation), and
/// the email must be the user's own.
pub async fn begin_invitation_acceptance(
    db: &Db,
    user: &AuthenticatedUser,
    user_email: &str,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgTx, OpenInvitation)>, sqlx::Error> {
    let Some(invitation) = find_invitation(db, token, now).await? else { return Ok(None) };
    if !invitation.email.eq_ignore_ascii_case(user_email) {
        return Ok(None);
    }
    let principal = OrgPrincipal {
        org_id: invitation.organization_id,
        actor: Actor::User(user.id()),
        role: invitation.role,
        client_id: None,
        permissions: PermissionSet::default(),
        scope_user: None,
    };
    Ok(Some((OrgTx::begin(db, &principal).await?, invitation)))
}

/// The transaction that declines an invitation: whoever holds the token may decline it (the
/// link in the email), acting as a system actor on that one invitation.
pub async fn begin_invitation_decline(
    db: &Db,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgTx, OpenInvitation)>, sqlx::Error> {
    let Some(invitation) = find_invitation(db, token, now).await? else { return Ok(None) };
    let principal = OrgPrincipal {
        org_id: invitation.organization_id,
        actor: Actor::System(format!("invitee {}", invitation.email)),
        role: invitation.role,
        client_id: None,
        permissions: PermissionSet::default(),
        scope_user: None,
    };
    Ok(Some((OrgTx::begin(db, &principal).await?, invitation)))
}

/// An organization's public contact form, for a visitor who is not a member.
///
/// Presenting the slug (`app.contact_form_slug`, the `contact_form_by_slug` policy of
/// migration 0005) makes exactly that organization's row readable, and only while its contact
/// form is enabled, so an unknown slug and a disabled form look the same: `None`. The principal
/// returned can write the submission and nothing else of consequence: no permissions, and the
/// Client role without a client record, which scopes it to no project.
pub async fn contact_form(db: &Db, slug: &str) -> Result<Option<(OrgPrincipal, String)>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('app.contact_form_slug', $1, true)").bind(slug).execute(&mut *tx).await?;
    let row: Option<(OrgId, String)> = sqlx::query_as(
        "SELECT id, name FROM organizations WHERE slug = $1 AND contact_form_enabled AND contact_email IS NOT NULL",
    )
    .bind(slug)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(org_id, name)| {
        let principal = OrgPrincipal {
            org_id,
            actor: Actor::System("public contact form".into()),
            role: Role::Client,
            client_id: None,
            permissions: PermissionSet::default(),
            scope_user: None,
        };
        (principal, name)
    }))
}

/// The prefix that makes ClientFlow API keys recognizable (to people and secret scanners).
pub const API_KEY_PREFIX: &str = "cf_live_";

/// Verifies an API key: unknown, revoked, expired and malformed keys all answer `None` (the
/// caller answers them identically). The key's digest is a capability that makes exactly its
/// own row readable; everything after that happens inside the key's organization.
pub async fn verify_api_key(
    db: &Db,
    presented: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    Ok(verify_api_key_with_allowlist(db, presented, now).await?.map(|(p, _)| p))
}

/// `+name` / `-name` grants as aggregated by SQL; unknown names are ignored.
fn parse_grants(grants: &[String]) -> Vec<(Permission, bool)> {
    grants
        .iter()
        .filter_map(|c| {
            let (sign, name) = c.split_at(1);
            name.parse().ok().map(|p| (p, sign == "+"))
        })
        .collect()
}

/// [`verify_api_key`], also returning the organization's IP allowlist (read in the same
/// transaction: API requests are frequent, and this keeps the guard to one round of queries).
pub async fn verify_api_key_with_allowlist(
    db: &Db,
    presented: &str,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgPrincipal, Vec<ipnet::IpNet>)>, sqlx::Error> {
    let Some(secret) = presented.strip_prefix(API_KEY_PREFIX) else { return Ok(None) };
    if secret.len() != 43 || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Ok(None);
    }
    let digest = crate::platform::crypto::sha256(presented.as_bytes());
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('app.api_key_hash', $1, true)").bind(hex::encode(digest)).execute(&mut *tx).await?;
    type KeyRow = (
        OrgId,
        uuid::Uuid,
        Role,
        Option<Vec<String>>,
        Option<UserId>,
        Option<time::OffsetDateTime>,
        Option<time::OffsetDateTime>,
        Option<time::OffsetDateTime>,
    );
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT organization_id, id, role, permissions, created_by, expires_at, revoked_at, last_used_at FROM api_keys WHERE key_hash = $1",
    )
    .bind(&digest[..])
    .fetch_optional(&mut *tx)
    .await?;
    let Some((org_id, key_id, role, explicit, created_by, expires_at, revoked_at, last_used_at)) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    if revoked_at.is_some() || expires_at.is_some_and(|e| e <= now) {
        tx.commit().await?;
        return Ok(None);
    }
    // The capability has done its job; from here on the key's organization is the tenant.
    sqlx::query("SELECT set_config('app.api_key_hash', '', true), set_config('app.org_id', $1, true)")
        .bind(org_id.to_string())
        .execute(&mut *tx)
        .await?;
    // In one statement: the creator's current standing (role, that role's customization and the
    // creator's own overrides: a key never holds what its creator no longer could), the
    // organization's customization of the key's role (tightening applies to keys too), and the
    // organization's IP allowlist (NULL when the organization is gone).
    type FactsRow = (Option<Role>, Vec<String>, Vec<String>, Vec<String>, Option<Vec<ipnet::IpNet>>);
    let (creator_role, key_role_custom, creator_role_custom, creator_overrides, allowlist): FactsRow =
        sqlx::query_as(
            "SELECT (SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 AND status = 'active'), \
                coalesce((SELECT array_agg(CASE WHEN granted THEN '+' ELSE '-' END || permission) FROM role_permissions \
                   WHERE organization_id = $1 AND role = $3), '{}'), \
                coalesce((SELECT array_agg(CASE WHEN rp.granted THEN '+' ELSE '-' END || rp.permission) \
                   FROM role_permissions rp JOIN memberships m ON m.organization_id = rp.organization_id AND m.role = rp.role \
                   WHERE rp.organization_id = $1 AND m.user_id = $2), '{}'), \
                coalesce((SELECT array_agg(CASE WHEN granted THEN '+' ELSE '-' END || permission) FROM member_permissions \
                   WHERE organization_id = $1 AND user_id = $2), '{}'), \
                (SELECT ip_allowlist FROM organizations WHERE id = $1)",
        )
        .bind(org_id)
        .bind(created_by)
        .bind(role)
        .fetch_one(&mut *tx)
        .await?;
    let creator_bound = match (created_by, creator_role) {
        // Made by the command line before every key acted for a member: bounded by its role
        // alone, and it acts for nobody (it records nothing as anyone's).
        (None, _) => None,
        (Some(_), Some(creator_role)) if creator_role.rank() >= role.rank() => Some(effective_permissions(
            creator_role,
            &parse_grants(&creator_role_custom),
            &parse_grants(&creator_overrides),
        )),
        // The creator left, was suspended, or now ranks below the key.
        (Some(_), _) => {
            tx.commit().await?;
            return Ok(None);
        }
    };
    let Some(allowlist) = allowlist else {
        tx.commit().await?;
        return Ok(None);
    };
    if last_used_at.is_none_or(|t| now - t > time::Duration::seconds(60)) {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(key_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let mut permissions =
        effective_permissions(role, &parse_grants(&key_role_custom), &[]).intersect(crate::access::role::admin_bound());
    if let Some(bound) = creator_bound {
        permissions = permissions.intersect(bound);
    }
    if let Some(list) = explicit {
        let wanted = PermissionSet::of(&list.iter().filter_map(|p| p.parse().ok()).collect::<Vec<Permission>>());
        permissions = permissions.intersect(wanted);
    }
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::ApiKey(key_id),
        role,
        client_id: None,
        permissions,
        scope_user: created_by,
    };
    Ok(Some((principal, allowlist)))
}

/// The principal behind a signed file download link: checks the signature and expiry, then
/// acts inside that one organization with nothing but `files.read`.
pub async fn verify_file_link(
    db: &Db,
    key: &[u8; 32],
    org_id: OrgId,
    file: uuid::Uuid,
    expires: i64,
    signature: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let expected = crate::work::files::link_signature(key, org_id, file, expires);
    if expires <= now.unix_timestamp() || !crate::platform::secret::ct_eq(expected.as_bytes(), signature.as_bytes()) {
        return Ok(None);
    }
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("signed file link".into()),
        // Manager: scope over every project (the link was issued to someone allowed to see it).
        role: Role::Manager,
        client_id: None,
        permissions: PermissionSet::of(&[Permission::FilesRead]),
        scope_user: None,
    };
    let _ = db;
    Ok(Some(principal))
}

/// Writes an event about `user_id`'s account (sign-in, lockout, two-factor change…) into the
/// audit log of every organization they are an active member of, inside the caller's
/// transaction. The tenant is set and cleared here, one organization at a time; the caller
/// only chooses the event.
pub async fn audit_account_event(
    conn: &mut PgConnection,
    user_id: UserId,
    actor_label: &str,
    event: &crate::audit::Entry,
    ctx: &crate::audit::Context,
) -> Result<(), sqlx::Error> {
    audit_account_event_as(conn, user_id, &Actor::User(user_id), actor_label, event, ctx).await
}

/// Like [`audit_account_event`], for an event about the user's account done by someone else
/// (the operator, `Actor::System`).
pub async fn audit_account_event_as(
    conn: &mut PgConnection,
    user_id: UserId,
    actor: &Actor,
    actor_label: &str,
    event: &crate::audit::Entry,
    ctx: &crate::audit::Context,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('app.user_id', $1, true)").bind(user_id.to_string()).execute(&mut *conn).await?;
    let orgs: Vec<(OrgId,)> =
        sqlx::query_as("SELECT organization_id FROM memberships WHERE user_id = $1 AND status = 'active'")
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?;
    sqlx::query("SELECT set_config('app.user_id', '', true)").execute(&mut *conn).await?;
    for (org_id,) in orgs {
        set_tenant(&mut *conn, org_id).await?;
        crate::audit::append(&mut *conn, org_id, actor, actor_label, event, ctx).await?;
    }
    sqlx::query("SELECT set_config('app.org_id', '', true)").execute(&mut *conn).await?;
    Ok(())
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
    };
    if_exists(db, principal).await
}

/// The principal, if its organization exists (looked up through its own door).
async fn if_exists(db: &Db, principal: OrgPrincipal) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = OrgTx::begin(db, &principal).await?;
    let exists: Option<(OrgId,)> = sqlx::query_as("SELECT id FROM organizations WHERE id = $1")
        .bind(principal.org_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(exists.map(|_| principal))
}

/// The server's own scheduled audit maintenance (signing quiet chain heads,
/// `audit::chain::sign_due_heads`): a system principal holding no permission at all. It can
/// open the organization's transaction, which is all signing a head needs, and nothing a
/// permission check guards. Returns `None` when the organization doesn't exist.
pub async fn audit_maintenance(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("audit maintenance".into()),
        role: Role::Member,
        client_id: None,
        permissions: PermissionSet::of(&[]),
        scope_user: None,
    };
    if_exists(db, principal).await
}

/// A transaction inside one organization.
pub struct OrgTx {
    tx: Transaction<'static, Postgres>,
    principal: OrgPrincipal,
    /// Set when this transaction is the request's own (see [`with_request_tx`]): committing
    /// hands it back instead of committing.
    request: Option<RequestSlot>,
}

tokio::task_local! {
    /// The request transaction of the task running a request, if its caller opened one.
    static REQUEST_TX: RequestSlot;
}

/// Where the request transaction waits between the `OrgTx`s that join it.
#[derive(Clone)]
struct RequestSlot {
    org_id: OrgId,
    tx: std::sync::Arc<std::sync::Mutex<Option<Transaction<'static, Postgres>>>>,
}

impl RequestSlot {
    fn take(&self) -> Option<Transaction<'static, Postgres>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, tx: Transaction<'static, Postgres>) {
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }
}

/// Runs `work` with `tx` as the request's transaction.
///
/// Inside `work`, [`OrgTx::begin`] for the same organization joins `tx` instead of opening a
/// transaction of its own, and [`OrgTx::commit`] hands it back instead of committing; an `OrgTx`
/// dropped or rolled back takes it (and everything written in it, `tx`'s own rows included) down
/// with it. When `work` is done, the caller gets back the transaction if the work left it
/// committed, to add what it must and commit once: the request's effects and the caller's
/// record of them become durable together or not at all. This is how an `Idempotency-Key`'s
/// stored answer is written in the same transaction as the effect it describes
/// (`api::idempotency`).
///
/// An `OrgTx` opened while another holds the request transaction (nested), or for another
/// organization, is an ordinary transaction of its own.
pub async fn with_request_tx<F: std::future::Future>(tx: OrgTx, work: F) -> (F::Output, Option<OrgTx>) {
    let OrgTx { tx, principal, request } = tx;
    debug_assert!(request.is_none(), "a request transaction can't be nested");
    let slot = RequestSlot { org_id: principal.org_id, tx: Default::default() };
    slot.put(tx);
    let output = REQUEST_TX.scope(slot.clone(), work).await;
    let back = slot.take().map(|tx| OrgTx { tx, principal, request: None });
    (output, back)
}

impl OrgTx {
    pub async fn begin(db: &Db, principal: &OrgPrincipal) -> Result<Self, sqlx::Error> {
        let joined = REQUEST_TX
            .try_with(|slot| (slot.org_id == principal.org_id).then(|| slot.take().map(|tx| (slot.clone(), tx))))
            .ok()
            .flatten()
            .flatten();
        if let Some((slot, tx)) = joined {
            // The tenant was set when the request transaction was opened.
            return Ok(Self { tx, principal: principal.clone(), request: Some(slot) });
        }
        let mut tx = db.begin().await?;
        set_tenant(&mut tx, principal.org_id).await?;
        Ok(Self { tx, principal: principal.clone(), request: None })
    }

    /// Opens the transaction that creates a new organization: its tenant is the fresh id,
    /// and the creator becomes its Owner in the same transaction.
    pub async fn begin_new_organization(db: &Db, creator: NewOrgCreator<'_>) -> Result<Self, sqlx::Error> {
        let org_id = OrgId::new();
        let actor = match creator {
            NewOrgCreator::User(u) => Actor::User(u.id()),
            NewOrgCreator::Operator(_authority, reason) => Actor::System(format!("operator: {reason}")),
        };
        let principal = OrgPrincipal {
            org_id,
            actor,
            role: Role::Owner,
            client_id: None,
            permissions: default_permissions(Role::Owner),
            scope_user: None,
        };
        Self::begin(db, &principal).await
    }

    pub fn org_id(&self) -> OrgId {
        self.principal.org_id
    }

    pub fn principal(&self) -> &OrgPrincipal {
        &self.principal
    }

    /// Commits; inside a request transaction, hands it back for the request to commit.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.request {
            Some(slot) => {
                slot.put(self.tx);
                Ok(())
            }
            None => self.tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// Who creates a new organization.
pub enum NewOrgCreator<'a> {
    User(&'a AuthenticatedUser),
    /// The operator's command line, with the reason recorded as the actor.
    Operator(&'a OperatorAuthority, &'a str),
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
        let mut tx = db.begin().await?;
        sqlx::query("SELECT set_config('app.user_id', $1, true)").bind(user.id().to_string()).execute(&mut *tx).await?;
        Ok(Self { tx, user_id: user.id() })
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
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org_id.to_string()).execute(conn).await?;
    Ok(())
}
