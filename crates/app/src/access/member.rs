//! A signed-in member of an organization: the membership, its role, the organization's
//! customization of that role and the member's own overrides.

use super::gate;
use super::principal::{Actor, load_permissions};
use super::role::Role;
use super::session::CurrentSession;
use super::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::db::tenant::{Capability, GateConn, GateTx};
use crate::platform::ids::{ClientId, OrgId};

/// What an organization's security settings and pages need of it, read with the membership.
#[derive(Debug, Clone)]
pub struct OrgFacts {
    pub slug: String,
    pub name: String,
    pub brand_color: String,
    /// The organization's IANA time zone.
    pub timezone: String,
    /// A shorter idle timeout than the installation's, if the organization set one.
    pub session_timeout_minutes: Option<i32>,
    pub require_two_factor: bool,
    pub ip_allowlist: Vec<ipnet::IpNet>,
    /// Every organization the user is an active member of (this one included), for the
    /// organization switcher. With several regions: those in this organization's region.
    pub memberships: Vec<OrgChoice>,
    /// The organization is being moved to another region: writes are refused meanwhile.
    pub moving: bool,
    /// The user's running timer here, for the navigation's indicator.
    pub running_timer: Option<RunningTimer>,
}

/// A running timer as the navigation shows it on every page (`work::timers` owns timers).
#[derive(Debug, Clone)]
pub struct RunningTimer {
    /// Seconds it had run when the request was resolved.
    pub elapsed_seconds: i64,
    /// The project's name, and the task's title when on a task.
    pub label: String,
    pub project_id: uuid::Uuid,
    pub task_id: Option<uuid::Uuid>,
}

/// One of the user's organizations, as the switcher lists it.
#[derive(Debug, Clone)]
pub struct OrgChoice {
    pub slug: String,
    pub name: String,
    pub role: Role,
}

/// At most this many organizations in the switcher (the organizations page lists them all).
pub const SWITCHER_LIMIT: i64 = 20;

/// Who asks for an organization's page, resolved in one transaction.
pub enum MemberRequest {
    /// No live session for the cookie.
    NoSession,
    /// A live session whose sign-in isn't complete, or whose user isn't an active member of an
    /// organization with this slug (the two look the same to the caller: 404 or the next step).
    Session(CurrentSession),
    /// A member: the session, the principal and the organization's facts.
    Member(CurrentSession, Box<OrgTx>, Box<OrgFacts>),
}

/// Resolves an organization route's asker in **one** transaction: the session behind the
/// cookie token (`session::lookup`, which also keeps its idle clock), the organization with
/// this slug among the user's own, the membership, the role's permissions as the organization
/// customized them and the member's overrides, and the organization's security settings. For a
/// member, the transaction stays open as the member's organization transaction: the route
/// guard runs the page's work in it (`crate::routes`), so a page is one transaction.
///
/// With more than one region, the session and the slug's directory entry are read first, as
/// one autocommit statement in the directory's database ([`routed_session`]); the transaction
/// is then the organization's region's, from the membership on.
pub async fn resolve_member_request(
    db: &Db,
    token: &str,
    slug: &str,
    now: time::OffsetDateTime,
    idle: time::Duration,
) -> Result<MemberRequest, sqlx::Error> {
    let (session, mut tx, moving) = if db.is_multi_region() {
        match routed_session(db, token, slug, now, idle).await? {
            Routed::Asker(found) => return Ok(found),
            Routed::Member { session, tx, moving } => (session, tx, moving),
        }
    } else {
        let mut tx = GateTx::begin(db, &gate()).await?;
        let Some(session) = super::session::lookup(&mut tx, token, now, idle).await? else {
            tx.commit().await?;
            return Ok(MemberRequest::NoSession);
        };
        if session.stage != super::session::Stage::Complete {
            tx.commit().await?;
            return Ok(MemberRequest::Session(session));
        }
        tx.set(Capability::User, &session.user.id().to_string()).await?;
        (session, tx, false)
    };
    let user = session.user.id();
    type Row = (OrgId, String, String, String, Option<i32>, bool, Vec<ipnet::IpNet>, Role, Option<ClientId>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT o.id, o.name, o.brand_color, o.timezone, o.session_timeout_minutes, o.require_two_factor, \
                o.ip_allowlist, m.role, m.client_id \
         FROM organizations o JOIN memberships m ON m.organization_id = o.id \
         WHERE o.slug = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(slug)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((
        org_id,
        name,
        brand_color,
        timezone,
        session_timeout_minutes,
        require_two_factor,
        ip_allowlist,
        role,
        client_id,
    )) = row
    else {
        tx.commit().await?;
        return Ok(MemberRequest::Session(session));
    };
    let memberships: Vec<(String, String, Role)> = sqlx::query_as(
        "SELECT o.slug, o.name, m.role FROM organizations o JOIN memberships m ON m.organization_id = o.id \
         WHERE m.user_id = $1 AND m.status = 'active' ORDER BY lower(o.name), o.slug LIMIT $2",
    )
    .bind(user)
    .bind(SWITCHER_LIMIT)
    .fetch_all(&mut *tx)
    .await?;
    let memberships = memberships.into_iter().map(|(slug, name, role)| OrgChoice { slug, name, role }).collect();
    // The user capability has found the membership; from here on only the organization counts.
    tx.switch_to_tenant(org_id).await?;
    let permissions = load_permissions(&mut tx, org_id, user, role).await?;
    type TimerRow = (time::OffsetDateTime, String, Option<String>, uuid::Uuid, Option<uuid::Uuid>);
    let running: Option<TimerRow> = sqlx::query_as(
        "SELECT t.started_at, p.name, k.title, t.project_id, t.task_id FROM timers t \
         JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
         LEFT JOIN tasks k ON k.organization_id = t.organization_id AND k.id = t.task_id \
         WHERE t.user_id = $1 AND t.stopped_at IS NULL",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let running_timer = running.map(|(started, project, task, project_id, task_id)| RunningTimer {
        elapsed_seconds: (now - started).whole_seconds().max(0),
        label: match task {
            Some(t) => format!("{project} — {t}"),
            None => project,
        },
        project_id,
        task_id,
    });
    let region = tx.region();
    let principal =
        OrgPrincipal { org_id, actor: Actor::User(user), role, client_id, permissions, scope_user: None, region };
    let tx = tx.into_org_tx(principal).await?;
    let facts = OrgFacts {
        slug: slug.to_string(),
        name,
        brand_color,
        timezone,
        session_timeout_minutes,
        require_two_factor,
        ip_allowlist,
        memberships,
        moving,
        running_timer,
    };
    Ok(MemberRequest::Member(session, Box::new(tx), Box::new(facts)))
}

/// With more than one region: the session, or the transaction of the organization's region the
/// membership is read in.
enum Routed {
    /// No live session, a sign-in not complete, or no organization with this slug.
    Asker(MemberRequest),
    /// A complete session and a transaction of the organization's region, the user capability
    /// set; `moving`: the directory says the organization is being moved.
    Member { session: CurrentSession, tx: GateTx, moving: bool },
}

/// The session behind the cookie and the directory's entry for the slug, read in the
/// directory's database as **one autocommit statement** (`session::lookup_routing`): no
/// transaction of the directory's database is begun, committed or rolled back for it. That is
/// safe because the statement needs nothing a transaction would carry: `sessions`, `users` and
/// `organization_directory` have no row-level security and the lookup sets no capability (it
/// reads them as the app role, as it did in a transaction), and the session bookkeeping it may
/// write (the idle clock once a minute, an expired session's removal) is a single statement
/// that stands on its own, kept whatever the rest of the request does. The request then goes on
/// in a transaction of the organization's region, begun with the user capability in the same
/// round trip: on the same connection when that is the directory's region, on the region's own
/// pool otherwise.
async fn routed_session(
    db: &Db,
    token: &str,
    slug: &str,
    now: time::OffsetDateTime,
    idle: time::Duration,
) -> Result<Routed, sqlx::Error> {
    let mut conn = GateConn::acquire(&db.home(), &gate()).await?;
    let Some((session, placement)) = super::session::lookup_routing(&mut conn, token, slug, now, idle).await? else {
        return Ok(Routed::Asker(MemberRequest::NoSession));
    };
    if session.stage != super::session::Stage::Complete {
        return Ok(Routed::Asker(MemberRequest::Session(session)));
    }
    let Some((_, region, moving_to)) = placement else {
        return Ok(Routed::Asker(MemberRequest::Session(session)));
    };
    let region = crate::platform::db::RegionId::parse(&region).unwrap_or(db.home_region());
    let user = session.user.id().to_string();
    let tx = if region == conn.region() {
        conn.begin_with(Capability::User, &user).await?
    } else {
        let region_db = db.in_region(region).ok_or_else(|| crate::platform::db::region::unknown_region(region))?;
        // The directory's connection goes back to its pool before the region's is taken.
        drop(conn);
        GateTx::begin_with(&region_db, &gate(), Capability::User, &user).await?
    };
    Ok(Routed::Member { session, tx, moving: moving_to.is_some() })
}
