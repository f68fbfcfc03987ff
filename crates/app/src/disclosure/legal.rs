//! The legal pages generated from the sub-processor registry: `/legal/subprocessors` (the list a
//! customer's privacy review asks for) and `/legal/dpa`, the data processing agreement's
//! template with its sub-processor annex filled in. Both list exactly the sub-processors this
//! installation's configuration turns on, the same set as the security page.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::subprocessors::{self, SubProcessor};
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/legal/subprocessors", Surface::Web, Access::Public, subprocessors_page),
        route!(GET "/legal/dpa", Surface::Web, Access::Public, dpa_page),
    ]
}

#[derive(Template)]
#[template(path = "disclosure/subprocessors.html")]
struct SubprocessorsPage {
    public_url: String,
    processors: Vec<SubProcessor>,
}

async fn subprocessors_page(State(state): State<AppState>) -> AppResult<Response> {
    let page =
        SubprocessorsPage { public_url: state.config.public_url(), processors: subprocessors::enabled(&state.config) };
    Ok(super::cacheable(crate::web::render(&page)?.into_response()))
}

#[derive(Template)]
#[template(path = "disclosure/dpa.html")]
struct DpaPage {
    public_url: String,
    region: String,
    processors: Vec<SubProcessor>,
}

async fn dpa_page(State(state): State<AppState>) -> AppResult<Response> {
    let page = DpaPage {
        public_url: state.config.public_url(),
        region: state.config.disclosure.region.clone(),
        processors: subprocessors::enabled(&state.config),
    };
    Ok(super::cacheable(crate::web::render(&page)?.into_response()))
}
