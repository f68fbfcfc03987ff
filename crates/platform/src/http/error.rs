//! One error type for handlers, rendered as RFC 9457 problem+json on the API and as a plain
//! error page on the web.
//!
//! Handlers return [`AppError`]. Its `IntoResponse` only records *what* went wrong (a
//! [`Problem`] in the response extensions); the `render_errors` middleware decides *how* to
//! show it, so errors produced outside handlers (unknown route, wrong method, body too large,
//! timeout) get exactly the same treatment. A 500 never shows its cause: the cause is logged
//! with the request id, and the client gets the request id to quote.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The field as a person filling in the form knows it: "Client" for `client_id`, "Due
    /// date" for `due_date` (pages speak in labels, the API in field names).
    pub fn label(&self) -> String {
        let name = self.field.strip_suffix("_id").unwrap_or(&self.field);
        let name = match name {
            "spent_on" => "date",
            "user" => "person",
            "minutes" => "time",
            other => other,
        };
        let mut words = name.replace(['_', '.'], " ");
        if let Some(first) = words.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        words
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("authentication required")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("throttled: {message}")]
    Throttled { message: String, retry_after_secs: u64 },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The organization's plan doesn't allow this (403): `limit` names the limit
    /// (`projects`, `seats`…), `upgrade` where to raise it. Rendered as a problem of type
    /// [`PLAN_LIMIT_TYPE`] carrying both.
    #[error("plan limit: {limit}")]
    PlanLimit { limit: &'static str, message: String, upgrade: String },
    /// The database can't be reached (see `platform::db::outage`): 503 with `Retry-After`,
    /// logged once per outage rather than per request.
    #[error("database unavailable")]
    DatabaseUnavailable,
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// Seconds a client is asked to wait when the database can't be reached.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl From<anyhow::Error> for AppError {
    /// An error whose chain holds a failure to reach the database is that, not an internal
    /// error, however deep it was wrapped.
    fn from(e: anyhow::Error) -> Self {
        match crate::db::outage::unavailable_in(&e) {
            Some(cause) => {
                crate::db::outage::record_failure(cause);
                AppError::DatabaseUnavailable
            }
            None => AppError::Internal(e),
        }
    }
}

impl AppError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(anyhow::anyhow!("{e}"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::PlanLimit { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests { .. } | AppError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) | AppError::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The user-safe description. Never includes the cause of an internal error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (detail, errors) = match self {
            AppError::BadRequest(m)
            | AppError::Unauthorized(m)
            | AppError::Forbidden(m)
            | AppError::Conflict(m)
            | AppError::UnsupportedMediaType(m)
            | AppError::Unavailable(m) => (m.clone(), vec![]),
            AppError::Validation(errs) => (
                match errs.as_slice() {
                    [one] => format!("{}: {}", one.field, one.message),
                    _ => "Some fields are not valid.".to_string(),
                },
                errs.clone(),
            ),
            AppError::NotFound => ("The requested resource does not exist.".into(), vec![]),
            AppError::PayloadTooLarge => ("The request body is too large.".into(), vec![]),
            AppError::DatabaseUnavailable => (
                format!(
                    "The service can't reach its database right now. Try again in {DATABASE_RETRY_AFTER_SECS} seconds."
                ),
                vec![],
            ),
            AppError::Throttled { message, .. } | AppError::PlanLimit { message, .. } => (message.clone(), vec![]),
            AppError::TooManyRequests { retry_after_secs } => {
                (format!("Too many requests. Try again in {retry_after_secs} seconds."), vec![])
            }
            AppError::Internal(_) => {
                ("Something went wrong on our side. Quote the request id if you contact support.".into(), vec![])
            }
        };
        let mut problem =
            Problem { status: status.as_u16(), title: title_for(status).into(), detail, errors, ..Problem::default() };
        if let AppError::PlanLimit { limit, upgrade, .. } = self {
            problem.kind = Some(PLAN_LIMIT_TYPE);
            problem.extensions.insert("limit".into(), (*limit).into());
            problem.extensions.insert("upgrade_url".into(), upgrade.clone().into());
        }
        problem
    }
}

/// The problem type of a refusal by the organization's plan.
pub const PLAN_LIMIT_TYPE: &str = "https://clientflow.dev/problems/plan-limit";

/// What went wrong, independent of how it is shown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Problem {
    pub status: u16,
    pub title: String,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// The problem's `type` URI; `about:blank` when `None`.
    pub kind: Option<&'static str>,
    /// RFC 9457 extension members (for a plan limit: `limit`, `upgrade_url`).
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// The description used when a response carries no `Problem` (errors from layers and the
    /// router itself).
    pub fn for_status(status: StatusCode) -> Self {
        let detail = match status.as_u16() {
            404 => "The requested resource does not exist.",
            405 => "This method is not allowed on this resource.",
            408 => "The request took too long to arrive.",
            413 => "The request body is too large.",
            415 => "This content type is not supported here.",
            422 => "The request could not be processed.",
            429 => "Too many requests.",
            503 => "The service is temporarily unavailable or the request took too long. Try again.",
            s if s >= 500 => "Something went wrong on our side. Quote the request id if you contact support.",
            _ => "The request could not be processed.",
        };
        Problem {
            status: status.as_u16(),
            title: title_for(status).into(),
            detail: detail.into(),
            ..Problem::default()
        }
    }
}

fn title_for(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// Marks a 4xx/5xx response whose body a handler rendered itself (for example a form page
/// with validation messages) so the error renderer leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct RenderedByHandler;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // An internal error built by hand around a database outage is still the outage.
        let this = match self {
            AppError::Internal(cause) => AppError::from(cause),
            other => other,
        };
        let cause = match &this {
            AppError::Internal(cause) => {
                let text = format!("{cause:#}");
                tracing::error!(error = %text, "internal error");
                Some(text)
            }
            _ => None,
        };
        let problem = this.problem();
        let mut response = this.status().into_response();
        if let Some(text) = cause {
            // For the error reporter (scrubbed there); the client sees only the request id.
            response.extensions_mut().insert(crate::error_reports::InternalCause(text));
        }
        if let AppError::TooManyRequests { retry_after_secs } | AppError::Throttled { retry_after_secs, .. } = &this {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        if let AppError::DatabaseUnavailable = &this {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, DATABASE_RETRY_AFTER_SECS.into());
        }
        response.extensions_mut().insert(problem);
        response
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        from_db(e)
    }
}

/// What a named database constraint means to the person whose input broke it: the field it
/// names and the message they read. The application states its constraints in one table
/// ([`name_constraints`]); a violation of one of them is a 422 naming that field instead of a
/// generic conflict.
#[derive(Debug)]
pub struct ConstraintField {
    pub constraint: &'static str,
    pub field: &'static str,
    pub message: &'static str,
}

static CONSTRAINTS: std::sync::OnceLock<&'static [ConstraintField]> = std::sync::OnceLock::new();

/// Registers the application's table of constraint names (once; later calls keep the first).
pub fn name_constraints(table: &'static [ConstraintField]) {
    let _ = CONSTRAINTS.set(table);
}

/// The field a violated constraint names, if the application stated it.
pub fn constraint_field(e: &sqlx::Error) -> Option<&'static ConstraintField> {
    let name = e.as_database_error()?.constraint()?;
    CONSTRAINTS.get()?.iter().find(|c| c.constraint == name)
}

/// Maps database errors to what a client may learn. A foreign-key or row-level-security
/// violation is a reference to something that doesn't exist *for this tenant*: 404, so a
/// foreign id can't be told apart from a missing one. A unique or check violation of a
/// constraint the application named is a field error on the field it names.
pub fn from_db(e: sqlx::Error) -> AppError {
    if crate::db::outage::note(&e) {
        return AppError::DatabaseUnavailable;
    }
    if let Some(c) = constraint_field(&e)
        && matches!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("23505" | "23514" | "23P01"))
    {
        return AppError::field(c.field, c.message);
    }
    match &e {
        sqlx::Error::RowNotFound => AppError::NotFound,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => AppError::Conflict("A record with these values already exists.".into()),
            Some("23503") => AppError::NotFound,
            Some("42501") => AppError::NotFound,
            Some("23514") | Some("22001") | Some("23502") => {
                AppError::BadRequest("A value is out of the allowed range.".into())
            }
            Some("22P02") => AppError::BadRequest("A value has the wrong format.".into()),
            _ => AppError::Internal(anyhow::Error::new(e)),
        },
        _ => AppError::Internal(anyhow::Error::new(e)),
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = AppError::Internal(anyhow::anyhow!("password=hunter2 connection refused"));
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
        assert!(!p.detail.contains("refused"));
    }

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after_and_a_query_error_is_not() {
        let refused = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for e in [from_db(refused()), from_db(sqlx::Error::PoolTimedOut), AppError::from(anyhow::Error::new(refused()))]
        {
            assert!(matches!(e, AppError::DatabaseUnavailable), "{e:?}");
        }
        // Wrapped by hand as an internal error: still the outage.
        let res = AppError::Internal(anyhow::Error::new(refused()).context("loading")).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[axum::http::header::RETRY_AFTER], "5");
        assert!(!res.extensions().get::<Problem>().unwrap().detail.contains("refused"));
        assert!(matches!(from_db(sqlx::Error::RowNotFound), AppError::NotFound));
        assert!(matches!(from_db(sqlx::Error::Protocol("x".into())), AppError::Internal(_)));
        let res = AppError::from(anyhow::anyhow!("a bug")).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let p = AppError::field("name", "must not be empty").problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "name");
        assert!(p.detail.contains("name"));
    }
}
