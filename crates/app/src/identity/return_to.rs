//! Where a browser goes after signing in: the `next` of the sign-in and second-factor pages,
//! and the return address a Google sign-in keeps in its state. Every such value goes through
//! [`local_path`], and only there.
//!
//! A value is read the way a browser reads a `Location`: WHATWG URL parsing (the `url` crate)
//! relative to the public URL, which strips leading and trailing control characters and
//! spaces, removes tabs and newlines anywhere, treats `\` as `/` and resolves `.` and `..`. So
//! `/\t/evil.example` is `//evil.example` here exactly as in the browser, and is refused. What
//! is accepted is a path (and query) on this site, and what is sent is its normalized form,
//! percent-encoded, so it is always a valid header value and a browser reads it back as the
//! same place. Anything else — another origin, a scheme such as `javascript:`, credentials, a
//! path a browser would take for a host, a value over 2,048 bytes — falls back to the default
//! page.

use url::Url;

/// Where a browser goes when it didn't ask for anywhere (or asked for somewhere it can't go).
pub const DEFAULT: &str = "/app";

/// Longer values are refused: nothing on this site needs one, and they would be stored.
pub const MAX_LEN: usize = 2048;

/// `raw` as a path (and query) on the site at `public_url`, normalized as a browser would
/// normalize it, or [`DEFAULT`].
pub fn local_path(public_url: &str, raw: Option<&str>) -> String {
    raw.and_then(|r| normalize(public_url, r)).unwrap_or_else(|| DEFAULT.to_string())
}

fn normalize(public_url: &str, raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return None;
    }
    let base = Url::parse(public_url).ok()?;
    let url = base.join(raw).ok()?;
    if url.origin() != base.origin() || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let mut out = url.path().to_string();
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(query);
    }
    // What is sent must be read back as the same place: a path starting with `//` (from
    // `/.//host`, say) would be taken for a host.
    if out.len() > MAX_LEN || !out.starts_with('/') || out.starts_with("//") {
        return None;
    }
    let again = base.join(&out).ok()?;
    if again.origin() != base.origin() || again.path() != url.path() || again.query() != url.query() {
        return None;
    }
    if !out.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://app.example.com";

    fn to(raw: &str) -> String {
        local_path(BASE, Some(raw))
    }

    #[test]
    fn paths_on_this_site_are_kept_in_their_normal_form() {
        assert_eq!(local_path(BASE, None), "/app");
        assert_eq!(to(""), "/app");
        assert_eq!(to("/o/acme/projects?view=board"), "/o/acme/projects?view=board");
        assert_eq!(to("/o/acme/projects#board"), "/o/acme/projects");
        assert_eq!(to("/invitations/accept?token=abc-_12"), "/invitations/accept?token=abc-_12");
        assert_eq!(to("/a/./b/../c"), "/a/c");
        assert_eq!(to("https://app.example.com/o/x"), "/o/x");
        assert_eq!(to("/ünïcode"), "/%C3%BCn%C3%AFcode");
        assert_eq!(to("/a b"), "/a%20b");
        // Encoded slashes stay encoded: a path on this site, not a host.
        assert_eq!(to("/%2F%2Fevil.example"), "/%2F%2Fevil.example");
        // Controls inside a path are percent-encoded, as a browser would.
        assert_eq!(to("/a\u{0}b"), "/a%00b");
        assert_eq!(to("/\u{b}/evil.example"), "/%0B/evil.example");
    }

    #[test]
    fn anything_that_leaves_the_site_falls_back() {
        for hostile in [
            "/\t/evil.example/a",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "//evil.example",
            "///evil.example",
            "/.//evil.example",
            "/..//evil.example",
            "//evil.example@app.example.com",
            "https://evil.example/",
            "HTTPS://evil.example",
            "http://app.example.com/",
            "https://app.example.com:444/",
            "https://user:pw@app.example.com/",
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "\u{0}//evil.example",
            "\u{b}//evil.example",
            "//ｅｖｉｌ.example",
        ] {
            assert_eq!(to(hostile), "/app", "{hostile:?}");
        }
        assert_eq!(to(&format!("/{}", "a".repeat(MAX_LEN))), "/app");
    }

    #[test]
    fn whatever_comes_out_is_a_header_value_on_this_site() {
        let base = Url::parse(BASE).unwrap();
        for c in (0u32..0x80).chain([0x85, 0xa0, 0x2028, 0x3000, 0xfeff, 0xff0f]) {
            let c = char::from_u32(c).unwrap();
            for raw in [format!("{c}/evil.example"), format!("/{c}/evil.example"), format!("/{c}{c}evil.example")] {
                let out = to(&raw);
                assert!(axum::http::HeaderValue::from_str(&out).is_ok(), "{raw:?} -> {out:?}");
                assert_eq!(base.join(&out).unwrap().origin(), base.origin(), "{raw:?} -> {out:?}");
            }
        }
    }
}
