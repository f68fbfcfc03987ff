//! The organization's invoicing defaults (Settings → Invoicing, `/api/v1/settings/invoicing`):
//! the prefix of its invoice numbers, its hourly rate when nothing more specific has one, its
//! payment terms, the tax rate a new invoice starts with, and its currency. Rates on clients,
//! projects and people on projects are set with those (`clients`, `projects`); which one
//! applies is `time_entries::resolve_rate`.
//!
//! A changed prefix applies to the next invoice sent: a sent invoice keeps the reference it was
//! given (`invoices.reference`), so what clients hold is never renumbered.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::fields;
use super::money::{Currency, parse_decimal};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult, FieldError};

/// The highest hourly rate, in minor units (a billion in the major unit).
pub const MAX_RATE_MINOR: i64 = 100_000_000_000;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvoicingSettings {
    /// Printed before the year and number of each invoice sent from now on (`INV-2026-0007`).
    pub invoice_prefix: String,
    /// Minor units per hour; `null` when the organization has no rate of its own.
    pub hourly_rate_minor: Option<i64>,
    /// Days from issue to due date of a new invoice.
    pub payment_terms_days: i32,
    /// Basis points (19% is 1900) a new invoice starts with.
    pub default_tax_rate_bp: i32,
    #[schema(value_type = Currency)]
    pub currency: String,
}

/// Changes to the invoicing defaults: fields left out stay as they are; `null` clears the
/// hourly rate and is refused for the others.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoicingUpdate {
    /// 1 to 10 letters and digits.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(pattern = "^[A-Za-z0-9]{1,10}$", nullable = false)]
    pub invoice_prefix: Option<String>,
    /// Minor units per hour (120.50 an hour is 12050); `null` for none.
    #[serde(default, deserialize_with = "fields::int_present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 100000000000_i64)]
    pub hourly_rate_minor: Option<Option<i64>>,
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 365, nullable = false)]
    pub payment_terms_days: Option<i32>,
    /// Basis points (19% is 1900).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 10000, nullable = false)]
    pub default_tax_rate_bp: Option<i32>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Currency>, nullable = false)]
    pub currency: Option<String>,
}

/// An hourly rate in minor units, within 0 to [`MAX_RATE_MINOR`].
pub fn check_rate(field: &str, v: i64) -> DomainResult<i64> {
    if !(0..=MAX_RATE_MINOR).contains(&v) {
        return Err(DomainError::field(field, "must be between 0 and 1000000000.00 an hour"));
    }
    Ok(v)
}

/// An hourly rate as people type it (`120.50`, `120`): minor units; empty for none.
pub fn parse_rate(field: &str, typed: &str) -> DomainResult<Option<i64>> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    let minor = parse_decimal(field, typed, 2)
        .map_err(|_| DomainError::field(field, "must be an amount like 120.50 (a dot before the cents)"))?;
    check_rate(field, minor).map(Some)
}

/// An hourly rate in minor units as the forms show it (`120.50`); empty for none.
pub fn show_rate(minor: Option<i64>) -> String {
    minor.map(super::money::format_minor).unwrap_or_default()
}

/// A tax rate as people type it (`19`, `7.5`): basis points, 0 to 10000.
pub fn parse_percent(field: &str, typed: &str) -> DomainResult<i32> {
    let bp = parse_decimal(field, typed.trim(), 2)
        .map_err(|_| DomainError::field(field, "must be a percentage like 19 or 7.5"))?;
    if bp > 10_000 {
        return Err(DomainError::field(field, "must be between 0 and 100 percent"));
    }
    Ok(bp as i32)
}

fn require(p: &OrgPrincipal) -> DomainResult<()> {
    if p.can(Permission::SettingsManage) {
        Ok(())
    } else {
        Err(DomainError::Forbidden("Only Owners and Admins change the invoicing settings.".into()))
    }
}

async fn read(tx: &mut OrgTx) -> Result<InvoicingSettings, sqlx::Error> {
    sqlx::query_as(
        "SELECT invoice_prefix, hourly_rate_minor, payment_terms_days, default_tax_rate_bp, currency \
         FROM organizations WHERE id = $1",
    )
    .bind(tx.org_id())
    .fetch_one(&mut **tx)
    .await
}

pub async fn get(db: &Db, p: &OrgPrincipal) -> DomainResult<InvoicingSettings> {
    require(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let s = read(&mut tx).await?;
    tx.commit().await?;
    Ok(s)
}

/// Checks every field given (all the faults at once, each naming its field), then writes them
/// and the audit event (before and after) in one transaction.
pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    input: &InvoicingUpdate,
) -> DomainResult<InvoicingSettings> {
    require(p)?;
    let mut errors = Vec::new();
    let prefix = input.invoice_prefix.as_deref().map(str::trim);
    if let Some(prefix) = prefix
        && !((1..=10).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        errors.push(FieldError::new("invoice_prefix", "must be 1 to 10 letters and digits, like INV"));
    }
    if let Some(Some(rate)) = input.hourly_rate_minor
        && check_rate("hourly_rate_minor", rate).is_err()
    {
        errors.push(FieldError::new("hourly_rate_minor", "must be between 0 and 100000000000 (minor units)"));
    }
    if let Some(days) = input.payment_terms_days
        && !(0..=365).contains(&days)
    {
        errors.push(FieldError::new("payment_terms_days", "must be between 0 and 365 days"));
    }
    if let Some(bp) = input.default_tax_rate_bp
        && !(0..=10_000).contains(&bp)
    {
        errors.push(FieldError::new("default_tax_rate_bp", "must be between 0 and 10000 (basis points)"));
    }
    let currency = input.currency.as_deref().map(|c| c.trim().to_ascii_uppercase());
    if let Some(c) = &currency
        && !crate::platform::currency::is_active(c)
    {
        errors.push(FieldError::new("currency", "must be an active ISO 4217 currency code like EUR"));
    }
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let before = read(&mut tx).await?;
    let rate = match input.hourly_rate_minor {
        Some(r) => r,
        None => before.hourly_rate_minor,
    };
    sqlx::query(
        "UPDATE organizations SET invoice_prefix = $2, hourly_rate_minor = $3, payment_terms_days = $4, \
         default_tax_rate_bp = $5, currency = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(tx.org_id())
    .bind(prefix.unwrap_or(&before.invoice_prefix))
    .bind(rate)
    .bind(input.payment_terms_days.unwrap_or(before.payment_terms_days))
    .bind(input.default_tax_rate_bp.unwrap_or(before.default_tax_rate_bp))
    .bind(currency.as_deref().unwrap_or(&before.currency))
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    let after = read(&mut tx).await?;
    let org = tx.org_id();
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.invoicing_changed", "organization", org)
            .before(snapshot(&before))
            .after(snapshot(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

fn snapshot(s: &InvoicingSettings) -> serde_json::Value {
    json!({
        "invoice_prefix": s.invoice_prefix,
        "hourly_rate_minor": s.hourly_rate_minor,
        "payment_terms_days": s.payment_terms_days,
        "default_tax_rate_bp": s.default_tax_rate_bp,
        "currency": s.currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentages_read_as_typed() {
        assert_eq!(parse_rate("r", "120.50").unwrap(), Some(12050));
        assert_eq!(parse_rate("r", " 120 ").unwrap(), Some(12000));
        assert_eq!(parse_rate("r", "").unwrap(), None);
        assert_eq!(parse_rate("r", "1000000000.00").unwrap(), Some(MAX_RATE_MINOR));
        for bad in ["1000000000.01", "-1", "12,50", "1.234", "abc", "1e3", "99999999999999999999"] {
            assert!(parse_rate("r", bad).is_err(), "{bad}");
        }
        assert_eq!(show_rate(Some(12050)), "120.50");
        assert_eq!(parse_percent("t", "19").unwrap(), 1900);
        assert_eq!(parse_percent("t", "7.5").unwrap(), 750);
        assert!(parse_percent("t", "100.01").is_err());
        assert!(parse_percent("t", "").is_err());
    }
}
