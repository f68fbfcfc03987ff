//! Organizations and membership: every change is checked against the role hierarchy here,
//! in the same transaction as its audit event.
//!
//! The hierarchy: nobody acts on a member above their own role or grants a role above their
//! own; only an Owner makes, changes, suspends or removes an Owner; an organization always
//! keeps at least one active Owner (checked with the Owner rows locked, so two concurrent
//! demotions can't both pass).

use serde_json::json;
use time::Duration;
use uuid::Uuid;

use super::repo::{self, Organization};
use crate::access::OrgTx;
use crate::access::role::{Permission, PermissionSet, Role, admin_bound, customizable};
use crate::access::{self, NewOrgCreator, OrgPrincipal};
use crate::audit::{self, Context, Entry};
use crate::identity::AuthenticatedUser;
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::crypto::{random_token, sha256};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult, FieldError};
use crate::platform::ids::{ClientId, UserId};
use crate::platform::types::{Email, Slug, parse_name};

pub const INVITATION_LIFETIME: Duration = Duration::days(7);

fn forbidden(m: &str) -> DomainError {
    DomainError::Forbidden(m.to_string())
}

/// Whether `actor` may act on a member whose role is `target`.
pub fn may_act_on(actor: Role, target: Role) -> bool {
    target.rank() <= actor.rank() && (target != Role::Owner || actor == Role::Owner)
}

/// Whether `actor` may hand out `role` (invite with it, or change someone to it).
pub fn may_grant(actor: Role, role: Role) -> bool {
    role.rank() <= actor.rank() && (role != Role::Owner || actor == Role::Owner)
}

pub async fn create_organization(
    db: &Db,
    ctx: &Context,
    creator: &AuthenticatedUser,
    name: &str,
    slug: &str,
    region: Option<crate::platform::db::RegionId>,
) -> DomainResult<Organization> {
    let mut errors = Vec::new();
    let name = parse_name(name).map_err(|m| errors.push(FieldError::new("name", m))).ok();
    let slug = if slug.trim().is_empty() {
        name.as_deref().and_then(Slug::from_name).ok_or_else(|| "can't be made from this name; choose one".to_string())
    } else {
        Slug::parse(slug)
    }
    .map_err(|m| errors.push(FieldError::new("slug", m)))
    .ok();
    let (Some(name), Some(slug)) = (name, slug) else {
        return Err(DomainError::Invalid(errors));
    };
    // The region the Owner chose (only a configured one), or the installation's default for
    // new organizations.
    let region = match region {
        Some(r) => match db.in_region(r) {
            Some(db) => db,
            None => return Err(DomainError::field("region", "is not a region this installation offers")),
        },
        None => db.home(),
    };
    let mut tx = access::begin_new_organization(&region, NewOrgCreator::User(creator)).await?;
    let org_id = tx.org_id();
    // Outside the directory's region the slug is reserved there first (unique across regions).
    let reserved = !tx.in_directory_region();
    if reserved {
        access::directory::reserve(db, org_id, slug.as_str(), tx.region()).await?;
    }
    let created = match create_in(&mut tx, ctx, creator, &slug, &name).await {
        Ok(org) => tx.commit().await.map(|()| org).map_err(DomainError::from),
        Err(e) => {
            drop(tx);
            Err(e)
        }
    };
    if created.is_err()
        && reserved
        && let Err(e) = access::directory::forget(db, org_id).await
    {
        tracing::warn!(error = %e, "could not release the directory entry of an organization not created");
    }
    created
}

async fn create_in(
    tx: &mut OrgTx,
    ctx: &Context,
    creator: &AuthenticatedUser,
    slug: &Slug,
    name: &str,
) -> DomainResult<Organization> {
    // A taken slug is a field error on `slug` (`crate::errors`).
    let org = repo::insert_organization(tx, slug, name).await?;
    repo::add_member(tx, creator.id(), Role::Owner).await?;
    audit::record(
        tx,
        ctx,
        Entry::new("organization.created", "organization", org.id).after(json!({ "name": org.name, "slug": org.slug })),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        Entry::new("member.added", "member", creator.id()).after(json!({ "role": "owner", "status": "active" })),
    )
    .await?;
    Ok(org)
}

fn is_unique(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub status: String,
    pub client_id: Option<ClientId>,
}

pub async fn members(tx: &mut OrgTx) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, u.display_name, m.role, m.status, m.client_id FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 ORDER BY m.role = 'client', u.email",
    )
    .bind(tx.org_id())
    .fetch_all(&mut **tx)
    .await
}

async fn member(tx: &mut OrgTx, user_id: UserId) -> DomainResult<MemberRow> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, u.display_name, m.role, m.status, m.client_id FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 AND m.user_id = $2 FOR UPDATE OF m",
    )
    .bind(tx.org_id())
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)
}

/// Refuses a change that would leave the organization without an active Owner. Locks the
/// Owner rows first.
async fn keep_an_owner(tx: &mut OrgTx, losing: UserId) -> DomainResult<()> {
    let owners: Vec<(UserId,)> = sqlx::query_as(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner' AND status = 'active' FOR UPDATE",
    )
    .bind(tx.org_id())
    .fetch_all(&mut **tx)
    .await?;
    if owners.iter().all(|(u,)| *u == losing) {
        return Err(DomainError::Conflict(
            "An organization needs at least one active Owner: make someone else Owner first.".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: time::OffsetDateTime,
    pub expires_at: time::OffsetDateTime,
}

pub async fn open_invitations(tx: &mut OrgTx, now: time::OffsetDateTime) -> Result<Vec<InvitationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, role, created_at, expires_at FROM invitations WHERE organization_id = $1 \
         AND accepted_at IS NULL AND declined_at IS NULL AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at",
    )
    .bind(tx.org_id())
    .bind(now)
    .fetch_all(&mut **tx)
    .await
}

async fn org_name(tx: &mut OrgTx) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1").bind(tx.org_id()).fetch_one(&mut **tx).await
}

fn invitation_mail(to: &str, org: &str, role: Role, link: &str, inviter: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_string(),
        subject: format!("You're invited to {org} on ClientFlow"),
        body: format!(
            "{inviter} invited you to join {org} on ClientFlow as {}.\n\nAccept or decline here:\n\n{link}\n\n\
             The invitation is for this email address only and expires in 7 days.\n\n-- \nClientFlow\n",
            role.label()
        ),
        category: Category::Transactional,
        org_name: Some(org.to_string()),
    }
}

pub async fn invite(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    public_url: &str,
    email: &str,
    role: Role,
    client_id: Option<ClientId>,
) -> DomainResult<Uuid> {
    let email = Email::parse(email).map_err(|m| DomainError::field("email", m))?;
    if !may_grant(principal.role(), role) {
        return Err(forbidden("You can't invite someone with a role above your own."));
    }
    if (role == Role::Client) != client_id.is_some() {
        return Err(DomainError::field(
            "client_id",
            "a Client invitation needs the client record it may see (and only then)",
        ));
    }
    let mut tx = OrgTx::begin(db, principal).await?;
    if role != Role::Client {
        crate::billing::limits::check(&mut tx, ctx, crate::billing::limits::Resource::Seats, 1).await?;
    }
    if let Some(cid) = client_id {
        let exists: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM clients WHERE id = $1").bind(cid).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(DomainError::field("client_id", "is not a client of this organization"));
        }
    }
    let already: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 AND u.email = $2",
    )
    .bind(tx.org_id())
    .bind(email.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if already.is_some() {
        return Err(DomainError::Conflict(format!("{email} is already a member.")));
    }
    let token = random_token();
    let id = Uuid::now_v7();
    let inviter = principal.user_id().ok_or_else(|| forbidden("Only people can invite."))?;
    let inserted = sqlx::query(
        "INSERT INTO invitations (organization_id, id, email, role, client_id, token_hash, invited_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(email.as_str())
    .bind(role)
    .bind(client_id)
    .bind(&sha256(token.as_bytes())[..])
    .bind(inviter)
    .bind(ctx.now)
    .bind(ctx.now + INVITATION_LIFETIME)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if is_unique(&e) => {
            return Err(DomainError::Conflict(format!("{email} already has an open invitation; resend or revoke it.")));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let org = org_name(&mut tx).await?;
    let inviter_email: String =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(inviter).fetch_one(&mut *tx).await?;
    let link = format!("{public_url}/invitations/accept?token={token}");
    outbox::enqueue(
        &mut tx,
        &invitation_mail(email.as_str(), &org, role, &link, &inviter_email),
        &format!("invite:{token}"),
        ctx.now,
    )
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invitation.created", "invitation", id)
            .after(json!({ "email": email.as_str(), "role": role, "client_id": client_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Revokes (`resend = false`) or re-sends with a fresh token and expiry (`resend = true`).
pub async fn revoke_or_resend(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    public_url: &str,
    id: Uuid,
    resend: bool,
) -> DomainResult<()> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let row: Option<(String, Role)> = sqlx::query_as(
        "SELECT email, role FROM invitations WHERE id = $1 AND accepted_at IS NULL AND declined_at IS NULL AND revoked_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (email, role) = row.ok_or(DomainError::NotFound)?;
    if !may_grant(principal.role(), role) {
        return Err(forbidden("This invitation is for a role above your own."));
    }
    if resend {
        let token = random_token();
        sqlx::query("UPDATE invitations SET token_hash = $2, expires_at = $3 WHERE id = $1")
            .bind(id)
            .bind(&sha256(token.as_bytes())[..])
            .bind(ctx.now + INVITATION_LIFETIME)
            .execute(&mut *tx)
            .await?;
        let org = org_name(&mut tx).await?;
        let link = format!("{public_url}/invitations/accept?token={token}");
        let inviter = principal.user_id().map(|u| u.to_string()).unwrap_or_default();
        let inviter_email: String =
            sqlx::query_scalar("SELECT coalesce((SELECT email FROM users WHERE id::text = $1), 'Someone')")
                .bind(inviter)
                .fetch_one(&mut *tx)
                .await?;
        outbox::enqueue(
            &mut tx,
            &invitation_mail(&email, &org, role, &link, &inviter_email),
            &format!("invite:{token}"),
            ctx.now,
        )
        .await?;
        audit::record(&mut tx, ctx, Entry::new("invitation.resent", "invitation", id)).await?;
    } else {
        sqlx::query("UPDATE invitations SET revoked_at = $2 WHERE id = $1")
            .bind(id)
            .bind(ctx.now)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            ctx,
            Entry::new("invitation.revoked", "invitation", id).before(json!({ "email": email, "role": role })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Accepts an invitation for the signed-in `user`, whose email must be the invited one.
pub async fn accept_invitation(
    db: &Db,
    ctx: &Context,
    user: &AuthenticatedUser,
    user_email: &str,
    token: &str,
) -> DomainResult<Organization> {
    let Some((tx, invitation)) = access::begin_invitation_acceptance(db, user, user_email, token, ctx.now).await?
    else {
        return Err(DomainError::Malformed(
            "This invitation is invalid, expired, already used, or for another email address.".into(),
        ));
    };
    accept_in(db, tx, ctx, user, invitation).await
}

/// Accepts invitation `id` for the signed-in `user` without its token (the getting-started
/// page): only an open invitation to the user's own verified address is found.
pub async fn accept_invitation_by_id(
    db: &Db,
    ctx: &Context,
    user: &AuthenticatedUser,
    id: uuid::Uuid,
) -> DomainResult<Organization> {
    let Some((tx, invitation)) = access::begin_invitation_acceptance_by_id(db, user, id, ctx.now).await? else {
        return Err(DomainError::Malformed(
            "This invitation is no longer open, or it is for another email address.".into(),
        ));
    };
    accept_in(db, tx, ctx, user, invitation).await
}

/// An invitation is answered in its organization's region: while the organization moves to
/// another, the answer waits (written now, it would stay behind in the region it leaves). The
/// answer's transaction asks the directory again, holding a move's copy back until it commits
/// (`access::directory::hold_for_writing`).
async fn refuse_while_moving(db: &Db, tx: &mut OrgTx, invitation: &access::OpenInvitation) -> DomainResult<()> {
    if invitation.moving
        || !access::directory::hold_for_writing(db, tx, invitation.region, invitation.organization_id).await?
    {
        return Err(super::residency_refusal(&invitation.organization_name));
    }
    Ok(())
}

/// The membership an invitation grants, written with its audit events in the invitee's
/// transaction on that one invitation.
async fn accept_in(
    db: &Db,
    mut tx: OrgTx,
    ctx: &Context,
    user: &AuthenticatedUser,
    invitation: access::OpenInvitation,
) -> DomainResult<Organization> {
    refuse_while_moving(db, &mut tx, &invitation).await?;
    let client_id: Option<ClientId> = sqlx::query_scalar("SELECT client_id FROM invitations WHERE id = $1 FOR UPDATE")
        .bind(invitation.id)
        .fetch_one(&mut *tx)
        .await?;
    let inserted =
        sqlx::query("INSERT INTO memberships (organization_id, user_id, role, client_id) VALUES ($1, $2, $3, $4)")
            .bind(invitation.organization_id)
            .bind(user.id())
            .bind(invitation.role)
            .bind(client_id)
            .execute(&mut *tx)
            .await;
    match inserted {
        Err(e) if is_unique(&e) => {
            return Err(DomainError::Conflict("You are already a member of this organization.".into()));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    sqlx::query("UPDATE invitations SET accepted_at = $2, accepted_by = $3 WHERE id = $1")
        .bind(invitation.id)
        .bind(ctx.now)
        .bind(user.id())
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, ctx, Entry::new("invitation.accepted", "invitation", invitation.id)).await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("member.added", "member", user.id())
            .after(json!({ "role": invitation.role, "status": "active", "client_id": client_id })),
    )
    .await?;
    let org: Organization = sqlx::query_as("SELECT id, slug, name FROM organizations WHERE id = $1")
        .bind(invitation.organization_id)
        .fetch_one(&mut *tx)
        .await?;
    // The inviter hears that the invitation was accepted.
    // Named as pages name people: by display name, else by email.
    let (inviter, who): (UserId, String) = sqlx::query_as(
        "SELECT i.invited_by, coalesce(nullif(btrim(u.display_name), ''), u.email) FROM invitations i, users u \
          WHERE i.id = $1 AND u.id = $2",
    )
    .bind(invitation.id)
    .bind(user.id())
    .fetch_one(&mut *tx)
    .await?;
    let link = format!("/o/{}/members", org.slug);
    let title = format!("{who} accepted your invitation to {}", org.name);
    let note = crate::notify::New {
        kind: crate::notify::Kind::InvitationAccepted,
        actor: Some(user.id()),
        title: &title,
        body: "",
        link: &link,
    };
    crate::notify::record(&mut tx, &[inviter], &note, ctx.now).await?;
    tx.commit().await?;
    Ok(org)
}

pub async fn decline_invitation(db: &Db, ctx: &Context, token: &str) -> DomainResult<()> {
    let Some((mut tx, invitation)) = access::begin_invitation_decline(db, token, ctx.now).await? else {
        return Err(DomainError::Malformed("This invitation is invalid, expired or already answered.".into()));
    };
    refuse_while_moving(db, &mut tx, &invitation).await?;
    sqlx::query(
        "UPDATE invitations SET declined_at = $2 WHERE id = $1 AND accepted_at IS NULL AND declined_at IS NULL",
    )
    .bind(invitation.id)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    audit::record(&mut tx, ctx, Entry::new("invitation.declined", "invitation", invitation.id)).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn change_role(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    target: UserId,
    new_role: Role,
    client_id: Option<ClientId>,
) -> DomainResult<()> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let m = member(&mut tx, target).await?;
    if !may_act_on(principal.role(), m.role) {
        return Err(forbidden(
            "You can't change the role of someone above your own role (only an Owner can change an Owner).",
        ));
    }
    if !may_grant(principal.role(), new_role) {
        return Err(forbidden("You can't give a role above your own (only an Owner makes an Owner)."));
    }
    if m.role == new_role {
        return Ok(());
    }
    if m.role == Role::Owner {
        keep_an_owner(&mut tx, target).await?;
    }
    if (new_role == Role::Client) != client_id.is_some() {
        return Err(DomainError::field(
            "client_id",
            "the Client role needs the client record it may see (and only it does)",
        ));
    }
    sqlx::query(
        "UPDATE memberships SET role = $3, client_id = $4, updated_at = $5 WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(tx.org_id())
    .bind(target)
    .bind(new_role)
    .bind(client_id)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    if !customizable(new_role) {
        sqlx::query("DELETE FROM member_permissions WHERE organization_id = $1 AND user_id = $2")
            .bind(tx.org_id())
            .bind(target)
            .execute(&mut *tx)
            .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("member.role_changed", "member", target)
            .before(json!({ "role": m.role, "client_id": m.client_id }))
            .after(json!({ "role": new_role, "client_id": client_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_suspended(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    target: UserId,
    suspended: bool,
) -> DomainResult<()> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let m = member(&mut tx, target).await?;
    if Some(target) == principal.user_id() {
        return Err(forbidden("You can't suspend yourself; leave the organization instead."));
    }
    if !may_act_on(principal.role(), m.role) {
        return Err(forbidden("You can't suspend someone above your own role (only an Owner can suspend an Owner)."));
    }
    if suspended && m.role == Role::Owner {
        keep_an_owner(&mut tx, target).await?;
    }
    let status = if suspended { "suspended" } else { "active" };
    sqlx::query("UPDATE memberships SET status = $3, updated_at = $4 WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(target)
        .bind(status)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    let action = if suspended { "member.suspended" } else { "member.reactivated" };
    audit::record(
        &mut tx,
        ctx,
        Entry::new(action, "member", target).before(json!({ "status": m.status })).after(json!({ "status": status })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_member(db: &Db, ctx: &Context, principal: &OrgPrincipal, target: UserId) -> DomainResult<()> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let m = member(&mut tx, target).await?;
    if Some(target) != principal.user_id() && !may_act_on(principal.role(), m.role) {
        return Err(forbidden("You can't remove someone above your own role (only an Owner can remove an Owner)."));
    }
    if m.role == Role::Owner {
        keep_an_owner(&mut tx, target).await?;
    }
    sqlx::query("DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(target)
        .execute(&mut *tx)
        .await?;
    let action = if Some(target) == principal.user_id() { "member.left" } else { "member.removed" };
    audit::record(
        &mut tx,
        ctx,
        Entry::new(action, "member", target).before(json!({ "email": m.email, "role": m.role, "status": m.status })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Makes `target` an Owner and the acting Owner an Admin, in one transaction.
pub async fn transfer_ownership(db: &Db, ctx: &Context, principal: &OrgPrincipal, target: UserId) -> DomainResult<()> {
    let me = principal.user_id().ok_or_else(|| forbidden("Only a person can transfer ownership."))?;
    if principal.role() != Role::Owner {
        return Err(forbidden("Only an Owner can transfer ownership."));
    }
    if me == target {
        return Err(DomainError::field("member", "choose someone else"));
    }
    let mut tx = OrgTx::begin(db, principal).await?;
    let m = member(&mut tx, target).await?;
    if m.status != "active" || m.role == Role::Client {
        return Err(DomainError::field("member", "must be an active, internal member"));
    }
    sqlx::query("UPDATE memberships SET role = 'owner', client_id = NULL, updated_at = $3 WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(target)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE memberships SET role = 'admin', updated_at = $3 WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(me)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM member_permissions WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(target)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.ownership_transferred", "member", target)
            .before(json!({ "owner": me, "new_owner_role": m.role }))
            .after(json!({ "owner": target, "previous_owner_role": "admin" })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Settings {
    pub name: String,
    pub slug: String,
    pub brand_color: String,
    pub timezone: String,
    pub currency: String,
    pub session_timeout_minutes: Option<i32>,
    pub require_two_factor: bool,
    pub contact_form_enabled: bool,
    pub contact_email: Option<String>,
}

pub async fn settings(tx: &mut OrgTx) -> Result<Settings, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, slug, brand_color, timezone, currency, session_timeout_minutes, require_two_factor, \
         contact_form_enabled, contact_email FROM organizations WHERE id = $1",
    )
    .bind(tx.org_id())
    .fetch_one(&mut **tx)
    .await
}

pub struct GeneralSettings {
    pub name: String,
    pub slug: String,
    pub brand_color: String,
    pub timezone: String,
    pub currency: String,
}

pub async fn update_general(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    input: GeneralSettings,
) -> DomainResult<()> {
    let mut errors = Vec::new();
    let name = parse_name(&input.name).map_err(|m| errors.push(FieldError::new("name", m))).ok();
    let slug = Slug::parse(&input.slug).map_err(|m| errors.push(FieldError::new("slug", m))).ok();
    let color = input.brand_color.trim().to_ascii_lowercase();
    if !(color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())) {
        errors.push(FieldError::new("brand_color", "must be a colour like #2457d6"));
    }
    let tz = input.timezone.trim().to_string();
    if !valid_timezone(&tz) {
        errors.push(FieldError::new("timezone", "must be an IANA time zone like Europe/Berlin or UTC"));
    }
    let currency = input.currency.trim().to_ascii_uppercase();
    if !crate::platform::currency::is_active(&currency) {
        errors.push(FieldError::new("currency", "must be an active ISO 4217 currency code like EUR"));
    }
    let (Some(name), Some(slug)) = (name, slug) else { return Err(DomainError::Invalid(errors)) };
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors));
    }
    // The slug is also the directory's (unique across regions): for an organization in another
    // region than the directory's, the directory changes first, so a slug taken elsewhere is
    // refused before anything changes here.
    let elsewhere = principal.region() != db.home_region();
    if elsewhere {
        let mut global = db.home().global().await?;
        crate::access::directory::rename_in(&mut global, principal.org_id(), slug.as_str()).await?;
        global.commit().await?;
    }
    let mut tx = OrgTx::begin(db, principal).await?;
    let org_id = tx.org_id();
    let before = settings(&mut tx).await?;
    if !elsewhere {
        crate::access::directory::rename_in(&mut tx, org_id, slug.as_str()).await?;
    }
    let updated = sqlx::query(
        "UPDATE organizations SET name = $2, slug = $3, brand_color = $4, timezone = $5, currency = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(tx.org_id())
    .bind(&name)
    .bind(slug.as_str())
    .bind(&color)
    .bind(&tz)
    .bind(&currency)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await;
    updated?;
    let after = settings(&mut tx).await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.settings_changed", "organization", org_id)
            .before(json!({ "name": before.name, "slug": before.slug, "brand_color": before.brand_color, "timezone": before.timezone, "currency": before.currency }))
            .after(json!({ "name": after.name, "slug": after.slug, "brand_color": after.brand_color, "timezone": after.timezone, "currency": after.currency })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A zone of the IANA database (`platform::tz`).
fn valid_timezone(tz: &str) -> bool {
    crate::platform::tz::is_known(tz)
}

pub async fn update_security(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    actor_has_two_factor: bool,
    session_timeout_minutes: Option<i32>,
    require_two_factor: bool,
) -> DomainResult<()> {
    if let Some(m) = session_timeout_minutes
        && !(5..=1440).contains(&m)
    {
        return Err(DomainError::field("session_timeout_minutes", "must be between 5 and 1440 minutes, or empty"));
    }
    if require_two_factor && !actor_has_two_factor {
        return Err(DomainError::field(
            "require_two_factor",
            "turn on two-factor authentication for your own account first, or you would lock yourself out",
        ));
    }
    let mut tx = OrgTx::begin(db, principal).await?;
    let org_id = tx.org_id();
    let before = settings(&mut tx).await?;
    sqlx::query(
        "UPDATE organizations SET session_timeout_minutes = $2, require_two_factor = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(tx.org_id())
    .bind(session_timeout_minutes)
    .bind(require_two_factor)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.security_changed", "organization", org_id)
            .before(json!({ "session_timeout_minutes": before.session_timeout_minutes, "require_two_factor": before.require_two_factor }))
            .after(json!({ "session_timeout_minutes": session_timeout_minutes, "require_two_factor": require_two_factor })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Turns the public contact form (`/contact/<slug>`) on or off and sets the address each
/// submission is announced to. The form can only be on with an address to tell.
pub async fn update_contact_form(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    enabled: bool,
    contact_email: &str,
) -> DomainResult<()> {
    let email = match contact_email.trim() {
        "" if enabled => {
            return Err(DomainError::field("contact_email", "is needed to turn the contact form on"));
        }
        "" => None,
        raw => Some(Email::parse(raw).map_err(|m| DomainError::field("contact_email", m))?),
    };
    let mut tx = OrgTx::begin(db, principal).await?;
    let org_id = tx.org_id();
    let before = settings(&mut tx).await?;
    sqlx::query(
        "UPDATE organizations SET contact_form_enabled = $2, contact_email = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(org_id)
    .bind(enabled)
    .bind(email.as_ref().map(Email::as_str))
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.contact_form_changed", "organization", org_id)
            .before(
                json!({ "contact_form_enabled": before.contact_form_enabled, "contact_email": before.contact_email }),
            )
            .after(json!({ "contact_form_enabled": enabled, "contact_email": email.as_ref().map(Email::as_str) })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub use crate::access::role::role_customization;

/// Sets what `role` (Manager or Member) may do in this organization: `wanted` is the complete
/// set. Anything beyond the Admin bound is refused, not silently dropped.
pub async fn set_role_permissions(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    role: Role,
    wanted: PermissionSet,
) -> DomainResult<()> {
    if !customizable(role) {
        return Err(DomainError::field("role", "only the Manager and Member roles can be customized"));
    }
    // Like people, roles are shaped only from at or above them: a Member handed `roles.manage`
    // can't tighten the Managers.
    if !may_act_on(principal.role(), role) {
        return Err(forbidden("You can't change the permissions of a role above your own."));
    }
    check_bound(principal, wanted)?;
    let defaults = crate::access::role::default_permissions(role);
    let mut tx = OrgTx::begin(db, principal).await?;
    let before = role_customization(&mut tx, role).await?;
    sqlx::query("DELETE FROM role_permissions WHERE organization_id = $1 AND role = $2")
        .bind(tx.org_id())
        .bind(role)
        .execute(&mut *tx)
        .await?;
    for p in Permission::ALL {
        if p == Permission::OrgAccess || wanted.contains(p) == defaults.contains(p) {
            continue;
        }
        sqlx::query(
            "INSERT INTO role_permissions (organization_id, role, permission, granted) VALUES ($1, $2, $3, $4)",
        )
        .bind(tx.org_id())
        .bind(role)
        .bind(p.as_str())
        .bind(wanted.contains(p))
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("role.permissions_changed", "role", role)
            .before(json!(before.iter().map(|(p, g)| (p.as_str(), *g)).collect::<std::collections::BTreeMap<_, _>>()))
            .after(json!(wanted.iter().map(Permission::as_str).collect::<Vec<_>>())),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn check_bound(principal: &OrgPrincipal, wanted: PermissionSet) -> DomainResult<()> {
    if !wanted.is_subset(admin_bound()) {
        let beyond: Vec<&str> = wanted.iter().filter(|p| !admin_bound().contains(*p)).map(Permission::as_str).collect();
        return Err(DomainError::field("permissions", format!("can't be granted to this role: {}", beyond.join(", "))));
    }
    // Nobody hands out what they don't hold themselves.
    if !wanted.is_subset(principal.permissions()) {
        let beyond: Vec<&str> = wanted.iter().filter(|p| !principal.can(*p)).map(Permission::as_str).collect();
        return Err(forbidden(&format!("You can't grant permissions you don't have: {}", beyond.join(", "))));
    }
    Ok(())
}

/// Per-member overrides (Managers and Members only): `grants` and `revokes` relative to the
/// role as customized.
pub async fn set_member_overrides(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    target: UserId,
    overrides: &[(Permission, bool)],
) -> DomainResult<()> {
    let granted = PermissionSet::of(&overrides.iter().filter(|(_, g)| *g).map(|(p, _)| *p).collect::<Vec<_>>());
    check_bound(principal, granted)?;
    let mut tx = OrgTx::begin(db, principal).await?;
    let m = member(&mut tx, target).await?;
    if !customizable(m.role) {
        return Err(DomainError::field("member", "only Managers and Members can have individual permissions"));
    }
    if !may_act_on(principal.role(), m.role) {
        return Err(forbidden("You can't change the permissions of someone above your own role."));
    }
    sqlx::query("DELETE FROM member_permissions WHERE organization_id = $1 AND user_id = $2")
        .bind(tx.org_id())
        .bind(target)
        .execute(&mut *tx)
        .await?;
    for (p, g) in overrides {
        if *p == Permission::OrgAccess {
            continue;
        }
        sqlx::query(
            "INSERT INTO member_permissions (organization_id, user_id, permission, granted) VALUES ($1, $2, $3, $4)",
        )
        .bind(tx.org_id())
        .bind(target)
        .bind(p.as_str())
        .bind(*g)
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("member.permissions_changed", "member", target).after(json!(
            overrides.iter().map(|(p, g)| (p.as_str(), *g)).collect::<std::collections::BTreeMap<_, _>>()
        )),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The largest side of a stored logo, in pixels: what the pages show, at twice their size.
pub const LOGO_MAX_SIDE: u32 = 256;

/// Stores the organization's logo: PNG or JPEG (checked by content, not by the declared type),
/// at most 256 KiB as uploaded. It is decoded, scaled to fit [`LOGO_MAX_SIDE`] and stored as a
/// fresh PNG: what is served is never the uploaded file (no metadata such as a photo's location,
/// no crafted chunk), and an image that doesn't decode, or claims enormous dimensions to exhaust
/// memory, is refused.
pub async fn set_logo(db: &Db, ctx: &Context, principal: &OrgPrincipal, bytes: &[u8]) -> DomainResult<()> {
    let format = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        image::ImageFormat::Png
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        image::ImageFormat::Jpeg
    } else {
        return Err(DomainError::field("logo", "must be a PNG or JPEG image"));
    };
    if bytes.len() > 256 * 1024 {
        return Err(DomainError::field("logo", "must be at most 256 KiB"));
    }
    let owned = bytes.to_vec();
    let png =
        tokio::task::spawn_blocking(move || resize_logo(&owned, format)).await.map_err(DomainError::internal)??;
    let bytes = png.as_slice();
    let content_type = "image/png";
    let mut tx = OrgTx::begin(db, principal).await?;
    let org_id = tx.org_id();
    sqlx::query(
        "INSERT INTO organization_logos (organization_id, content_type, bytes, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id) DO UPDATE SET content_type = $2, bytes = $3, updated_at = $4",
    )
    .bind(tx.org_id())
    .bind(content_type)
    .bind(bytes)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.logo_changed", "organization", org_id)
            .after(json!({ "content_type": content_type, "bytes": bytes.len() })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Decodes a logo within limits (at most 4096 × 4096 pixels and 64 MiB while decoding), scales
/// it to fit [`LOGO_MAX_SIDE`] and encodes it as PNG.
fn resize_logo(bytes: &[u8], format: image::ImageFormat) -> DomainResult<Vec<u8>> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(4096);
    limits.max_image_height = Some(4096);
    limits.max_alloc = Some(64 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|_| DomainError::field("logo", "could not be read as an image (at most 4096 × 4096 pixels)"))?;
    let fitted = if decoded.width() > LOGO_MAX_SIDE || decoded.height() > LOGO_MAX_SIDE {
        decoded.resize(LOGO_MAX_SIDE, LOGO_MAX_SIDE, image::imageops::FilterType::Lanczos3)
    } else {
        decoded
    };
    let mut out = std::io::Cursor::new(Vec::new());
    fitted.write_to(&mut out, image::ImageFormat::Png).map_err(DomainError::internal)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy() {
        use Role::*;
        assert!(may_act_on(Owner, Owner));
        assert!(!may_act_on(Admin, Owner));
        assert!(may_act_on(Admin, Admin));
        assert!(may_act_on(Admin, Member));
        assert!(!may_act_on(Manager, Admin));
        assert!(may_grant(Owner, Owner));
        assert!(!may_grant(Admin, Owner));
        assert!(may_grant(Admin, Admin));
        assert!(!may_grant(Member, Manager));
        assert!(
            valid_timezone("Europe/Berlin")
                && valid_timezone("UTC")
                && !valid_timezone("Mars")
                && !valid_timezone("a/../b c")
        );
    }
}
