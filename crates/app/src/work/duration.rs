//! Durations as people type them: `1:30`, `1h30m`, `1h 30m`, `1h`, `90m`, `1.5h`, `1,5h`, or a
//! bare whole number of minutes (`90`). The same parser serves the web forms and the API, so a
//! duration that one accepts the other accepts too, with the same message when it doesn't.

use crate::platform::error::{DomainError, DomainResult};

/// The longest duration one time entry may hold: a day.
pub const MAX_MINUTES: i32 = 24 * 60;

const HINT: &str = "must be a duration like 1:30, 1h30m, 1.5h or 90m";

/// Parses `raw` into whole minutes, between 1 and 24 hours. Fractions of hours round to the
/// nearest minute (`0.1h` is 6 minutes). Errors name `field`.
pub fn parse(field: &str, raw: &str) -> DomainResult<i32> {
    parse_up_to(field, raw, MAX_MINUTES)
}

/// Parses `raw` like [`parse`] into whole minutes, between 1 and `max` (a task's estimate may
/// be longer than a day).
pub fn parse_up_to(field: &str, raw: &str, max: i32) -> DomainResult<i32> {
    let minutes = parse_minutes(raw).map_err(|e| DomainError::field(field, e))?;
    if minutes <= 0 {
        return Err(DomainError::field(field, "must be more than zero"));
    }
    at_most(field, minutes, max)
}

/// Hours a week as people type them: a bare number is hours here (`40`, `37.5`), anything else
/// is read as a duration (`37:30`, `37h 30m`); from 0 to `max` minutes.
pub fn parse_hours(field: &str, raw: &str, max: i32) -> DomainResult<i32> {
    let s = raw.trim();
    let bare = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',');
    let minutes = if bare { parse_minutes(&format!("{s}h")) } else { parse_minutes(s) };
    let minutes = minutes.map_err(|e| DomainError::field(field, e))?;
    if minutes < 0 {
        return Err(DomainError::field(field, "must not be negative"));
    }
    at_most(field, minutes, max)
}

fn at_most(field: &str, minutes: i64, max: i32) -> DomainResult<i32> {
    if minutes > i64::from(max) {
        return Err(DomainError::field(field, format!("must be at most {} hours", max / 60)));
    }
    Ok(minutes as i32)
}

/// Minutes as shown in a form field that [`parse`] reads back: 90 → "1:30".
pub fn format_hm(minutes: i64) -> String {
    format!("{}:{:02}", minutes / 60, minutes % 60)
}

/// The number of minutes `raw` says, possibly zero or negative (the caller bounds it), or why it
/// is not a duration.
fn parse_minutes(raw: &str) -> Result<i64, &'static str> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("is required");
    }
    if s.len() > 32 || s.chars().any(|c| c.is_control()) {
        return Err(HINT);
    }
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    let value = if let Some((h, m)) = s.split_once(':') {
        // 1:30 — hours and exactly two digits of minutes below 60.
        let hours = whole(h)?;
        if m.len() != 2 {
            return Err(HINT);
        }
        let minutes = whole(m)?;
        if minutes >= 60 {
            return Err("has more than 59 minutes after the colon");
        }
        hours.checked_mul(60).and_then(|h| h.checked_add(minutes)).ok_or(HINT)?
    } else if let Some(i) = s.find(['h', 'H']) {
        // 1h, 1h30m, 1h 30m, 1.5h, 1,5h
        let (h, rest) = (s[..i].trim_end(), s[i + 1..].trim_start());
        let hour_minutes = decimal_hours(h)?;
        let rest = rest.strip_suffix(['m', 'M']).map(str::trim_end).unwrap_or(rest);
        let minutes = if rest.is_empty() {
            0
        } else {
            if s[..i].contains(['.', ',']) {
                // 1.5h30m says the same thing twice.
                return Err(HINT);
            }
            let m = whole(rest)?;
            if m >= 60 {
                return Err("has more than 59 minutes after the hours");
            }
            m
        };
        hour_minutes.checked_add(minutes).ok_or(HINT)?
    } else if let Some(m) = s.strip_suffix(['m', 'M']) {
        whole(m.trim_end())?
    } else if s.contains(['.', ',']) {
        return Err("needs a unit, like 1.5h");
    } else {
        // A bare whole number is minutes (what the forms asked for before durations).
        whole(s)?
    };
    Ok(if negative { -value } else { value })
}

/// ASCII digits only, at most 6 of them.
fn whole(s: &str) -> Result<i64, &'static str> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HINT);
    }
    s.parse().map_err(|_| HINT)
}

/// Hours with an optional decimal part (dot or comma), as minutes rounded half up.
fn decimal_hours(s: &str) -> Result<i64, &'static str> {
    let (int, frac) = s.split_once(['.', ',']).unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(HINT);
    }
    let int = if int.is_empty() { 0 } else { whole(int)? };
    if frac.len() > 4 || !frac.bytes().all(|b| b.is_ascii_digit()) || s.ends_with(['.', ',']) {
        return Err(HINT);
    }
    let scale = 10_i64.pow(frac.len() as u32);
    let frac = if frac.is_empty() { 0 } else { whole(frac)? };
    // (int + frac/scale) × 60, rounded half up.
    let minutes = (int * 60).checked_add((frac * 60 * 2 + scale) / (2 * scale)).ok_or(HINT)?;
    Ok(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> i32 {
        parse("duration", s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
    }

    fn message(s: &str) -> String {
        match parse("duration", s) {
            Err(DomainError::Invalid(v)) => {
                assert_eq!(v[0].field, "duration", "{s:?}");
                v[0].message.clone()
            }
            other => panic!("{s:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn the_usual_ways_of_writing_time_parse() {
        for (s, m) in [
            ("1:30", 90),
            ("0:45", 45),
            ("24:00", 1440),
            ("1h30m", 90),
            ("1h 30m", 90),
            ("1H30M", 90),
            ("1h30", 90),
            ("1h", 60),
            ("2 h", 120),
            ("90m", 90),
            ("90 m", 90),
            ("1.5h", 90),
            ("1,5h", 90),
            ("0.25h", 15),
            (".5h", 30),
            ("0.1h", 6),
            ("1.333h", 80),
            ("0,01h", 1),
            ("90", 90),
            ("  1:30  ", 90),
            ("1", 1),
            ("1440", 1440),
            ("24h", 1440),
        ] {
            assert_eq!(ok(s), m, "{s}");
        }
    }

    #[test]
    fn zero_negative_too_long_and_garbage_are_refused_with_a_reason() {
        for zero in ["0", "0:00", "0h", "0m", "0.001h", "0h0m"] {
            assert_eq!(message(zero), "must be more than zero", "{zero}");
        }
        for negative in ["-1:30", "-90", "-1h", "- 5m"] {
            assert_eq!(message(negative), "must be more than zero", "{negative}");
        }
        for long in ["24:01", "25h", "1441", "1441m", "24.5h", "999999:00"] {
            assert_eq!(message(long), "must be at most 24 hours", "{long}");
        }
        assert_eq!(message(""), "is required");
        assert_eq!(message("   "), "is required");
        assert_eq!(message("1.5"), "needs a unit, like 1.5h");
        assert!(message("1:75").contains("59 minutes"));
        assert!(message("1h75m").contains("59 minutes"));
        for garbage in [
            "abc",
            "1:3",
            "1:300",
            "h",
            "m",
            "1.5.5h",
            "1x",
            "1hh",
            "1h30x",
            "1.5h30m",
            "1e3",
            "½h",
            "1:30:00",
            "٣m",
            "1\u{0}h",
            "\u{0}",
            "1h\u{0}30m",
            "1\n30",
            "--1",
            "+1h",
            "1m30",
            "1,h",
            "1.h",
            "99999999999999999999",
            "1h 30 m m",
        ] {
            let m = message(garbage);
            assert!(!m.is_empty(), "{garbage:?}");
        }
    }

    #[test]
    fn what_is_shown_reads_back_as_the_same_minutes() {
        for m in 1..=MAX_MINUTES as i64 {
            assert_eq!(ok(&format_hm(m)) as i64, m);
            assert_eq!(ok(&crate::work::web::duration(m).replace(' ', "")) as i64, m);
        }
    }

    /// A property over a seeded sample of inputs (proptest is not a dependency): every string
    /// made of duration characters either parses to 1..=1440 minutes or is a named refusal —
    /// never a panic — and decimal hours agree with hours and minutes.
    #[test]
    fn any_input_parses_in_bounds_or_is_refused() {
        let alphabet: Vec<char> = "0123456789:.,hHmM -\u{0}x".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let len = (next() % 9) as usize;
            let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            match parse("d", &s) {
                Ok(m) => assert!((1..=MAX_MINUTES).contains(&m), "{s:?} → {m}"),
                Err(DomainError::Invalid(v)) => assert_eq!(v[0].field, "d"),
                Err(other) => panic!("{s:?}: {other:?}"),
            }
        }
        for _ in 0..20_000 {
            let h = (next() % 24) as i64;
            let m = (next() % 60) as i64;
            let total = h * 60 + m;
            if total == 0 {
                continue;
            }
            assert_eq!(ok(&format!("{h}h{m}m")) as i64, total);
            assert_eq!(ok(&format!("{h}:{m:02}")) as i64, total);
            assert_eq!(ok(&format!("{total}m")) as i64, total);
            // Quarter hours are exact in decimal.
            let quarters = (next() % 96 + 1) as i64;
            let dec = format!("{}.{:02}h", quarters / 4, (quarters % 4) * 25);
            assert_eq!(ok(&dec) as i64, quarters * 15, "{dec}");
            assert_eq!(ok(&dec.replace('.', ",")) as i64, quarters * 15);
        }
    }

    #[test]
    fn hours_a_week_read_a_bare_number_as_hours_and_allow_none() {
        let hours = |s: &str| parse_hours("hours", s, 168 * 60);
        assert_eq!(hours("40").unwrap(), 2400);
        assert_eq!(hours(" 37.5 ").unwrap(), 2250);
        assert_eq!(hours("37,5").unwrap(), 2250);
        assert_eq!(hours("37:30").unwrap(), 2250);
        assert_eq!(hours("37h 30m").unwrap(), 2250);
        assert_eq!(hours("90m").unwrap(), 90);
        assert_eq!(hours("0").unwrap(), 0);
        assert_eq!(hours("168").unwrap(), 10080);
        for (raw, says) in [
            ("168.1", "must be at most 168 hours"),
            ("-1", "must not be negative"),
            ("", "is required"),
            ("forty", "must be a duration"),
            ("4\u{0}", "must be a duration"),
            ("1.", "must be a duration"),
        ] {
            let e = format!("{:?}", hours(raw).unwrap_err());
            assert!(e.contains(says), "{raw:?}: {e}");
        }
    }
}
