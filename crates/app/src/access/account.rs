//! Events about a person's account (sign-in, lockout, a second factor changed…), written into
//! the audit log of every organization they are an active member of, inside the caller's
//! transaction. The tenant is set and cleared here, one organization at a time; the caller
//! only chooses the event.

use sqlx::PgConnection;

use super::gate;
use super::principal::Actor;
use crate::platform::db::tenant::{Capability, set_capability_in, set_tenant_in};
use crate::platform::ids::{OrgId, UserId};

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
    let key = gate();
    set_capability_in(&key, &mut *conn, Capability::User, &user_id.to_string()).await?;
    let orgs: Vec<(OrgId,)> =
        sqlx::query_as("SELECT organization_id FROM memberships WHERE user_id = $1 AND status = 'active'")
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?;
    set_capability_in(&key, &mut *conn, Capability::User, "").await?;
    for (org_id,) in orgs {
        set_tenant_in(&key, &mut *conn, Some(org_id)).await?;
        crate::audit::append(&mut *conn, org_id, actor, actor_label, event, ctx).await?;
    }
    set_tenant_in(&key, &mut *conn, None).await?;
    Ok(())
}
