//! What waits to be billed: billable time and expenses on a client's projects that no invoice
//! bills yet, per client (the "To invoice" page, and a client's balance). Only the projects the
//! principal may see count; time is valued at the rate each entry would be billed at now.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::require;
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::error::DomainResult;
use crate::platform::ids::ClientId;

/// A client's billable, unbilled expenses in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct UnbilledExpenses {
    /// ISO 4217.
    pub currency: String,
    /// How many expenses.
    pub expenses: i64,
    /// What they add up to, in minor units of `currency`.
    pub amount_minor: i64,
}

/// One client's billable time not yet on an invoice.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UnbilledTime {
    pub client_id: ClientId,
    pub minutes: i64,
    /// At the rate each entry would be billed at now (the rate it was recorded at, else the
    /// person's on the project, the project's, the client's, the organization's), each entry
    /// rounded to the minor unit, in the organization's currency.
    pub amount_minor: i64,
    /// Entries no rate applies to: they count as nothing.
    pub unrated_entries: i64,
}

/// The unbilled billable time of the clients of the projects `member` may see (of `client` only,
/// when given), per client.
pub(super) async fn time(
    tx: &mut OrgTx,
    member: Option<Uuid>,
    client: Option<ClientId>,
) -> sqlx::Result<Vec<UnbilledTime>> {
    sqlx::query_as(&format!(
        "SELECT p.client_id, sum(e.minutes)::bigint AS minutes, \
                least(coalesce(sum(floor((e.minutes::numeric * r.rate + 30) / 60)), 0), 9223372036854775807)::bigint \
                  AS amount_minor, \
                count(*) FILTER (WHERE r.rate IS NULL) AS unrated_entries \
           FROM time_entries e \
           JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
           {joins} \
           CROSS JOIN LATERAL (SELECT {rate} AS rate) r \
          WHERE e.billable AND e.invoice_id IS NULL AND p.client_id IS NOT NULL \
            AND ($2::uuid IS NULL OR p.client_id = $2) AND {visible} \
          GROUP BY p.client_id",
        joins = super::time_entries::RATE_JOINS,
        rate = super::time_entries::BILLED_RATE,
        visible = super::project_visible("p", 1)
    ))
    .bind(member)
    .bind(client)
    .fetch_all(&mut **tx)
    .await
}

/// The unbilled billable expenses of the clients of the projects `member` may see (of `client`
/// only, when given), per client and currency, in currency order.
pub(super) async fn expenses(
    tx: &mut OrgTx,
    member: Option<Uuid>,
    client: Option<ClientId>,
) -> sqlx::Result<Vec<(ClientId, UnbilledExpenses)>> {
    let rows: Vec<(ClientId, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT p.client_id, x.currency, count(*), least(sum(x.amount_minor), 9223372036854775807)::bigint \
           FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
          WHERE x.billable AND x.invoice_id IS NULL AND p.client_id IS NOT NULL \
            AND ($2::uuid IS NULL OR p.client_id = $2) AND {visible} \
          GROUP BY p.client_id, x.currency ORDER BY p.client_id, x.currency",
        visible = super::project_visible("p", 1)
    ))
    .bind(member)
    .bind(client)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(client, currency, expenses, amount_minor)| {
            (client, UnbilledExpenses { currency, expenses, amount_minor })
        })
        .collect())
}

/// A client with something to bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToInvoice {
    pub client_id: ClientId,
    pub client: String,
    /// None when the client has no unbilled billable time.
    pub time: Option<UnbilledTime>,
    /// Per currency, in currency order.
    pub expenses: Vec<UnbilledExpenses>,
}

/// Every client with billable time or expenses not yet on an invoice (on the projects the
/// principal may see), the most time's worth first, and the organization's currency (which the
/// time is valued in). Needs `invoices.read`, as a client's balance does.
pub async fn by_client(db: &Db, p: &OrgPrincipal) -> DomainResult<(Vec<ToInvoice>, String)> {
    require(p, Permission::InvoicesRead)?;
    let member = super::member_filter(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let time = time(&mut tx, member, None).await?;
    let expenses = expenses(&mut tx, member, None).await?;
    let mut ids: Vec<Uuid> = time.iter().map(|t| t.client_id.as_uuid()).collect();
    ids.extend(expenses.iter().map(|(c, _)| c.as_uuid()));
    ids.sort();
    ids.dedup();
    let names: Vec<(ClientId, String)> =
        sqlx::query_as("SELECT id, name FROM clients WHERE id = ANY($1)").bind(&ids).fetch_all(&mut *tx).await?;
    let currency = super::org_currency(&mut tx).await?;
    tx.commit().await?;
    let mut rows: Vec<ToInvoice> = names
        .into_iter()
        .map(|(client_id, client)| ToInvoice {
            time: time.iter().find(|t| t.client_id == client_id).cloned(),
            expenses: expenses.iter().filter(|(c, _)| *c == client_id).map(|(_, x)| x.clone()).collect(),
            client_id,
            client,
        })
        .collect();
    rows.sort_by(|a, b| {
        let worth = |r: &ToInvoice| r.time.as_ref().map_or(0, |t| t.amount_minor);
        worth(b).cmp(&worth(a)).then_with(|| a.client.to_lowercase().cmp(&b.client.to_lowercase()))
    });
    Ok((rows, currency))
}
