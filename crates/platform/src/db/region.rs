//! Data residency: which database an organization's rows live in.
//!
//! An installation has one or more regions (`[residency]` in the configuration); each has a
//! PostgreSQL database of its own. The default region's database also holds the global
//! directory (accounts, sessions, and the organization → region map). A [`Db`](super::Db)
//! carries the pools of every region; the tenant door ([`super::tenant::OrgTx`]) picks the pool
//! from its principal's region, which the application's access layer reads from the directory
//! when it verifies the principal. No code names a region's pool for tenant data by hand, so a
//! query for one organization can't be sent to another region's database.

use std::fmt;

/// A region's name: lower-case ASCII letters, digits and `-`, at most 16 bytes, starting with a
/// letter (`us`, `eu`, `eu-west`). Copied, not allocated: it rides on every principal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId {
    len: u8,
    bytes: [u8; 16],
}

impl RegionId {
    /// The region of an installation that configures none.
    pub const DEFAULT: RegionId = RegionId { len: 2, bytes: *b"us\0\0\0\0\0\0\0\0\0\0\0\0\0\0" };

    /// Parses a region name; `None` when it isn't one (see the type's documentation).
    pub fn parse(name: &str) -> Option<RegionId> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 16
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if !ok {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..b.len()].copy_from_slice(b);
        Some(RegionId { len: b.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII goes in (`parse`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionId({})", self.as_str())
    }
}

impl serde::Serialize for RegionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RegionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RegionId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not a region name (lower-case letters, digits and '-', at most 16, starting with a letter)"
            ))
        })
    }
}

/// The error of a principal whose region this process has no database for (a configuration
/// that dropped a region still named in the directory).
pub fn unknown_region(region: RegionId) -> sqlx::Error {
    sqlx::Error::Configuration(
        format!("region {region} is not configured here (add [residency.regions.{region}])").into(),
    )
}

#[cfg(test)]
mod tests {
    use super::RegionId;

    #[test]
    fn region_names() {
        assert_eq!(RegionId::parse("us"), Some(RegionId::DEFAULT));
        assert_eq!(RegionId::parse("eu-west-1").map(|r| r.to_string()), Some("eu-west-1".to_string()));
        for bad in ["", "EU", "1eu", "eu_west", "a-very-long-region-name", "é"] {
            assert_eq!(RegionId::parse(bad), None, "{bad}");
        }
    }
}
