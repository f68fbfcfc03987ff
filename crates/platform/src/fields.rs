//! What the work services accept in each kind of field, stated twice in one place: as the check
//! the services run, and as the JSON Schema wording of the same rule that the API's OpenAPI
//! document gives.
//!
//! The input types name a rule JSON Schema has no format for with `#[schema(format = "…")]`
//! (`text`, `nonblank-text`, `file-name`, `email-or-empty`, `uuid-or-empty`, `date-or-empty`);
//! the document's conventions (`api::openapi`) replace each name with [`schema_of_format`], so the
//! document says exactly what the checks here accept, no more and no less.
//!
//! JSON bodies tell a field left out from one sent as `null`:
//! - a field the record may hold empty (an email, a due date, a budget) is nullable: on an update
//!   `null` clears it (an `Option<Option<T>>` read with [`present`]), on a create it means none;
//! - every other field refuses `null` with a 422 naming it ([`non_null`]), on a create and on an
//!   update alike: `null` is never read as "left out".
//!
//! Whole numbers: JSON Schema's `integer` is any number without a fractional part, `2.0` and
//! `2e3` included, so the integer fields read those too ([`int`] and its variants).

use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use time::Date;

use crate::error::{DomainError, DomainResult};

/// Characters the text fields refuse: control characters other than tab, line feed and
/// carriage return (C0, DEL and C1, Rust's `char::is_control`).
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

/// Text with at least one character that is neither white space (Unicode `White_Space`, what
/// `str::trim` removes) nor refused by [`TEXT_PATTERN`].
pub const NONBLANK_TEXT_PATTERN: &str = concat!(
    r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
);

/// A file name: no control characters, no path separators, no double quotes (it goes into a
/// `Content-Disposition` header), and something other than dots and white space.
pub const FILE_NAME_PATTERN: &str = concat!(
    r#"^[^\u0000-\u001F\u007F-\u009F/\\"]*"#,
    r#"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000/\\".]"#,
    r#"[^\u0000-\u001F\u007F-\u009F/\\"]*$"#
);

/// An ASCII email address (`local@domain.tld`, the local part at most 64 characters, without
/// white space or `"`, `,`, `;`, `<`, `>`), or the empty string.
pub const EMAIL_OR_EMPTY_PATTERN: &str =
    r"^([\x21\x23-\x2B\x2D-\x3A\x3D\x3F\x41-\x7E]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)?$";

/// Any string without U+0000, which PostgreSQL can't store (`platform::http::input` refuses it
/// everywhere before routing).
pub const NUL_FREE_PATTERN: &str = r"^[^\u0000]*$";

/// The JSON Schema for a rule named by a custom `format`, given the schema utoipa generated
/// (its `type`, lengths and description are kept). `None` for formats that are not ours.
pub fn schema_of_format(format: &str, generated: &Value) -> Option<Value> {
    let nullable = generated["type"].as_array().is_some_and(|types| types.iter().any(|t| t == "null"));
    let mut schema = generated.clone();
    let object = schema.as_object_mut()?;
    match format {
        "text" | "nonblank-text" | "file-name" | "email-or-empty" => {
            let pattern = match format {
                "text" => TEXT_PATTERN,
                "nonblank-text" => NONBLANK_TEXT_PATTERN,
                "file-name" => FILE_NAME_PATTERN,
                _ => EMAIL_OR_EMPTY_PATTERN,
            };
            object.remove("format");
            object.insert("pattern".into(), json!(pattern));
        }
        "uuid-or-empty" | "date-or-empty" => {
            let real = if format == "uuid-or-empty" { "uuid" } else { "date" };
            object.remove("format");
            object.remove("type");
            let mut alternatives =
                vec![json!({"type": "string", "format": real}), json!({"type": "string", "enum": [""]})];
            if nullable {
                alternatives.push(json!({"type": "null"}));
            }
            object.insert("anyOf".into(), Value::Array(alternatives));
        }
        _ => return None,
    }
    Some(schema)
}

// ---------------------------------------------------------------------------------------------
// Reading JSON

/// A field that may be left out but not sent as `null`: `#[serde(default, deserialize_with =
/// "non_null")]` on an `Option<T>`.
pub fn non_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(D::Error::custom("must not be null")),
    }
}

/// A field that was sent, `null` included (`Some(None)`), as opposed to one left out (`None`, by
/// `#[serde(default)]`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A JSON number without a fractional part.
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(Whole(i));
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.is_finite() && f.fract() != 0.0 {
            return Err(D::Error::custom("must be a whole number"));
        }
        whole_number(f).map(Whole).ok_or_else(|| D::Error::custom("is out of range"))
    }
}

/// The integer a float without a fractional part stands for, when an `i64` holds it.
pub fn whole_number(f: f64) -> Option<i64> {
    // 2^63 is the first float past i64::MAX (which as a float rounds up to it).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

fn narrow<'de, D: Deserializer<'de>, T: TryFrom<i64>>(w: Whole) -> Result<T, D::Error> {
    T::try_from(w.0).map_err(|_| D::Error::custom("is out of range"))
}

/// A required whole number: `#[serde(deserialize_with = "int")]`.
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    narrow::<D, T>(Whole::deserialize(d)?)
}

/// A whole number that may be left out but not be `null`.
pub fn int_non_null<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<Whole>::deserialize(d)? {
        Some(w) => narrow::<D, T>(w).map(Some),
        None => Err(D::Error::custom("must not be null")),
    }
}

/// A whole number where `null` means none.
pub fn int_or_null<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Whole>::deserialize(d)?.map(narrow::<D, T>).transpose()
}

/// A whole number that was sent, `null` included (see [`present`]).
pub fn int_present<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    int_or_null(d).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Text that may be empty: refuses control characters other than tab and line breaks, and more
/// than `max` characters (counted before trimming, as the document's `maxLength` counts them);
/// the stored value is trimmed.
pub fn text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    if value.chars().count() > max {
        return Err(DomainError::field(field, format!("is too long (at most {max} characters)")));
    }
    if value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(DomainError::field(field, "must not contain control characters"));
    }
    Ok(value.trim().to_string())
}

/// Text with something in it besides white space ([`text`] otherwise).
pub fn nonblank(field: &str, value: &str, max: usize) -> DomainResult<String> {
    let v = text(field, value, max)?;
    if v.is_empty() {
        return Err(DomainError::field(field, "is required"));
    }
    Ok(v)
}

/// [`text`] where empty (or only white space) means none.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> DomainResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) => text(field, v, max).map(|v| Some(v).filter(|v| !v.is_empty())),
    }
}

/// Whether `v` is a UUID in its hyphenated form (`8-4-4-4-12` hexadecimal digits, either case),
/// the one JSON Schema's `format: uuid` means. `Uuid::parse_str` also reads the simple, braced
/// and URN forms, which the document doesn't admit.
pub fn is_hyphenated_uuid(v: &str) -> bool {
    v.len() == 36
        && v.bytes()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() })
}

/// An id (`format: uuid`).
pub fn id<T: FromStr>(field: &str, value: &str) -> DomainResult<T> {
    if value.is_empty() {
        return Err(DomainError::field(field, "is required"));
    }
    if !is_hyphenated_uuid(value) {
        return Err(DomainError::field(field, "is not a valid id"));
    }
    value.parse().map_err(|_| DomainError::field(field, "is not a valid id"))
}

/// An id, or the empty string for none (`uuid-or-empty`).
pub fn id_or_empty<T: FromStr>(field: &str, value: &str) -> DomainResult<Option<T>> {
    if value.is_empty() { Ok(None) } else { id(field, value).map(Some) }
}

/// A calendar date `YYYY-MM-DD` (`format: date`, RFC 3339's `full-date`).
pub fn date(field: &str, value: &str) -> DomainResult<Date> {
    let bad = || DomainError::field(field, "must be a date like 2026-01-31");
    let b = value.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !shaped {
        return Err(bad());
    }
    let year: i32 = value[0..4].parse().map_err(|_| bad())?;
    let month: u8 = value[5..7].parse().map_err(|_| bad())?;
    let day: u8 = value[8..10].parse().map_err(|_| bad())?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    Date::from_calendar_date(year, month, day).map_err(|_| bad())
}

/// A date, or the empty string for none (`date-or-empty`).
pub fn date_or_empty(field: &str, value: &str) -> DomainResult<Option<Date>> {
    if value.is_empty() { Ok(None) } else { date(field, value).map(Some) }
}

/// A checkbox-style flag in a query: `1` for on, empty or left out for off.
pub fn flag(field: &str, value: &str) -> DomainResult<bool> {
    match value {
        "" => Ok(false),
        "1" => Ok(true),
        _ => Err(DomainError::field(field, "must be 1 or left out")),
    }
}

/// A value of a closed set (an `enum` in the document).
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> DomainResult<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(DomainError::field(field, format!("must be one of {}", allowed.join(", "))))
    }
}

/// A whole number within `min..=max`.
pub fn within<T: PartialOrd + std::fmt::Display>(field: &str, value: T, min: T, max: T) -> DomainResult<T> {
    if value < min || value > max {
        return Err(DomainError::field(field, format!("must be between {min} and {max}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default, deserialize_with = "non_null")]
        name: Option<String>,
        #[serde(default, deserialize_with = "present")]
        email: Option<Option<String>>,
        #[serde(default, deserialize_with = "int_present")]
        budget: Option<Option<i64>>,
        #[serde(default, deserialize_with = "int_non_null")]
        minutes: Option<i32>,
    }

    fn doc(s: &str) -> Result<Doc, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn left_out_null_and_values_are_told_apart() {
        let d = doc("{}").unwrap();
        assert!(d.name.is_none() && d.email.is_none() && d.budget.is_none() && d.minutes.is_none());
        let d = doc(r#"{"email": null, "budget": null}"#).unwrap();
        assert_eq!((d.email, d.budget), (Some(None), Some(None)));
        assert!(doc(r#"{"name": null}"#).unwrap_err().starts_with("must not be null"));
        assert!(doc(r#"{"minutes": null}"#).unwrap_err().starts_with("must not be null"));
    }

    #[test]
    fn whole_numbers_may_be_written_as_decimals() {
        assert_eq!(doc(r#"{"minutes": 30.0}"#).unwrap().minutes, Some(30));
        assert_eq!(doc(r#"{"budget": 2e3}"#).unwrap().budget, Some(Some(2000)));
        assert!(doc(r#"{"minutes": 1.5}"#).unwrap_err().starts_with("must be a whole number"));
        assert!(doc(r#"{"minutes": 3000000000}"#).unwrap_err().starts_with("is out of range"));
        assert!(doc(r#"{"budget": 9223372036854775808}"#).unwrap_err().starts_with("is out of range"));
        assert!(doc(r#"{"budget": 1e300}"#).unwrap_err().starts_with("is out of range"));
        assert_eq!(doc(r#"{"budget": -9223372036854775808}"#).unwrap().budget, Some(Some(i64::MIN)));
        assert!(doc(r#"{"minutes": "5"}"#).is_err());
    }

    #[test]
    fn ids_and_dates_are_read_in_their_one_form() {
        let u = "e3e70682-c209-1cac-a29f-6fbed82c07cd";
        assert!(id::<uuid::Uuid>("x", u).is_ok());
        assert!(id::<uuid::Uuid>("x", &u.to_uppercase()).is_ok());
        for bad in [
            "",
            " e3e70682-c209-1cac-a29f-6fbed82c07cd",
            "e3e70682c2091caca29f6fbed82c07cd",
            "{e3e70682-c209-1cac-a29f-6fbed82c07cd}",
        ] {
            assert!(id::<uuid::Uuid>("x", bad).is_err(), "{bad}");
        }
        assert_eq!(id_or_empty::<uuid::Uuid>("x", "").unwrap(), None);
        assert_eq!(date("d", "2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(date("d", "0000-01-01").unwrap().year(), 0);
        for bad in
            ["2026-02-29", "2026-1-01", "+2026-01-01", " 2026-01-01", "2026-01-01 ", "20260-01-01", "2026-13-01", ""]
        {
            assert!(date("d", bad).is_err(), "{bad}");
        }
        assert_eq!(date_or_empty("d", "").unwrap(), None);
    }

    #[test]
    fn a_flag_is_one_or_nothing() {
        assert!(!flag("open", "").unwrap());
        assert!(flag("open", "1").unwrap());
        for bad in ["0", "true", "on", " 1", "1\0", "11"] {
            let e = flag("open", bad).unwrap_err();
            assert!(format!("{e:?}").contains("open"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn text_is_trimmed_and_counted_before_trimming() {
        assert_eq!(text("t", "  a\tb\n ", 10).unwrap(), "a\tb");
        assert!(text("t", &format!(" {} ", "x".repeat(9)), 10).is_err(), "11 characters with the spaces");
        assert!(text("t", "a\u{7}b", 10).is_err());
        assert!(text("t", "a\u{85}b", 10).is_err(), "C1 controls too");
        assert!(nonblank("t", " \u{3000}\u{a0} ", 10).is_err());
        assert_eq!(nonblank("t", " \u{feff} ", 10).unwrap(), "\u{feff}", "U+FEFF is not white space");
        assert_eq!(optional_text("t", Some("  "), 10).unwrap(), None);
    }

    /// The patterns say what the checks do, character by character (every code point below
    /// U+3100, where all the classes' edges are, and a few beyond), read by a regex engine.
    #[test]
    fn the_patterns_agree_with_the_checks() {
        let re = |p: &str| regex::Regex::new(p).unwrap();
        let (text_re, nonblank_re, nul_re) = (re(TEXT_PATTERN), re(NONBLANK_TEXT_PATTERN), re(NUL_FREE_PATTERN));
        for cp in (0u32..0x3100).chain([0xfeff, 0xfffd, 0x1_f600, 0x10_ffff]) {
            let Some(c) = char::from_u32(cp) else { continue };
            let inner = format!("a{c}b");
            assert_eq!(text_re.is_match(&inner), text("t", &inner, 10).is_ok(), "text {cp:#x}");
            let alone = c.to_string();
            assert_eq!(text_re.is_match(&alone), text("t", &alone, 10).is_ok(), "text {cp:#x}");
            assert_eq!(nonblank_re.is_match(&alone), nonblank("t", &alone, 10).is_ok(), "nonblank {cp:#x}");
            let padded = format!(" {c} ");
            assert_eq!(nonblank_re.is_match(&padded), nonblank("t", &padded, 10).is_ok(), "nonblank {cp:#x}");
            assert_eq!(nul_re.is_match(&inner), cp != 0, "nul {cp:#x}");
        }
        assert!(!nonblank_re.is_match(""));
        assert!(text_re.is_match(""));
    }
}
