//! Amounts as people type and read them: minor units (cents) and thousandths written as
//! decimals with a dot, basis points as percentages, and the currency codes the document names.
//! Every amount is an integer in the database and in the services; only these functions turn
//! one into text or text into one, and they refuse what they cannot read exactly.

use utoipa::ToSchema;

use crate::platform::error::{DomainError, DomainResult};

/// An active ISO 4217 currency code (`platform::currency`).
pub struct Currency;

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An active ISO 4217 currency code (List One, without XTS and XXX)."))
            .enum_values(Some(crate::platform::currency::ACTIVE_CODES))
            .into()
    }
}

impl ToSchema for Currency {}

/// "12.5" → 12500 (thousandths); "12,50" is refused (use a dot).
pub fn parse_decimal(field: &str, v: &str, scale: u32) -> DomainResult<i64> {
    let v = v.trim();
    let err = || DomainError::field(field, format!("must be a number with at most {scale} decimals, like 12.50"));
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > scale as usize
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
    let frac_val: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<width$}", width = scale as usize).parse().map_err(|_| err())?
    };
    int.checked_mul(10i64.pow(scale)).and_then(|x| x.checked_add(frac_val)).ok_or_else(err)
}

/// 123456 minor units → "1234.56" (sums beyond 64 bits too).
pub fn format_minor(v: impl Into<i128>) -> String {
    let v: i128 = v.into();
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Amounts summed per currency, in currency order, as pages show them ("42.50 EUR"); sums
/// beyond 64 bits too.
pub fn per_currency<'a>(amounts: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<String> {
    let mut totals: Vec<(&str, i128)> = Vec::new();
    for (currency, amount) in amounts {
        match totals.iter_mut().find(|t| t.0 == currency) {
            Some(t) => t.1 += i128::from(amount),
            None => totals.push((currency, amount.into())),
        }
    }
    totals.sort();
    totals.into_iter().map(|(c, v)| format!("{} {c}", format_minor(v))).collect()
}

/// Thousandths → "1.5" (no trailing zeros): a quantity as invoices show it.
pub fn milli(v: i64) -> String {
    scaled(v, 1000, 3)
}

/// Basis points → "19" or "7.25" (percent): a tax rate as invoices show it.
pub fn percent(bp: i32) -> String {
    scaled(bp.into(), 100, 2)
}

/// `v / scale` with up to `digits` decimals and no trailing zeros, its sign kept (−0.5 too).
fn scaled(v: i64, scale: u64, digits: usize) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let (whole, part) = (v.unsigned_abs() / scale, v.unsigned_abs() % scale);
    let s = format!("{sign}{whole}.{part:0digits$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_rates_are_shown_without_noise() {
        assert_eq!(milli(1500), "1.5");
        assert_eq!(milli(1000), "1");
        assert_eq!(milli(10_000), "10");
        assert_eq!(milli(333), "0.333");
        assert_eq!(milli(-500), "-0.5");
        assert_eq!(percent(1900), "19");
        assert_eq!(percent(725), "7.25");
        assert_eq!(percent(0), "0");
        assert_eq!(percent(-50), "-0.5");
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("q", "12.5", 3).unwrap(), 12500);
        assert_eq!(parse_decimal("p", "0.07", 2).unwrap(), 7);
        assert_eq!(parse_decimal("p", "3", 2).unwrap(), 300);
        for bad in ["", ".", "1.234", "-1", "1,5", "1e3", "abc"] {
            assert!(parse_decimal("p", bad, 2).is_err(), "{bad}");
        }
        assert_eq!(format_minor(123456), "1234.56");
        assert_eq!(format_minor(-5), "-0.05");
    }

    #[test]
    fn amounts_sum_per_currency_in_currency_order_past_64_bits() {
        let totals = per_currency([("USD", 1050), ("EUR", 5), ("USD", 50), ("EUR", i64::MAX), ("EUR", i64::MAX)]);
        assert_eq!(totals, ["184467440737095516.19 EUR", "11.00 USD"]);
        assert!(per_currency([]).is_empty());
    }
}
