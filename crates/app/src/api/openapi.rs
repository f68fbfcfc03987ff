//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! attributes and the domain types' `ToSchema`, then completed here with what holds for every
//! operation, so it is said once and can't drift apart:
//!
//! - the bearer scheme, the problem+json error responses each operation can give (401, 403 with
//!   a key; 404 and a NUL-in-the-path 400 with ids in the path; 400, 413, 415 and 422 with a
//!   body; 422 with a query string; 409 for anything but GET; 429 and 500 everywhere, since every
//!   `/api` request is rate limited);
//! - the `RateLimit`/`RateLimit-Policy` headers of every response, `Retry-After` on 429,
//!   `Location` on 201 and `Idempotent-Replayed` on a POST's success;
//! - `Idempotency-Key` on POST, with the exact characters the server takes;
//! - `links` from each creating operation (201) to the operations on what it created, for
//!   clients and for stateful fuzzers;
//! - the string rules: a field's custom `format` naming one of `platform::fields`' rules becomes
//!   that rule's pattern or alternatives, and every other string without a pattern, format or
//!   enum gets a pattern refusing U+0000, which `platform::http::input` refuses everywhere.
//!
//! The conventions work on the serialized document (plain JSON), after utoipa has built it.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::v1::ApiDoc;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::fields;
use crate::route;

/// The name of the bearer security scheme in the document.
pub const SECURITY_SCHEME: &str = "api_key";

/// What an `Idempotency-Key` may be: 1–255 visible ASCII characters (see `api::idempotency`).
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[\x21-\x7E]{1,255}$";

/// `GET /api/v1/openapi.json`, public: served from here, above the endpoints it describes.
pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/api/v1/openapi.json", Surface::Api, Access::Public, openapi_json)]
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// The operation that serves the document, which the endpoints' own [`ApiDoc`] can't name
/// without naming this module.
#[derive(OpenApi)]
#[openapi(paths(openapi_json))]
struct ThisDocument;

/// The document, completed with the conventions.
pub fn spec() -> Value {
    let mut api = ApiDoc::openapi();
    api.merge(ThisDocument::openapi());
    let mut doc = serde_json::to_value(api).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    conventions(&mut doc);
    doc
}

/// The document as served (built and serialized once per process).
pub fn document() -> String {
    static DOC: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string_pretty(&spec()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    DOC.clone()
}

/// An RFC 9457 problem document, as every API error is rendered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDocument {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Quote it to support; the server's log has the details.
    pub request_id: String,
    /// The fields that were wrong (dotted paths such as `lines[0].quantity_milli`; request
    /// headers by name, such as `Idempotency-Key`).
    pub errors: Option<Vec<ProblemField>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

const METHODS: [&str; 5] = ["get", "post", "patch", "delete", "put"];

fn conventions(doc: &mut Value) {
    if let Some(d) = doc.as_object_mut() {
        let components = d.entry("components").or_insert_with(|| json!({}));
        components["securitySchemes"][SECURITY_SCHEME] = json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "cf_live_…",
            "description": "An organization API key. Unknown, malformed, revoked and expired keys all get the same 401.",
        });
        for (name, schema) in [("ProblemDocument", ProblemDocument::schema()), ("ProblemField", ProblemField::schema())]
        {
            components["schemas"][name] = serde_json::to_value(schema).unwrap_or(Value::Null);
        }
    }
    let links = creation_links(doc);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method) {
                    operation(path, method, op, links.get(&(path.clone(), method.to_string())));
                }
            }
        }
    }
    strings(doc);
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}},
    })
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

fn operation(path: &str, method: &str, op: &mut Value, links: Option<&Map<String, Value>>) {
    // `security(())` (an empty requirement) marks the public operations.
    let authenticated =
        op["security"].as_array().is_some_and(|reqs| reqs.iter().any(|r| r.as_object().is_some_and(|o| !o.is_empty())));
    let has_ids = path.contains('{');
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has_query = params.iter().any(|p| p["in"] == "query");
    let body_types: Vec<String> =
        op["requestBody"]["content"].as_object().map(|c| c.keys().cloned().collect()).unwrap_or_default();
    let has_body = !body_types.is_empty();
    let is_multipart = body_types.iter().any(|t| t.starts_with("multipart/"));
    let is_post = method == "post";

    let responses = op["responses"].as_object_mut().expect("every operation has responses");
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| problem(description));
    };
    add("429", "Too many requests: this client address or API key has used its budget (see `Retry-After`)");
    add("500", "Internal error (the body has the request id, never the cause)");
    if authenticated {
        add("401", "No API key, or an unknown, malformed, revoked or expired one (all alike)");
        add(
            "403",
            "The key's permissions don't include this operation, or the organization's IP allowlist doesn't include \
             this address",
        );
    }
    if has_ids {
        add("404", "No such resource in the key's organization (foreign and malformed ids alike)");
    }
    let mut bad_request = Vec::new();
    if has_ids {
        bad_request.push("a path segment contains U+0000");
    }
    if has_body {
        bad_request.push(if is_multipart {
            "the body is not a readable multipart body"
        } else {
            "the body is not JSON (empty, malformed or truncated)"
        });
    }
    if is_post {
        bad_request.push("the Idempotency-Key is malformed");
    }
    if !bad_request.is_empty() {
        let mut text = bad_request.join("; ");
        text[..1].make_ascii_uppercase();
        add("400", &text);
    }
    if has_body {
        add("413", "The body is too large");
        add(
            "415",
            if is_multipart {
                "The body is not declared as `multipart/form-data`, or the file's type is not accepted"
            } else {
                "The body is not declared as `application/json`"
            },
        );
    }
    if has_body || has_query {
        add(
            "422",
            match (has_body, has_query) {
                (true, _) => "A field is invalid, missing, unknown or of the wrong type (named in `errors`)",
                _ => "A query parameter is invalid or unknown (named in `errors`)",
            },
        );
    }
    if method != "get" {
        add("409", "Conflicts with the resource's state, or with an earlier request of the same Idempotency-Key");
    }

    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        if status == "201"
            && let Some(links) = links.filter(|l| !l.is_empty())
        {
            response.insert("links".into(), Value::Object(links.clone()));
        }
        let headers = response.entry("headers").or_insert_with(|| json!({}));
        headers["RateLimit"] = header(
            "What is left of each budget that decided this request (draft-ietf-httpapi-ratelimit-headers)",
            json!({"type": "string"}),
        );
        headers["RateLimit-Policy"] = header("The budgets that apply to this request", json!({"type": "string"}));
        if status == "429" {
            headers["Retry-After"] =
                header("Seconds until a request can succeed", json!({"type": "integer", "minimum": 0}));
        }
        if status == "201" {
            headers["Location"] = json!({
                "description": "The created resource (a GET there returns this body)",
                "required": true,
                "schema": {"type": "string"},
            });
        }
        if is_post && status.starts_with('2') {
            headers["Idempotent-Replayed"] = header(
                "`true` when this is the stored answer to an earlier request with the same Idempotency-Key",
                json!({"type": "string", "enum": ["true"]}),
            );
        }
    }

    if is_post {
        let parameters = op.as_object_mut().expect("operation").entry("parameters").or_insert_with(|| json!([]));
        if let Some(list) = parameters.as_array_mut() {
            list.push(json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Makes a retry safe: the first successful response is stored for 24 hours (per API key) \
                    and replayed, with `Idempotent-Replayed: true`, for the same key and the same request; the same key \
                    with a different request, or while the first is still running, is 409. 1–255 visible ASCII \
                    characters; a structured-field string (`\"abc\"`) names the key inside the quotes.",
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
            }));
        }
    }
}

/// Creating operations whose record lives in another collection than their own path: a copy
/// of a project is a project (`Location: /api/v1/projects/{id}`), a duplicate of an invoice an
/// invoice.
const CREATED_ELSEWHERE: [(&str, &str); 2] = [
    ("/api/v1/projects/{project}/copy", "/api/v1/projects"),
    ("/api/v1/invoices/{invoice}/duplicate", "/api/v1/invoices"),
];

/// Creating operations whose record is the one at their own path (an invoice has at most one
/// repeat, at `/api/v1/invoices/{invoice}/repeat`): their links go to the other operations at
/// that path, every id from the request's path.
const CREATED_IN_PLACE: [&str; 1] = ["/api/v1/invoices/{invoice}/repeat"];

/// For each creating operation (a POST answering 201 at `P`, or creating in the collection
/// [`CREATED_ELSEWHERE`] names), links to every operation at `P/{id}` and below: the new id from
/// the response body, the parent ids from the request path.
fn creation_links(doc: &Value) -> std::collections::HashMap<(String, String), Map<String, Value>> {
    let mut out = std::collections::HashMap::new();
    let Some(paths) = doc["paths"].as_object() else { return out };
    for (path, item) in paths {
        if item["post"]["responses"]["201"].is_null() {
            continue;
        }
        if CREATED_IN_PLACE.contains(&path.as_str()) {
            let mut links = Map::new();
            for method in METHODS.iter().filter(|m| **m != "post") {
                let Some(op_id) = item[method]["operationId"].as_str() else { continue };
                let parameters: Map<String, Value> = placeholders(path)
                    .into_iter()
                    .map(|name| {
                        let value = Value::String(format!("$request.path.{name}"));
                        (name, value)
                    })
                    .collect();
                links.insert(op_id.to_string(), link(op_id, parameters, method, path));
            }
            out.insert((path.clone(), "post".to_string()), links);
            continue;
        }
        let collection = CREATED_ELSEWHERE.iter().find(|(p, _)| p == path).map_or(path.as_str(), |(_, c)| c);
        let prefix = format!("{collection}/{{");
        let mut links = Map::new();
        for (target, target_item) in paths.iter().filter(|(p, _)| p.starts_with(&prefix)) {
            let created =
                &target[prefix.len()..target[prefix.len()..].find('}').map_or(target.len(), |i| prefix.len() + i)];
            // Only operations on the created resource itself: any other id in their path must
            // come from the creating request's own path.
            let known = placeholders(path);
            if placeholders(target).iter().any(|name| name != created && !known.contains(name)) {
                continue;
            }
            for method in METHODS {
                let Some(op_id) = target_item[method]["operationId"].as_str() else { continue };
                let mut parameters = Map::new();
                for name in placeholders(target) {
                    let value = if name == created {
                        "$response.body#/data/id".to_string()
                    } else {
                        format!("$request.path.{name}")
                    };
                    parameters.insert(name, Value::String(value));
                }
                links.insert(op_id.to_string(), link(op_id, parameters, method, target));
            }
        }
        out.insert((path.clone(), "post".to_string()), links);
    }
    out
}

/// An OpenAPI link from a creating operation to `method target`.
fn link(op_id: &str, parameters: Map<String, Value>, method: &str, target: &str) -> Value {
    json!({"operationId": op_id, "parameters": parameters, "description": format!("{} {target} on what was created", method.to_uppercase())})
}

fn placeholders(path: &str) -> Vec<String> {
    path.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string())).collect()
}

/// Rewrites our custom formats and gives every unconstrained string the NUL-free pattern.
fn strings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str).map(str::to_string)
                && let Some(rewritten) = fields::schema_of_format(&format, &Value::Object(map.clone()))
            {
                *value = rewritten;
                // The alternatives of `uuid-or-empty` and `date-or-empty` are complete as they are.
                return;
            }
            let is_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string && !["pattern", "format", "enum", "const"].iter().any(|k| map.contains_key(*k)) {
                map.insert("pattern".into(), json!(fields::NUL_FREE_PATTERN));
            }
            for (key, child) in map.iter_mut() {
                match key.as_str() {
                    // Every member of `properties` is a schema, whatever the property's name.
                    "properties" => child.as_object_mut().into_iter().flat_map(|p| p.values_mut()).for_each(strings),
                    // Values, not schemas.
                    "example" | "examples" | "enum" | "const" | "default" => {}
                    _ => strings(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_pattern_is_what_the_server_takes() {
        let re = regex::Regex::new(IDEMPOTENCY_KEY_PATTERN).unwrap();
        for ok in ["a", "k-1", "\"k-1\"", "\"\"", "~!", &"k".repeat(255)] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["", " a", "a b", "é", &"k".repeat(256), "a\u{7f}"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn every_string_is_constrained_and_custom_formats_are_gone() {
        let doc = spec();
        fn walk(v: &Value, at: &str, found: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    let is_string = m.get("type") == Some(&json!("string"))
                        || m.get("type").and_then(Value::as_array).is_some_and(|t| t.contains(&json!("string")));
                    if is_string && !["pattern", "format", "enum", "const"].iter().any(|k| m.contains_key(*k)) {
                        found.push(format!("{at}: unconstrained string"));
                    }
                    if let Some(f) = m.get("format").and_then(Value::as_str)
                        && fields::schema_of_format(f, v).is_some()
                    {
                        found.push(format!("{at}: custom format {f} left"));
                    }
                    for (k, c) in m {
                        if k == "properties" {
                            for (name, p) in c.as_object().into_iter().flatten() {
                                walk(p, &format!("{at}/properties/{name}"), found);
                            }
                        } else if !matches!(k.as_str(), "example" | "examples" | "enum" | "const" | "default") {
                            walk(c, &format!("{at}/{k}"), found);
                        }
                    }
                }
                Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| walk(c, &format!("{at}/{i}"), found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&doc, "", &mut found);
        assert!(found.is_empty(), "{found:#?}");
    }
}
