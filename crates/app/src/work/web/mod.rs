//! Server-rendered pages of the work domain (`/o/{org}/…`) and the client portal
//! (`/portal/{org}/…`).
//!
//! Handlers are thin: they parse the form, call the domain service with the verified
//! principal (the service checks the permission again, scopes the query and audits), and
//! either redirect (303, so a reload never re-posts) or re-render the page with the service's
//! field messages and its status (422, 409…). Sections of a page that need a permission the
//! viewer lacks are left out rather than failing the whole page.

pub mod board;
pub mod clients;
pub mod daily;
pub mod entry_edit;
pub mod expense_report;
pub mod expense_view;
pub mod expenses;
pub mod files;
pub mod invoices;
pub mod invoicing;
pub mod lists;
pub mod overview;
pub mod portal;
pub mod project_copy;
pub mod projects;
pub mod repeat_view;
pub mod repeats;
pub mod schedule;
pub mod tasks;
pub mod timesheet;
pub mod uninvoiced;
pub mod workload;

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use time::Date;

use crate::access::OrgTx;
use crate::access::route::RouteDef;
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::platform::ids::UserId;
use crate::state::AppState;
use crate::tenancy::guard::OrgAccess;

pub fn routes() -> Vec<RouteDef> {
    let mut routes = Vec::new();
    routes.extend(overview::routes());
    routes.extend(clients::routes());
    routes.extend(projects::routes());
    routes.extend(expenses::routes());
    routes.extend(entry_edit::routes());
    routes.extend(uninvoiced::routes());
    routes.extend(project_copy::routes());
    routes.extend(schedule::routes());
    routes.extend(tasks::routes());
    routes.extend(board::routes());
    routes.extend(invoices::routes());
    routes.extend(repeats::routes());
    routes.extend(invoicing::routes());
    routes.extend(files::routes());
    routes.extend(lists::routes());
    routes.extend(timesheet::routes());
    routes.extend(workload::routes());
    routes.extend(expense_report::routes());
    routes.extend(portal::routes());
    routes.extend(daily::routes());
    routes
}

/// A PDF to download as `name` (letters, digits, `-`, `.` and `_` only): never sniffed as
/// anything else, never stored by a cache.
pub fn pdf_download(name: &str, bytes: Vec<u8>) -> AppResult<axum::response::Response> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")).map_err(AppError::internal)?,
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(res)
}

/// Items per page on the list pages.
pub const PAGE_SIZE: i64 = 25;

/// An id from the path: anything that doesn't parse is simply not found.
pub fn path_id<T: FromStr>(raw: &str) -> AppResult<T> {
    raw.parse().map_err(|_| AppError::not_found())
}

/// An id from a form field: a bad one is the field's fault.
pub fn form_id<T: FromStr>(field: &str, raw: &str) -> AppResult<Option<T>> {
    match raw.trim() {
        "" => Ok(None),
        v => v.parse().map(Some).map_err(|_| AppError::field(field, "is not a valid choice")),
    }
}

pub fn day(d: Option<Date>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// 90 → "1h 30m".
pub fn duration(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

/// Prev/next links of a list page, keeping its filters.
pub struct Pager {
    pub first: i64,
    pub last: i64,
    pub total: i64,
    /// Whether `total` is known (lists read a page at a time only know whether more follow).
    pub counted: bool,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// For a list read a page at a time: `more` says whether another page follows (read one
    /// item beyond the page to know).
    pub fn uncounted(base: &str, filters: &[(&str, &str)], offset: i64, shown: usize, more: bool) -> Self {
        let end = offset + shown as i64;
        let mut pager = Self::new(base, filters, offset, shown, if more { end + 1 } else { end });
        pager.counted = false;
        pager
    }

    pub fn new(base: &str, filters: &[(&str, &str)], offset: i64, shown: usize, total: i64) -> Self {
        Self::sized(base, filters, offset, shown, total, PAGE_SIZE)
    }

    /// As [`Pager::new`], for a list whose pages hold `size` items.
    pub fn sized(base: &str, filters: &[(&str, &str)], offset: i64, shown: usize, total: i64, size: i64) -> Self {
        let link = |offset: i64| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in filters {
                if !v.is_empty() {
                    q.append_pair(k, v);
                }
            }
            if offset > 0 {
                q.append_pair("offset", &offset.to_string());
            }
            let q = q.finish();
            if q.is_empty() { base.to_string() } else { format!("{base}?{q}") }
        };
        let shown = shown as i64;
        Self {
            first: if shown == 0 { 0 } else { offset + 1 },
            last: offset + shown,
            total,
            counted: true,
            prev: (offset > 0).then(|| link((offset - size).max(0))),
            next: (offset + shown < total).then(|| link(offset + size)),
        }
    }
}

/// The fields of a urlencoded form, for forms with repeated or numbered fields that a struct
/// can't describe. Unknown fields are refused (no mass assignment), like
/// `#[serde(deny_unknown_fields)]` does for the fixed forms.
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &Bytes, allowed: impl Fn(&str) -> bool) -> AppResult<Self> {
        let fields: Vec<(String, String)> =
            form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if let Some((k, _)) = fields.iter().find(|(k, _)| !allowed(k)) {
            return Err(AppError::field(k, "is not a field of this form"));
        }
        Ok(Self(fields))
    }

    /// Refuses a form that repeats any of `single`: a field that takes one value sent twice is
    /// a smuggling attempt (which of the two would count?), never a browser's doing.
    pub fn only_once(self, single: &[&str]) -> AppResult<Self> {
        for name in single {
            if self.0.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(AppError::field(name, "was sent more than once"));
            }
        }
        Ok(self)
    }

    /// The names of the fields sent, in order (with repeats).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The first value of `name` ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// A checkbox: present means checked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// Collects several independent field errors into one validation error (any other error
/// wins: it is not the form's fault).
#[derive(Default)]
pub struct Errors {
    fields: Vec<FieldError>,
    other: Option<AppError>,
}

impl Errors {
    pub fn check<T>(&mut self, r: Result<T, impl Into<AppError>>) -> Option<T> {
        match r.map_err(Into::into) {
            Ok(v) => Some(v),
            Err(AppError::Domain(DomainError::Invalid(mut e))) => {
                self.fields.append(&mut e);
                None
            }
            Err(other) => {
                self.other.get_or_insert(other);
                None
            }
        }
    }

    pub fn into_result(self) -> AppResult<()> {
        match (self.other, self.fields.is_empty()) {
            (Some(e), _) => Err(e),
            (None, true) => Ok(()),
            (None, false) => Err(AppError::invalid(self.fields)),
        }
    }
}

/// An optional whole number typed into a text field.
pub fn number<T: FromStr>(field: &str, raw: &str) -> AppResult<Option<T>> {
    match raw.trim() {
        "" => Ok(None),
        v => v.parse().map(Some).map_err(|_| AppError::field(field, "must be a whole number")),
    }
}

/// Emails of the organization's people, for showing who did what.
pub async fn people(state: &AppState, access: &OrgAccess) -> AppResult<Vec<crate::tenancy::service::MemberRow>> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let rows = crate::tenancy::service::members(&mut tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Task statuses and their words ([`TaskStatus::label`](crate::work::task_status::TaskStatus::label)).
pub const STATUS_WORDS: [(&str, &str); 4] = {
    use crate::work::task_status::TaskStatus as S;
    const fn word(s: S) -> (&'static str, &'static str) {
        (s.as_str(), s.label())
    }
    [word(S::Todo), word(S::InProgress), word(S::Blocked), word(S::Done)]
};

/// Task priorities and their words.
pub const PRIORITIES: [(&str, &str); 4] =
    [("low", "Low"), ("normal", "Normal"), ("high", "High"), ("urgent", "Urgent")];

/// The words for `stored` in a table of (stored value, words), if it has them.
pub fn word(table: &[(&str, &'static str)], stored: &str) -> Option<&'static str> {
    table.iter().find(|w| w.0 == stored).map(|w| w.1)
}

/// A task priority in words ("High"), as pages show it.
pub fn priority_word(priority: &str) -> &'static str {
    word(&PRIORITIES, priority).unwrap_or("Normal")
}

/// A person's name as pages show it: their display name, else their email.
pub fn name_of(m: &crate::tenancy::service::MemberRow) -> String {
    if m.display_name.trim().is_empty() { m.email.clone() } else { m.display_name.clone() }
}

/// What pages call the organization's people: each one's name ([`name_of`]), followed by their
/// email where two of them go by the same name, so that no two read alike (an assignee
/// checkbox must say whom it assigns).
pub struct People {
    by_id: HashMap<UserId, (String, String)>,
}

impl People {
    pub fn of(everyone: &[crate::tenancy::service::MemberRow]) -> Self {
        let mut count: HashMap<String, usize> = HashMap::new();
        for m in everyone {
            *count.entry(name_of(m).to_lowercase()).or_default() += 1;
        }
        let label = |m: &crate::tenancy::service::MemberRow| {
            let name = name_of(m);
            if count[&name.to_lowercase()] > 1 && name != m.email { format!("{name} ({})", m.email) } else { name }
        };
        Self { by_id: everyone.iter().map(|m| (m.user_id, (name_of(m), label(m)))).collect() }
    }

    /// The person `id`, or "former member" for one no longer in the organization.
    pub fn name(&self, id: &UserId) -> String {
        self.by_id.get(id).map(|n| n.1.clone()).unwrap_or_else(|| "former member".into())
    }

    /// The person `id`'s name alone, even where another goes by it too (for initials).
    pub fn short_name(&self, id: &UserId) -> String {
        self.by_id.get(id).map(|n| n.0.clone()).unwrap_or_else(|| "former member".into())
    }

    /// Whoever `id` (a user id as text) names, or the text as it is.
    pub fn name_or_raw(&self, id: &str) -> String {
        id.parse().ok().and_then(|u| self.by_id.get(&u)).map(|n| n.1.clone()).unwrap_or_else(|| id.to_string())
    }

    /// Who did something, as a record keeps them (their account, and a label: the email they
    /// had then, or "API key …"): their name while they are one of the organization's people,
    /// else the label as recorded.
    pub fn actor(&self, id: Option<UserId>, recorded: &str) -> String {
        id.and_then(|u| self.by_id.get(&u)).map(|n| n.1.clone()).unwrap_or_else(|| recorded.to_string())
    }
}

/// Whom a list can be narrowed to beside "Me": the organization's active people other than
/// Clients and the viewer, as (id, name).
pub fn assignee_choices(
    everyone: &[crate::tenancy::service::MemberRow],
    names: &People,
    me: Option<UserId>,
) -> Vec<(String, String)> {
    everyone
        .iter()
        .filter(|m| m.status == "active" && m.role != crate::access::role::Role::Client && Some(m.user_id) != me)
        .map(|m| (m.user_id.to_string(), names.name(&m.user_id)))
        .collect()
}

/// A move on the board is recorded as two changes at the same instant by the same person: the
/// task's board column and its status (the API lists both). Pages show the column alone, which
/// says where the task went; a status change without a column change stays. `key` gives a
/// change's task (where a list mixes tasks), field, instant and who made it.
pub fn moves_once<T>(
    changes: Vec<T>,
    key: impl Fn(&T) -> (Option<crate::platform::ids::TaskId>, String, time::OffsetDateTime, String),
) -> Vec<T> {
    let moves: std::collections::HashSet<_> = changes
        .iter()
        .map(&key)
        .filter(|(_, field, _, _)| field == "column")
        .map(|(task, _, at, who)| (task, at, who))
        .collect();
    changes
        .into_iter()
        .filter(|c| {
            let (task, field, at, who) = key(c);
            field != "status" || !moves.contains(&(task, at, who))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_shows_as_its_column_alone() {
        let at = time::macros::datetime!(2026-12-07 10:00 UTC);
        let later = at + time::Duration::seconds(1);
        let changes = vec![
            ("column", at, "ann"),
            ("status", at, "ann"),
            // Another instant, or another person: a status change of its own.
            ("status", later, "ann"),
            ("status", at, "bob"),
            ("title", at, "ann"),
        ];
        let kept = moves_once(changes, |c| (None, c.0.to_string(), c.1, c.2.to_string()));
        assert_eq!(
            kept,
            vec![("column", at, "ann"), ("status", later, "ann"), ("status", at, "bob"), ("title", at, "ann")]
        );
    }

    #[test]
    fn single_fields_may_not_repeat() {
        let body = Bytes::from_static(b"title=a&assignee=1&assignee=2");
        let f = FormFields::parse(&body, |_| true).unwrap().only_once(&["title"]).unwrap();
        assert_eq!(f.all("assignee"), ["1", "2"]);
        let body = Bytes::from_static(b"title=a&role=member&role=owner");
        let e = FormFields::parse(&body, |_| true).unwrap().only_once(&["title", "role"]).err().unwrap();
        assert!(matches!(e, AppError::Domain(DomainError::Invalid(ref v)) if v[0].field == "role"), "{e:?}");
        let unknown = FormFields::parse(&body, |k| k != "role").err().unwrap();
        assert!(matches!(unknown, AppError::Domain(DomainError::Invalid(_))));
    }

    #[test]
    fn numbers_are_shown_without_noise() {
        assert_eq!(duration(90), "1h 30m");
        assert_eq!(duration(45), "45m");
        assert_eq!(duration(120), "2h");
    }

    #[test]
    fn pager_links_keep_filters() {
        let p = Pager::new("/o/a/clients", &[("q", "a b"), ("status", "")], 25, 25, 60);
        assert_eq!(p.prev.as_deref(), Some("/o/a/clients?q=a+b"));
        assert_eq!(p.next.as_deref(), Some("/o/a/clients?q=a+b&offset=50"));
        assert_eq!((p.first, p.last), (26, 50));
        let p = Pager::new("/o/a/clients", &[], 0, 3, 3);
        assert!(p.prev.is_none() && p.next.is_none());
        let p = Pager::uncounted("/o/a/files", &[("project_id", "x")], 0, 25, true);
        assert_eq!(p.next.as_deref(), Some("/o/a/files?project_id=x&offset=25"));
        assert!(!p.counted);
        let p = Pager::uncounted("/o/a/files", &[], 25, 3, false);
        assert_eq!((p.prev.as_deref(), p.next.as_deref(), p.last), (Some("/o/a/files"), None, 28));
    }
}
