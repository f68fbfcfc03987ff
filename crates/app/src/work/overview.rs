//! The organization's overview: what needs the person's attention today, in one transaction.
//!
//! Each part is there only when the person's role allows what it summarizes (a Member's
//! projects are the ones they are on, as everywhere), and counts what the pages it links to
//! would list.

use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::daily::{MyTask, group, my_work_sql};
use super::{member_filter, project_visible};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::error::DomainResult;

/// The most of the person's tasks, and of the active projects, the overview lists.
pub const LISTED: usize = 6;

pub struct Overview {
    /// The organization's today.
    pub today: Date,
    pub my_tasks: Option<MyTasks>,
    pub projects: Option<Projects>,
    pub invoices: Option<Invoices>,
    /// Minutes the person recorded this week (from Monday), when they track time.
    pub week_minutes: Option<i64>,
    /// What the person's open tasks due this week still need, against their hours a week.
    pub planned: Option<super::workload::MyWeek>,
    pub setup: Option<Setup>,
}

/// The person's open tasks: how many are late, due today and due this week, and the first few.
pub struct MyTasks {
    pub overdue: usize,
    pub due_today: usize,
    pub this_week: usize,
    pub open: usize,
    pub next: Vec<MyTask>,
}

/// The active projects the person sees, most recently changed first.
pub struct Projects {
    pub active: i64,
    pub listed: Vec<ProjectSummary>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectSummary {
    pub id: Uuid,
    pub name: String,
    pub client: Option<String>,
    /// Open tasks, and of them those past their due date (only when the role shows tasks).
    pub open_tasks: i64,
    pub overdue_tasks: i64,
    /// Its billable time has used more than its budget.
    pub over_budget: bool,
}

/// Sent invoices not yet paid, per currency, and drafts.
pub struct Invoices {
    /// (currency, how many, total in minor units), by currency.
    pub outstanding: Vec<(String, i64, i64)>,
    pub overdue: i64,
    pub drafts: i64,
}

/// A new organization's first steps, each `Some(taken)` for someone who may take it.
pub struct Setup {
    /// A client exists.
    pub add_client: Option<bool>,
    /// A project the person sees exists.
    pub create_project: Option<bool>,
    /// Someone besides the person who is not a Client belongs or is invited.
    pub invite_team: Option<bool>,
}

impl Setup {
    /// Whether every step this person may take is taken.
    pub fn done(&self) -> bool {
        [self.add_client, self.create_project, self.invite_team].iter().all(|s| s.is_none_or(|taken| taken))
    }
}

pub async fn overview(db: &Db, p: &OrgPrincipal, now: OffsetDateTime) -> DomainResult<Overview> {
    let member = member_filter(p)?;
    let me = p.on_behalf_of();
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let my_tasks = match me {
        Some(me) if p.can(Permission::TasksRead) => Some(my_tasks(&mut tx, member, me.as_uuid(), today).await?),
        _ => None,
    };
    let projects = if p.can(Permission::ProjectsRead) {
        Some(projects(&mut tx, member, p.can(Permission::TasksRead), today).await?)
    } else {
        None
    };
    let invoices = if p.can(Permission::InvoicesRead) { Some(invoices(&mut tx, today).await?) } else { None };
    let week_minutes = match me {
        Some(me) if p.can(Permission::TimeTrack) => {
            let monday = today - Duration::days(today.weekday().number_days_from_monday().into());
            let minutes: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(minutes), 0)::bigint FROM time_entries WHERE user_id = $1 AND spent_on BETWEEN $2 AND $3",
            )
            .bind(me)
            .bind(monday)
            .bind(today)
            .fetch_one(&mut *tx)
            .await?;
            Some(minutes)
        }
        _ => None,
    };
    let planned = match me {
        Some(me) if p.can(Permission::TasksRead) => Some(super::workload::my_week(&mut tx, member, me, today).await?),
        _ => None,
    };
    let setup = setup(&mut tx, p, member, now).await?;
    tx.commit().await?;
    Ok(Overview { today, my_tasks, projects, invoices, week_minutes, planned, setup })
}

async fn my_tasks(tx: &mut OrgTx, member: Option<Uuid>, me: Uuid, today: Date) -> DomainResult<MyTasks> {
    let rows: Vec<MyTask> = sqlx::query_as(&my_work_sql())
        .bind(member)
        .bind(me)
        .bind(super::daily::MY_WORK_CAP)
        .fetch_all(&mut **tx)
        .await?;
    let open = rows.len();
    let groups = group(rows, today);
    let (overdue, due_today, this_week) = (groups.overdue.len(), groups.due_today.len(), groups.this_week.len());
    // The groups follow each other in due-date order: together they are the list as read.
    let next = [groups.overdue, groups.due_today, groups.this_week, groups.later].into_iter().flatten().take(LISTED);
    Ok(MyTasks { overdue, due_today, this_week, open, next: next.collect() })
}

async fn projects(tx: &mut OrgTx, member: Option<Uuid>, with_tasks: bool, today: Date) -> DomainResult<Projects> {
    let visible = project_visible("p", 1);
    let active: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM projects p WHERE p.status = 'active' AND {visible}"))
            .bind(member)
            .fetch_one(&mut **tx)
            .await?;
    // The projects listed are chosen first; only their tasks are counted.
    let listed = sqlx::query_as(&format!(
        "SELECT p.id, p.name, c.name AS client, \
                coalesce(t.open, 0) AS open_tasks, coalesce(t.overdue, 0) AS overdue_tasks, \
                coalesce(p.budget_minor < b.used, false) AS over_budget \
           FROM (SELECT p.* FROM projects p WHERE p.status = 'active' AND {visible} \
                  ORDER BY p.updated_at DESC, p.id LIMIT $4) p \
           LEFT JOIN clients c ON c.organization_id = p.organization_id AND c.id = p.client_id \
           LEFT JOIN LATERAL {budget} b ON true \
           LEFT JOIN LATERAL (SELECT count(*) AS open, count(*) FILTER (WHERE t.due_date < $2) AS overdue \
                                FROM tasks t WHERE $3 AND t.organization_id = p.organization_id \
                                 AND t.project_id = p.id AND t.status <> 'done') t ON true \
          ORDER BY p.updated_at DESC, p.id",
        budget = super::projects::billable_use("p", true)
    ))
    .bind(member)
    .bind(today)
    .bind(with_tasks)
    .bind(LISTED as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Projects { active, listed })
}

async fn invoices(tx: &mut OrgTx, today: Date) -> DomainResult<Invoices> {
    // One pass over the organization's invoices, per currency.
    // What is outstanding is what the sent invoices still owe, their payments taken off.
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT currency, count(*) FILTER (WHERE status = 'sent'), \
                least(coalesce(sum(balance) FILTER (WHERE status = 'sent'), 0), 9223372036854775807)::bigint, \
                count(*) FILTER (WHERE status = 'sent' AND due_date < $1), count(*) FILTER (WHERE status = 'draft') \
           FROM (SELECT i.currency, i.status, i.due_date, i.total_minor - {paid} AS balance \
                   FROM invoices i WHERE i.status IN ('sent', 'draft')) i \
          GROUP BY currency ORDER BY currency",
        paid = super::invoices::PAID_SQL
    ))
    .bind(today)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Invoices {
        outstanding: rows.iter().filter(|r| r.1 > 0).map(|r| (r.0.clone(), r.1, r.2)).collect(),
        overdue: rows.iter().map(|r| r.3).sum(),
        drafts: rows.iter().map(|r| r.4).sum(),
    })
}

async fn setup(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    member: Option<Uuid>,
    now: OffsetDateTime,
) -> DomainResult<Option<Setup>> {
    let may = |perm| p.can(perm);
    if !may(Permission::ClientsCreate) && !may(Permission::ProjectsCreate) && !may(Permission::MembersInvite) {
        return Ok(None);
    }
    // Projects as the person sees them (a Member's are those they are on).
    let (clients, projects, team): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM clients), (SELECT count(*) FROM projects p WHERE {}), \
                (SELECT count(*) FROM memberships WHERE role <> 'client') \
                + (SELECT count(*) FROM invitations WHERE role <> 'client' AND accepted_at IS NULL \
                      AND revoked_at IS NULL AND expires_at > $2)",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(Setup {
        add_client: may(Permission::ClientsCreate).then_some(clients > 0),
        create_project: may(Permission::ProjectsCreate).then_some(projects > 0),
        invite_team: may(Permission::MembersInvite).then_some(team > 1),
    }))
}
