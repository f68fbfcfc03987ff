//! Deleting an organization: requested by an Owner (re-authenticated, typing the
//! organization's name), a grace period (`privacy.deletion_grace_days`) during which only Owners
//! get in and any Owner may cancel, then the purge.
//!
//! The purge runs as the owner role (the only one the audit log's trigger lets delete an
//! organization's events, and only while a request for it exists and the transaction names it
//! in `clientflow.organization_purge`). It finds the tables to empty in the catalog (every
//! table with an `organization_id` column), so a table added later is covered without touching
//! this file, and deletes children before parents by retrying a table whose delete a foreign
//! key refused (each attempt in a savepoint). In the same transaction it removes the
//! organization row and writes the deletion record: the id, the SHA-256 of the name, who asked
//! and when, when it ran, the rows each table lost, and an HMAC over all of it. After the
//! commit the files go from storage and the data keys from the key store; a crash in between is
//! finished by the next sweep (the record's `finished_at` is still empty).
//!
//! Destroying the data keys is what reaches backups: every sealed value in a database backup
//! (and every file in a file-store backup) was sealed with a key that no longer exists
//! (docs/security/deletion.md gives the windows).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use sqlx::{Connection, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::role::{Permission, Role};
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::billing::stripe::StripeClient;
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{OrgId, UserId};
use crate::platform::keys::{Keyring, Scope};
use crate::platform::storage::Storage;

/// A pending deletion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub requested_by: Uuid,
    pub requested_at: OffsetDateTime,
    pub purge_after: OffsetDateTime,
}

/// The organization's pending deletion, if any.
pub async fn pending(tx: &mut OrgTx) -> Result<Option<Pending>, sqlx::Error> {
    sqlx::query_as("SELECT requested_by, requested_at, purge_after FROM organization_deletion_requests")
        .fetch_optional(&mut **tx)
        .await
}

fn require_owner(p: &OrgPrincipal) -> DomainResult<UserId> {
    let refused = || DomainError::Forbidden("Only an Owner can delete the organization or cancel its deletion.".into());
    if p.role() != Role::Owner || !p.can(Permission::OrgDelete) {
        return Err(refused());
    }
    p.user_id().ok_or_else(refused)
}

async fn owners(tx: &mut OrgTx) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.role = 'owner' AND m.status = 'active' ORDER BY u.email",
    )
    .fetch_all(&mut **tx)
    .await
}

fn mail_to_owners(to: &str, org_name: &str, subject: &str, body: String) -> OutgoingMail {
    OutgoingMail {
        to: to.to_string(),
        subject: subject.to_string(),
        body,
        category: Category::Critical,
        org_name: Some(org_name.to_string()),
    }
}

/// Schedules the organization's deletion (the caller has re-authenticated the Owner):
/// `typed_name` must be the organization's name exactly. Every Owner is told by mail.
pub async fn request(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    typed_name: &str,
    grace: time::Duration,
) -> DomainResult<Pending> {
    let user = require_owner(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    if typed_name.trim() != name {
        return Err(DomainError::field("confirm_name", "must be the organization's name exactly as shown"));
    }
    if pending(&mut tx).await?.is_some() {
        return Err(DomainError::Conflict("This organization is already scheduled for deletion.".into()));
    }
    let purge_after = ctx.now + grace;
    sqlx::query(
        "INSERT INTO organization_deletion_requests (organization_id, requested_by, requested_at, purge_after) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(tx.org_id())
    .bind(user)
    .bind(ctx.now)
    .bind(purge_after)
    .execute(&mut *tx)
    .await?;
    let when = purge_after.date().to_string();
    for to in owners(&mut tx).await? {
        let body = format!(
            "An Owner of the organization \"{name}\" asked to delete it and all of its data.\n\n\
             Until {when} (UTC) only Owners can open it, and any Owner can cancel the deletion from the\n\
             organization's billing settings. After that date everything is deleted and can't be recovered:\n\
             projects, tasks, files, clients, invoices, the audit log, and the keys its data was encrypted with."
        );
        let mail = mail_to_owners(&to, &name, "Your organization is scheduled for deletion", body);
        let key = format!("org-deletion-requested:{}:{}:{to}", tx.org_id(), ctx.now.unix_timestamp());
        outbox::enqueue(&mut tx, &mail, &key, ctx.now).await?;
    }
    let org = tx.org_id();
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.deletion_requested", "organization", org)
            .after(json!({ "purge_after": purge_after.to_string() })),
    )
    .await?;
    tx.commit().await?;
    Ok(Pending { requested_by: user.as_uuid(), requested_at: ctx.now, purge_after })
}

/// Cancels a pending deletion (any Owner); every Owner is told. Cancelling when nothing is
/// pending (another Owner was quicker) changes nothing and says so: `false`.
pub async fn cancel(db: &Db, ctx: &Context, p: &OrgPrincipal) -> DomainResult<bool> {
    require_owner(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let Some(was) = pending(&mut tx).await? else {
        tx.commit().await?;
        return Ok(false);
    };
    sqlx::query("DELETE FROM organization_deletion_requests").execute(&mut *tx).await?;
    let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    for to in owners(&mut tx).await? {
        let body = format!(
            "The deletion of the organization \"{name}\" was cancelled by one of its Owners. Nothing was deleted,\n\
             and everyone has access again."
        );
        let mail = mail_to_owners(&to, &name, "The deletion of your organization was cancelled", body);
        let key = format!("org-deletion-cancelled:{}:{}:{to}", tx.org_id(), ctx.now.unix_timestamp());
        outbox::enqueue(&mut tx, &mail, &key, ctx.now).await?;
    }
    let org = tx.org_id();
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.deletion_cancelled", "organization", org)
            .before(json!({ "purge_after": was.purge_after.to_string() })),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// What remains of a purged organization.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub organization_id: Uuid,
    pub name_sha256: String,
    pub requested_by: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub executed_at: OffsetDateTime,
    pub row_counts: BTreeMap<String, i64>,
}

impl Record {
    /// HMAC-SHA256 over the record's canonical JSON (sorted keys, as serialized).
    pub fn signature(&self, key: &[u8; 32]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(&serde_json::to_vec(self).expect("a record serializes"));
        mac.finalize().into_bytes().into()
    }
}

/// What the purge of one organization did.
#[derive(Debug, Clone, Serialize)]
pub struct Purged {
    pub record: Record,
    pub files_removed: usize,
    pub keys_destroyed: usize,
}

/// Tables holding organization data, from the catalog.
async fn tenant_tables(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(conn)
    .await
}

/// Where a purge runs, when that is a region other than the directory's: there, the people of
/// the organization are copies (`access::directory::project_user`), removed with it when no
/// other organization of the region names them.
#[derive(Clone, Copy)]
pub struct InRegion<'a> {
    /// Every region's handle (the directory is read through it).
    pub db: &'a crate::platform::db::Db,
    pub region: crate::platform::db::RegionId,
}

/// Purges one organization whose request is due, in one transaction on `conn` (the owner
/// role). Returns `None` when there is no due request for it (cancelled meanwhile). With
/// `in_region` (a region other than the directory's), the copies of its people that no other
/// organization there names go in the same transaction (counted as `users` in the record).
pub async fn purge_rows(
    conn: &mut PgConnection,
    org: OrgId,
    record_key: &[u8; 32],
    now: OffsetDateTime,
    in_region: Option<InRegion<'_>>,
    placed: Option<(&crate::platform::db::Db, crate::platform::db::RegionId)>,
) -> anyhow::Result<Option<Record>> {
    let mut tx = conn.begin().await?;
    // Asked again in the purge's own transaction, which holds a move's copy back until it
    // commits: a move marked since the sweep asked waits for it, or it waits for the move.
    if let Some((db, region)) = placed
        && !crate::access::directory::hold_for_writing(db, &mut tx, region, org).await?
    {
        return Ok(None);
    }
    let org_text = org.to_string();
    sqlx::query("SELECT set_config('app.org_id', $1, true), set_config('clientflow.organization_purge', $1, true)")
        .bind(&org_text)
        .execute(&mut *tx)
        .await?;
    let due: Option<Pending> = sqlx::query_as(
        "SELECT requested_by, requested_at, purge_after FROM organization_deletion_requests \
         WHERE organization_id = $1 AND purge_after <= $2 FOR UPDATE",
    )
    .bind(org)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(due) = due else { return Ok(None) };
    let name: String =
        sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1").bind(org).fetch_one(&mut *tx).await?;
    // Read before its rows go: who they name.
    let people = match in_region {
        Some(_) => crate::access::directory::people_named(&mut tx, org).await?,
        None => Default::default(),
    };
    let mut pending_tables: Vec<String> =
        tenant_tables(&mut tx).await?.into_iter().filter(|t| t != "organization_deletion_requests").collect();
    let mut row_counts = BTreeMap::new();
    // Children before parents: a delete a foreign key refuses is retried after the others.
    while !pending_tables.is_empty() {
        let mut refused = Vec::new();
        let mut last_error = None;
        let round = pending_tables.len();
        for table in std::mem::take(&mut pending_tables) {
            sqlx::query("SAVEPOINT purge_table").execute(&mut *tx).await?;
            let sql = format!("DELETE FROM public.\"{}\" WHERE organization_id = $1", table.replace('"', "\"\""));
            match sqlx::query(&sql).bind(org).execute(&mut *tx).await {
                Ok(done) => {
                    sqlx::query("RELEASE SAVEPOINT purge_table").execute(&mut *tx).await?;
                    *row_counts.entry(table).or_insert(0) += done.rows_affected() as i64;
                }
                Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23503") => {
                    sqlx::query("ROLLBACK TO SAVEPOINT purge_table").execute(&mut *tx).await?;
                    last_error = Some(e);
                    refused.push(table);
                }
                Err(e) => return Err(anyhow::anyhow!("purging {table}: {e}")),
            }
        }
        // A round that deleted from no table means a cycle no order breaks.
        if refused.len() == round {
            anyhow::bail!("purge stuck on {refused:?}: {}", last_error.map(|e| e.to_string()).unwrap_or_default());
        }
        pending_tables = refused;
    }
    let requests = sqlx::query("DELETE FROM organization_deletion_requests WHERE organization_id = $1")
        .bind(org)
        .execute(&mut *tx)
        .await?;
    row_counts.insert("organization_deletion_requests".into(), requests.rows_affected() as i64);
    let orgs = sqlx::query("DELETE FROM organizations WHERE id = $1").bind(org).execute(&mut *tx).await?;
    row_counts.insert("organizations".into(), orgs.rows_affected() as i64);
    if let Some(InRegion { db, region }) = in_region {
        let gone = crate::access::directory::forget_departed_people(db, &mut tx, region, org, &people).await?;
        if !gone.is_empty() {
            row_counts.insert("users".into(), gone.len() as i64);
        }
    }
    let record = Record {
        organization_id: org.as_uuid(),
        name_sha256: crate::platform::crypto::sha256_hex(name.as_bytes()),
        requested_by: due.requested_by,
        requested_at: due.requested_at,
        // As stored (microseconds, UTC), so the signature verifies from the row.
        executed_at: now
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(now.nanosecond() / 1000 * 1000)
            .expect("a smaller nanosecond is valid"),
        row_counts,
    };
    sqlx::query(
        "INSERT INTO organization_deletion_records (deleted_organization_id, name_sha256, requested_by, requested_at, \
         executed_at, row_counts, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(record.organization_id)
    .bind(crate::platform::crypto::sha256(name.as_bytes()).as_slice())
    .bind(record.requested_by)
    .bind(record.requested_at)
    .bind(record.executed_at)
    .bind(serde_json::to_value(&record.row_counts)?)
    .bind(record.signature(record_key).as_slice())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(record))
}

/// The steps after the commit: the organization's stored files, then its data keys.
async fn finish(
    conn: &mut PgConnection,
    keys: &Keyring,
    storage: &Storage,
    org: OrgId,
    now: OffsetDateTime,
) -> anyhow::Result<(usize, usize)> {
    let files = crate::work::files::remove_organization_contents(storage, org).await?;
    let destroyed = keys.store().destroy_scope(Scope::org(org)).map_err(|e| anyhow::anyhow!("{e}"))?;
    sqlx::query(
        "UPDATE organization_deletion_records SET files_removed = $2, keys_destroyed = $3, finished_at = $4 \
         WHERE deleted_organization_id = $1",
    )
    .bind(org)
    .bind(files as i32)
    .bind(destroyed as i32)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((files, destroyed))
}

/// Cancels the organization's paid subscription before its rows go: Stripe would otherwise
/// go on charging for an organization that no longer exists. `false`: Stripe could not be
/// reached or refused, and the purge waits for the next pass (the request stays due). With
/// billing not configured here, a subscription on record can't be cancelled from here: the
/// purge goes ahead (the deletion is promised) and says so in the log.
async fn end_subscription(conn: &mut PgConnection, stripe: Option<&StripeClient>, org: OrgId) -> anyhow::Result<bool> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await?;
    let subscription: Option<String> = sqlx::query_scalar(
        "SELECT stripe_subscription_id FROM billing_accounts \
         WHERE organization_id = $1 AND stripe_subscription_id IS NOT NULL AND status <> 'canceled'",
    )
    .bind(org)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(subscription) = subscription else { return Ok(true) };
    let Some(stripe) = stripe else {
        tracing::warn!(
            organization = %org,
            "a deleted organization has a Stripe subscription on record but billing is not configured here: \
             cancel it in Stripe's dashboard"
        );
        return Ok(true);
    };
    match stripe.cancel_subscription(&subscription).await {
        Ok(found) => {
            tracing::info!(organization = %org, found, "cancelled a deleted organization's subscription");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(
                organization = %org,
                error = %e,
                "could not cancel a deleted organization's subscription: its purge waits for the next pass"
            );
            Ok(false)
        }
    }
}

/// Purges every organization whose grace period is over, and finishes any purge a crash left
/// half done. `conn` is the owner role's.
pub async fn purge_due(
    conn: &mut PgConnection,
    keys: &Keyring,
    storage: &Storage,
    record_key: &[u8; 32],
    now: OffsetDateTime,
    stripe: Option<&StripeClient>,
) -> anyhow::Result<Vec<Purged>> {
    purge_due_in(conn, keys, storage, record_key, now, stripe, None, None).await
}

/// [`purge_due`] in the database of `in_region` when that is not the directory's region
/// ([`purge_rows`]). With `placed` (the directory, and the region `conn` is in), only the
/// organizations the directory places there, and that are not moving, are purged: a move
/// makes a copy in the region it goes to and leaves one in the region it leaves, and a purge
/// of either copy in the middle of it would leave the other behind, with no directory entry to
/// find it by. Their deletion waits for the end of the move, in the region it ends in.
#[allow(clippy::too_many_arguments)]
async fn purge_due_in(
    conn: &mut PgConnection,
    keys: &Keyring,
    storage: &Storage,
    record_key: &[u8; 32],
    now: OffsetDateTime,
    stripe: Option<&StripeClient>,
    in_region: Option<InRegion<'_>>,
    placed: Option<(&crate::platform::db::Db, crate::platform::db::RegionId)>,
) -> anyhow::Result<Vec<Purged>> {
    let due: Vec<OrgId> = {
        let mut tx = conn.begin().await?;
        let due = sqlx::query_scalar(
            "SELECT organization_id FROM organization_deletion_requests WHERE purge_after <= $1 ORDER BY purge_after",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        due
    };
    let mut out = Vec::new();
    for org in due {
        if let Some((db, region)) = placed {
            let here = crate::access::directory::own_copy(db, org, region).await?;
            if here.is_none_or(|p| p.moving_to.is_some()) {
                tracing::info!(organization = %org, %region, "a deletion is due during a region move: it waits for the move");
                continue;
            }
        }
        if !end_subscription(conn, stripe, org).await? {
            continue;
        }
        let Some(record) = purge_rows(conn, org, record_key, now, in_region, placed).await? else { continue };
        let (files_removed, keys_destroyed) = finish(conn, keys, storage, org, now).await?;
        tracing::info!(organization = %org, files_removed, keys_destroyed, "purged a deleted organization");
        out.push(Purged { record, files_removed, keys_destroyed });
    }
    let unfinished: Vec<OrgId> = sqlx::query_scalar(
        "SELECT deleted_organization_id FROM organization_deletion_records WHERE finished_at IS NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    for org in unfinished {
        finish(conn, keys, storage, org, now).await?;
    }
    Ok(out)
}

/// What the purge reaches outside the databases: Stripe, to cancel a subscription (when
/// billing is configured), and the data directory, to remove export archives.
#[derive(Clone, Copy, Default)]
pub struct Beyond<'a> {
    pub stripe: Option<&'a StripeClient>,
    pub data_dir: Option<&'a std::path::Path>,
}

/// [`purge_due`] in every region: each region's due deletions are purged in its own database,
/// as its owner role, with its own file store; a purged organization's directory entry goes
/// last. A region whose owner role this process lacks is skipped, saying so when something is
/// due there (the process that has it purges).
pub async fn purge_due_everywhere(
    db: &crate::platform::db::Db,
    owners: &[(crate::platform::db::RegionId, sqlx::postgres::PgConnectOptions)],
    keys: &Keyring,
    stores: &crate::work::files::RegionStores,
    record_key: &[u8; 32],
    now: OffsetDateTime,
    beyond: Beyond<'_>,
) -> anyhow::Result<Vec<(crate::platform::db::RegionId, Purged)>> {
    let Beyond { stripe, data_dir } = beyond;
    use sqlx::ConnectOptions;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for region_db in db.every_region() {
        let region = region_db.region();
        let result = async {
            let mut g = region_db.global().await?;
            let due: Vec<Uuid> =
                sqlx::query_scalar("SELECT organization_deletions_due($1)").bind(now).fetch_all(&mut *g).await?;
            g.commit().await?;
            let Some((_, owner)) = owners.iter().find(|(r, _)| *r == region) else {
                if !due.is_empty() {
                    tracing::warn!(
                        %region,
                        organizations = due.len(),
                        "organization deletions are due but this process has no owner role for the region: they run \
                         where it has one"
                    );
                }
                return anyhow::Ok(Vec::new());
            };
            let mut conn = owner.connect().await?;
            let storage = stores.of(region).map_err(|e| anyhow::anyhow!("{e}"))?;
            let in_region = (region != db.home_region()).then_some(InRegion { db, region });
            let purged =
                purge_due_in(&mut conn, keys, storage, record_key, now, stripe, in_region, Some((db, region))).await;
            conn.close().await.ok();
            purged
        }
        .await;
        match result {
            Ok(purged) => {
                for p in purged {
                    let org = OrgId::from_uuid(p.record.organization_id);
                    // Its export archives: sealed with keys now destroyed, so unreadable
                    // already; removed so that nothing of it is left on disk.
                    if let Some(data_dir) = data_dir {
                        let dir = super::export_jobs::archive_dir(data_dir, db, region, org);
                        match tokio::fs::remove_dir_all(&dir).await {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                                error = %e,
                                organization = %org,
                                "could not remove a purged organization's export archives"
                            ),
                            _ => {}
                        }
                    }
                    if let Err(e) = crate::access::directory::forget(db, org).await {
                        tracing::warn!(error = %e, organization = %org, "could not remove a purged organization's directory entry");
                    }
                    out.push((region, p));
                }
            }
            Err(e) => failures.push(format!("region {region}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!(failures.join("; "));
    }
    Ok(out)
}

/// Checks a deletion record's signature.
pub async fn verify_record(conn: &mut PgConnection, org: OrgId, record_key: &[u8; 32]) -> anyhow::Result<bool> {
    type Row = (Uuid, Vec<u8>, Uuid, OffsetDateTime, OffsetDateTime, serde_json::Value, Vec<u8>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT deleted_organization_id, name_sha256, requested_by, requested_at, executed_at, row_counts, signature \
         FROM organization_deletion_records WHERE deleted_organization_id = $1",
    )
    .bind(org)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, name_sha256, requested_by, requested_at, executed_at, counts, signature)) = row else {
        return Ok(false);
    };
    let record = Record {
        organization_id: id,
        name_sha256: hex::encode(name_sha256),
        requested_by,
        requested_at,
        executed_at,
        row_counts: serde_json::from_value(counts)?,
    };
    use subtle::ConstantTimeEq;
    Ok(bool::from(record.signature(record_key).as_slice().ct_eq(&signature)))
}
