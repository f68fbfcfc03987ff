//! The HTTP edge's error: how an outcome is shown, as RFC 9457 problem+json on the API and as
//! a plain error page on the web.
//!
//! Services decide outcomes in the domain's words ([`DomainError`], `platform/error.rs`);
//! handlers, guards and extractors return [`AppError`], which is a domain outcome or one of the
//! few refusals that are about HTTP itself (an unreadable request, a missing credential, a body
//! over the limit, the rate limiter). The status, the problem and `Retry-After` of every one of
//! them are decided in one match (`AppError::outcome`).
//!
//! `IntoResponse` only records *what* went wrong (a [`Problem`] in the response extensions);
//! the `render_errors` middleware decides *how* to show it, so errors produced outside handlers
//! (unknown route, wrong method, body too large, timeout) get exactly the same treatment. A 500
//! never shows its cause: the cause is logged with the request id, and the client gets the
//! request id to quote.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::error::{DomainError, DomainResult, FieldError};

/// The cause of an internal error, put on the 500 response by `AppError` for the error reporter
/// (`error_reports`; scrubbed before it is sent; never shown to the client).
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// What a service decided.
    #[error(transparent)]
    Domain(DomainError),
    /// The request itself can't be read (a form or body that doesn't parse).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No accepted credential came with the request (session, bearer token, signature).
    #[error("authentication required")]
    Unauthorized(String),
    /// The request body is over the route's limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The request's content type is not one the route reads.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The rate limiter's refusal.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
}

pub type AppResult<T> = Result<T, AppError>;

/// Seconds a client is asked to wait when the database can't be reached.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        AppError::Domain(e)
    }
}

impl From<anyhow::Error> for AppError {
    /// As `From<anyhow::Error> for DomainError`: an outage stays an outage.
    fn from(e: anyhow::Error) -> Self {
        AppError::Domain(DomainError::from(e))
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Domain(crate::error::from_db(e))
    }
}

/// How an error is shown: its status, the user-safe detail, the fields it names and how long
/// the client is asked to wait.
struct Outcome {
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_secs: Option<u64>,
}

impl Outcome {
    fn plain(status: StatusCode, detail: String) -> Self {
        Outcome { status, detail, errors: vec![], retry_after_secs: None }
    }

    fn retry_after(self, secs: u64) -> Self {
        Outcome { retry_after_secs: Some(secs), ..self }
    }
}

/// Short constructors of domain outcomes, so handler code reads like the service's.
impl AppError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        DomainError::field(field, message).into()
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        DomainError::Invalid(errors).into()
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        DomainError::internal(e).into()
    }

    pub fn not_found() -> Self {
        DomainError::NotFound.into()
    }

    pub fn forbidden(message: String) -> Self {
        DomainError::Forbidden(message).into()
    }

    pub fn conflict(message: String) -> Self {
        DomainError::Conflict(message).into()
    }

    pub fn unavailable(message: String) -> Self {
        DomainError::Unavailable(message).into()
    }
}

impl AppError {
    /// The one place where an error gets its status, detail and `Retry-After`.
    fn outcome(&self) -> Outcome {
        use DomainError as D;
        use Outcome as O;
        match self {
            AppError::BadRequest(m) | AppError::Domain(D::Malformed(m)) => O::plain(StatusCode::BAD_REQUEST, m.clone()),
            AppError::Domain(D::Invalid(errs)) => Outcome {
                errors: errs.clone(),
                ..O::plain(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    match errs.as_slice() {
                        [one] => format!("{}: {}", one.field, one.message),
                        _ => "Some fields are not valid.".to_string(),
                    },
                )
            },
            AppError::Unauthorized(m) | AppError::Domain(D::NotAuthenticated(m)) => {
                O::plain(StatusCode::UNAUTHORIZED, m.clone())
            }
            AppError::Domain(D::Forbidden(m) | D::PlanLimit { message: m, .. }) => {
                O::plain(StatusCode::FORBIDDEN, m.clone())
            }
            AppError::Domain(D::NotFound) => {
                O::plain(StatusCode::NOT_FOUND, "The requested resource does not exist.".into())
            }
            AppError::Domain(D::Conflict(m)) => O::plain(StatusCode::CONFLICT, m.clone()),
            AppError::PayloadTooLarge | AppError::Domain(D::TooLarge) => {
                O::plain(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large.".into())
            }
            AppError::UnsupportedMediaType(m) | AppError::Domain(D::UnsupportedType(m)) => {
                O::plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, m.clone())
            }
            AppError::TooManyRequests { retry_after_secs } => O::plain(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many requests. Try again in {retry_after_secs} seconds."),
            )
            .retry_after(*retry_after_secs),
            AppError::Domain(D::Throttled { message, retry_after_secs }) => {
                O::plain(StatusCode::TOO_MANY_REQUESTS, message.clone()).retry_after(*retry_after_secs)
            }
            AppError::Domain(D::Unavailable(m)) => O::plain(StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            AppError::Domain(D::DatabaseUnavailable) => O::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "The service can't reach its database right now. Try again in {DATABASE_RETRY_AFTER_SECS} seconds."
                ),
            )
            .retry_after(DATABASE_RETRY_AFTER_SECS),
            AppError::Domain(D::Internal(_)) => O::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Quote the request id if you contact support.".into(),
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.outcome().status
    }

    /// The user-safe description. Never includes the cause of an internal error.
    pub fn problem(&self) -> Problem {
        let Outcome { status, detail, errors, .. } = self.outcome();
        let mut problem =
            Problem { status: status.as_u16(), title: title_for(status).into(), detail, errors, ..Problem::default() };
        if let AppError::Domain(DomainError::PlanLimit { limit, upgrade, .. }) = self {
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
            AppError::Domain(d) => AppError::Domain(d.reclassified()),
            other => other,
        };
        let cause = match &this {
            AppError::Domain(DomainError::Internal(cause)) => {
                let text = format!("{cause:#}");
                tracing::error!(error = %text, "internal error");
                Some(text)
            }
            _ => None,
        };
        let problem = this.problem();
        let retry_after_secs = this.outcome().retry_after_secs;
        let mut response = this.status().into_response();
        if let Some(text) = cause {
            // For the error reporter (scrubbed there); the client sees only the request id.
            response.extensions_mut().insert(InternalCause(text));
        }
        if let Some(secs) = retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response.extensions_mut().insert(problem);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(e: impl Into<AppError>) -> Response {
        e.into().into_response()
    }

    #[test]
    fn internal_errors_hide_their_cause_and_pass_it_to_the_reporter() {
        let res = response_of(DomainError::Internal(anyhow::anyhow!("password=hunter2 bug")));
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let p = res.extensions().get::<Problem>().unwrap();
        assert!(!p.detail.contains("hunter2"), "{}", p.detail);
        assert!(!p.detail.contains("bug"), "{}", p.detail);
        let cause = res.extensions().get::<InternalCause>().unwrap();
        assert!(cause.0.contains("hunter2"));
        assert!(res.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after() {
        let refused = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for e in [AppError::from(refused()), AppError::from(anyhow::Error::new(refused()))] {
            assert!(matches!(e, AppError::Domain(DomainError::DatabaseUnavailable)), "{e:?}");
        }
        // Wrapped by hand as an internal error: still the outage.
        let res = response_of(DomainError::Internal(anyhow::Error::new(refused()).context("loading")));
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[axum::http::header::RETRY_AFTER], "5");
        assert!(!res.extensions().get::<Problem>().unwrap().detail.contains("refused"));
        assert!(res.extensions().get::<InternalCause>().is_none());
        let res = response_of(anyhow::anyhow!("a bug"));
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn validation_names_the_field() {
        let p = AppError::field("name", "must not be empty").problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors, vec![FieldError::new("name", "must not be empty")]);
        assert_eq!(p.detail, "name: must not be empty");
        let p = AppError::invalid(vec![FieldError::new("a", "x"), FieldError::new("b", "y")]).problem();
        assert_eq!((p.status, p.detail.as_str(), p.errors.len()), (422, "Some fields are not valid.", 2));
    }

    /// Every kind of outcome, its status and what the client reads.
    #[test]
    fn each_outcome_has_its_status_and_problem() {
        let m = || "said so".to_string();
        let cases: Vec<(AppError, u16, &str)> = vec![
            (DomainError::Malformed(m()).into(), 400, "said so"),
            (AppError::BadRequest(m()), 400, "said so"),
            (DomainError::NotAuthenticated(m()).into(), 401, "said so"),
            (AppError::Unauthorized(m()), 401, "said so"),
            (DomainError::Forbidden(m()).into(), 403, "said so"),
            (DomainError::NotFound.into(), 404, "The requested resource does not exist."),
            (DomainError::Conflict(m()).into(), 409, "said so"),
            (DomainError::TooLarge.into(), 413, "The request body is too large."),
            (AppError::PayloadTooLarge, 413, "The request body is too large."),
            (DomainError::UnsupportedType(m()).into(), 415, "said so"),
            (AppError::UnsupportedMediaType(m()), 415, "said so"),
            (DomainError::Throttled { message: m(), retry_after_secs: 30 }.into(), 429, "said so"),
            (AppError::TooManyRequests { retry_after_secs: 7 }, 429, "Too many requests. Try again in 7 seconds."),
            (DomainError::Unavailable(m()).into(), 503, "said so"),
            (
                DomainError::DatabaseUnavailable.into(),
                503,
                "The service can't reach its database right now. Try again in 5 seconds.",
            ),
        ];
        for (e, status, detail) in cases {
            let label = format!("{e:?}");
            let res = e.into_response();
            assert_eq!(res.status().as_u16(), status, "{label}");
            let p = res.extensions().get::<Problem>().unwrap();
            assert_eq!((p.status, p.detail.as_str()), (status, detail), "{label}");
            assert_eq!(p.title, StatusCode::from_u16(status).unwrap().canonical_reason().unwrap(), "{label}");
            assert!(p.kind.is_none() && p.extensions.is_empty(), "{label}");
            let retry = res.headers().get(axum::http::header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
            let expected = match status {
                429 if label.contains("Throttled") => Some("30"),
                429 => Some("7"),
                503 if label.contains("Database") => Some("5"),
                _ => None,
            };
            assert_eq!(retry.as_deref(), expected, "{label}");
        }
    }

    #[test]
    fn a_plan_limit_is_a_403_of_its_own_type_naming_the_limit_and_the_upgrade() {
        let e = DomainError::PlanLimit {
            limit: "projects",
            message: "Your plan allows 3 projects.".into(),
            upgrade: "/o/acme/settings/billing".into(),
        };
        let p = AppError::from(e).problem();
        assert_eq!((p.status, p.detail.as_str()), (403, "Your plan allows 3 projects."));
        assert_eq!(p.kind, Some(PLAN_LIMIT_TYPE));
        assert_eq!(p.extensions["limit"], "projects");
        assert_eq!(p.extensions["upgrade_url"], "/o/acme/settings/billing");
    }
}
