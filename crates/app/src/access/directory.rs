//! The global directory: which region's database holds an organization
//! (`organization_directory`, migration 0050; `docs/security/residency.md`).
//!
//! Every principal is verified with its organization's region, read here: the tenant door
//! opens only that region's database (`platform::db::region`). With one region the directory
//! is kept up to date but not consulted: every organization is in the one database.

use sqlx::PgConnection;

use crate::platform::db::{Db, RegionId};
use crate::platform::ids::OrgId;

/// Where an organization lives, as the directory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub org_id: OrgId,
    pub region: RegionId,
    /// A move to this region is under way: writes are refused until it ends.
    pub moving_to: Option<RegionId>,
}

type Row = (OrgId, String, Option<String>);

fn placement(db: &Db, row: Row) -> Placement {
    let (org_id, region, moving_to) = row;
    Placement {
        org_id,
        // An entry naming a region this process doesn't know can't be opened: the door refuses
        // it (`platform::db::region::unknown_region`), and the start-up check names it first.
        region: RegionId::parse(&region).unwrap_or(db.home_region()),
        moving_to: moving_to.as_deref().and_then(RegionId::parse),
    }
}

/// The organization with this slug, read in a transaction of the directory's database.
pub async fn by_slug(db: &Db, conn: &mut PgConnection, slug: &str) -> Result<Option<Placement>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as("SELECT org, region, moving_to FROM organization_directory WHERE slug = $1")
        .bind(slug)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| placement(db, r)))
}

/// Where the organization lives: the default region with one region, otherwise the directory's
/// entry (`None`: not in the directory). An organization created before the directory was
/// filled is in the default region (migration 0050 records those).
pub async fn locate(db: &Db, org_id: OrgId) -> Result<Option<Placement>, sqlx::Error> {
    if !db.is_multi_region() {
        return Ok(Some(Placement { org_id, region: db.home_region(), moving_to: None }));
    }
    let mut tx = db.home().global().await?;
    let row: Option<Row> = sqlx::query_as("SELECT org, region, moving_to FROM organization_directory WHERE org = $1")
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| placement(db, r)))
}

/// [`locate`], for a caller holding `conn`, a connection of `conn_region` in a transaction:
/// read on that connection when it is the directory's database, so the caller doesn't take a
/// second connection from the pool it holds one of (requests that each hold one and wait for
/// another could wait on each other until they time out).
pub async fn locate_from(
    db: &Db,
    conn: &mut PgConnection,
    conn_region: RegionId,
    org_id: OrgId,
) -> Result<Option<Placement>, sqlx::Error> {
    if !db.is_multi_region() || conn_region != db.home_region() {
        return locate(db, org_id).await;
    }
    let row: Option<Row> = sqlx::query_as("SELECT org, region, moving_to FROM organization_directory WHERE org = $1")
        .bind(org_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| placement(db, r)))
}

/// The organization's placement, when the copy of it found in `region`'s database is its own
/// (`None`: pass it over). With several regions, a move makes a copy in the region it goes to
/// before it switches the directory, and leaves one in the region it leaves until its purge:
/// only the directory's region holds the organization. For lookups and workers that ask region
/// by region (an invitation, a Stripe customer, a member's organizations, due deletions,
/// notifications, exports and chain heads); the placement's `moving_to` says whether writes
/// must wait for the move.
pub async fn own_copy(db: &Db, org_id: OrgId, region: RegionId) -> Result<Option<Placement>, sqlx::Error> {
    Ok(own(db, locate(db, org_id).await?, org_id, region))
}

/// [`own_copy`], for a caller holding `conn`, a connection of `region` in a transaction (read
/// on it when it is the directory's database, as [`locate_from`]).
pub async fn own_copy_from(
    db: &Db,
    conn: &mut PgConnection,
    region: RegionId,
    org_id: OrgId,
) -> Result<Option<Placement>, sqlx::Error> {
    Ok(own(db, locate_from(db, conn, region, org_id).await?, org_id, region))
}

/// The placement when the directory puts the organization in `region` (no entry: the default
/// region).
fn own(db: &Db, placed: Option<Placement>, org_id: OrgId, region: RegionId) -> Option<Placement> {
    let placed = placed.unwrap_or(Placement { org_id, region: db.home_region(), moving_to: None });
    (placed.region == region).then_some(placed)
}

/// The advisory lock key of an organization's writes against its move (`$1`: the organization).
/// A transaction that writes holds it shared from before it asks the directory to its end
/// ([`hold_for_writing`]); a move takes it exclusively, in the region it leaves, once the
/// directory marks the move and before it copies (`cli::moving`): so it waits for every
/// write that found the organization not moving, and its copy holds them all.
pub const MOVE_LOCK_KEY: &str = "hashtextextended('clientflow.org-move:' || $1::text, 0)";

/// Whether `conn`, a transaction in `region`'s database, may write `org_id`'s data: the
/// directory places it there and no move is under way. With several regions, the transaction
/// first takes [`MOVE_LOCK_KEY`] shared (held to its end), then reads the directory in a
/// statement of its own, after the lock: a move marked since is seen, and a move marked before
/// waits for this transaction before it copies. With one region there is no move, nothing is
/// asked, and the answer is yes. For every write made during a request or by a worker that
/// must not land in a copy a move leaves behind.
pub async fn hold_for_writing(
    db: &Db,
    conn: &mut PgConnection,
    region: RegionId,
    org_id: OrgId,
) -> Result<bool, sqlx::Error> {
    let placed = lock_against_move(db, conn, region, org_id).await?;
    Ok(own(db, placed, org_id, region).is_some_and(|p| p.moving_to.is_none()))
}

/// What [`hold_for_writing`] decides on: [`MOVE_LOCK_KEY`] taken shared in `conn`'s transaction
/// (a connection of `region`), then the directory's entry, read after it. With one region,
/// nothing is taken or read: the default region, never moving.
pub async fn lock_against_move(
    db: &Db,
    conn: &mut PgConnection,
    region: RegionId,
    org_id: OrgId,
) -> Result<Option<Placement>, sqlx::Error> {
    if !db.is_multi_region() {
        return Ok(Some(Placement { org_id, region: db.home_region(), moving_to: None }));
    }
    sqlx::query(&format!("SELECT pg_advisory_xact_lock_shared({MOVE_LOCK_KEY})"))
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    locate_from(db, conn, region, org_id).await
}

/// The region of an organization, for principals that name it by id: the directory's, or the
/// default region's when it has no entry.
pub async fn region_of(db: &Db, org_id: OrgId) -> Result<RegionId, sqlx::Error> {
    Ok(locate(db, org_id).await?.map(|p| p.region).unwrap_or(db.home_region()))
}

/// Records a new organization, inside the transaction that creates it when that runs in the
/// directory's database (the default region).
pub async fn register_in(
    conn: &mut PgConnection,
    org_id: OrgId,
    slug: &str,
    region: RegionId,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO organization_directory (org, slug, region) VALUES ($1, $2, $3)")
        .bind(org_id)
        .bind(slug)
        .bind(region.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Reserves the slug of an organization about to be created in another region: committed in
/// the directory first, so the slug is unique across regions. [`forget`] undoes it when the
/// creation fails.
pub async fn reserve(db: &Db, org_id: OrgId, slug: &str, region: RegionId) -> Result<(), sqlx::Error> {
    let mut tx = db.home().global().await?;
    register_in(&mut tx, org_id, slug, region).await?;
    tx.commit().await
}

/// Removes an organization's entry (its creation failed, or it was deleted).
pub async fn forget(db: &Db, org_id: OrgId) -> Result<(), sqlx::Error> {
    let mut tx = db.home().global().await?;
    sqlx::query("DELETE FROM organization_directory WHERE org = $1").bind(org_id).execute(&mut *tx).await?;
    tx.commit().await
}

/// Follows a changed slug (committed before the organization's own change when the
/// organization lives in another region, so a taken slug is refused before anything changes).
pub async fn rename_in(conn: &mut PgConnection, org_id: OrgId, slug: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE organization_directory SET slug = $2 WHERE org = $1")
        .bind(org_id)
        .bind(slug)
        .execute(conn)
        .await?;
    Ok(())
}

/// The regions named in the directory that `db` has no database for: an installation must not
/// serve with one missing (its organizations would be unreachable).
pub async fn unconfigured_regions(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = db.home().global().await?;
    let named: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT region FROM organization_directory UNION SELECT DISTINCT moving_to FROM organization_directory WHERE moving_to IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let known = db.region_ids();
    Ok(named.into_iter().map(|(r,)| r).filter(|r| !RegionId::parse(r).is_some_and(|id| known.contains(&id))).collect())
}

/// Copies what an organization's pages show of a person (id, email, display name, status) into
/// the database of `region`, when that isn't the directory's: members, assignees and authors
/// are shown next to the organization's data, and its rows refer to the person. Nothing that
/// signs in (password hash, second factor, recovery codes, sessions) leaves the directory.
pub async fn project_user(db: &Db, region: RegionId, user: crate::platform::ids::UserId) -> Result<(), sqlx::Error> {
    if region == db.home_region() {
        return Ok(());
    }
    let Some(target) = db.in_region(region) else { return Err(crate::platform::db::region::unknown_region(region)) };
    let mut home = db.home().global().await?;
    type Person = (String, String, String, Option<time::OffsetDateTime>);
    let row: Option<Person> =
        sqlx::query_as("SELECT email, display_name, status, disabled_at FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(&mut *home)
            .await?;
    home.commit().await?;
    let Some((email, display_name, status, disabled_at)) = row else { return Ok(()) };
    let mut tx = target.global().await?;
    // Changed only where something differs: the access epoch rises with each change of a
    // person's status (`migrations/0056`).
    sqlx::query(
        "INSERT INTO users (id, email, display_name, status, disabled_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, \
         status = EXCLUDED.status, disabled_at = EXCLUDED.disabled_at \
         WHERE (users.email, users.display_name, users.status, users.disabled_at) IS DISTINCT FROM \
               (EXCLUDED.email, EXCLUDED.display_name, EXCLUDED.status, EXCLUDED.disabled_at)",
    )
    .bind(user)
    .bind(&email)
    .bind(&display_name)
    .bind(&status)
    .bind(disabled_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The columns that refer to a person: every column with a foreign key to `users` (memberships,
/// authors, creators, requesters…), from the catalog, so a column added later counts too.
/// `(table, column, tenant)`: `tenant` when the table has an `organization_id` (row-level
/// security shows its rows one organization at a time).
async fn person_columns(conn: &mut PgConnection) -> Result<Vec<(String, String, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT cl.relname::text, a.attname::text, \
                EXISTS (SELECT 1 FROM pg_attribute o WHERE o.attrelid = cl.oid AND o.attname = 'organization_id' \
                        AND NOT o.attisdropped) \
         FROM pg_constraint c \
         JOIN pg_class cl ON cl.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = cl.relnamespace AND n.nspname = 'public' \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) AND a.attname <> 'organization_id' \
         WHERE c.contype = 'f' AND c.confrelid = 'public.users'::regclass \
         ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The people `org`'s rows name (every column with a foreign key to `users`), read in `conn`'s
/// transaction, whose tenant is `org`.
pub async fn people_named(
    conn: &mut PgConnection,
    org: OrgId,
) -> Result<std::collections::BTreeSet<uuid::Uuid>, sqlx::Error> {
    let mut ids = std::collections::BTreeSet::new();
    for (table, column, tenant) in person_columns(conn).await? {
        if !tenant {
            continue;
        }
        let found: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT {c} FROM {t} WHERE organization_id = $1 AND {c} IS NOT NULL",
            c = quoted(&column),
            t = quoted(&table)
        ))
        .bind(org)
        .fetch_all(&mut *conn)
        .await?;
        ids.extend(found);
    }
    Ok(ids)
}

/// After `departing`'s rows left the database of `region` (its purge after a deletion, or the
/// source's purge after a move), removes the copies of `people` (its people, [`people_named`],
/// read before) that nothing left there names: a person who is still a member of another
/// organization of the region, or whom another organization's rows still name (a comment, a
/// time entry, an export they asked for), keeps the copy; the others' id, email and name leave
/// the region with the organization. In the directory's own region the people are the
/// accounts themselves, and nothing is removed.
///
/// `conn` is the purge's transaction, as the region's owner role (row-level security applies
/// to it too): each other organization of the region, as the directory lists them (those
/// moving in or out included), is checked in turn as the tenant, so a row of any of them keeps
/// the person, and a person is only removed when no organization's row would be changed by it
/// (a foreign key that would set another organization's column to null never fires). A
/// reference the directory doesn't know of still holds: the foreign keys refuse the removal,
/// and that person is kept. Returns the ids removed; the tenant is `departing` again after.
pub async fn forget_departed_people(
    db: &Db,
    conn: &mut PgConnection,
    region: RegionId,
    departing: OrgId,
    people: &std::collections::BTreeSet<uuid::Uuid>,
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    if region == db.home_region() || people.is_empty() {
        return Ok(Vec::new());
    }
    let others: Vec<(OrgId,)> = {
        let mut home = db.home().global().await?;
        let others = sqlx::query_as(
            "SELECT org FROM organization_directory WHERE org <> $2 AND (region = $1 OR moving_to = $1) \
             UNION SELECT org FROM organization_moves WHERE org <> $2 AND (from_region = $1 OR to_region = $1)",
        )
        .bind(region.as_str())
        .bind(departing)
        .fetch_all(&mut *home)
        .await?;
        home.commit().await?;
        others
    };
    let columns = person_columns(conn).await?;
    let mut named = String::from("SELECT p.id FROM unnest($1::uuid[]) AS p(id) WHERE false");
    for (table, column, _) in &columns {
        named.push_str(&format!(" OR EXISTS (SELECT 1 FROM {} x WHERE x.{} = p.id)", quoted(table), quoted(column)));
    }
    let mut left: Vec<uuid::Uuid> = people.iter().copied().collect();
    // No tenant first (tables without one), then each other organization of the region.
    let tenants = std::iter::once(None).chain(others.into_iter().map(|(o,)| Some(o)));
    for tenant in tenants {
        if left.is_empty() {
            break;
        }
        sqlx::query("SELECT set_config('app.org_id', $1, true)")
            .bind(tenant.map(|o| o.to_string()).unwrap_or_default())
            .execute(&mut *conn)
            .await?;
        let still: Vec<uuid::Uuid> = sqlx::query_scalar(&named).bind(&left).fetch_all(&mut *conn).await?;
        left.retain(|id| !still.contains(id));
    }
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(departing.to_string()).execute(&mut *conn).await?;
    let mut removed = Vec::new();
    for id in left {
        sqlx::query("SAVEPOINT cf_departed_person").execute(&mut *conn).await?;
        match sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *conn).await {
            Ok(done) => {
                sqlx::query("RELEASE SAVEPOINT cf_departed_person").execute(&mut *conn).await?;
                if done.rows_affected() == 1 {
                    removed.push(id);
                }
            }
            // Named by a row the directory didn't lead to: kept.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23503") => {
                sqlx::query("ROLLBACK TO SAVEPOINT cf_departed_person").execute(&mut *conn).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
