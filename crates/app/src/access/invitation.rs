//! Someone holding an invitation's token (not a member yet): reading that invitation, and the
//! transactions that accept or decline it.

use super::gate;
use super::principal::{Actor, OrgPrincipal, OrgTx};
use super::role::{PermissionSet, Role};
use super::user::AuthenticatedUser;
use crate::platform::db::tenant::{Capability, GateTx};
use crate::platform::db::{Db, RegionId};
use crate::platform::ids::OrgId;

/// An open invitation, found by its token (for someone who is not a member yet).
#[derive(Debug, Clone)]
pub struct OpenInvitation {
    pub organization_id: OrgId,
    pub id: uuid::Uuid,
    pub email: String,
    pub role: Role,
    pub organization_name: String,
    /// The organization's region (where the invitation was found).
    pub region: RegionId,
    /// The organization is moving to another region: accepting or declining (a write) must
    /// wait until the move is done.
    pub moving: bool,
}

/// Looks up an open invitation by token. The invitee is not a member, so row-level security
/// hides the invitation from every tenant context; presenting the token's digest (the
/// `invitation_by_token` policy) makes exactly that invitation readable in this transaction.
pub async fn find_invitation(
    db: &Db,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OpenInvitation>, sqlx::Error> {
    // The invitation is a row of its organization's region: each region is asked in turn,
    // passing over the copy a move makes or leaves behind.
    for region in db.every_region() {
        if let Some(found) = find_invitation_in(&region, token, now).await?
            && let Some(placed) = super::directory::own_copy(db, found.organization_id, found.region).await?
        {
            return Ok(Some(OpenInvitation { moving: placed.moving_to.is_some(), ..found }));
        }
    }
    Ok(None)
}

async fn find_invitation_in(
    db: &Db,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OpenInvitation>, sqlx::Error> {
    let mut tx = GateTx::begin(db, &gate()).await?;
    let region = tx.region();
    tx.set(Capability::InvitationToken, &hex::encode(crate::platform::crypto::sha256(token.as_bytes()))).await?;
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
        region,
        moving: false,
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
        region: invitation.region,
    };
    super::directory::project_user(db, invitation.region, user.id()).await?;
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
        region: invitation.region,
    };
    Ok(Some((OrgTx::begin(db, &principal).await?, invitation)))
}

/// An open invitation to the signed-in person's own verified address, as the getting-started
/// page lists it.
#[derive(Debug, Clone)]
pub struct PendingInvitation {
    pub id: uuid::Uuid,
    pub organization_id: OrgId,
    pub organization_name: String,
    pub role: Role,
    pub expires_at: time::OffsetDateTime,
}

/// Presents the user's own email address as the capability (`invitation_by_email`, migration
/// 0026), only when that address is verified: an unverified address proves nothing about who
/// reads its mailbox. Returns the address presented.
/// (Accounts are global: the address is read in the directory's database, then presented in
/// each region's.)
async fn verified_email(db: &Db, user: &AuthenticatedUser) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db.home().global().await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1 AND email_verified_at IS NOT NULL")
            .bind(user.id())
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(email)
}

/// The open, unexpired invitations to the user's verified email address, newest first.
pub async fn pending_invitations(
    db: &Db,
    user: &AuthenticatedUser,
    now: time::OffsetDateTime,
) -> Result<Vec<PendingInvitation>, sqlx::Error> {
    let Some(email) = verified_email(db, user).await? else {
        return Ok(vec![]);
    };
    let mut found = Vec::new();
    for region in db.every_region() {
        let mut tx = GateTx::begin(&region, &gate()).await?;
        tx.set(Capability::InviteeEmail, &email).await?;
        let pending = pending_in(&mut tx, &email, now).await?;
        tx.commit().await?;
        // Listed once: not from the copy a move makes or leaves behind.
        for invitation in pending {
            if super::directory::own_copy(db, invitation.organization_id, region.region()).await?.is_some() {
                found.push(invitation);
            }
        }
    }
    found.sort_by_key(|p: &PendingInvitation| std::cmp::Reverse(p.expires_at));
    found.truncate(50);
    Ok(found)
}

async fn pending_in(
    tx: &mut GateTx,
    email: &str,
    now: time::OffsetDateTime,
) -> Result<Vec<PendingInvitation>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, OrgId, String, Role, time::OffsetDateTime)> = sqlx::query_as(
        "SELECT i.id, i.organization_id, o.name, i.role, i.expires_at FROM invitations i \
         JOIN organizations o ON o.id = i.organization_id \
         WHERE lower(i.email) = lower($1) AND i.accepted_at IS NULL AND i.declined_at IS NULL \
           AND i.revoked_at IS NULL AND i.expires_at > $2 \
         ORDER BY i.created_at DESC LIMIT 50",
    )
    .bind(email)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, organization_id, organization_name, role, expires_at)| PendingInvitation {
            id,
            organization_id,
            organization_name,
            role,
            expires_at,
        })
        .collect())
}

/// The transaction that accepts invitation `id` for the signed-in user without its token: the
/// invitation must be open, unexpired and to the user's own verified address (found through
/// that address's capability, so any other invitation id finds nothing). Then as
/// [`begin_invitation_acceptance`].
pub async fn begin_invitation_acceptance_by_id(
    db: &Db,
    user: &AuthenticatedUser,
    id: uuid::Uuid,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgTx, OpenInvitation)>, sqlx::Error> {
    let Some(email) = verified_email(db, user).await? else {
        return Ok(None);
    };
    for region in db.every_region() {
        let mut tx = GateTx::begin(&region, &gate()).await?;
        tx.set(Capability::InviteeEmail, &email).await?;
        let found = acceptance_by_id_in(&mut tx, user, id, &email, now).await?;
        tx.commit().await?;
        if let Some((principal, invitation)) = found
            && let Some(placed) = super::directory::own_copy(db, invitation.organization_id, invitation.region).await?
        {
            super::directory::project_user(db, invitation.region, user.id()).await?;
            let invitation = OpenInvitation { moving: placed.moving_to.is_some(), ..invitation };
            return Ok(Some((OrgTx::begin(db, &principal).await?, invitation)));
        }
    }
    Ok(None)
}

async fn acceptance_by_id_in(
    tx: &mut GateTx,
    user: &AuthenticatedUser,
    id: uuid::Uuid,
    email: &str,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgPrincipal, OpenInvitation)>, sqlx::Error> {
    let region = tx.region();
    let row: Option<(OrgId, String, Role, String)> = sqlx::query_as(
        "SELECT i.organization_id, i.email, i.role, o.name FROM invitations i \
         JOIN organizations o ON o.id = i.organization_id \
         WHERE i.id = $1 AND lower(i.email) = lower($2) AND i.accepted_at IS NULL AND i.declined_at IS NULL \
           AND i.revoked_at IS NULL AND i.expires_at > $3",
    )
    .bind(id)
    .bind(email)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((organization_id, email, role, organization_name)) = row else { return Ok(None) };
    let principal = OrgPrincipal {
        org_id: organization_id,
        actor: Actor::User(user.id()),
        role,
        client_id: None,
        permissions: PermissionSet::default(),
        scope_user: None,
        region,
    };
    let invitation = OpenInvitation { organization_id, id, email, role, organization_name, region, moving: false };
    Ok(Some((principal, invitation)))
}
