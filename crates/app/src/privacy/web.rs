//! The "Data export" settings page (`/o/{org}/settings/export`), for whoever holds
//! `org.export` (the Owners: no other role can be given it, and no API key), and the signed
//! download of a finished archive (`/exports/{org}/{export}`).
//!
//! Starting an export asks the person to confirm it's them (the password, and the second
//! factor when enrolled), is audited and limited per organization. The page shows progress
//! (its list of exports updates itself in place while one runs, `app.js`; a link reloads it
//! without JavaScript) and, once ready, a download
//! link signed for [`export_jobs::LINK_MINUTES`] minutes. The download checks the signature,
//! the expiry of the link and of the archive, and the organization's IP allowlist, is audited
//! and limited per client address, and streams the archive from disk.

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::export;
use super::export_jobs::{self, ExportRecord};
use crate::abuse::limits::{EXPORT_PER_IP, EXPORT_PER_ORG};
use crate::access::OrgTx;
use crate::access::export_link::{ExportLink, signed_link, verify_export_link};
use crate::access::role::Permission;
use crate::access::route::{Access, RouteDef, Surface};
use crate::access::session::{CurrentSession, RequestMeta};
use crate::audit::{self, Context, Entry};
use crate::identity::guard::FormToken;
use crate::identity::service::{ReauthPrompt, confirm_sensitive_change, load_user, reauthenticate_every_factor};
use crate::platform::http::error::{AppError, AppResult, FieldError, Problem};
use crate::platform::http::middleware::ClientIp;
use crate::platform::ids::OrgId;
use crate::platform::secret::Secret;
use crate::route;
use crate::state::AppState;
use crate::tenancy::allowlist;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;

pub fn routes() -> Vec<RouteDef> {
    let p = Permission::OrgExport;
    vec![
        route!(GET "/o/{org}/settings/export", Surface::Web, Access::Org(p), export_page),
        route!(POST "/o/{org}/settings/export", Surface::Web, Access::Org(p), start_export).limited(&[EXPORT_PER_ORG]),
        // Public: the signature is the authorization (then the allowlist is checked).
        route!(GET "/exports/{org}/{export}", Surface::Web, Access::Public, download).limited(&[EXPORT_PER_IP]),
    ]
}

/// The key of export download links, derived from the master key for this purpose only.
pub fn link_key(state: &AppState) -> [u8; 32] {
    crate::state::derive_key(&state.sealer, "clientflow export links v1")
}

pub struct ExportRow {
    pub requested: String,
    pub status: &'static str,
    pub in_progress: bool,
    pub percent: i64,
    pub rows_done: i64,
    pub rows_total: i64,
    pub size: Option<String>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub expires: Option<String>,
    /// A signed download link, when the archive is ready.
    pub link: Option<String>,
}

#[derive(Template)]
#[template(path = "privacy/export.html")]
struct ExportPage {
    csrf: String,
    org: OrgNav,
    exports: Vec<ExportRow>,
    /// An export is queued or running: the list of exports updates itself (`data-live`).
    refresh: bool,
    reauth: ReauthPrompt,
    link_minutes: u32,
    keep_hours: i64,
    started: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
}

fn status_label(s: &str) -> &'static str {
    match s {
        "queued" => "Waiting to start",
        "running" => "In progress",
        "ready" => "Ready to download",
        "failed" => "Failed",
        _ => "Expired (deleted)",
    }
}

fn size_label(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} kB", b / 1024.0)
    }
}

fn row(state: &AppState, access: &OrgAccess, key: &[u8; 32], e: ExportRecord) -> ExportRow {
    let now = state.clock.now();
    let link = e.downloadable(now).then(|| {
        signed_link(&state.config.public_url(), key, access.principal.org_id(), e.id, now, export_jobs::LINK_MINUTES).0
    });
    ExportRow {
        requested: access.when(e.requested_at),
        status: status_label(&e.status),
        in_progress: e.in_progress(),
        percent: e.percent(),
        rows_done: e.rows_done,
        rows_total: e.rows_total,
        size: e.size_bytes.map(size_label),
        sha256: e.sha256.as_deref().map(hex::encode),
        error: e.error.clone(),
        expires: e.expires_at.filter(|_| e.status == "ready").map(|t| access.when(t)),
        link,
    }
}

async fn view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    started: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<ExportPage> {
    let key = link_key(state);
    let records = export_jobs::recent(&state.db, &access.principal, 10).await?;
    let refresh = records.iter().any(ExportRecord::in_progress);
    let exports = records.into_iter().map(|e| row(state, access, &key, e)).collect();
    Ok(ExportPage {
        csrf,
        org: OrgNav::of(access),
        exports,
        refresh,
        reauth: ReauthPrompt::for_user(state, access.principal.user_id()).await?,
        link_minutes: export_jobs::LINK_MINUTES,
        keep_hours: export_jobs::KEEP_HOURS,
        started,
        message,
        errors,
    })
}

#[derive(Deserialize)]
struct StartedQuery {
    started: Option<String>,
}

async fn export_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<StartedQuery>,
) -> AppResult<Response> {
    page(&view(&state, csrf, &access, q.started.is_some(), None, vec![]).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

/// Starts an export, once the person confirmed it's them: the password (or a recent sign-in)
/// and, when the account has a second factor, a current code from it.
#[allow(clippy::too_many_arguments)]
async fn start_export(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(form): Form<StartForm>,
) -> AppResult<Response> {
    let password = Secret::new(form.current_password);
    let result = async {
        let user = load_user(&state, current.user.id()).await?;
        if user.two_factor_enabled() {
            reauthenticate_every_factor(&state, &meta, &user, &current, &password, &form.code, "code").await?;
        } else {
            confirm_sensitive_change(&state, &meta, &current, &password, &form.code).await?;
        }
        export_jobs::request(&state.db, &ctx, &access.principal).await.map_err(AppError::from)
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/o/{}/settings/export?started=1", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &view(&state, csrf, &access, false, message, errors).await?)
        }
    }
}

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    expires: i64,
    #[serde(default)]
    signature: String,
}

/// 410 with a page (or problem+json) that says why.
fn gone(detail: &str) -> Response {
    let mut problem = Problem::for_status(StatusCode::GONE);
    problem.detail = detail.into();
    let mut res = StatusCode::GONE.into_response();
    res.extensions_mut().insert(problem);
    res
}

/// `GET /exports/{org}/{export}?expires=…&signature=…`.
async fn download(
    State(state): State<AppState>,
    ctx: Context,
    Path((org, id)): Path<(String, String)>,
    Query(q): Query<LinkQuery>,
    client_ip: Option<Extension<ClientIp>>,
) -> AppResult<Response> {
    let invalid =
        || AppError::forbidden("This download link is not valid. Open the Data export page for a new one.".into());
    let (Ok(org), Ok(id)) = (org.parse::<OrgId>(), id.parse::<Uuid>()) else {
        return Err(invalid());
    };
    let principal =
        match verify_export_link(&state.db, &link_key(&state), org, id, q.expires, &q.signature, state.clock.now())
            .await?
        {
            ExportLink::Valid(p) => p,
            ExportLink::Expired => {
                return Ok(gone(
                    "This download link has expired. Open the organization's Data export page for a new link.",
                ));
            }
            ExportLink::Invalid => return Err(invalid()),
        };
    // A link is a bearer capability, not a way around the organization's network rules.
    let ip = client_ip.map(|Extension(ClientIp(ip))| ip).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let (name, list) = allowlist::load_with_name(&state.db, &principal).await?;
    if !allowlist::permits(&list, ip) {
        return Err(allowlist::refusal(&name, ip).into());
    }
    let mut tx = OrgTx::begin(&state.db, &principal).await?;
    let Some(record) = export_jobs::find(&mut tx, id).await? else {
        return Err(AppError::not_found());
    };
    if !record.downloadable(state.clock.now()) {
        return Ok(gone("This export has expired and was deleted. Start a new one on the Data export page."));
    }
    let slug: String =
        sqlx::query_scalar("SELECT slug FROM organizations WHERE id = $1").bind(org).fetch_one(&mut *tx).await?;
    let path = export_jobs::archive_path(&state.config.data_dir, &state.db, principal.region(), org, id);
    // The archive is sealed at rest; it is opened through to the end and checked against the
    // digest recorded when it was written before anything is sent, so a changed or damaged
    // file (or one whose key is gone) is refused with a page that says so, not cut off halfway.
    let expected = (record.sha256.clone().unwrap_or_default(), record.size_bytes.unwrap_or(-1));
    let check = {
        let (keys, path) = (state.keys.clone(), path.clone());
        tokio::task::spawn_blocking(move || check_archive(&keys, org, id, &path, &expected))
    };
    let len = match check.await.map_err(AppError::internal)? {
        Ok(len) => len,
        Err(refusal) => {
            tracing::warn!(organization = %org, export = %id, reason = %refusal.log, "export archive not sent");
            return Ok(gone(refusal.detail));
        }
    };
    audit::record(
        &mut tx,
        &ctx,
        Entry::new("organization.export_downloaded", "export", id).after(json!({ "size_bytes": len })),
    )
    .await?;
    tx.commit().await?;
    // Opened again while it is sent, chunk by chunk, in a thread of its own (every chunk is
    // authenticated before it leaves; memory stays at a few chunks whatever the size).
    let (send, recv) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    let keys = state.keys.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut reader = match export::open_sealed_archive(&keys, org, id, &path) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return drop(send.blocking_send(Err(std::io::Error::other(e)))),
            Err(e) => return drop(send.blocking_send(Err(std::io::Error::other(e)))),
        };
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let mut filled = 0;
            // Fill the buffer (the reader returns at most one chunk at a time).
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return drop(send.blocking_send(Err(e))),
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if send.blocking_send(Ok(axum::body::Bytes::from(buf))).is_err() {
                return; // the client went away
            }
        }
    });
    let stream = futures::stream::unfold(recv, |mut recv| async move { recv.recv().await.map(|item| (item, recv)) });
    let mut res = Response::new(Body::from_stream(stream));
    let date = record.finished_at.unwrap_or(record.requested_at).date();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{slug}-export-{date}.zip\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Why an archive is not sent: the page's words, and the log's.
struct Refusal {
    detail: &'static str,
    log: String,
}

/// Opens the sealed archive at `path` through to the end and checks its plain size and
/// SHA-256 against `expected` (the record's); returns the size.
fn check_archive(
    keys: &crate::platform::keys::Keyring,
    org: OrgId,
    id: Uuid,
    path: &std::path::Path,
    expected: &(Vec<u8>, i64),
) -> Result<u64, Refusal> {
    use crate::platform::sealed_stream::StreamError;
    use sha2::Digest;
    let damaged = |log: String| Refusal {
        detail: "This export's archive failed its integrity check on the server (it was changed or damaged) \
                 and was not sent. Start a new export on the Data export page.",
        log,
    };
    let unreadable = |e: StreamError| match e {
        StreamError::Key(e) => Refusal {
            detail: "This export's archive can no longer be opened: the organization's encryption key is gone. \
                     Start a new export on the Data export page.",
            log: e.to_string(),
        },
        e => damaged(e.to_string()),
    };
    let mut reader = match export::open_sealed_archive(keys, org, id, path) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unreadable(e)),
        Err(e) => {
            return Err(Refusal {
                detail: "This export's archive is no longer on the server. Start a new export on the Data export page.",
                log: format!("{e:#}"),
            });
        }
    };
    let mut hash = sha2::Sha256::new();
    let len = std::io::copy(&mut reader, &mut hash).map_err(|e| match StreamError::of(&e) {
        Some(StreamError::Key(k)) => {
            unreadable(StreamError::Key(crate::platform::keys::KeyError::Store(k.to_string())))
        }
        _ => damaged(e.to_string()),
    })?;
    let digest: [u8; 32] = hash.finalize().into();
    if digest[..] != expected.0[..] || len as i64 != expected.1 {
        return Err(damaged("the archive opened but its size or SHA-256 differs from the record".into()));
    }
    Ok(len)
}
