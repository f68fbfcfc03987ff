//! Text PostgreSQL can't store never reaches a handler.
//!
//! PostgreSQL's `text` can't hold U+0000: a NUL anywhere in a bound parameter fails the whole
//! statement (`invalid byte sequence for encoding "UTF8": 0x00`), which would surface as a 500
//! from whichever query happened to receive it: a search term, a slug in the path, a form field,
//! a JSON string. Rather than trusting every handler to remember, the route guard
//! (`route::guard`) refuses such a request before its handler runs, naming where the NUL was:
//!
//! - the path (a decoded segment): 400, field `path`;
//! - a query-string parameter (name or value): 422, naming the parameter;
//! - a urlencoded form field: 422, naming the field;
//! - a string anywhere in a JSON body (only expressible as the escape `\u0000`): 422, naming the
//!   JSON path (`lines[0].description`).
//!
//! Multipart bodies carry binary files, where NUL bytes are normal; their text fields and file
//! names are checked where they are read (`work::files`). Header values can't carry NUL at all:
//! the HTTP parsers refuse them before a request exists.
//!
//! Other control characters are storable; single-line names refuse them in their domain types
//! (`platform::types::parse_name`), and values that reach response headers are sanitized where
//! the header is built.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{AppError, FieldError, Problem};

/// A NUL in the request's path or query string: checked by the route guard before anything
/// else (an organization's slug in the path is looked up before the handler runs).
pub fn refuse_in_target(uri: &axum::http::Uri) -> Option<Response> {
    nul_in_path(uri.path())
        .or_else(|| uri.query().and_then(|q| nul_in_pairs(q.as_bytes(), "query parameter")))
        .map(rejection)
}

/// A NUL in a urlencoded form or JSON body: checked by the route guard once the request has
/// passed its access checks (an unauthenticated request is refused without its body being
/// parsed), right before the handler. `limit` is the body limit every extractor applies.
pub async fn refuse_in_body(req: Request, limit: usize) -> Result<Request, Box<Response>> {
    let kind = body_kind(req.headers());
    if kind == BodyKind::Other {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => return Err(Box::new(read_failure(e))),
    };
    let found = match kind {
        BodyKind::Form => nul_in_pairs(&bytes, "field"),
        BodyKind::Json => nul_in_json(&bytes),
        BodyKind::Other => None,
    };
    match found {
        Some(problem) => Err(Box::new(rejection(problem))),
        None => Ok(Request::from_parts(parts, Body::from(bytes))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
    Other,
}

fn body_kind(headers: &axum::http::HeaderMap) -> BodyKind {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return BodyKind::Other };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        BodyKind::Json
    } else {
        BodyKind::Other
    }
}

fn read_failure(e: axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut too_large = false;
    while let Some(s) = source {
        too_large |= s.is::<http_body_util::LengthLimitError>();
        source = s.source();
    }
    if too_large {
        AppError::PayloadTooLarge.into_response()
    } else {
        AppError::BadRequest("The request body could not be read.".into()).into_response()
    }
}

fn rejection(problem: Problem) -> Response {
    let mut res = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST).into_response();
    res.extensions_mut().insert(problem);
    res
}

fn problem(status: StatusCode, field: &str, what: &str) -> Problem {
    let message = "must not contain a NUL character (U+0000)";
    Problem {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        detail: format!("The {what} \"{field}\" {message}; nothing was changed."),
        errors: vec![FieldError::new(field, message)],
        ..Problem::default()
    }
}

/// A field's name as it may be shown: NULs and other control characters made visible.
fn shown(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).take(100).collect();
    if cleaned.is_empty() { "(unnamed)".into() } else { cleaned }
}

fn nul_in_path(path: &str) -> Option<Problem> {
    // A raw NUL can't arrive (the request line parser refuses it); an encoded one can.
    let decoded = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    decoded.contains(&0).then(|| problem(StatusCode::BAD_REQUEST, "path", "request path"))
}

fn nul_in_pairs(encoded: &[u8], what: &str) -> Option<Problem> {
    if !encoded.windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') && !encoded.contains(&0) {
        return None;
    }
    form_urlencoded::parse(encoded)
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| problem(StatusCode::UNPROCESSABLE_ENTITY, &shown(&k), what))
}

/// JSON can only carry a NUL inside a string as the escape `\u0000` (a raw control character is
/// invalid JSON, refused by the parser later). The cheap scan finds candidates; only then is the
/// document walked, so an escaped backslash followed by `u0000` (`"\\u0000"`, six plain
/// characters) is not mistaken for one.
fn nul_in_json(bytes: &[u8]) -> Option<Problem> {
    let candidate = bytes.windows(6).any(|w| w == b"\\u0000");
    if !candidate {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let path = find_nul(&value, String::new())?;
    Some(problem(StatusCode::UNPROCESSABLE_ENTITY, &shown(if path.is_empty() { "body" } else { &path }), "field"))
}

fn find_nul(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(path),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| find_nul(v, format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.contains('\0') { Some(here) } else { find_nul(v, here) }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(nul_in_path("/o/acme/projects").is_none());
        assert_eq!(nul_in_path("/o/a%00b/projects").unwrap().status, 400);
        assert!(nul_in_path("/o/a%2500b").is_none(), "%25 is a literal percent sign");
    }

    #[test]
    fn query_and_form_pairs_name_the_field() {
        assert!(nul_in_pairs(b"q=abc&limit=5", "query parameter").is_none());
        let p = nul_in_pairs(b"limit=5&q=a%00b", "query parameter").unwrap();
        assert_eq!((p.status, p.errors[0].field.as_str()), (422, "q"));
        let p = nul_in_pairs(b"na%00me=x", "field").unwrap();
        assert_eq!(p.errors[0].field, "na\u{FFFD}me");
        assert!(nul_in_pairs(b"q=%2500", "query parameter").is_none());
    }

    #[test]
    fn json_strings_name_their_path() {
        assert!(nul_in_json(br#"{"name": "plain"}"#).is_none());
        assert!(nul_in_json(br#"{"name": "a\\u0000b"}"#).is_none(), "an escaped backslash, then text");
        let p = nul_in_json(br#"{"name": "a\u0000b"}"#).unwrap();
        assert_eq!((p.status, p.errors[0].field.as_str()), (422, "name"));
        let p = nul_in_json(br#"{"lines": [{"description": "ok"}, {"description": "x\u0000"}]}"#).unwrap();
        assert_eq!(p.errors[0].field, "lines[1].description");
        let p = nul_in_json(br#"{"a\u0000": 1}"#).unwrap();
        assert_eq!(p.errors[0].field, "a\u{FFFD}");
        // Not JSON at all: left to the parser, which names the syntax error.
        assert!(nul_in_json(br#"{"name": "a\u0000"#).is_none());
    }
}
