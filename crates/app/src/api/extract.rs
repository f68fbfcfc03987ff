//! Request parsing for the JSON API. Bodies, query strings and path ids become typed values, or
//! a problem+json response that names what was wrong — never axum's plain-text rejections and
//! never a 500. Status codes: a body that can't be parsed at all (not JSON, truncated, empty)
//! 400; a parsed body or query string with a wrong, missing or unknown field 422; a body that
//! isn't declared JSON 415; a malformed id 404 (an id that can't exist names nothing, exactly
//! like an id that doesn't).

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::platform::http::error::{AppError, FieldError, Problem};

/// A request that could not be parsed. Unlike `AppError`, it carries its field errors whatever
/// the status (`AppError` only has them for 422); the error renderer shows it like any problem.
#[derive(Debug, Clone)]
pub struct Rejection(pub Problem);

/// A rejection naming `field`.
pub fn problem(status: StatusCode, field: &str, message: impl Into<String>) -> Rejection {
    let message = message.into();
    Rejection(Problem {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        detail: format!("{field}: {message}"),
        errors: vec![FieldError::new(field, message)],
        ..Problem::default()
    })
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut res = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST).into_response();
        res.extensions_mut().insert(self.0);
        res
    }
}

impl From<AppError> for Rejection {
    fn from(e: AppError) -> Self {
        Rejection(e.problem())
    }
}

/// A JSON request body (`Content-Type: application/json` or any `+json` type).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !is_json(content_type) {
            return Err(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type", "must be application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge.into()
            } else {
                problem(StatusCode::BAD_REQUEST, "body", "could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(problem(StatusCode::BAD_REQUEST, "body", "is required (a JSON object)"));
    }
    let not_json = |e: &serde_json::Error| {
        problem(
            StatusCode::BAD_REQUEST,
            "body",
            format!(
                "is not valid JSON ({} at line {} column {})",
                without_position(&e.to_string()),
                e.line(),
                e.column()
            ),
        )
    };
    // serde also fills a struct from an array, by position; a request body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => problem(StatusCode::UNPROCESSABLE_ENTITY, "body", "must be a JSON object"),
            Err(e) => not_json(&e),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let (field, message) = field_of(&e.path().to_string(), &without_position(&inner.to_string()));
                problem(StatusCode::UNPROCESSABLE_ENTITY, &field, message)
            }
            // Syntax errors and truncated documents: the body isn't JSON at all.
            _ => not_json(inner),
        }
    })?;
    // Anything after the document (a second document, garbage) makes the body not JSON.
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// serde_json appends " at line L column C" to every message; the field name says more.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The field a serde error is about, as a dotted path (`lines[0].quantity_milli`), and a
/// message that reads after it. serde reports unknown and missing fields at the level of the
/// enclosing object, with the field's name in backticks in the message; that name is moved into
/// the path.
fn field_of(path: &str, message: &str) -> (String, String) {
    let base = if path == "." { "" } else { path };
    let join = |name: &str| if base.is_empty() { name.to_string() } else { format!("{base}.{name}") };
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    if let Some(rest) = message.strip_prefix("unknown field ")
        && let Some(name) = quoted(rest)
    {
        let field = if base.ends_with(&name) { base.to_string() } else { join(&name) };
        let expected = rest.split_once(", expected ").map(|(_, e)| format!(" (expected {e})")).unwrap_or_default();
        return (field, format!("is not an accepted field{expected}"));
    }
    if let Some(rest) = message.strip_prefix("missing field ")
        && let Some(name) = quoted(rest)
    {
        return (join(&name), "is required".into());
    }
    let field = if base.is_empty() { "body".to_string() } else { base.to_string() };
    (field, message.to_string())
}

/// Query string parameters. Unknown parameters are refused (a misspelt filter would otherwise
/// silently return everything).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let (field, message) = field_of(&e.path().to_string(), &e.inner().to_string());
            let field = if field == "body" { "query".to_string() } else { field };
            problem(StatusCode::UNPROCESSABLE_ENTITY, &field, message)
        })
    }
}

/// The path's ids, parsed on use: `ids.get::<ClientId>("client")?`.
pub struct PathIds(Vec<(String, String)>);

impl PathIds {
    /// The named id; a malformed one is 404, like a missing one. Ids are UUIDs in their
    /// hyphenated form only, as the document's `format: uuid` says: the other forms `Uuid`
    /// reads (simple, braced, URN) name nothing here.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<T, AppError> {
        let raw = self
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| AppError::internal(format!("route has no {{{name}}} segment")))?;
        if !crate::platform::fields::is_hyphenated_uuid(raw) {
            return Err(AppError::not_found());
        }
        raw.parse().map_err(|_| AppError::not_found())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let raw = RawPathParams::from_request_parts(parts, state).await.map_err(|_| AppError::not_found())?;
        Ok(PathIds(raw.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        description: String,
        quantity_milli: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: Option<String>,
        lines: Option<Vec<Line>>,
    }

    fn field(body: &str) -> (u16, String, String) {
        let p = parse_json::<Doc>(body.as_bytes()).unwrap_err().0;
        (p.status, p.errors[0].field.clone(), p.errors[0].message.clone())
    }

    #[test]
    fn every_kind_of_bad_body_names_its_field() {
        assert_eq!(field(r#"{"name": 5}"#).0, 422);
        assert_eq!(field(r#"{"name": 5}"#).1, "name");
        let (status, f, m) = field(r#"{"organization_id": "x"}"#);
        assert_eq!((status, f.as_str()), (422, "organization_id"));
        assert!(m.starts_with("is not an accepted field"), "{m}");
        assert_eq!(field(r#"{"lines": [{"description": "a", "quantity_milli": "1"}]}"#).1, "lines[0].quantity_milli");
        assert_eq!(field(r#"{"lines": [{"description": "a"}]}"#).1, "lines[0].quantity_milli");
        assert_eq!(field(r#"{"lines": [{"description": "a", "quantity_milli": 1, "x": 1}]}"#).1, "lines[0].x");
        assert_eq!(field(r#"["a", null]"#), (422, "body".into(), "must be a JSON object".into()));
        assert_eq!(field(r#"[1"#).0, 400);
        let (status, f, m) = field(r#"{"name": "#);
        assert_eq!((status, f.as_str()), (400, "body"));
        assert!(m.contains("line 1"), "{m}");
        assert_eq!(field(r#"{"name": "a"} trailing"#).0, 400);
        assert_eq!(field("  ").0, 400);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(None));
    }
}
