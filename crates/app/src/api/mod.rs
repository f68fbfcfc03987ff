//! The public JSON API (`/api/v1`): organization API keys, their guard, request parsing,
//! idempotency, the endpoints over the work domain, and the OpenAPI document.

pub mod extract;
pub mod guard;
pub mod idempotency;
pub mod openapi;
pub mod v1;
pub mod web;

/// The API's routes: the endpoints and the document that describes them.
pub fn routes() -> Vec<crate::access::route::RouteDef> {
    let mut routes = v1::routes();
    routes.extend(openapi::routes());
    routes
}
