//! The parts of deleting a person's account that reach into organizations
//! (`identity::account_deletion` decides when; docs/security/deletion.md says what goes):
//! whether they are the last Owner anywhere, their standing copied into every region, and the
//! removal of their memberships, invitations, API keys and what the organizations' rows say of
//! them by name. Every region is visited (memberships live in their organization's region) and
//! each organization is opened one at a time, as the tenant, through the gate key: this is the
//! access layer's to do, like [`super::account::audit_account_event`].

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::gate;
use crate::audit::{Actor, Context, Entry};
use crate::platform::db::Db;
use crate::platform::db::tenant::{Capability, set_capability_in, set_tenant_in};
use crate::platform::ids::{OrgId, UserId};

/// What a deleted person is shown as, everywhere.
pub const DELETED_USER: &str = "Deleted user";

/// The tombstone's email column: not an address (no `@`), so nobody signs up or is mailed with
/// it, and unique like the id it carries.
pub fn tombstone_email(user: UserId) -> String {
    format!("deleted:{user}")
}

/// The organizations `user` is an active member of (in `conn`'s region), with their role.
async fn own_memberships(conn: &mut PgConnection, user: UserId) -> Result<Vec<(OrgId, String)>, sqlx::Error> {
    let key = gate();
    set_capability_in(&key, &mut *conn, Capability::User, &user.to_string()).await?;
    let rows = sqlx::query_as("SELECT organization_id, role FROM memberships WHERE user_id = $1 ORDER BY 1")
        .bind(user)
        .fetch_all(&mut *conn)
        .await;
    set_capability_in(&key, &mut *conn, Capability::User, "").await?;
    rows
}

/// The names of the organizations, in every region, where `user` is an active Owner and no
/// other active Owner with an account in good standing (not being deleted) is left.
pub async fn sole_owner_of(db: &Db, user: UserId) -> Result<Vec<String>, sqlx::Error> {
    let key = gate();
    let mut names = Vec::new();
    for region in db.every_region() {
        let mut tx = region.global().await?;
        for (org, role) in own_memberships(&mut tx, user).await? {
            if role != "owner" {
                continue;
            }
            set_tenant_in(&key, &mut tx, Some(org)).await?;
            let (mine_active, others, name): (bool, i64, String) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE organization_id = $1 AND user_id = $2 \
                                AND role = 'owner' AND status = 'active'), \
                        (SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id \
                          WHERE m.organization_id = $1 AND m.user_id <> $2 AND m.role = 'owner' \
                            AND m.status = 'active' AND u.status = 'active'), \
                        (SELECT name FROM organizations WHERE id = $1)",
            )
            .bind(org)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
            if mine_active && others == 0 {
                names.push(name);
            }
        }
        set_tenant_in(&key, &mut tx, None).await?;
        tx.commit().await?;
    }
    names.sort();
    Ok(names)
}

/// Copies the account's status into the other regions' `users` rows (`directory::project_user`
/// made them), where an API key's check reads it: a key acting for someone whose account is
/// being deleted stops working with their sessions.
pub async fn copy_status(db: &Db, user: UserId, status: &str) -> Result<(), sqlx::Error> {
    set_in_other_regions(db, user, "status", status.to_string()).await
}

/// Copies whether an operator disabled the account into the other regions' `users` rows, as
/// [`copy_status`] does: a key acting for a disabled account stops working with its sessions.
pub async fn copy_disabled(db: &Db, user: UserId, disabled_at: Option<OffsetDateTime>) -> Result<(), sqlx::Error> {
    set_in_other_regions(db, user, "disabled_at", disabled_at).await
}

/// Sets `column` of the account's `users` row in every region but the directory's (a deleted
/// account's row is left as it is).
async fn set_in_other_regions<T>(db: &Db, user: UserId, column: &'static str, value: T) -> Result<(), sqlx::Error>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Clone + Send + 'static,
{
    let sql = format!("UPDATE users SET {column} = $2, updated_at = now() WHERE id = $1 AND status <> 'deleted'");
    for region in db.every_region().into_iter().skip(1) {
        let mut tx = region.global().await?;
        sqlx::query(&sql).bind(user).bind(value.clone()).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// What the purge removed from the organizations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub memberships: u64,
    pub invitations: u64,
    pub api_keys: u64,
    /// An organization of theirs is moving to another region: the removal stopped there (what
    /// it removed in the regions before stays removed), and is run again once the move ends.
    pub waits_for_move: bool,
}

/// Removes the person from every organization in every region: their memberships (with what
/// hangs on them: permissions, project memberships, assignments, follows, notifications,
/// preferences, timers), invitations to their address, the API keys acting for them, their
/// name and address from task activity and from others' notifications about them, and mail
/// queued to them. Each organization's audit log records the removal by id only. What they
/// wrote (tasks, comments, time entries, files, audit events) stays and points at the
/// tombstone. In the other regions the copied `users` row becomes the tombstone too. Stops at
/// an organization that is moving to another region (`Removed::waits_for_move`).
pub async fn remove_from_organizations(
    db: &Db,
    user: UserId,
    email: &str,
    name: &str,
    now: OffsetDateTime,
) -> Result<Removed, sqlx::Error> {
    let key = gate();
    // What pages showed of them: the name, or the address when they had none.
    let label = if name.is_empty() { email } else { name };
    let mut removed = Removed::default();
    let ctx = Context::system(now, None);
    let actor = Actor::System("account deletion".into());
    for (i, region) in db.every_region().into_iter().enumerate() {
        let mut tx = region.global().await?;
        let mut orgs: Vec<OrgId> = own_memberships(&mut tx, user).await?.into_iter().map(|(o, _)| o).collect();
        // Open invitations to the address, in organizations they never joined.
        set_capability_in(&key, &mut tx, Capability::InviteeEmail, email).await?;
        let invited: Vec<OrgId> =
            sqlx::query_scalar("SELECT DISTINCT organization_id FROM invitations WHERE lower(email) = $1")
                .bind(email)
                .fetch_all(&mut *tx)
                .await?;
        set_capability_in(&key, &mut tx, Capability::InviteeEmail, "").await?;
        for org in invited {
            if !orgs.contains(&org) {
                orgs.push(org);
            }
        }
        for org in orgs {
            // Not while the organization moves: the person would come back with a copy the move
            // took before this. The lock holds a move about to copy back until this commits.
            let placed = super::directory::lock_against_move(db, &mut tx, region.region(), org).await?;
            if placed.is_some_and(|p| p.moving_to.is_some()) {
                // This region's changes are undone as the transaction drops.
                drop(tx);
                removed.waits_for_move = true;
                return Ok(removed);
            }
            set_tenant_in(&key, &mut tx, Some(org)).await?;
            removed.invitations +=
                sqlx::query("DELETE FROM invitations WHERE organization_id = $1 AND lower(email) = $2")
                    .bind(org)
                    .bind(email)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            removed.api_keys += sqlx::query("DELETE FROM api_keys WHERE organization_id = $1 AND created_by = $2")
                .bind(org)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Free text that named them: task activity labels and values, others' notifications.
            sqlx::query(
                "UPDATE task_activity SET \
                   actor_label = CASE WHEN actor_label IN ($2, $3) THEN $4 ELSE replace(actor_label, $2, $4) END, \
                   old_value = CASE WHEN old_value IN ($2, $3) THEN $4 ELSE replace(old_value, $2, $4) END, \
                   new_value = CASE WHEN new_value IN ($2, $3) THEN $4 ELSE replace(new_value, $2, $4) END \
                 WHERE organization_id = $1 AND (actor_label IN ($2, $3) OR strpos(actor_label, $2) > 0 \
                   OR old_value IN ($2, $3) OR strpos(old_value, $2) > 0 \
                   OR new_value IN ($2, $3) OR strpos(new_value, $2) > 0)",
            )
            .bind(org)
            .bind(email)
            .bind(label)
            .bind(DELETED_USER)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE notifications SET title = replace(replace(title, $3, $5), $4, $5), \
                   body = replace(replace(body, $3, $5), $4, $5) \
                 WHERE organization_id = $1 AND (actor_id = $2 OR strpos(title || body, $3) > 0 \
                   OR strpos(title || body, $4) > 0)",
            )
            .bind(org)
            .bind(user)
            .bind(email)
            .bind(label)
            .bind(DELETED_USER)
            .execute(&mut *tx)
            .await?;
            let gone = sqlx::query("DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2")
                .bind(org)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            removed.memberships += gone;
            if gone > 0 {
                let entry = Entry::new("member.account_deleted", "member", user);
                crate::audit::append(&mut tx, org, &actor, "account deletion", &entry, &ctx).await?;
            }
        }
        set_tenant_in(&key, &mut tx, None).await?;
        // Mail to them goes; mail to others that named them (an invitation accepted, a
        // notification) keeps its record without the name.
        sqlx::query("DELETE FROM outbox WHERE lower(recipient) = $1").bind(email).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE outbox SET subject = replace(replace(subject, $1, $3), $2, $3), \
               body_text = replace(replace(body_text, $1, $3), $2, $3) \
             WHERE strpos(subject || body_text, $1) > 0 OR strpos(subject || body_text, $2) > 0",
        )
        .bind(email)
        .bind(label)
        .bind(DELETED_USER)
        .execute(&mut *tx)
        .await?;
        if i > 0 {
            sqlx::query(
                "UPDATE users SET email = $2, display_name = $3, status = 'deleted', deleted_at = $4, updated_at = $4 \
                 WHERE id = $1",
            )
            .bind(user)
            .bind(tombstone_email(user))
            .bind(DELETED_USER)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(removed)
}
