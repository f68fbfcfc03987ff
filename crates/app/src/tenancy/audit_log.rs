//! The audit viewer (Owner and Admin by default): filters, pagination, CSV export.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::frame::{OrgNav, page};
use super::guard::OrgAccess;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::{Context, Entry, STORED_COLUMNS, StoredEvent};
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::keys::{At, Keyring, Scope};
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/audit", Surface::Web, Access::Org(Permission::AuditRead), viewer),
        route!(GET "/o/{org}/audit.csv", Surface::Web, Access::Org(Permission::AuditRead), export_csv),
    ]
}

const PAGE: i64 = 50;
const EXPORT_CAP: i64 = 100_000;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filter {
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Keyset pagination: events with a sequence number below this.
    #[serde(default)]
    pub before: Option<i64>,
}

fn parse_day(s: &str, field: &str) -> AppResult<Option<OffsetDateTime>> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date =
        time::Date::parse(s.trim(), &fmt).map_err(|_| AppError::field(field, "must be a date like 2026-01-31"))?;
    Ok(Some(date.midnight().assume_utc()))
}

/// Events matching `f`, newest first.
async fn query(tx: &mut OrgTx, f: &Filter, limit: i64) -> AppResult<Vec<StoredEvent>> {
    let from = parse_day(&f.from, "from")?;
    let to = parse_day(&f.to, "to")?.map(|t| t + time::Duration::days(1));
    let like = |s: &str| format!("%{}%", s.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let sql = format!(
        "SELECT {STORED_COLUMNS} FROM audit_events WHERE organization_id = $1 \
         AND ($2 = '' OR actor_label ILIKE $3 OR actor_id = $2) \
         AND ($4 = '' OR action = $4 OR action LIKE $5) \
         AND ($6 = '' OR target_id = $6 OR target_type = $6) \
         AND ($7::timestamptz IS NULL OR occurred_at >= $7) AND ($8::timestamptz IS NULL OR occurred_at < $8) \
         AND ($9::bigint IS NULL OR seq < $9) \
         ORDER BY seq DESC LIMIT $10"
    );
    let org = tx.org_id();
    Ok(sqlx::query_as(&sql)
        .bind(org)
        .bind(f.actor.trim())
        .bind(like(&f.actor))
        .bind(f.action.trim())
        .bind(format!("{}.%", f.action.trim()))
        .bind(f.target.trim())
        .bind(from)
        .bind(to)
        .bind(f.before)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?)
}

struct Change {
    field: String,
    before: String,
    after: String,
}

struct Row {
    seq: i64,
    time: String,
    actor: String,
    ip: String,
    action: String,
    target: String,
    changes: Vec<Change>,
}

#[derive(Template)]
#[template(path = "tenancy/audit.html")]
struct ViewerPage {
    org: OrgNav,
    filter: Filter,
    query: String,
    events: Vec<Row>,
    prev_page: Option<String>,
    next_page: Option<String>,
}

fn qs(f: &Filter) -> String {
    serde_urlencoded::to_string(f).unwrap_or_default()
}

/// Names for the ids an audit page mentions (people, clients, projects, tasks, invoices, files,
/// columns), read in the organization's own transaction: an id of another organization stays
/// an id. A deleted account's events show "Deleted user" (its tombstone's name), whatever label
/// they were stored with. Files' names are sealed (the events record file ids only): they are
/// opened here, for as long as the file and the organization's key exist.
async fn names_of(tx: &mut OrgTx, keys: &Keyring, ids: &[uuid::Uuid]) -> AppResult<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT u.id, CASE WHEN u.display_name = '' THEN u.email ELSE u.display_name END FROM memberships m \
           JOIN users u ON u.id = m.user_id WHERE m.organization_id = $2 AND u.id = ANY($1) \
         UNION ALL SELECT id, display_name FROM users WHERE id = ANY($1) AND status = 'deleted' \
         UNION ALL SELECT id, name FROM clients WHERE id = ANY($1) \
         UNION ALL SELECT id, name FROM projects WHERE id = ANY($1) \
         UNION ALL SELECT id, title FROM tasks WHERE id = ANY($1) \
         UNION ALL SELECT id, name FROM board_columns WHERE id = ANY($1) \
         UNION ALL SELECT id, coalesce('invoice #' || number, 'draft invoice') FROM invoices WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(tx.org_id())
    .fetch_all(&mut **tx)
    .await?;
    let mut names: HashMap<String, String> = rows.into_iter().map(|(id, name)| (id.to_string(), name)).collect();
    let files: Vec<(uuid::Uuid, Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, name, name_sealed FROM files WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
    let scope = Scope::org(tx.org_id());
    for (id, plain, sealed) in files {
        let row = id.to_string();
        // Bound as `work::files::name_at` seals it: the organization's key, `files.name`, the id.
        let name = match sealed {
            Some(s) => {
                keys.open(scope, At::new("files", "name", &row), &s, None).ok().and_then(|b| String::from_utf8(b).ok())
            }
            None => plain,
        };
        if let Some(name) = name {
            names.insert(row, name);
        }
    }
    Ok(names)
}

fn collect_ids(v: &serde_json::Value, out: &mut Vec<uuid::Uuid>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(id) = s.parse() {
                out.push(id);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_ids(i, out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| collect_ids(i, out)),
        _ => {}
    }
}

/// A value as a person reads it: ids as names, lists joined, nothing as a dash.
fn readable(v: Option<&serde_json::Value>, names: &HashMap<String, String>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "—".into(),
        Some(serde_json::Value::String(s)) => names.get(s).cloned().unwrap_or_else(|| s.clone()),
        Some(serde_json::Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(serde_json::Value::Array(items)) if items.is_empty() => "none".into(),
        Some(serde_json::Value::Array(items)) => {
            items.iter().map(|i| readable(Some(i), names)).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    }
}

/// Before and after as the fields that changed (or were set, or removed).
fn diff(
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
    names: &HashMap<String, String>,
) -> Vec<Change> {
    let empty = serde_json::Map::new();
    let as_map = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::Object(m)) => Some(m.clone()),
        _ => None,
    };
    match (as_map(before), as_map(after)) {
        (b, a) if b.is_some() || a.is_some() => {
            let (b, a) = (b.unwrap_or_else(|| empty.clone()), a.unwrap_or_else(|| empty.clone()));
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| b.get(*k) != a.get(*k))
                .map(|k| Change {
                    field: k.replace('_', " "),
                    before: if before.is_some() { readable(b.get(k), names) } else { String::new() },
                    after: if after.is_some() { readable(a.get(k), names) } else { String::new() },
                })
                .collect()
        }
        _ if before.is_none() && after.is_none() => vec![],
        _ => vec![Change { field: "value".into(), before: readable(before, names), after: readable(after, names) }],
    }
}

async fn viewer(State(state): State<AppState>, access: OrgAccess, Query(f): Query<Filter>) -> AppResult<Response> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let events = query(&mut tx, &f, PAGE + 1).await?;
    let more = events.len() as i64 > PAGE;
    let events: Vec<StoredEvent> = events.into_iter().take(PAGE as usize).collect();
    let mut ids = Vec::new();
    for e in &events {
        for v in [&e.before, &e.after].into_iter().flatten() {
            collect_ids(v, &mut ids);
        }
        for s in [&e.target_id, &e.actor_id] {
            if let Ok(id) = s.parse() {
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids.dedup();
    let names = names_of(&mut tx, &state.keys, &ids).await?;
    tx.commit().await?;
    let next_page = if more { events.last().map(|e| qs(&Filter { before: Some(e.seq), ..f.clone() })) } else { None };
    let prev_page = f.before.map(|_| qs(&Filter { before: None, ..f.clone() }));
    let rows = events
        .into_iter()
        .map(|e| Row {
            seq: e.seq,
            time: access.when(e.occurred_at),
            actor: names
                .get(&e.actor_id)
                .cloned()
                .unwrap_or_else(|| if e.actor_label.is_empty() { e.actor_id.clone() } else { e.actor_label.clone() }),
            ip: e.ip.map(|i| i.addr().to_string()).unwrap_or_default(),
            target: match names.get(&e.target_id) {
                Some(name) => format!("{} “{}”", e.target_type.replace('_', " "), name),
                // Without a name (a record since deleted, or not one of ours) the id says which.
                None if e.target_id.is_empty() => e.target_type.replace('_', " "),
                None => format!("{} {}", e.target_type.replace('_', " "), e.target_id),
            },
            changes: diff(e.before.as_ref(), e.after.as_ref(), &names),
            action: e.action,
        })
        .collect();
    page(&ViewerPage {
        org: OrgNav::of(&access),
        query: qs(&Filter { before: None, ..f.clone() }),
        filter: f,
        events: rows,
        prev_page,
        next_page,
    })
}

/// Spreadsheet formula injection: a cell starting with `=`, `+`, `-`, `@` (or a tab or
/// carriage return) is prefixed with `'` so it is shown as text.
pub fn neutralize(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

async fn export_csv(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Query(f): Query<Filter>,
) -> AppResult<Response> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let events = query(&mut tx, &f, EXPORT_CAP).await?;
    // The export is itself audited, in the same transaction that read it.
    crate::audit::record(
        &mut tx,
        &ctx,
        Entry::new("audit.exported", "audit_log", access.principal.org_id())
            .after(json!({ "filter": Filter { before: None, ..f.clone() }, "rows": events.len() })),
    )
    .await?;
    tx.commit().await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "seq",
        "occurred_at",
        "actor_type",
        "actor_id",
        "actor",
        "ip",
        "user_agent",
        "action",
        "target_type",
        "target_id",
        "before",
        "after",
        "request_id",
        "hash",
    ];
    out.write_record(header).map_err(AppError::internal)?;
    for e in events {
        let fields = [
            e.seq.to_string(),
            e.occurred_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            e.actor_type,
            e.actor_id,
            e.actor_label,
            e.ip.map(|i| i.addr().to_string()).unwrap_or_default(),
            e.user_agent,
            e.action,
            e.target_type,
            e.target_id,
            e.before.map(|v| v.to_string()).unwrap_or_default(),
            e.after.map(|v| v.to_string()).unwrap_or_default(),
            e.request_id,
            hex::encode(&e.hash),
        ];
        out.write_record(fields.iter().map(|c| neutralize(c))).map_err(AppError::internal)?;
    }
    let bytes = out.into_inner().map_err(AppError::internal)?;
    let mut res = bytes.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let name = format!("attachment; filename=\"audit-{}.csv\"", access.slug);
    res.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&name).map_err(AppError::internal)?);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::neutralize;

    #[test]
    fn formula_cells_are_neutralized() {
        assert_eq!(neutralize("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralize("+1"), "'+1");
        assert_eq!(neutralize("-2"), "'-2");
        assert_eq!(neutralize("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralize("\tx"), "'\tx");
        assert_eq!(neutralize("plain"), "plain");
        assert_eq!(neutralize(""), "");
    }
}
