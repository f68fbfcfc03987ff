//! Files: uploads (multipart, streamed and size-limited), metadata and short-lived download links.

use super::*;
use crate::work::files;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Only this project's files.
    #[param(value_type = Option<Uuid>)]
    pub project_id: Option<QueryId>,
    /// Only this task's files.
    #[param(value_type = Option<Uuid>)]
    pub task_id: Option<QueryId>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// A file's metadata with a download link. The link is a bearer capability, so it is only
/// handed out one file at a time (never in lists) and expires within minutes.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileWithLink {
    #[serde(flatten)]
    pub file: FileMeta,
    /// Downloads the file without an API key until `download_url_expires_at`.
    pub download_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub download_url_expires_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(FileQuery),
    responses((status = 200, description = "A page of file metadata, newest first", body = List<FileMeta>)),
    security(("api_key" = ["files.read"])))]
pub async fn list_files(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = FileFilter { project_id: query_id(q.project_id), task_id: query_id(q.task_id) };
    let items = files::list(&s.db, &s.keys, &api.principal, &filter, page).await?;
    Ok(listed(items, page, None))
}

pub(super) fn upload_route() -> RouteDef {
    let mut r = route!(POST "/api/v1/files", Surface::Api, Access::Api(P::FilesUpload), upload_file);
    // Like the web upload: the handler counts the file against `files.max_upload_bytes`; the
    // global body limit still caps the whole request.
    r.handler = r.handler.layer(axum::extract::DefaultBodyLimit::disable());
    r
}

/// The parts of `POST /api/v1/files` (`multipart/form-data`); any other part is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the document's description of the parts `receive_upload` reads
pub struct FileUploadForm {
    /// The file (its name is the part's filename). PDF, images, Office documents, ZIP or text,
    /// decided from the bytes; at most `files.max_upload_bytes`.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The project the file belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub project_id: String,
    /// A task of that project; empty for none.
    #[schema(value_type = Option<String>, format = "uuid-or-empty", nullable = false)]
    pub task_id: Option<String>,
    /// `true` shows the file to the client in the portal (default `false`).
    #[schema(nullable = false)]
    pub shared_with_client: Option<bool>,
}

/// A problem naming a part of the upload, with any status.
pub(super) fn upload_problem(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    crate::api::extract::problem(status, field, message).into_response()
}

pub(super) struct ReceivedUpload {
    name: String,
    bytes: Vec<u8>,
    project_id: String,
    task_id: Option<String>,
    shared: bool,
}

pub(super) async fn receive_upload(
    mut multipart: axum::extract::Multipart,
    max: usize,
) -> Result<ReceivedUpload, Response> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            upload_problem(StatusCode::PAYLOAD_TOO_LARGE, "file", format!("is larger than {max} bytes"))
        } else {
            upload_problem(
                StatusCode::BAD_REQUEST,
                "body",
                format!("is not a readable multipart body: {}", e.body_text()),
            )
        }
    };
    let (mut file, mut project_id, mut task_id, mut shared) = (None, None, None, false);
    while let Some(mut field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "file", "only one file per request"));
                }
                let file_name = field.file_name().unwrap_or("").to_string();
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
                    // Counted as it arrives: a too-large file is refused without holding it.
                    if bytes.len() + chunk.len() > max {
                        return Err(upload_problem(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "file",
                            format!("is larger than {max} bytes"),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((file_name, bytes));
            }
            "project_id" => project_id = Some(field.text().await.map_err(unreadable)?),
            "task_id" => task_id = Some(field.text().await.map_err(unreadable)?),
            "shared_with_client" => {
                shared = match field.text().await.map_err(unreadable)?.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(upload_problem(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "shared_with_client",
                            "must be true or false",
                        ));
                    }
                }
            }
            other => {
                let field = if other.is_empty() { "body" } else { other };
                return Err(upload_problem(StatusCode::UNPROCESSABLE_ENTITY, field, "is not an accepted part"));
            }
        }
    }
    let (name, bytes) = file.ok_or_else(|| upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "file", "is required"))?;
    let project_id =
        project_id.ok_or_else(|| upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "project_id", "is required"))?;
    Ok(ReceivedUpload { name, bytes, project_id, task_id, shared })
}

#[utoipa::path(post, path = "/api/v1/files", tag = "files",
    description = "`project_id` must name a project the key sees and `task_id` a task of it (422 naming the part otherwise); the file's type is decided from its bytes (415) and its size is limited (413).",
    request_body(content = FileUploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored (encrypted); a GET of the Location issues a download link", body = Data<FileMeta>)),
    security(("api_key" = ["files.upload"])))]
pub async fn upload_file(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    req: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequest;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_multipart {
        return upload_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type", "must be multipart/form-data");
    }
    let multipart = match axum::extract::Multipart::from_request(req, &s).await {
        Ok(m) => m,
        Err(_) => return upload_problem(StatusCode::BAD_REQUEST, "Content-Type", "needs a multipart boundary"),
    };
    let max = s.config.files.max_upload_bytes;
    let got = match receive_upload(multipart, max).await {
        Ok(got) => got,
        Err(res) => return res,
    };
    let Ok(project_id) = got.project_id.trim().parse::<ProjectId>() else {
        return AppError::field("project_id", "is not a valid id").into_response();
    };
    let task_id = match got.task_id.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::parse::<TaskId>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return AppError::field("task_id", "is not a valid id").into_response(),
    };
    let up = files::Upload { project_id, task_id, name: &got.name, bytes: got.bytes, shared_with_client: got.shared };
    match files::upload(&s.db, &s.storage, &s.keys, max, &ctx, &api.principal, up).await {
        Ok(meta) => created(format!("/api/v1/files/{}", meta.id), meta),
        // The project is named in the body: one the key can't see is a field to fix.
        Err(crate::platform::error::DomainError::NotFound) => {
            AppError::field("project_id", "no such project").into_response()
        }
        Err(crate::platform::error::DomainError::TooLarge) => {
            upload_problem(StatusCode::PAYLOAD_TOO_LARGE, "file", format!("is larger than {max} bytes"))
        }
        Err(crate::platform::error::DomainError::UnsupportedType(m)) => {
            upload_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "file", m)
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/files/{file}", tag = "files",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "The file's metadata and a short-lived signed download link", body = Data<FileWithLink>)),
    security(("api_key" = ["files.read"])))]
pub async fn get_file(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    // Issued like a link from the web page: checked, and recorded in the audit log.
    let public_url = s.config.public_url();
    let signing = files::LinkSigning { base: &public_url, key: &s.file_link_key, minutes: s.config.files.link_minutes };
    let (file, download_url, download_url_expires_at) =
        files::issue_link(&s.db, &s.keys, &ctx, &api.principal, signing, ids.get("file")?).await?;
    Ok(ok(FileWithLink { file, download_url, download_url_expires_at }))
}

#[utoipa::path(patch, path = "/api/v1/files/{file}", tag = "files", request_body = FileUpdate,
    description = "`task_id` must name a task of the file's project; otherwise 422 naming it.",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "Updated metadata (absent fields are unchanged)", body = Data<FileMeta>)),
    security(("api_key" = ["files.upload"])))]
pub async fn update_file(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<FileUpdate>,
) -> AppResult<Response> {
    Ok(ok(files::update(&s.db, &s.keys, &ctx, &api.principal, ids.get("file")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/files/{file}", tag = "files",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 204, description = "Deleted with its contents")),
    security(("api_key" = ["files.delete"])))]
pub async fn delete_file(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    files::delete(&s.db, &s.storage, &ctx, &api.principal, ids.get("file")?).await?;
    Ok(no_content())
}
