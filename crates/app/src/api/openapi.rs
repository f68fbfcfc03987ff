//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! attributes and the domain types' `ToSchema`. Conventions that hold for every operation (the
//! bearer scheme, the problem+json error responses, `Idempotency-Key` on POST, `Location` on
//! 201) are added here once rather than repeated on each handler, so they can't drift apart.

use std::sync::LazyLock;

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::v1::ApiDoc;

/// The name of the bearer security scheme in the document.
pub const SECURITY_SCHEME: &str = "api_key";

/// The document, built once.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served (built and serialized once per process).
pub fn document() -> String {
    static DOC: LazyLock<String> =
        LazyLock::new(|| spec().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
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

pub struct Conventions;

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name("ProblemDocument"))))
            .build(),
    )
}

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cf_live_…")
                    .description(Some(
                        "An organization API key. Unknown, malformed, revoked and expired keys all get the same 401.",
                    ))
                    .build(),
            ),
        );
        for (name, schema) in [("ProblemDocument", ProblemDocument::schema()), ("ProblemField", ProblemField::schema())]
        {
            components.schemas.insert(name.to_string(), schema);
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_ids = path.contains('{');
            for (method, op) in [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PATCH", item.patch.as_mut()),
                ("DELETE", item.delete.as_mut()),
                ("PUT", item.put.as_mut()),
            ] {
                if let Some(op) = op {
                    conventions_of(method, has_ids, op);
                }
            }
        }
    }
}

fn conventions_of(method: &str, has_ids: bool, op: &mut Operation) {
    // `security(())` (an empty requirement) marks the public operations.
    let authenticated = op.security.as_ref().is_some_and(|reqs| {
        reqs.iter()
            .any(|r| serde_json::to_value(r).ok().and_then(|v| v.as_object().map(|o| !o.is_empty())) == Some(true))
    });
    let has_query = op.parameters.as_ref().is_some_and(|ps| ps.iter().any(|p| p.parameter_in == ParameterIn::Query));
    let has_body = op.request_body.is_some();
    let is_multipart = op.request_body.as_ref().is_some_and(|b| b.content.keys().any(|k| k.starts_with("multipart/")));
    let responses = &mut op.responses.responses;
    for (status, response) in responses.iter_mut() {
        if status == "201"
            && let RefOr::T(r) = response
        {
            r.headers.insert(
                "Location".into(),
                HeaderBuilder::new()
                    .schema(string_schema())
                    .description(Some("The created resource (a GET there returns this body)"))
                    .build(),
            );
        }
    }
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| problem(description));
    };
    if !authenticated {
        add("500", "Internal error (the body has the request id, never the cause)");
        return;
    }
    add("401", "No API key, or an unknown, malformed, revoked or expired one (all alike)");
    add("403", "The key's permissions don't include this operation");
    add("500", "Internal error (the body has the request id, never the cause)");
    if has_ids {
        add("404", "No such resource in the key's organization (foreign and malformed ids alike)");
    }
    if has_query {
        add("422", "A query parameter is invalid or unknown (named in `errors`)");
    }
    if has_body {
        add(
            "400",
            if is_multipart {
                "The body is not a readable multipart body, or the Idempotency-Key is malformed"
            } else if method == "POST" {
                "The body is not JSON (empty, malformed or truncated), or the Idempotency-Key is malformed"
            } else {
                "The body is not JSON (empty, malformed or truncated)"
            },
        );
        add("413", "The body is too large");
        add(
            "415",
            if is_multipart {
                "The body is not declared as `multipart/form-data`, or the file's type is not accepted"
            } else {
                "The body is not declared as `application/json`"
            },
        );
        add("422", "A field is invalid, missing, unknown or of the wrong type (named in `errors`)");
    }
    if method != "GET" {
        add("409", "Conflicts with the resource's state, or with an earlier request of the same Idempotency-Key");
    }
    if method == "POST" {
        if !has_body {
            add("400", "A malformed Idempotency-Key");
        }
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: the first successful response is stored for 24 hours (per API key) and \
                 replayed, with `Idempotent-Replayed: true`, for the same key and the same request; the same key \
                 with a different request, or while the first is still running, is 409.",
            ))
            .schema(Some(string_schema().min_length(Some(1)).max_length(Some(255))))
            .build();
        op.parameters.get_or_insert_with(Vec::new).push(header);
    }
}
