//! Someone holding an invitation's token (not a member yet): reading that invitation, and the
//! transactions that accept or decline it.

use super::gate;
use super::principal::{Actor, OrgPrincipal, OrgTx};
use super::role::{PermissionSet, Role};
use super::user::AuthenticatedUser;
use crate::platform::db::Db;
use crate::platform::db::tenant::{Capability, GateTx};
use crate::platform::ids::OrgId;

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
    let mut tx = GateTx::begin(db, &gate()).await?;
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
