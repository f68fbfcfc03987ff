//! Reading a received message's MIME structure (RFC 2045–2047, 2183, 2231), written here
//! independently of the mail builder under test: headers with folded lines, nested
//! `multipart/*` bodies split on their boundaries, `base64` and `quoted-printable` transfer
//! encodings, and file names given plainly, quoted, or as RFC 2231 continuations
//! (`filename*0="…"; filename*1="…"`, `filename*=utf-8''…`).

/// One part of a message: its headers (names in lower case, values unfolded) and its raw body.
#[derive(Debug, Clone)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A file a message carries (`Content-Disposition: attachment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// The media type without parameters, in lower case (`application/pdf`).
    pub content_type: String,
    /// The decoded bytes.
    pub content: Vec<u8>,
}

impl Part {
    /// Parses a whole message (or a part): headers, a blank line, the body.
    pub fn parse(raw: &str) -> Part {
        let (head, body) = match raw.find("\r\n\r\n") {
            Some(i) => (&raw[..i], &raw[i + 4..]),
            None => match raw.find("\n\n") {
                Some(i) => (&raw[..i], &raw[i + 2..]),
                None => (raw, ""),
            },
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split('\n') {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        Part { headers, body: body.to_string() }
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The media type without parameters, lower case; `text/plain` when absent (RFC 2045).
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".into())
    }

    /// The parts of a multipart body (empty for anything else).
    pub fn parts(&self) -> Vec<Part> {
        if !self.media_type().starts_with("multipart/") {
            return Vec::new();
        }
        let Some(boundary) = self.header("content-type").and_then(|v| param(v, "boundary")) else {
            return Vec::new();
        };
        let open = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in self.body.split('\n') {
            let bare = line.trim_end_matches('\r');
            if bare == open || bare == format!("{open}--") {
                if let Some(lines) = current.take() {
                    // The line break before a delimiter belongs to the delimiter (RFC 2046).
                    let joined = lines.join("\n");
                    parts.push(Part::parse(joined.strip_suffix('\r').unwrap_or(&joined)));
                }
                if bare != open {
                    break;
                }
                current = Some(Vec::new());
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
        parts
    }

    /// The body decoded from its `Content-Transfer-Encoding`.
    pub fn decoded(&self) -> Vec<u8> {
        match self.header("content-transfer-encoding").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("base64") => base64_decode(&self.body),
            Some("quoted-printable") => quoted_printable_decode(&self.body),
            // 7bit, 8bit, binary: as written, without the CRLF that ends the part.
            _ => self.body.strip_suffix("\r\n").unwrap_or(&self.body).as_bytes().to_vec(),
        }
    }

    /// Every leaf part, depth first.
    pub fn leaves(&self) -> Vec<Part> {
        let parts = self.parts();
        if parts.is_empty() { vec![self.clone()] } else { parts.iter().flat_map(Part::leaves).collect() }
    }

    /// The files the message carries, in order.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.leaves()
            .into_iter()
            .filter(|p| {
                p.header("content-disposition")
                    .is_some_and(|d| d.split(';').next().is_some_and(|k| k.trim().eq_ignore_ascii_case("attachment")))
            })
            .map(|p| Attachment {
                filename: p
                    .header("content-disposition")
                    .and_then(|d| param(d, "filename"))
                    .or_else(|| p.header("content-type").and_then(|c| param(c, "name")))
                    .unwrap_or_default(),
                content_type: p.media_type(),
                content: p.decoded(),
            })
            .collect()
    }
}

/// A header parameter: `name=value`, `name="value"`, or RFC 2231's `name*=charset''pct-encoded`
/// and `name*0=…; name*1=…` continuations (each segment quoted or `*`-encoded).
pub fn param(value: &str, name: &str) -> Option<String> {
    let mut plain = None;
    let mut segments: Vec<(u32, String)> = Vec::new();
    for item in split_params(value).into_iter().skip(1) {
        let Some((key, v)) = item.split_once('=') else { continue };
        let key = key.trim().to_ascii_lowercase();
        let v = v.trim();
        let unquoted = || v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).map(unescape).unwrap_or(v.to_string());
        if key == name {
            plain = Some(unquoted());
        } else if key == format!("{name}*") {
            plain = Some(rfc2231_value(v, true));
        } else if let Some(rest) = key.strip_prefix(&format!("{name}*")) {
            let (index, encoded) = match rest.strip_suffix('*') {
                Some(i) => (i, true),
                None => (rest, false),
            };
            if let Ok(i) = index.parse::<u32>() {
                let text = if encoded { rfc2231_value(v, i == 0) } else { unquoted() };
                segments.push((i, text));
            }
        }
    }
    if plain.is_some() {
        return plain;
    }
    if segments.is_empty() {
        return None;
    }
    segments.sort_by_key(|(i, _)| *i);
    Some(segments.into_iter().map(|(_, s)| s).collect())
}

/// Splits on `;` outside quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `utf-8''%E2%82%AC.pdf` (the charset and language only on the first segment).
fn rfc2231_value(v: &str, first: bool) -> String {
    let v = v.trim_matches('"');
    let data = if first { v.splitn(3, '\'').nth(2).unwrap_or(v) } else { v };
    let bytes = data.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = data.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64, ignoring line breaks and other whitespace.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' {
            break;
        }
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
pub fn quoted_printable_decode(text: &str) -> Vec<u8> {
    let text = text.strip_suffix("\r\n").unwrap_or(text);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if bytes[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let Some(hex) = text.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_mixed_message_with_a_folded_rfc2231_name() {
        let raw = "From: a@b\r\nContent-Type: multipart/mixed;\r\n boundary=\"XyZ\"\r\nMIME-Version: 1.0\r\n\r\n\
                   --XyZ\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n\
                   --inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nH=C3=A9llo =\r\nworld\r\n\
                   --inner--\r\n\
                   --XyZ\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0=\"invoice-\";\r\n filename*1=\"INV.pdf\"\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\nLjQK\r\n--XyZ--\r\n";
        let part = Part::parse(raw);
        assert_eq!(part.media_type(), "multipart/mixed");
        let leaves = part.leaves();
        assert_eq!(leaves.len(), 2);
        assert_eq!(String::from_utf8(leaves[0].decoded()).unwrap(), "Héllo world");
        let files = part.attachments();
        assert_eq!(
            files,
            vec![Attachment {
                filename: "invoice-INV.pdf".into(),
                content_type: "application/pdf".into(),
                content: b"%PDF-1.4\n".to_vec()
            }]
        );
        assert_eq!(param("attachment; filename*=utf-8''%E2%82%AC.pdf", "filename").as_deref(), Some("€.pdf"));
        assert_eq!(param("attachment; filename=\"a\\\"b;c.pdf\"", "filename").as_deref(), Some("a\"b;c.pdf"));
    }
}
