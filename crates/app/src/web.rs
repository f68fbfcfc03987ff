//! Server-rendered pages and static assets.

use askama::Template;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

/// Pages write a few bits of HTML by hand (messages, field errors) with the platform's escaping.
pub use crate::platform::html::escape_html;

use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::{AppError, FieldError, Problem};
use crate::route;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/", Surface::Web, Access::Public, home),
        route!(GET "/static/{file}", Surface::Web, Access::Public, static_file),
    ]
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    signed_in: bool,
}

/// The front door: what ClientFlow is, and the ways in (or back in, with a session cookie).
async fn home(headers: axum::http::HeaderMap) -> Result<Html<String>, AppError> {
    let signed_in = crate::access::asking::read_cookie(&headers, crate::access::session::SESSION_COOKIE).is_some();
    render(&HomePage { signed_in })
}

pub fn render<T: Template>(t: &T) -> Result<Html<String>, AppError> {
    t.render().map(Html).map_err(AppError::internal)
}

/// A page rendered with an error status (a form with its messages): the error renderer leaves
/// it as it is.
pub fn page_with_status<T: Template>(status: axum::http::StatusCode, t: &T) -> Result<Response, AppError> {
    let mut res = (status, render(t)?).into_response();
    res.extensions_mut().insert(crate::platform::http::error::RenderedByHandler);
    Ok(res)
}

/// The failures a public form (the contact form, the security report form) shows on itself:
/// field errors, and an unreadable or unavailable submission as a message; anything else
/// propagates (and is rendered as an error page).
pub fn public_form_failure(e: AppError) -> Result<(axum::http::StatusCode, Option<String>, Vec<FieldError>), AppError> {
    let status = e.status();
    match e {
        AppError::Domain(crate::platform::error::DomainError::Invalid(errors)) => Ok((status, None, errors)),
        AppError::BadRequest(m)
        | AppError::Domain(
            crate::platform::error::DomainError::Malformed(m) | crate::platform::error::DomainError::Unavailable(m),
        ) => Ok((status, Some(m), vec![])),
        other => Err(other),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    detail: &'a str,
    errors: &'a [FieldError],
    request_id: &'a str,
}

/// The plain error page (askama escapes every value).
pub fn error_page(problem: &Problem, request_id: &str) -> String {
    let page = ErrorPage {
        status: problem.status,
        title: &problem.title,
        detail: &problem.detail,
        errors: &problem.errors,
        request_id,
    };
    page.render().unwrap_or_else(|_| format!("{} {}", problem.status, problem.title))
}

/// Assets compiled into the binary: no file-system path is ever built from the request.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../static/app.css")),
    ("print.css", "text/css; charset=utf-8", include_bytes!("../static/print.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../static/app.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../static/favicon.svg")),
    ("board.js", "text/javascript; charset=utf-8", include_bytes!("../static/board.js")),
    ("print.js", "text/javascript; charset=utf-8", include_bytes!("../static/print.js")),
    ("daily.js", "text/javascript; charset=utf-8", include_bytes!("../static/daily.js")),
    ("timer.js", "text/javascript; charset=utf-8", include_bytes!("../static/timer.js")),
    // The proof-of-work solver of the bot check (`abuse::botcheck`).
    ("pow.js", "text/javascript; charset=utf-8", crate::abuse::botcheck::POW_JS.as_bytes()),
];

async fn static_file(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            let mut res = body.to_vec().into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            res
        }
        None => AppError::not_found().into_response(),
    }
}

// ---- what every page gets: the flash message of the last action, the last organization ----

/// The cookie that carries the message of the action just done to the page it leads to.
pub const FLASH_COOKIE: &str = "__Host-cf_flash";
/// The organization a browser last worked in (a slug: not a secret, only where `/app` lands).
pub const LAST_ORG_COOKIE: &str = "__Host-cf_org";

/// A handler's own message for the page its redirect leads to (otherwise the route's entry in
/// [`FLASH_MESSAGES`] is shown).
#[derive(Debug, Clone, Copy)]
pub struct Flash(pub &'static str);

/// What the person is told after each action (a POST answered with a redirect), by route.
/// The cookie carries an index into this table, never text, so a forged cookie shows nothing
/// it could choose.
pub const FLASH_MESSAGES: &[(&str, &str)] = &[
    ("", "Done."),
    ("POST /orgs", "Organization created. Welcome!"),
    ("POST /o/{org}/clients", "Client added."),
    ("POST /o/{org}/clients/{client}/edit", "Client saved."),
    ("POST /o/{org}/clients/{client}/archive", "Client archived."),
    ("POST /o/{org}/clients/{client}/restore", "Client restored."),
    ("POST /o/{org}/clients/{client}/delete", "Client deleted."),
    ("POST /o/{org}/clients/{client}/contacts", "Contact added."),
    ("POST /o/{org}/clients/{client}/contacts/{contact}/delete", "Contact removed."),
    ("POST /o/{org}/projects", "Project created."),
    ("POST /o/{org}/projects/{project}/edit", "Project saved."),
    ("POST /o/{org}/projects/{project}/copy", "Project copied. Its tasks are in the first column, ready to plan."),
    ("POST /o/{org}/projects/{project}/delete", "Project deleted."),
    ("POST /o/{org}/projects/{project}/members", "Added to the project."),
    ("POST /o/{org}/projects/{project}/members/{user}/remove", "Removed from the project."),
    ("POST /o/{org}/projects/{project}/columns", "Column added."),
    ("POST /o/{org}/projects/{project}/columns/{column}/move", "Column moved."),
    ("POST /o/{org}/projects/{project}/columns/{column}/delete", "Column deleted."),
    ("POST /o/{org}/projects/{project}/time", "Time recorded."),
    ("POST /o/{org}/projects/{project}/time/{entry}/delete", "Time entry deleted."),
    ("POST /o/{org}/projects/{project}/tasks", "Task added."),
    ("POST /o/{org}/projects/{project}/files", "File uploaded."),
    ("POST /o/{org}/tasks/{task}/edit", "Task saved."),
    ("POST /o/{org}/tasks/{task}/move", "Task moved."),
    ("POST /o/{org}/tasks/{task}/subtasks", "Subtask added."),
    ("POST /o/{org}/tasks/{task}/comments", "Comment posted."),
    ("POST /o/{org}/tasks/{task}/comments/{comment}/delete", "Comment deleted."),
    ("POST /o/{org}/tasks/{task}/delete", "Task deleted."),
    ("POST /o/{org}/files/{file}/share", "Sharing updated."),
    ("POST /o/{org}/files/{file}/delete", "File deleted."),
    ("POST /o/{org}/clients/{client}/statement/email", "Statement mailed to the client's billing email."),
    ("POST /o/{org}/invoices", "Invoice created."),
    ("POST /o/{org}/invoices/{invoice}/edit", "Invoice saved."),
    ("POST /o/{org}/invoices/{invoice}/send", "Invoice sent."),
    ("POST /o/{org}/invoices/{invoice}/pay", "Invoice marked paid."),
    ("POST /o/{org}/invoices/{invoice}/duplicate", "Copied as a new draft, issued today: check it, then send it."),
    ("POST /o/{org}/invoices/{invoice}/repeat", "Repeat set up: a copy of this invoice is made on each of its days."),
    ("POST /o/{org}/invoices/{invoice}/repeat/pause", "Repeat paused: no copies are made until you resume it."),
    ("POST /o/{org}/invoices/{invoice}/repeat/resume", "Repeat resumed: it goes on from its next day still to come."),
    ("POST /o/{org}/invoices/{invoice}/repeat/delete", "Stopped repeating: the copies made so far stay."),
    ("POST /o/{org}/invoices/{invoice}/void", "Invoice voided."),
    ("POST /o/{org}/invoices/{invoice}/payments", "Payment recorded."),
    ("POST /o/{org}/invoices/{invoice}/payments/{payment}/delete", "Payment deleted."),
    ("POST /o/{org}/invoices/{invoice}/delete", "Invoice deleted."),
    ("POST /o/{org}/invitations", "Invitation sent."),
    ("POST /o/{org}/invitations/{invitation}/revoke", "Invitation revoked."),
    ("POST /o/{org}/invitations/{invitation}/resend", "Invitation sent again."),
    ("POST /o/{org}/members/{member}/role", "Role changed."),
    ("POST /o/{org}/members/{member}/suspend", "Member suspended."),
    ("POST /o/{org}/members/{member}/reactivate", "Member reactivated."),
    ("POST /o/{org}/members/{member}/remove", "Member removed."),
    ("POST /o/{org}/members/{member}/permissions", "Permissions saved."),
    ("POST /o/{org}/settings", "Settings saved."),
    ("POST /o/{org}/settings/logo", "Logo saved."),
    ("POST /o/{org}/settings/contact", "Contact form saved."),
    ("POST /o/{org}/settings/security", "Security settings saved."),
    ("POST /o/{org}/settings/allowlist", "Allowlist saved."),
    ("POST /o/{org}/settings/roles", "Roles saved."),
    ("POST /o/{org}/settings/invoicing", "Invoicing settings saved."),
    ("POST /o/{org}/settings/api-keys/{key}/revoke", "API key revoked."),
    ("POST /o/{org}/leave", "You left the organization."),
    ("POST /invitations/accept", "Invitation accepted. Welcome!"),
    ("POST /invitations/{invitation}/join", "Invitation accepted. Welcome!"),
    ("POST /account/password", "Password changed."),
    ("POST /account/two-factor/setup", "Two-factor authentication is on."),
    ("POST /account/two-factor/disable", "Two-factor authentication is off."),
    ("POST /account/sessions/{id}/revoke", "Session signed out."),
    ("POST /account/sessions/revoke-others", "Other sessions signed out."),
    ("POST /logout", "You are signed out."),
    ("POST /o/{org}/notifications/read", "Marked read."),
    ("POST /o/{org}/notifications/preferences", "Notification preferences saved."),
    ("POST /o/{org}/tasks/{task}/follow", "Following updated."),
    ("POST /o/{org}/invoices/{invoice}/time", "Time added to the invoice."),
    ("POST /o/{org}/invoices/{invoice}/remind", "Reminder sent."),
    ("POST /o/{org}/projects/{project}/members/{user}/rate", "Rate saved."),
    ("POST /o/{org}/timer/start", "Timer started."),
    ("POST /o/{org}/timer/stop", "Timer stopped and the time recorded."),
    ("POST /o/{org}/transfer", "Ownership transferred."),
    ("POST /invitations/decline", "Invitation declined."),
    ("POST /o/{org}/settings/export", "Export started."),
    ("POST /o/{org}/settings/deletion", "Deletion requested."),
    ("POST /o/{org}/settings/deletion/cancel", "Deletion cancelled."),
    ("POST /account/deletion/cancel", "Account deletion cancelled."),
    ("POST /o/{org}/projects/{project}/expenses", "Expense recorded."),
    ("POST /o/{org}/projects/{project}/expenses/{expense}/delete", "Expense deleted."),
    ("POST /o/{org}/invoices/{invoice}/expenses", "Expenses added to the invoice."),
    ("POST /o/{org}/projects/{project}/expenses/{expense}/receipt", "Receipt saved."),
    ("POST /o/{org}/projects/{project}/time/{entry}/edit", "Time entry saved."),
    ("POST /o/{org}/projects/{project}/expenses/{expense}/edit", "Expense saved."),
    ("POST /o/{org}/invoices/{invoice}/repeat/edit", "Schedule saved."),
    ("POST /o/{org}/time/week/approve", "Week approved. Its time is fixed until the week is reopened."),
    ("POST /o/{org}/time/week/reopen", "Week reopened. Its time can be changed again."),
    ("POST /o/{org}/workload/capacity", "Hours a week saved."),
];

fn flash_index(route: &str, own: Option<Flash>) -> usize {
    if let Some(Flash(text)) = own
        && let Some(i) = FLASH_MESSAGES.iter().position(|(_, m)| *m == text)
    {
        return i;
    }
    FLASH_MESSAGES.iter().position(|(r, _)| *r == route).unwrap_or(0)
}

/// The organization slug of an organization page or portal page (`/o/acme/…`, `/portal/acme/…`).
fn org_slug_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/o/").or_else(|| path.strip_prefix("/portal/"))?;
    let slug = rest.split('/').next()?;
    (!slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    .then_some(slug)
}

/// After an action (a web form answered with a redirect), remembers its message for the next
/// page; a page shows the waiting message once, in a status region at the top of its content.
/// An organization's page remembers the organization, where `/app` lands next time.
pub async fn page_extras(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use crate::access::asking::read_cookie;
    use crate::access::session::set_cookie;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let waiting: Option<usize> =
        read_cookie(req.headers(), FLASH_COOKIE).and_then(|v| v.parse().ok()).filter(|i| *i < FLASH_MESSAGES.len());
    let res = next.run(req).await;
    let route = res.extensions().get::<crate::platform::http::middleware::RouteName>().map(|r| r.0.clone());
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let mut res = res;
    if method == axum::http::Method::POST && res.status() == axum::http::StatusCode::SEE_OTHER {
        if let Some(route) = route {
            let own = res.extensions().get::<Flash>().copied();
            let index = flash_index(&format!("POST {route}"), own);
            if let Ok(v) = HeaderValue::from_str(&set_cookie(FLASH_COOKIE, &index.to_string(), None)) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return res;
    }
    if method != axum::http::Method::GET || !is_html {
        return res;
    }
    if res.status() == axum::http::StatusCode::OK
        && let Some(slug) = org_slug_of(&path)
        && let Ok(v) = HeaderValue::from_str(&set_cookie(LAST_ORG_COOKIE, slug, Some(time::Duration::days(365))))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    match waiting {
        // A page a shared cache may keep shows no one's flash message (it would be served to others).
        Some(index) if !shared_cacheable(res.headers()) => show_flash(res, FLASH_MESSAGES[index].1).await,
        _ => res,
    }
}

/// Whether a response says a shared cache may store it (`Cache-Control: public`): such a
/// response carries nothing personal, neither a cookie nor a message meant for one person.
pub fn shared_cacheable(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("public")))
}

/// Puts the message at the top of the page's content and clears the cookie.
async fn show_flash(res: Response, message: &str) -> Response {
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return AppError::internal("page body unreadable").into_response();
    };
    let html = String::from_utf8_lossy(&bytes);
    let marker = "<main id=\"main\">";
    let body = match html.find(marker) {
        Some(at) => {
            let escaped = escape_html(message);
            let mut out = String::with_capacity(html.len() + 128);
            out.push_str(&html[..at + marker.len()]);
            out.push_str("\n<p class=\"flash\" role=\"status\">");
            out.push_str(&escaped);
            out.push_str("</p>");
            out.push_str(&html[at + marker.len()..]);
            out
        }
        None => html.into_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&crate::access::session::clear_cookie(FLASH_COOKIE)) {
        parts.headers.append(header::SET_COOKIE, v);
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

// ---- a form field's error, next to the field ----
//
// Every form page renders its refused fields twice: a summary at the top (`identity/message.html`,
// with `role="alert"`) and, next to each field, its own message, tied to the field with
// `aria-describedby` and the field marked `aria-invalid`. Templates call these with the field's
// name and an id unique on the page:
//
//   <input name="email" …{{ crate::web::invalid(errors, "email", "signup-email")|safe }}>
//   {{ crate::web::field_error(errors, "email", "signup-email")|safe }}

/// The first error about `field`, if any.
fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a FieldError> {
    errors.iter().find(|e| e.field == field)
}

/// The attributes that mark a refused field: ` aria-invalid="true" aria-describedby="{id}-error"`,
/// or nothing when `field` has no error.
pub fn invalid(errors: &[FieldError], field: &str, id: &str) -> String {
    match error_for(errors, field) {
        Some(_) => format!(" aria-invalid=\"true\" aria-describedby=\"{}-error\"", escape_html(id)),
        None => String::new(),
    }
}

/// As [`invalid`], for a field that also has a hint (`help`, the hint's element id): the hint
/// stays described either way.
pub fn invalid_help(errors: &[FieldError], field: &str, id: &str, help: &str) -> String {
    match error_for(errors, field) {
        Some(_) => {
            format!(" aria-invalid=\"true\" aria-describedby=\"{}-error {}\"", escape_html(id), escape_html(help))
        }
        None => format!(" aria-describedby=\"{}\"", escape_html(help)),
    }
}

/// The field's own message, in plain words, in an element the field points to (empty when
/// the field has no error).
pub fn field_error(errors: &[FieldError], field: &str, id: &str) -> String {
    match error_for(errors, field) {
        Some(e) => {
            format!("<p class=\"field-error\" id=\"{}-error\">{}</p>", escape_html(id), escape_html(&sentence(e)))
        }
        None => String::new(),
    }
}

/// An error as a sentence of its own. Service messages are written to follow the field's
/// name ("is required", "must be a date"): those get the field's label in front ("Due date
/// must be a date."); a message that is a sentence already is only capitalized.
pub fn sentence(e: &FieldError) -> String {
    const FOLLOWS_NAME: [&str; 14] = [
        "is", "isn't", "must", "mustn't", "can't", "cannot", "should", "needs", "has", "was", "does", "doesn't", "are",
        "may",
    ];
    let m = e.message.trim();
    let first = m.split_whitespace().next().unwrap_or("");
    let mut out = if FOLLOWS_NAME.contains(&first) {
        format!("{} {m}", e.label())
    } else {
        m.chars().take(1).flat_map(char::to_uppercase).chain(m.chars().skip(1)).collect()
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}
