//! File pages: multipart upload onto a project (or task), download through an authorized
//! request, short-lived signed download links, sharing with the client, deletion.
//!
//! Uploads are the one place a body may be larger than `server.body_limit_bytes`: the upload
//! route lifts axum's extractor limit, the global body limit allows `files.max_upload_bytes`
//! plus the multipart framing, and the handler counts the file's bytes itself.
//!
//! Downloads are always attachments with `nosniff` and a sandboxing CSP: a file is never
//! rendered as a page of this site, whatever its bytes are.

use askama::Template;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::path_id;
use super::projects::{ProjectForms, project_failure};
use crate::access;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError};
use crate::platform::http::middleware::ClientIp;
use crate::platform::ids::{FileId, OrgId, ProjectId, TaskId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::allowlist;
use crate::tenancy::frame::{OrgNav, failure, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::files::{self, FileMeta, Upload};

pub fn routes() -> Vec<RouteDef> {
    let mut upload_route =
        route!(POST "/o/{org}/projects/{project}/files", Surface::Web, Access::Org(P::FilesUpload), upload);
    // The handler enforces `files.max_upload_bytes` on the file itself; the global
    // `RequestBodyLimitLayer` still caps the whole body.
    upload_route.handler = upload_route.handler.layer(DefaultBodyLimit::disable());
    vec![
        upload_route,
        route!(GET "/o/{org}/files/{file}/download", Surface::Web, Access::Org(P::FilesRead), download),
        route!(POST "/o/{org}/files/{file}/share", Surface::Web, Access::Org(P::FilesUpload), share),
        route!(POST "/o/{org}/files/{file}/link", Surface::Web, Access::Org(P::FilesRead), link),
        route!(POST "/o/{org}/files/{file}/delete", Surface::Web, Access::Org(P::FilesDelete), delete),
        route!(GET "/files/{org}/{file}", Surface::Web, Access::Public, signed_download),
    ]
}

/// The response for a file's contents: always a download, never a page of this site.
pub fn attachment(meta: &FileMeta, bytes: Vec<u8>) -> AppResult<Response> {
    let ascii: String =
        meta.name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect::<String>();
    let encoded = percent_encoding::utf8_percent_encode(&meta.name, percent_encoding::NON_ALPHANUMERIC);
    let disposition = format!("attachment; filename=\"{}\"; filename*=UTF-8''{encoded}", ascii.replace('\\', "_"));
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&meta.content_type).map_err(AppError::internal)?);
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(AppError::internal)?);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(res)
}

fn bad_upload(e: axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest(format!("The upload could not be read: {}", e.body_text()))
    }
}

struct Received {
    name: String,
    bytes: Vec<u8>,
    shared: bool,
    task_id: Option<TaskId>,
}

async fn receive(multipart: &mut Multipart, max: usize) -> AppResult<Received> {
    let mut file = None;
    let mut shared = false;
    let mut task_id = None;
    while let Some(mut field) = multipart.next_field().await.map_err(bad_upload)? {
        match field.name().unwrap_or("") {
            "file" => {
                let name = field.file_name().unwrap_or("").to_string();
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad_upload)? {
                    // Counted as it arrives: a too-large file is refused without holding it.
                    if bytes.len() + chunk.len() > max {
                        return Err(AppError::PayloadTooLarge);
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((name, bytes));
            }
            "shared_with_client" => shared = field.text().await.map_err(bad_upload)? == "on",
            "task_id" => {
                let raw = field.text().await.map_err(bad_upload)?;
                task_id = super::form_id("task_id", &raw)?;
            }
            // Checked by the CSRF guard before the handler ran.
            "csrf_token" => {}
            other => return Err(AppError::field(other, "is not a field of this form")),
        }
    }
    let (name, bytes) = file.ok_or_else(|| AppError::field("file", "choose a file"))?;
    if name.is_empty() && bytes.is_empty() {
        return Err(AppError::field("file", "choose a file"));
    }
    Ok(Received { name, bytes, shared, task_id })
}

async fn upload(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, project)): Path<(String, String)>,
    mut multipart: Multipart,
) -> AppResult<Response> {
    let project: ProjectId = path_id(&project)?;
    let max = state.config.files.max_upload_bytes;
    let result = async {
        let got = receive(&mut multipart, max).await?;
        let up = Upload {
            project_id: project,
            task_id: got.task_id,
            name: &got.name,
            bytes: got.bytes,
            shared_with_client: got.shared,
        };
        files::upload(&state.db, &state.storage, &state.keys, max, &ctx, &access.principal, up)
            .await
            .map_err(AppError::from)
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/o/{}/projects/{project}/files", access.slug)).into_response()),
        // Shown on the project page with their own status, like a field message.
        Err(
            e @ (AppError::PayloadTooLarge | AppError::Domain(DomainError::TooLarge | DomainError::UnsupportedType(_))),
        ) => {
            let status = e.status();
            let message = Some(match e {
                AppError::Domain(DomainError::UnsupportedType(m)) => m,
                _ => format!("The file is too large (at most {}).", super::projects::size(max as i64)),
            });
            project_failure(
                &state,
                csrf,
                &access,
                project,
                ProjectForms { tab: "files", ..ProjectForms::default() },
                status,
                message,
                vec![],
            )
            .await
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            project_failure(
                &state,
                csrf,
                &access,
                project,
                ProjectForms { tab: "files", ..ProjectForms::default() },
                status,
                message,
                errors,
            )
            .await
        }
    }
}

async fn download(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let (meta, bytes) = files::download(&state.db, &state.storage, &state.keys, &access.principal, id).await?;
    attachment(&meta, bytes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareForm {
    #[serde(default)]
    shared: Option<String>,
}

async fn share(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ShareForm>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let shared = form.shared.as_deref() == Some("on");
    let meta = files::set_shared(&state.db, &state.keys, &ctx, &access.principal, id, shared).await?;
    Ok(Redirect::to(&format!("/o/{}/projects/{}/files", access.slug, meta.project_id)).into_response())
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let meta = files::get(&state.db, &state.keys, &access.principal, id).await?;
    match files::delete(&state.db, &state.storage, &ctx, &access.principal, id).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/projects/{}/files", access.slug, meta.project_id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            project_failure(
                &state,
                csrf,
                &access,
                meta.project_id,
                ProjectForms { tab: "files", ..ProjectForms::default() },
                status,
                message,
                errors,
            )
            .await
        }
    }
}

#[derive(Template)]
#[template(path = "work/file_link.html")]
struct LinkPage {
    org: OrgNav,
    file: FileMeta,
    link: String,
    expires: String,
    minutes: u32,
}

/// Issues a short-lived signed link to a file the caller may download (for handing to
/// someone, or to a tool, without a session).
async fn link(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let minutes = state.config.files.link_minutes;
    let public_url = state.config.public_url();
    let signing = files::LinkSigning { base: &public_url, key: &state.file_link_key, minutes };
    let (file, link, expires) = files::issue_link(&state.db, &state.keys, &ctx, &access.principal, signing, id).await?;
    page(&LinkPage { org: OrgNav::of(&access), file, link, expires: access.when(expires), minutes })
}

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    expires: i64,
    #[serde(default)]
    signature: String,
}

/// `GET /files/{org}/{file}?expires=…&signature=…`: public, because the signature is the
/// authorization (HMAC over organization, file and expiry, checked in constant time).
async fn signed_download(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    Query(q): Query<LinkQuery>,
    client_ip: Option<Extension<ClientIp>>,
) -> AppResult<Response> {
    let invalid = || AppError::forbidden("This download link has expired or is not valid. Ask for a new one.".into());
    let (Ok(org), Ok(id)) = (org.parse::<OrgId>(), id.parse::<FileId>()) else {
        return Err(invalid());
    };
    let principal =
        access::verify_file_link(&state.db, &state.file_link_key, org, id, q.expires, &q.signature, state.clock.now())
            .await?
            .ok_or_else(invalid)?;
    // A link is a bearer capability, not a way around the organization's network rules: from
    // outside its IP allowlist it is refused like any other download.
    let ip = client_ip.map(|Extension(ClientIp(ip))| ip).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let (name, list) = allowlist::load_with_name(&state.db, &principal).await?;
    if !allowlist::permits(&list, ip) {
        return Err(allowlist::refusal(&name, ip).into());
    }
    let (meta, bytes) = files::download(&state.db, &state.storage, &state.keys, &principal, id).await?;
    attachment(&meta, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_never_rendered() {
        let meta = FileMeta {
            id: FileId::new(),
            project_id: ProjectId::new(),
            task_id: None,
            name: "Über report.pdf".into(),
            content_type: "application/pdf".into(),
            size_bytes: 3,
            shared_with_client: false,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let res = attachment(&meta, b"%PD".to_vec()).unwrap();
        let h = res.headers();
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename=\"_ber report.pdf\"; filename*=UTF-8''%C3%9Cber%20report%2Epdf"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox; default-src 'none'");
    }
}
