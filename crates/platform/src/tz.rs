//! Organization time zones: IANA names, checked against the time-zone database compiled into
//! the binary (so a zone works the same on every machine). An organization's zone decides what
//! "today" is for it — an invoice becomes overdue when its due date has passed *there*, a time
//! entry without a date is booked on its local day — and how its pages show times. The API
//! speaks RFC 3339 in UTC and dates as stored.

use time::{Date, OffsetDateTime, UtcOffset};

/// Whether `name` is a time zone of the IANA database (`UTC` included).
pub fn is_known(name: &str) -> bool {
    name.len() <= 64 && jiff::tz::TimeZone::get(name).is_ok()
}

/// `t` seen in the zone `name`; UTC for a name the database doesn't know.
pub fn local(t: OffsetDateTime, name: &str) -> OffsetDateTime {
    in_zone(t, jiff::tz::TimeZone::get(name).ok().as_ref())
}

fn in_zone(t: OffsetDateTime, zone: Option<&jiff::tz::TimeZone>) -> OffsetDateTime {
    let offset = zone
        .zip(jiff::Timestamp::from_second(t.unix_timestamp()).ok())
        .and_then(|(tz, ts)| UtcOffset::from_whole_seconds(tz.to_offset(ts).seconds()).ok())
        .unwrap_or(UtcOffset::UTC);
    t.to_offset(offset)
}

/// The date it is in the zone `name` at `now`.
pub fn today(now: OffsetDateTime, name: &str) -> Date {
    local(now, name).date()
}

/// `2026-03-01 14:05 (Europe/Berlin)`: a time as an organization's pages show it.
pub fn format(t: OffsetDateTime, name: &str) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    let zone = jiff::tz::TimeZone::get(name).ok().filter(|_| name.len() <= 64);
    let label = if zone.is_some() { name } else { "UTC" };
    format!("{} ({label})", in_zone(t, zone.as_ref()).format(&fmt).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    #[test]
    fn zones_come_from_the_database() {
        assert!(is_known("UTC") && is_known("Europe/Berlin") && is_known("America/Argentina/Buenos_Aires"));
        assert!(!is_known("Mars/Olympus_Mons") && !is_known("Europe/../etc/passwd") && !is_known(""));
    }

    #[test]
    fn today_depends_on_the_zone_and_on_summer_time() {
        let late = datetime!(2026-01-15 23:30 UTC);
        assert_eq!(today(late, "UTC"), date!(2026 - 01 - 15));
        assert_eq!(today(late, "Europe/Berlin"), date!(2026 - 01 - 16)); // UTC+1
        assert_eq!(today(late, "America/New_York"), date!(2026 - 01 - 15));
        assert_eq!(today(datetime!(2026-01-16 03:30 UTC), "America/New_York"), date!(2026 - 01 - 15));
        // Berlin is UTC+2 in July.
        assert_eq!(format(datetime!(2026-07-01 12:00 UTC), "Europe/Berlin"), "2026-07-01 14:00 (Europe/Berlin)");
        assert_eq!(format(datetime!(2026-01-01 12:00 UTC), "Europe/Berlin"), "2026-01-01 13:00 (Europe/Berlin)");
        assert_eq!(format(datetime!(2026-01-01 12:00 UTC), "Nowhere/Else"), "2026-01-01 12:00 (UTC)");
    }
}
