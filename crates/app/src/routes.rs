//! The whole route table: each area contributes its declared routes.

use crate::platform::http::route::RouteDef;

pub fn all() -> Vec<RouteDef> {
    let mut routes = Vec::new();
    routes.extend(crate::ops::routes());
    routes.extend(crate::web::routes());
    routes.extend(crate::identity::web::routes());
    routes.extend(crate::tenancy::web::routes());
    routes.extend(crate::audit::web::routes());
    routes.extend(crate::work::web::routes());
    routes.extend(crate::api::web::routes());
    routes.extend(crate::api::routes());
    routes.extend(crate::contact::routes());
    routes
}
