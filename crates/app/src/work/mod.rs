//! The work domain: clients, projects, tasks, time, invoices and files, with the client portal.
//!
//! Every function takes the verified principal and opens its own `OrgTx`; every write is
//! audited in the same transaction; references between records are checked by composite
//! foreign keys (a foreign id is "not found", never a 500); and what a principal may see is
//! part of each query (`ProjectScope`), not a filter applied after fetching.

pub mod approvals;
pub mod clients;
pub mod daily;
pub mod duration;
pub mod expenses;
pub mod workload;
/// The field parsers of the boundary (text, ids, dates, closed sets), from the platform.
pub use crate::platform::fields;
pub mod files;
pub mod invoice_mail;
pub mod invoice_payments;
pub mod invoice_pdf;
pub mod invoices;
pub mod invoicing;
pub mod money;
pub mod overview;
pub mod portal;
pub mod project_copy;
pub mod projects;
pub mod repeats;
pub mod schedule;
pub mod statement;
pub mod statement_mail;
pub mod statement_pdf;
pub mod task_status;
pub mod tasks;
pub mod time_entries;
pub mod timers;
pub mod uninvoiced;
pub mod web;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::OrgTx;
use crate::access::{OrgPrincipal, ProjectScope};
use crate::platform::error::{DomainError, DomainResult};

/// Limit/offset pagination with a server-side cap.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::IntoParams)]
pub struct Page {
    /// At most this many items (1–100, default 50).
    pub limit: Option<i64>,
    /// Skip this many items (default 0).
    pub offset: Option<i64>,
}

pub const MAX_PAGE: i64 = 100;

impl Page {
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, MAX_PAGE)
    }

    pub fn offset(&self) -> i64 {
        self.offset.unwrap_or(0).clamp(0, 1_000_000)
    }
}

/// The query arguments that implement `ProjectScope` for internal (non-portal) queries: the
/// user whose project memberships bound the result, and whether nothing is visible at all.
/// Use with `($n::uuid IS NULL OR EXISTS (SELECT 1 FROM project_members …))`.
pub fn member_filter(principal: &OrgPrincipal) -> DomainResult<Option<Uuid>> {
    match principal.project_scope() {
        ProjectScope::All => Ok(None),
        ProjectScope::MemberOf(user) => Ok(Some(user.as_uuid())),
        // Internal pages and the API are not the portal.
        ProjectScope::Client(_) | ProjectScope::Nothing => {
            Err(DomainError::Forbidden("This is not available to your role.".into()))
        }
    }
}

/// Refuses (403) what the principal's role doesn't allow.
pub(crate) fn require(p: &OrgPrincipal, perm: crate::access::role::Permission) -> DomainResult<()> {
    if p.can(perm) { Ok(()) } else { Err(DomainError::Forbidden(format!("Your role doesn't allow this ({perm})."))) }
}

/// The organization's slug, for links in what is sent to people.
pub(crate) async fn org_slug(tx: &mut OrgTx) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT slug FROM organizations WHERE id = $1").bind(tx.org_id()).fetch_one(&mut **tx).await
}

/// The organization's currency (ISO 4217), which its time and new invoices are valued in.
pub(crate) async fn org_currency(tx: &mut OrgTx) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT currency FROM organizations WHERE id = $1").bind(tx.org_id()).fetch_one(&mut **tx).await
}

/// The SQL condition for "project `alias` is visible", with the member filter as `$n`.
pub fn project_visible(alias: &str, param: usize) -> String {
    format!(
        "(${param}::uuid IS NULL OR EXISTS (SELECT 1 FROM project_members pm WHERE pm.organization_id = {alias}.organization_id \
         AND pm.project_id = {alias}.id AND pm.user_id = ${param}))"
    )
}

/// [`project_visible`] for a principal known to be bounded by its project memberships (`$param`
/// is the user): the same rule without the branch for everyone else.
pub fn project_visible_to(alias: &str, param: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM project_members pm WHERE pm.organization_id = {alias}.organization_id \
         AND pm.project_id = {alias}.id AND pm.user_id = ${param})"
    )
}

/// `s` as a literal inside a `LIKE` pattern (the default escape, a backslash): a search for
/// "50%" or "a_b" finds those characters, not every string.
pub fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Refuses a task reference (`field`) that is not a task of `project`: subtasks, and the tasks
/// that files and time entries are attached to, stay inside their project.
pub async fn require_task_in_project(
    tx: &mut OrgTx,
    task: crate::platform::ids::TaskId,
    project: crate::platform::ids::ProjectId,
    field: &str,
    message: &str,
) -> DomainResult<()> {
    let same: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND project_id = $2)")
        .bind(task)
        .bind(project)
        .fetch_one(&mut **tx)
        .await?;
    if same { Ok(()) } else { Err(DomainError::field(field, message)) }
}

/// The optional filters of billing time or expenses onto a draft: one project, and days from
/// `from` to `to` (each inclusive, each may be empty), `to` not before `from`.
pub fn bill_filters(
    project: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> DomainResult<(Option<crate::platform::ids::ProjectId>, Option<time::Date>, Option<time::Date>)> {
    let project = project.map(|s| fields::id_or_empty("project_id", s)).transpose()?.flatten();
    let from = from.map(|s| fields::date_or_empty("from", s)).transpose()?.flatten();
    let to = to.map(|s| fields::date_or_empty("to", s)).transpose()?.flatten();
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        return Err(DomainError::field("to", "must not be before from"));
    }
    Ok((project, from, to))
}

/// A report's range of days: `to` not before `from`, and at most a year.
pub fn report_range(from: time::Date, to: time::Date) -> DomainResult<()> {
    if to < from {
        return Err(DomainError::field("to", "must not be before from"));
    }
    if (to - from).whole_days() > 366 {
        return Err(DomainError::field("to", "a range covers at most a year"));
    }
    Ok(())
}

/// The date it is for the transaction's organization (in its time zone) at `now`.
pub async fn org_today(tx: &mut OrgTx, now: time::OffsetDateTime) -> Result<time::Date, sqlx::Error> {
    let zone: String = sqlx::query_scalar("SELECT timezone FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut **tx)
        .await?;
    Ok(crate::platform::tz::today(now, &zone))
}

/// The date it is for `p`'s organization at `now`, read in a transaction of its own (a
/// savepoint of the request's): for pages that need the day before they read anything else.
pub async fn today(
    db: &crate::platform::db::Db,
    p: &OrgPrincipal,
    now: time::OffsetDateTime,
) -> DomainResult<time::Date> {
    let mut tx = OrgTx::begin(db, p).await?;
    let today = org_today(&mut tx, now).await?;
    tx.commit().await?;
    Ok(today)
}

/// A range of days as reports read it: `to` by default the organization's today, `from` by
/// default the first of `to`'s month. The organization's day is read only when `to` is left out.
pub async fn range(
    db: &crate::platform::db::Db,
    p: &OrgPrincipal,
    now: time::OffsetDateTime,
    from: Option<time::Date>,
    to: Option<time::Date>,
) -> DomainResult<(time::Date, time::Date)> {
    let to = match to {
        Some(to) => to,
        None => today(db, p, now).await?,
    };
    Ok((from.unwrap_or_else(|| to.replace_day(1).unwrap_or(to)), to))
}

// Calendar dates in JSON as `YYYY-MM-DD` (what the OpenAPI document says, `format: date`),
// not `time`'s default `[year, ordinal]` pair. Use `#[serde(with = "crate::work::iso_date")]`,
// or `crate::work::iso_date::option` for an `Option<Date>`.
time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");
