//! Domain types parsed at the edge. Their fields are private: holding one means it is valid.

use std::fmt;

/// An email address: trimmed, lower-cased, with one `@`, a plausible domain and at most 254
/// characters. (Deliberately not a full RFC 5322 parser: the verification email is the real
/// check.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim().to_lowercase();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.chars().count() > 254 {
            return Err("is too long (at most 254 characters)".into());
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("must be an email address like name@example.com".into());
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain_ok {
            return Err("must be an email address like name@example.com".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';')) {
            return Err("must be an email address like name@example.com".into());
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A URL-safe organization handle: lower-case letters, digits and inner hyphens, 1–63 chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

impl Slug {
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let ok = (1..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err("must be 1-63 lower-case letters, digits or hyphens, not starting or ending with a hyphen".into())
        }
    }

    /// A slug derived from a display name (`"Acme & Co."` → `acme-co`).
    pub fn from_name(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.trim().to_lowercase().chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-');
        let out: String = out.chars().take(63).collect();
        Self::parse(out.trim_end_matches('-')).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A required single-line name: trimmed, 1–200 characters, no control characters.
pub fn parse_name(input: &str) -> Result<String, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.chars().count() > 200 {
        return Err("is too long (at most 200 characters)".into());
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "ann@", "@x.com", "a@b", "a@@b.com", "a b@c.com", "a@b..com", "<a@b.com>"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert!(Slug::parse("acme-co").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Slug::from_name("Acme & Co.").unwrap().as_str(), "acme-co");
        assert!(Slug::from_name("!!!").is_none());
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("  Acme ").unwrap(), "Acme");
        assert!(parse_name("   ").is_err());
        assert!(parse_name("a\u{0}b").is_err());
    }
}
