//! The organization's plan, state and usage. Declared with `billing.manage`, which only Owners
//! hold and no API key can (keys are never Owners): every key is refused, so billing is
//! reached through the Owner's pages alone.

use super::*;
use crate::billing::limits::{self, Resource};

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingUsage {
    pub limit: String,
    pub used: i64,
    pub allowed: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Billing {
    pub enabled: bool,
    pub plan: String,
    pub status: String,
    pub read_only: bool,
    pub usage: Vec<BillingUsage>,
}

#[utoipa::path(get, path = "/api/v1/billing", tag = "billing",
    description = "Requires `billing.manage`, which no API key can hold: keys are answered 403.",
    responses((status = 200, description = "Plan, state and usage", body = Data<Billing>)),
    security(("api_key" = ["billing.manage"])))]
pub async fn get_billing(State(s): State<AppState>, api: ApiAccess) -> AppResult<Response> {
    let Some(book) = s.plans.as_deref() else {
        let b = Billing {
            enabled: false,
            plan: "self-hosted".into(),
            status: "none".into(),
            read_only: false,
            usage: vec![],
        };
        return Ok(Json(Data { data: b }).into_response());
    };
    let now = s.clock.now();
    let mut tx = crate::access::OrgTx::begin(&s.db, &api.principal).await?;
    let account = crate::billing::service::account(&mut tx).await?;
    let standing = limits::standing(book, account.as_ref(), now);
    let mut usage = Vec::new();
    for r in Resource::ALL {
        usage.push(BillingUsage {
            limit: r.as_str().into(),
            used: limits::usage(&mut tx, r, now).await?,
            allowed: r.limit_of(&standing.plan),
        });
    }
    tx.commit().await?;
    let b = Billing {
        enabled: true,
        plan: standing.plan.id.clone(),
        status: standing.status.clone(),
        read_only: standing.read_only,
        usage,
    };
    Ok(Json(Data { data: b }).into_response())
}
