//! ISO 4217 currency codes: the alphabetic codes of the standard's List One ("current currency
//! and funds"), as maintained by SIX on behalf of ISO, as of 2026: the Caribbean guilder `XCG` in
//! and the Netherlands Antillean guilder `ANG` out (2025), the Bulgarian lev `BGN` out with
//! Bulgaria's euro (2026), `ZWG`, `SLE` and `VED` in with their predecessors out, and the Arab accounting dinar `XAD`
//! (2025). Two codes of
//! the list are left out on purpose: `XTS`, reserved for testing, and `XXX`, "no currency
//! involved" — neither can be what an invoice is billed in. The list was checked against the ISO
//! 4217 data of `pycountry` (PyPI).
//!
//! The list is embedded rather than fetched: a currency joins or leaves it a few times a decade,
//! and checking a code must not depend on a network. When ISO amends List One, amend this list.

/// The active codes, in alphabetical order (a test keeps them so).
pub const ACTIVE_CODES: [&str; 176] = [
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD", "BIF", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY",
    "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
    "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX",
    "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAD", "XAF", "XAG", "XAU", "XBA",
    "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF", "XPT", "XSU", "XUA", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is an active ISO 4217 code, written as the standard writes it (upper case).
pub fn is_active(code: &str) -> bool {
    ACTIVE_CODES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_and_three_upper_case_letters() {
        assert!(ACTIVE_CODES.windows(2).all(|w| w[0] < w[1]), "sorted without duplicates");
        assert!(ACTIVE_CODES.iter().all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn real_codes_pass_and_made_up_or_retired_ones_do_not() {
        for code in ["EUR", "USD", "GBP", "JPY", "CHF", "XCG", "ZWG", "SLE"] {
            assert!(is_active(code), "{code}");
        }
        for code in ["XXXX", "ABC", "eur", "Eur", "", "EU", "HRK", "ANG", "BGN", "ZWL", "VEF", "XTS", "XXX", "DEM"] {
            assert!(!is_active(code), "{code}");
        }
    }
}
