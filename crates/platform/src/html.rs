//! Text made safe to put into HTML, for what writes HTML by hand rather than through a template
//! (which escapes by itself): the page frame's messages and field errors, the HTML part of mail.

/// `text` with the characters that mean something in HTML (in text and in quoted attribute
/// values) written as entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn markup_and_quotes_become_entities() {
        assert_eq!(
            escape_html(r#"<a href="x" title='y'>Tom & Jerry</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;Tom &amp; Jerry&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain, ünïcode"), "plain, ünïcode");
    }
}
