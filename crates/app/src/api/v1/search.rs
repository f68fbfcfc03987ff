//! Search across the organization.

use super::*;
use crate::work::daily::{self, Hit};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to find (PostgreSQL `websearch_to_tsquery` syntax: words, "quoted phrases", `-word`,
    /// `or`); at most 200 characters (control characters count as spaces). Empty finds nothing.
    #[param(max_length = 200)]
    pub q: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/search", tag = "search", params(SearchQuery),
    description = "Clients, projects, tasks, comments and invoices the key may see (a Member-role key: the projects of the member who created it), at most 20 of each kind, best matches first.",
    responses((status = 200, description = "What was found", body = Data<Vec<Hit>>)),
    security(("api_key" = ["org.view"])))]
pub async fn search(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> AppResult<Response> {
    let hits = daily::search(&s.db, &api.principal, q.q.as_deref().unwrap_or("")).await?;
    Ok(Json(Data { data: hits }).into_response())
}
