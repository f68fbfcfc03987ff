//! Server-rendered pages and static assets.

use askama::Template;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

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
struct HomePage;

async fn home() -> Result<Html<String>, AppError> {
    render(&HomePage)
}

pub fn render<T: Template>(t: &T) -> Result<Html<String>, AppError> {
    t.render().map(Html).map_err(AppError::internal)
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
    ("board.js", "text/javascript; charset=utf-8", include_bytes!("../static/board.js")),
    ("print.js", "text/javascript; charset=utf-8", include_bytes!("../static/print.js")),
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
        None => AppError::NotFound.into_response(),
    }
}
