//! RFC 6238 time-based one-time passwords: 160-bit secrets, 30-second steps, six digits,
//! one step of tolerance either way. Which step matched is reported so the caller can refuse
//! a code for a step at or before the last one accepted (replay protection).

use data_encoding::BASE32_NOPAD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use totp_rs::{Algorithm, TOTP};

use crate::platform::crypto::random_bytes;
use crate::platform::secret::ct_eq;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: usize = 6;
pub const ISSUER: &str = "ClientFlow";

/// A fresh 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    random_bytes::<20>().to_vec()
}

fn totp(secret: &[u8]) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECONDS, secret.to_vec())
}

pub fn step_at(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// The code for a given step (tests and enrollment use it).
pub fn code_for_step(secret: &[u8], step: u64) -> String {
    totp(secret).generate(step * STEP_SECONDS)
}

/// The step (within ±1 of now) whose code equals `code`, if any. Comparison is constant-time
/// per candidate.
pub fn matching_step(secret: &[u8], code: &str, unix_seconds: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_seconds);
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        if ct_eq(code_for_step(secret, step).as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

pub fn base32(secret: &[u8]) -> String {
    BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI authenticator apps read from the QR code.
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    let label = format!("{ISSUER}:{account}");
    format!(
        "otpauth://totp/{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        utf8_percent_encode(&label, NON_ALPHANUMERIC),
        base32(secret),
        utf8_percent_encode(ISSUER, NON_ALPHANUMERIC),
    )
}

/// The QR code of `data` as an SVG document (rendered server-side; no external service).
pub fn qr_svg(data: &str) -> String {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build(),
        Err(_) => String::new(),
    }
}

/// Ten single-use recovery codes, about 60 bits each, formatted `xxxx-xxxx-xxxx`.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..10)
        .map(|_| {
            let bytes = random_bytes::<12>();
            let chars: Vec<char> = bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
            format!(
                "{}-{}-{}",
                chars[0..4].iter().collect::<String>(),
                chars[4..8].iter().collect::<String>(),
                chars[8..12].iter().collect::<String>()
            )
        })
        .collect()
}

/// Recovery codes are compared after normalization (case, spaces, hyphens).
pub fn normalize_recovery_code(input: &str) -> String {
    input.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_test_vectors() {
        // RFC 6238 Appendix B, SHA-1 seed "12345678901234567890", 8 digits; the six-digit
        // code is the last six digits of the eight.
        let seed = b"12345678901234567890";
        for (t, expected8) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
        ] {
            assert_eq!(code_for_step(seed, step_at(t)), expected8[2..], "t={t}");
        }
    }

    #[test]
    fn tolerance_is_one_step_either_way() {
        let secret = new_secret();
        let now = 1_700_000_000;
        let step = step_at(now);
        assert_eq!(matching_step(&secret, &code_for_step(&secret, step), now), Some(step));
        assert_eq!(matching_step(&secret, &code_for_step(&secret, step - 1), now), Some(step - 1));
        assert_eq!(matching_step(&secret, &code_for_step(&secret, step + 1), now), Some(step + 1));
        assert_eq!(matching_step(&secret, &code_for_step(&secret, step - 2), now), None);
        assert_eq!(matching_step(&secret, &code_for_step(&secret, step + 2), now), None);
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }

    #[test]
    fn secrets_codes_and_uris() {
        assert_eq!(new_secret().len(), 20);
        let uri = otpauth_uri(&[0u8; 20], "ann@example.com");
        assert!(uri.starts_with("otpauth://totp/ClientFlow%3Aann%40example%2Ecom?secret=AAAAAAAA"), "{uri}");
        assert!(qr_svg(&uri).contains("<svg"));
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);
        assert_eq!(normalize_recovery_code(" ABCD-efgh-2345 "), "abcdefgh2345");
    }
}
