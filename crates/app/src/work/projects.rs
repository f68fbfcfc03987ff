//! Projects, their members and their board columns.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, fields, member_filter, project_visible};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, ColumnId, OrgId, ProjectId, UserId};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Project {
    #[schema(value_type = String, format = Uuid)]
    pub organization_id: OrgId,
    #[schema(value_type = String, format = Uuid)]
    pub id: ProjectId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub client_id: Option<ClientId>,
    pub name: String,
    pub description: String,
    #[schema(value_type = ProjectStatus)]
    pub status: String,
    /// In minor units of the organization's currency.
    pub budget_minor: Option<i64>,
    #[schema(value_type = Option<String>, format = Date)]
    #[serde(with = "super::iso_date::option")]
    pub start_date: Option<Date>,
    #[schema(value_type = Option<String>, format = Date)]
    #[serde(with = "super::iso_date::option")]
    pub due_date: Option<Date>,
    pub visible_to_client: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Minor units per hour for time on the project (unless the person on it has one); `null`:
    /// the client's, else the organization's.
    pub hourly_rate_minor: Option<i64>,
    /// The budget counts the project's billable expenses (in the organization's currency) as
    /// well as its billable time.
    pub budget_counts_expenses: bool,
}

pub const COLUMNS: &str = "p.organization_id, p.id, p.client_id, p.name, p.description, p.status, p.budget_minor, \
     p.start_date, p.due_date, p.visible_to_client, p.created_at, p.updated_at, p.hourly_rate_minor, \
     p.budget_counts_expenses";

/// A new project (with the default board columns).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    #[schema(format = "nonblank-text", max_length = 200)]
    pub name: String,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 20000, nullable = false)]
    pub description: Option<String>,
    /// A client of the organization; empty or null for none.
    #[schema(format = "uuid-or-empty")]
    pub client_id: Option<String>,
    /// Default `active`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<ProjectStatus>, nullable = false)]
    pub status: Option<String>,
    /// In minor units of the organization's currency; null for none.
    #[serde(default, deserialize_with = "fields::int_or_null")]
    #[schema(minimum = 0, maximum = 1000000000000000_i64)]
    pub budget_minor: Option<i64>,
    /// YYYY-MM-DD; empty or null for none.
    #[schema(format = "date-or-empty")]
    pub start_date: Option<String>,
    /// YYYY-MM-DD, not before `start_date`; empty or null for none.
    #[schema(format = "date-or-empty")]
    pub due_date: Option<String>,
    /// Default `false`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub visible_to_client: Option<bool>,
    /// Minor units per hour (120.50 is 12050); null for none (the client's or organization's applies).
    #[serde(default, deserialize_with = "fields::int_or_null")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub hourly_rate_minor: Option<i64>,
    /// Count billable expenses (in the organization's currency) against the budget as well as
    /// billable time. Default `false`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub budget_counts_expenses: Option<bool>,
}

/// Changes to a project: fields left out stay as they are; `null` clears a field that may be
/// empty (client, budget, dates) and is refused for the others.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "nonblank-text", max_length = 200, nullable = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 20000, nullable = false)]
    pub description: Option<String>,
    /// A client of the organization; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub client_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<ProjectStatus>, nullable = false)]
    pub status: Option<String>,
    /// In minor units of the organization's currency; null for none.
    #[serde(default, deserialize_with = "fields::int_present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000000_i64)]
    pub budget_minor: Option<Option<i64>>,
    /// YYYY-MM-DD; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "date-or-empty")]
    pub start_date: Option<Option<String>>,
    /// YYYY-MM-DD, not before the start date; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "date-or-empty")]
    pub due_date: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub visible_to_client: Option<bool>,
    /// Minor units per hour; null clears it.
    #[serde(default, deserialize_with = "fields::int_present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 100000000000_i64)]
    pub hourly_rate_minor: Option<Option<i64>>,
    /// Count billable expenses (in the organization's currency) against the budget as well as
    /// billable time.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub budget_counts_expenses: Option<bool>,
}

/// A project's status. The services keep it as text (the `projects.status` check constraint
/// names the same five); this is the one list of them and of their words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ProjectStatus {
    Planned,
    Active,
    OnHold,
    Completed,
    Archived,
}

impl ProjectStatus {
    pub const ALL: [ProjectStatus; 5] = [Self::Planned, Self::Active, Self::OnHold, Self::Completed, Self::Archived];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Active => "active",
            Self::OnHold => "on_hold",
            Self::Completed => "completed",
            Self::Archived => "archived",
        }
    }

    /// The status in words, as pages show it.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Planned => "Planned",
            Self::Active => "Active",
            Self::OnHold => "On hold",
            Self::Completed => "Completed",
            Self::Archived => "Archived",
        }
    }
}

impl Project {
    /// The project's status in words ("On hold").
    pub fn status_label(&self) -> &'static str {
        ProjectStatus::ALL.into_iter().find(|s| s.as_str() == self.status).map_or("Active", ProjectStatus::label)
    }
}

/// The largest budget (10^15 minor units).
pub const MAX_BUDGET: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct ProjectFilter {
    pub q: Option<String>,
    /// A status, or `all` (default: everything but archived).
    pub status: Option<String>,
    pub client_id: Option<String>,
}

pub const STATUSES: [&str; 5] = {
    let [a, b, c, d, e] = ProjectStatus::ALL;
    [a.as_str(), b.as_str(), c.as_str(), d.as_str(), e.as_str()]
};

pub(crate) use super::require;

fn parse_client(v: Option<&str>) -> DomainResult<Option<ClientId>> {
    v.map(|v| fields::id_or_empty("client_id", v)).transpose().map(Option::flatten)
}

/// A start date not after the due date.
fn check_dates(start: Option<Date>, due: Option<Date>) -> DomainResult<()> {
    match (start, due) {
        (Some(s), Some(d)) if d < s => Err(DomainError::field("due_date", "must not be before the start date")),
        _ => Ok(()),
    }
}

fn date_field(field: &str, v: Option<&str>) -> DomainResult<Option<Date>> {
    v.map(|v| fields::date_or_empty(field, v)).transpose().map(Option::flatten)
}

fn check_budget(budget: Option<i64>) -> DomainResult<Option<i64>> {
    budget.map(|b| fields::within("budget_minor", b, 0, MAX_BUDGET)).transpose()
}

pub async fn list(db: &Db, p: &OrgPrincipal, f: &ProjectFilter, page: Page) -> DomainResult<(Vec<Project>, i64)> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    let status = match f.status.as_deref() {
        None | Some("") => None,
        Some("all") => Some("all".to_string()),
        Some(s) if STATUSES.contains(&s) => Some(s.to_string()),
        Some(_) => return Err(DomainError::field("status", "is not a project status")),
    };
    let client = parse_client(f.client_id.as_deref())?;
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(|q| format!("%{}%", super::like_escape(q)));
    let where_ = format!(
        "{} AND (CASE WHEN $2::text IS NULL THEN p.status <> 'archived' WHEN $2 = 'all' THEN true ELSE p.status = $2 END) \
         AND ($3::uuid IS NULL OR p.client_id = $3) AND ($4::text IS NULL OR p.name ILIKE $4)",
        project_visible("p", 1)
    );
    let mut tx = OrgTx::begin(db, p).await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM projects p WHERE {where_}"))
        .bind(member)
        .bind(&status)
        .bind(client)
        .bind(&q)
        .fetch_one(&mut *tx)
        .await?;
    let items = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projects p WHERE {where_} ORDER BY lower(p.name), p.id LIMIT $5 OFFSET $6"
    ))
    .bind(member)
    .bind(&status)
    .bind(client)
    .bind(&q)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((items, total))
}

/// A project the principal may see (404 otherwise, including other organizations').
pub async fn fetch_visible(tx: &mut OrgTx, p: &OrgPrincipal, id: ProjectId) -> DomainResult<Project> {
    let member = member_filter(p)?;
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM projects p WHERE p.id = $2 AND {}", project_visible("p", 1)))
        .bind(member)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: ProjectId) -> DomainResult<Project> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let project = fetch_visible(&mut tx, p, id).await?;
    tx.commit().await?;
    Ok(project)
}

/// What a project's billable time (and, where the project says so, its billable expenses) has
/// used of its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProjectBudget {
    /// The budget, in minor units of `currency`; null when the project has none.
    pub budget_minor: Option<i64>,
    /// The value of the project's billable time at the rates it was recorded with, each entry
    /// rounded to the minor unit as the time report and invoices round it, plus
    /// `expenses_minor`.
    pub used_minor: i64,
    /// The project's billable expenses in `currency`, counted in `used_minor`: 0 unless the
    /// project counts expenses against its budget (`counts_expenses`).
    pub expenses_minor: i64,
    /// The project counts its billable expenses against its budget.
    pub counts_expenses: bool,
    /// Billable expenses recorded in another currency (before the organization changed its
    /// own): they count as nothing. 0 unless the project counts expenses.
    pub uncounted_expenses: i64,
    /// `budget_minor - used_minor`: negative by as much as the budget is exceeded; null without
    /// a budget.
    pub remaining_minor: Option<i64>,
    /// Billable entries recorded without a rate: they count as nothing.
    pub unrated_entries: i64,
    /// The organization's currency (ISO 4217), which budgets and rates are kept in.
    pub currency: String,
}

impl ProjectBudget {
    fn new(row: BudgetRow) -> Self {
        let BudgetRow {
            budget_minor,
            currency,
            used_minor,
            unrated_entries,
            expenses_minor,
            counts_expenses,
            uncounted,
        } = row;
        // Neither is negative, so the difference can't overflow; saturating all the same.
        let remaining_minor = budget_minor.map(|b| b.saturating_sub(used_minor));
        Self {
            budget_minor,
            used_minor,
            expenses_minor,
            counts_expenses,
            uncounted_expenses: uncounted,
            remaining_minor,
            unrated_entries,
            currency,
        }
    }

    /// The share used, in whole percent (rounded down; more than 100 when over budget); none
    /// without a budget or for a budget of zero.
    pub fn percent(&self) -> Option<i64> {
        share_used(self.budget_minor?, self.used_minor)
    }
}

/// How much of `budget` `used` is, in whole percent (rounded down); none for a budget of zero.
fn share_used(budget: i64, used: i64) -> Option<i64> {
    (budget > 0).then(|| i64::try_from(i128::from(used) * 100 / i128::from(budget)).unwrap_or(i64::MAX))
}

/// SQL for what project `alias` has used of its budget, as one row for a lateral join: `used`
/// (in minor units, a numeric: the time's and the expenses' sum), `unrated` (billable entries
/// without a rate), `expenses` (the billable expenses in the organization's currency, counted in
/// `used`) and `uncounted` (billable expenses in another currency). Each time entry counts at
/// the rate it was recorded with, rounded to the minor unit as the time report and invoices
/// round it; expenses count only for a project that counts them against its budget. With
/// `only_with_budget`, a project without a budget reads no entry at all (the condition inside the
/// scan becomes a one-time filter; outside, as a join condition, the sum would run first).
pub fn billable_use(alias: &str, only_with_budget: bool) -> String {
    let gate = if only_with_budget { format!(" AND {alias}.budget_minor IS NOT NULL") } else { String::new() };
    format!(
        "(SELECT coalesce(bt.used, 0) + coalesce(bx.spent, 0) AS used, bt.unrated, \
                coalesce(bx.spent, 0) AS expenses, bx.uncounted \
           FROM (SELECT sum((e.minutes::bigint * e.rate_minor + 30) / 60) FILTER (WHERE e.rate_minor IS NOT NULL) AS used, \
                        count(*) FILTER (WHERE e.rate_minor IS NULL) AS unrated \
                   FROM time_entries e WHERE e.organization_id = {alias}.organization_id AND e.project_id = {alias}.id \
                    AND e.billable{gate}) bt, \
                (SELECT sum(x.amount_minor) FILTER (WHERE x.currency = bo.currency) AS spent, \
                        count(*) FILTER (WHERE x.currency <> bo.currency) AS uncounted \
                   FROM expenses x JOIN organizations bo ON bo.id = x.organization_id \
                  WHERE x.organization_id = {alias}.organization_id AND x.project_id = {alias}.id AND x.billable \
                    AND {alias}.budget_counts_expenses{gate}) bx)"
    )
}

/// One project's budget as [`budgets`] reads it.
#[derive(sqlx::FromRow)]
struct BudgetRow {
    budget_minor: Option<i64>,
    currency: String,
    used_minor: i64,
    unrated_entries: i64,
    expenses_minor: i64,
    counts_expenses: bool,
    uncounted: i64,
}

#[derive(sqlx::FromRow)]
struct BudgetRowWithId {
    id: ProjectId,
    #[sqlx(flatten)]
    row: BudgetRow,
}

/// The budgets of those of `ids` that the principal may see (the others are left out, as a
/// project not found would be), with what each project's billable time has used.
pub async fn budgets(
    db: &Db,
    p: &OrgPrincipal,
    ids: &[ProjectId],
) -> DomainResult<std::collections::HashMap<ProjectId, ProjectBudget>> {
    require(p, Permission::ProjectsRead)?;
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let member = member_filter(p)?;
    let ids: Vec<Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    let mut tx = OrgTx::begin(db, p).await?;
    // The sum can't exceed what a bigint holds for any real project, but a stored rate at its
    // bound over many entries could: it is capped rather than allowed to fail the page.
    let rows: Vec<BudgetRowWithId> = sqlx::query_as(&format!(
        "SELECT p.id, p.budget_minor, o.currency, \
         least(t.used, 9223372036854775807)::bigint AS used_minor, t.unrated AS unrated_entries, \
         least(t.expenses, 9223372036854775807)::bigint AS expenses_minor, \
         p.budget_counts_expenses AS counts_expenses, t.uncounted \
         FROM projects p JOIN organizations o ON o.id = p.organization_id \
         CROSS JOIN LATERAL {} t WHERE p.id = ANY($2) AND {}",
        billable_use("p", false),
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| (r.id, ProjectBudget::new(r.row))).collect())
}

/// How far along a project's tasks are (subtasks counted as tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub total: i64,
    pub done: i64,
    /// Open tasks due before the organization's today.
    pub overdue: i64,
}

/// The task counts of those of `ids` the principal may see, for those who may read tasks (for
/// others: none, as the tasks themselves). A project without tasks is left out.
pub async fn progress(
    db: &Db,
    p: &OrgPrincipal,
    ids: &[ProjectId],
    today: Date,
) -> DomainResult<std::collections::HashMap<ProjectId, Progress>> {
    require(p, Permission::ProjectsRead)?;
    if ids.is_empty() || !p.can(Permission::TasksRead) {
        return Ok(Default::default());
    }
    let member = member_filter(p)?;
    let ids: Vec<Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    let mut tx = OrgTx::begin(db, p).await?;
    let rows: Vec<(ProjectId, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT p.id, count(*), count(*) FILTER (WHERE t.status = 'done'), \
                count(*) FILTER (WHERE t.status <> 'done' AND t.due_date < $3) \
           FROM projects p JOIN tasks t ON t.organization_id = p.organization_id AND t.project_id = p.id \
          WHERE p.id = ANY($2) AND {} GROUP BY p.id",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(&ids)
    .bind(today)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(id, total, done, overdue)| (id, Progress { total, done, overdue })).collect())
}

/// Tells the people who answer for a project (its organization's Owners and Admins, and the
/// Managers on it) when what it used ([`billable_use`]: its billable time, and its billable
/// expenses where it counts them) reaches 80% of its budget, and again when it goes over it (a
/// budget of zero: as soon as anything is used), once each: the level told is kept on the
/// project. When the use falls back (an entry or expense deleted or lowered, the budget raised)
/// the level comes down with it, silently, and a later crossing is told again. Runs in the
/// transaction that changed the time, an expense or the budget, holding the project's row from
/// the start: a second transaction recording time on the project at the same moment waits,
/// then counts this one's entry too, so two entries that cross together are told, and told
/// once. `actor` is not told about their own doing.
pub async fn check_budget_alert(
    tx: &mut OrgTx,
    project: ProjectId,
    actor: Option<UserId>,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    // The lock (not one a new time entry's foreign key check waits for).
    let budgeted: Option<i64> = sqlx::query_scalar(
        "SELECT budget_minor FROM projects WHERE id = $1 AND budget_minor IS NOT NULL FOR NO KEY UPDATE",
    )
    .bind(project)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(budget) = budgeted else {
        sqlx::query("UPDATE projects SET budget_alerted = NULL WHERE id = $1 AND budget_alerted IS NOT NULL")
            .bind(project)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    };
    let (name, used, currency, with_expenses): (String, i64, String, bool) = sqlx::query_as(&format!(
        "SELECT p.name, least(t.used, 9223372036854775807)::bigint, o.currency, p.budget_counts_expenses \
         FROM projects p JOIN organizations o ON o.id = p.organization_id CROSS JOIN LATERAL {} t WHERE p.id = $1",
        billable_use("p", false)
    ))
    .bind(project)
    .fetch_one(&mut **tx)
    .await?;
    // Over, and the share used, as pages show them.
    let level: Option<i16> = if used > budget {
        Some(100)
    } else if share_used(budget, used).is_some_and(|p| p >= 80) {
        Some(80)
    } else {
        None
    };
    // Down (silently) when less is used than what was told.
    sqlx::query("UPDATE projects SET budget_alerted = $2 WHERE id = $1 AND budget_alerted > coalesce($2, 0)")
        .bind(project)
        .bind(level)
        .execute(&mut **tx)
        .await?;
    let Some(level) = level else { return Ok(()) };
    let raised =
        sqlx::query("UPDATE projects SET budget_alerted = $2 WHERE id = $1 AND coalesce(budget_alerted, 0) < $2")
            .bind(project)
            .bind(level)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if raised == 0 {
        return Ok(());
    }
    let people: Vec<UserId> = sqlx::query_scalar(
        "SELECT m.user_id FROM memberships m WHERE m.status = 'active' AND (m.role IN ('owner', 'admin') \
         OR (m.role = 'manager' AND EXISTS (SELECT 1 FROM project_members pm WHERE pm.organization_id = m.organization_id \
             AND pm.project_id = $1 AND pm.user_id = m.user_id))) ORDER BY m.user_id",
    )
    .bind(project)
    .fetch_all(&mut **tx)
    .await?;
    let title =
        if level == 100 { format!("{name} is over its budget") } else { format!("{name} has used 80% of its budget") };
    let body = format!(
        "{currency} {} of {} used by billable time{}.",
        super::money::format_minor(used),
        super::money::format_minor(budget),
        if with_expenses { " and expenses" } else { "" }
    );
    let link = format!("/o/{}/projects/{project}", super::org_slug(tx).await?);
    let new =
        crate::notify::New { kind: crate::notify::Kind::BudgetUsed, actor, title: &title, body: &body, link: &link };
    crate::notify::record(tx, &people, &new, now).await.map(|_| ())
}

/// One project's budget ([`budgets`]); not found when the principal may not see the project.
pub async fn budget(db: &Db, p: &OrgPrincipal, id: ProjectId) -> DomainResult<ProjectBudget> {
    budgets(db, p, &[id]).await?.remove(&id).ok_or(DomainError::NotFound)
}

pub(super) fn snapshot(p: &Project) -> serde_json::Value {
    json!({
        "name": p.name, "client_id": p.client_id, "status": p.status, "budget_minor": p.budget_minor,
        "start_date": p.start_date.map(|d| d.to_string()), "due_date": p.due_date.map(|d| d.to_string()),
        "visible_to_client": p.visible_to_client, "hourly_rate_minor": p.hourly_rate_minor,
        "budget_counts_expenses": p.budget_counts_expenses,
    })
}

pub(super) async fn check_client(tx: &mut OrgTx, client: Option<ClientId>) -> DomainResult<()> {
    if let Some(c) = client {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)")
            .bind(c)
            .fetch_one(&mut **tx)
            .await?;
        if !exists {
            // A client of another organization looks exactly like a missing one.
            return Err(DomainError::field("client_id", "no such client"));
        }
    }
    Ok(())
}

/// A new project's board: each column with the status it stands for (a task's status is its
/// column's).
pub const DEFAULT_COLUMNS: [(&str, &str); 3] = [("To do", "todo"), ("In progress", "in_progress"), ("Done", "done")];

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &ProjectInput) -> DomainResult<Project> {
    require(p, Permission::ProjectsCreate)?;
    let name = fields::nonblank("name", &input.name, 200)?;
    let description = fields::text("description", input.description.as_deref().unwrap_or(""), 20000)?;
    let client = parse_client(input.client_id.as_deref())?;
    let status = input.status.clone().unwrap_or_else(|| "active".into());
    fields::one_of("status", &status, &STATUSES)?;
    let budget = check_budget(input.budget_minor)?;
    let start = date_field("start_date", input.start_date.as_deref())?;
    let due = date_field("due_date", input.due_date.as_deref())?;
    check_dates(start, due)?;
    let rate = input.hourly_rate_minor.map(|r| super::invoicing::check_rate("hourly_rate_minor", r)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    crate::billing::limits::check(&mut tx, ctx, crate::billing::limits::Resource::Projects, 1).await?;
    check_client(&mut tx, client).await?;
    let id = ProjectId::new();
    let project: Project = sqlx::query_as(&format!(
        "INSERT INTO projects AS p (organization_id, id, client_id, name, description, status, budget_minor, start_date, due_date, \
         visible_to_client, created_at, updated_at, hourly_rate_minor, budget_counts_expenses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(id)
    .bind(client)
    .bind(&name)
    .bind(&description)
    .bind(&status)
    .bind(budget)
    .bind(start)
    .bind(due)
    .bind(input.visible_to_client.unwrap_or(false))
    .bind(ctx.now)
    .bind(rate)
    .bind(input.budget_counts_expenses.unwrap_or(false))
    .fetch_one(&mut *tx)
    .await?;
    for (i, (col, status)) in DEFAULT_COLUMNS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO board_columns (organization_id, id, project_id, name, position, status) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tx.org_id())
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(col)
        .bind(i as i32)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    }
    join_creator(&mut tx, p, id, ctx.now).await?;
    audit::record(&mut tx, ctx, Entry::new("project.created", "project", id).after(snapshot(&project))).await?;
    tx.commit().await?;
    Ok(project)
}

/// The creator works in the project they created (for an API key: the member who created the
/// key, or a Member-role key could not see the project it just made).
pub(super) async fn join_creator(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    id: ProjectId,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if let Some(user) = p.on_behalf_of() {
        sqlx::query(
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tx.org_id())
        .bind(id)
        .bind(user)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: ProjectId,
    input: &ProjectUpdate,
) -> DomainResult<Project> {
    require(p, Permission::ProjectsUpdate)?;
    let name = input.name.as_deref().map(|n| fields::nonblank("name", n, 200)).transpose()?;
    let description = input.description.as_deref().map(|d| fields::text("description", d, 20000)).transpose()?;
    let client = input.client_id.as_ref().map(|c| parse_client(c.as_deref())).transpose()?;
    if let Some(status) = &input.status {
        fields::one_of("status", status, &STATUSES)?;
    }
    let budget = input.budget_minor.map(check_budget).transpose()?;
    let start = input.start_date.as_ref().map(|d| date_field("start_date", d.as_deref())).transpose()?;
    let due = input.due_date.as_ref().map(|d| date_field("due_date", d.as_deref())).transpose()?;
    let rate = match input.hourly_rate_minor {
        Some(Some(r)) => Some(Some(super::invoicing::check_rate("hourly_rate_minor", r)?)),
        other => other,
    };
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible(&mut tx, p, id).await?;
    let rate = rate.unwrap_or(before.hourly_rate_minor);
    let name = name.unwrap_or_else(|| before.name.clone());
    let description = description.unwrap_or_else(|| before.description.clone());
    let client = client.unwrap_or(before.client_id);
    let status = input.status.clone().unwrap_or_else(|| before.status.clone());
    let budget = budget.unwrap_or(before.budget_minor);
    let start = start.unwrap_or(before.start_date);
    let due = due.unwrap_or(before.due_date);
    check_dates(start, due)?;
    check_client(&mut tx, client).await?;
    let after: Project = sqlx::query_as(&format!(
        "UPDATE projects AS p SET name = $2, description = $3, client_id = $4, status = $5, budget_minor = $6, start_date = $7, \
         due_date = $8, visible_to_client = $9, archived_at = CASE WHEN $5 = 'archived' THEN coalesce(p.archived_at, $10) ELSE NULL END, \
         updated_at = $10, hourly_rate_minor = $11, budget_counts_expenses = $12 WHERE p.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&name)
    .bind(&description)
    .bind(client)
    .bind(&status)
    .bind(budget)
    .bind(start)
    .bind(due)
    .bind(input.visible_to_client.unwrap_or(before.visible_to_client))
    .bind(ctx.now)
    .bind(rate)
    .bind(input.budget_counts_expenses.unwrap_or(before.budget_counts_expenses))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("project.updated", "project", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    if after.budget_minor != before.budget_minor || after.budget_counts_expenses != before.budget_counts_expenses {
        check_budget_alert(&mut tx, id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Deletes a project with its tasks, board and time; refused while it still has files or
/// approved time.
pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: ProjectId) -> DomainResult<()> {
    require(p, Permission::ProjectsDelete)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible(&mut tx, p, id).await?;
    let files: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM files WHERE project_id = $1)")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if files {
        return Err(DomainError::Conflict("Delete the project's files first, or archive the project.".into()));
    }
    super::approvals::refuse_to_delete_approved(&mut tx, super::approvals::Holding::Project(id)).await?;
    sqlx::query("DELETE FROM projects WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("project.deleted", "project", id).before(snapshot(&before))).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProjectMember {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: String,
    /// Minor units per hour for this person's time on the project; `null`: the project's, the
    /// client's, else the organization's.
    pub hourly_rate_minor: Option<i64>,
}

pub async fn members(db: &Db, p: &OrgPrincipal, id: ProjectId) -> DomainResult<Vec<ProjectMember>> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, id).await?;
    let rows = sqlx::query_as(
        "SELECT pm.user_id, u.email, u.display_name, m.role, pm.hourly_rate_minor FROM project_members pm \
         JOIN memberships m ON m.organization_id = pm.organization_id AND m.user_id = pm.user_id \
         JOIN users u ON u.id = pm.user_id WHERE pm.project_id = $1 ORDER BY u.email",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

pub async fn add_member(db: &Db, ctx: &Context, p: &OrgPrincipal, id: ProjectId, user: UserId) -> DomainResult<()> {
    require(p, Permission::ProjectsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, id).await?;
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1 AND status = 'active'")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    match role.as_deref() {
        None => return Err(DomainError::field("user_id", "is not an active member of this organization")),
        Some("client") => return Err(DomainError::field("user_id", "Client users see projects through the portal")),
        Some(_) => {}
    }
    sqlx::query(
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(user)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    audit::record(&mut tx, ctx, Entry::new("project.member_added", "project", id).after(json!({ "user_id": user })))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets (or with `None` clears) a person's hourly rate on the project, the most specific rate
/// there is; audited with the rate before and after.
pub async fn set_member_rate(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: ProjectId,
    user: UserId,
    rate: Option<i64>,
) -> DomainResult<()> {
    require(p, Permission::ProjectsUpdate)?;
    let rate = rate.map(|r| super::invoicing::check_rate("hourly_rate_minor", r)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, id).await?;
    let before: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT hourly_rate_minor FROM project_members WHERE project_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Err(DomainError::field("user_id", "is not a member of this project"));
    };
    sqlx::query("UPDATE project_members SET hourly_rate_minor = $3 WHERE project_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .bind(rate)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("project.member_rate_changed", "project", id)
            .before(json!({ "user_id": user, "hourly_rate_minor": before }))
            .after(json!({ "user_id": user, "hourly_rate_minor": rate })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_member(db: &Db, ctx: &Context, p: &OrgPrincipal, id: ProjectId, user: UserId) -> DomainResult<()> {
    require(p, Permission::ProjectsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, id).await?;
    let done = sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    // Their task assignments in this project go with them.
    sqlx::query(
        "DELETE FROM task_assignees ta USING tasks t WHERE ta.task_id = t.id AND t.project_id = $1 AND ta.user_id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    audit::record(&mut tx, ctx, Entry::new("project.member_removed", "project", id).before(json!({ "user_id": user })))
        .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Column {
    #[schema(value_type = String, format = Uuid)]
    pub id: ColumnId,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    pub name: String,
    pub position: i32,
    /// The status a task in this column has: todo, in_progress, blocked or done.
    pub status: String,
}

pub async fn columns(tx: &mut OrgTx, project: ProjectId) -> Result<Vec<Column>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, name, position, status FROM board_columns WHERE project_id = $1 ORDER BY position, id",
    )
    .bind(project)
    .fetch_all(&mut **tx)
    .await
}

pub async fn list_columns(db: &Db, p: &OrgPrincipal, project: ProjectId) -> DomainResult<Vec<Column>> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let c = columns(&mut tx, project).await?;
    tx.commit().await?;
    Ok(c)
}

pub async fn add_column(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    project: ProjectId,
    name: &str,
) -> DomainResult<Column> {
    add_column_with_status(db, ctx, p, project, name, None).await
}

/// Adds a column standing for `status` (by default: what its name says, else in progress).
pub async fn add_column_with_status(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    project: ProjectId,
    name: &str,
    status: Option<&str>,
) -> DomainResult<Column> {
    require(p, Permission::ProjectsUpdate)?;
    let name = fields::nonblank("name", name, 100)?;
    let status = match status.filter(|s| !s.is_empty()) {
        Some(s) => super::task_status::TaskStatus::parse("status", s)?.as_str().to_string(),
        None => status_named(&name).to_string(),
    };
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let next: i32 =
        sqlx::query_scalar("SELECT coalesce(max(position) + 1, 0) FROM board_columns WHERE project_id = $1")
            .bind(project)
            .fetch_one(&mut *tx)
            .await?;
    let col: Column = sqlx::query_as(
        "INSERT INTO board_columns (organization_id, id, project_id, name, position, status) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, project_id, name, position, status",
    )
    .bind(tx.org_id())
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(&name)
    .bind(next)
    .bind(&status)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("project.column_added", "project", project)
            .after(json!({ "column": col.id, "name": name, "status": status })),
    )
    .await?;
    tx.commit().await?;
    Ok(col)
}

/// The status a column's name says (as the migration that made status the column read names).
pub fn status_named(name: &str) -> &'static str {
    match name.trim().to_lowercase().as_str() {
        "to do" | "todo" | "backlog" | "new" | "open" => "todo",
        "done" | "complete" | "completed" | "finished" | "closed" | "shipped" => "done",
        "blocked" | "on hold" | "waiting" => "blocked",
        _ => "in_progress",
    }
}

/// Moves a column one place left (`delta = -1`) or right (`+1`), keeping positions dense.
pub async fn move_column(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    project: ProjectId,
    column: ColumnId,
    delta: i32,
) -> DomainResult<()> {
    require(p, Permission::ProjectsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let mut cols = columns(&mut tx, project).await?;
    let i = cols.iter().position(|c| c.id == column).ok_or(DomainError::NotFound)?;
    let j = i as i64 + delta.signum() as i64;
    if j < 0 || j >= cols.len() as i64 {
        return Ok(());
    }
    cols.swap(i, j as usize);
    for (pos, c) in cols.iter().enumerate() {
        sqlx::query("UPDATE board_columns SET position = $2 WHERE id = $1")
            .bind(c.id)
            .bind(pos as i32)
            .execute(&mut *tx)
            .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("project.column_moved", "project", project).after(json!({ "column": column, "delta": delta })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn delete_column(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    project: ProjectId,
    column: ColumnId,
) -> DomainResult<()> {
    require(p, Permission::ProjectsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let used: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE column_id = $1)")
        .bind(column)
        .fetch_one(&mut *tx)
        .await?;
    if used {
        return Err(DomainError::Conflict("Move this column's tasks elsewhere first.".into()));
    }
    let done = sqlx::query("DELETE FROM board_columns WHERE id = $1 AND project_id = $2")
        .bind(column)
        .bind(project)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("project.column_deleted", "project", project).before(json!({ "column": column })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Minimal repository functions over an open `OrgTx` (used by seeding and tests).
pub mod repo {
    use super::{COLUMNS, Project};
    use crate::access::OrgTx;
    use crate::platform::ids::{ClientId, ProjectId};

    /// A client id of another organization fails here (composite foreign key), whatever the
    /// caller does.
    pub async fn create(tx: &mut OrgTx, client_id: Option<ClientId>, name: &str) -> Result<Project, sqlx::Error> {
        let org = tx.org_id();
        sqlx::query_as(&format!(
            "INSERT INTO projects AS p (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        ))
        .bind(org)
        .bind(ProjectId::new())
        .bind(client_id)
        .bind(name)
        .fetch_one(&mut **tx)
        .await
    }

    pub async fn list(tx: &mut OrgTx, limit: i64) -> Result<Vec<Project>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM projects p ORDER BY p.name, p.id LIMIT $1"))
            .bind(limit)
            .fetch_all(&mut **tx)
            .await
    }
}
