//! An invoice as a PDF: A4 pages of text in the standard Helvetica fonts (which every PDF
//! reader has, so nothing is embedded), written directly in PDF's own syntax. The document is
//! small and plain on purpose: the content streams are uncompressed text, which keeps the
//! writer short enough to read in one sitting and lets tests find the number and total in it.

use super::invoices::InvoiceDetail;
use super::money::{format_minor, milli, percent};

const PAGE_WIDTH: i32 = 595;
const PAGE_HEIGHT: i32 = 842;
pub(super) const MARGIN: i32 = 56;
const LINE: i32 = 16;

/// One line of text: its font (`F1` regular, `F2` bold), size and x position.
pub(super) struct Text {
    bold: bool,
    size: i32,
    x: i32,
    text: String,
}

pub(super) fn text(bold: bool, size: i32, x: i32, t: impl Into<String>) -> Text {
    Text { bold, size, x, text: t.into() }
}

/// The printed lines of the invoice, top to bottom (each `None` is an empty line).
fn layout(organization: &str, d: &InvoiceDetail) -> Vec<Vec<Text>> {
    let i = &d.invoice;
    let money = |v: i64| format!("{} {}", format_minor(v), i.currency);
    let mut rows: Vec<Vec<Text>> = vec![
        vec![text(true, 18, MARGIN, organization)],
        vec![],
        vec![text(true, 14, MARGIN, format!("Invoice {}", i.title()))],
        vec![text(false, 11, MARGIN, format!("Client: {}", d.client_name))],
        vec![text(false, 11, MARGIN, format!("Issued: {}", i.issue_date))],
        vec![text(
            false,
            11,
            MARGIN,
            match i.payment_terms_days {
                Some(days) => format!("Due: {} (net {days})", i.due_date),
                None => format!("Due: {}", i.due_date),
            },
        )],
        vec![],
        vec![
            text(true, 10, MARGIN, "Description"),
            text(true, 10, 330, "Qty"),
            text(true, 10, 390, "Unit price"),
            text(true, 10, 480, "Amount"),
        ],
    ];
    for l in &d.lines {
        let mut description: String = l.description.chars().take(60).collect();
        if l.description.chars().count() > 60 {
            description.push_str("...");
        }
        rows.push(vec![
            text(false, 10, MARGIN, description),
            text(false, 10, 330, milli(l.quantity_milli)),
            text(false, 10, 390, format_minor(l.unit_price_minor)),
            text(false, 10, 480, format_minor(l.amount_minor)),
        ]);
    }
    rows.push(vec![]);
    rows.push(vec![text(false, 11, 330, "Subtotal"), text(false, 11, 450, money(i.subtotal_minor))]);
    rows.push(vec![
        text(false, 11, 330, format!("Tax {}%", percent(i.tax_rate_bp))),
        text(false, 11, 450, money(i.tax_minor)),
    ]);
    rows.push(vec![text(true, 12, 330, "Total"), text(true, 12, 450, money(i.total_minor))]);
    if i.paid_minor > 0 {
        rows.push(vec![text(false, 11, 330, "Paid"), text(false, 11, 450, money(i.paid_minor))]);
        rows.push(vec![text(true, 12, 330, "Balance due"), text(true, 12, 450, money(i.balance_minor))]);
    }
    if !i.notes.is_empty() {
        rows.push(vec![]);
        for note in i.notes.lines().take(20) {
            let note: String = note.chars().take(90).collect();
            rows.push(vec![text(false, 10, MARGIN, note)]);
        }
    }
    rows
}

/// A PDF string literal in WinAnsi (Latin-1 for the printable range): parentheses and
/// backslashes escaped, bytes above ASCII as octal escapes, anything else as `?`.
fn pdf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('(');
    for c in s.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{ff}' => out.push_str(&format!("\\{:03o}", c as u32)),
            _ => out.push('?'),
        }
    }
    out.push(')');
    out
}

/// The document's file name: `invoice-INV-2026-0007.pdf` (a draft: `invoice-draft.pdf`), only
/// letters, digits, `-`, `.` and `_` whatever the prefix.
pub fn file_name(d: &InvoiceDetail) -> String {
    let name = match &d.invoice.reference {
        Some(r) => format!("invoice-{r}.pdf"),
        None => "invoice-draft.pdf".to_string(),
    };
    name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect()
}

/// The invoice as a PDF document.
pub fn render(organization: &str, d: &InvoiceDetail) -> Vec<u8> {
    document(&layout(organization, d))
}

/// A PDF document of `rows` of text, top to bottom, on as many A4 pages as they take (each
/// empty row an empty line).
pub(super) fn document(rows: &[Vec<Text>]) -> Vec<u8> {
    let per_page = ((PAGE_HEIGHT - 2 * MARGIN) / LINE) as usize;
    let pages: Vec<&[Vec<Text>]> = rows.chunks(per_page.max(1)).collect();
    // Objects: 1 catalog, 2 page tree, 3 and 4 fonts, then a page and its content per page.
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        String::new(), // the page tree, once the pages are numbered
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut kids = Vec::new();
    for page in &pages {
        let mut content = String::new();
        let mut y = PAGE_HEIGHT - MARGIN;
        for row in page.iter() {
            for t in row {
                content.push_str(&format!(
                    "BT /{} {} Tf {} {} Td {} Tj ET\n",
                    if t.bold { "F2" } else { "F1" },
                    t.size,
                    t.x,
                    y,
                    pdf_string(&t.text)
                ));
            }
            y -= LINE;
        }
        let page_no = objects.len() + 1;
        let content_no = page_no + 1;
        kids.push(format!("{page_no} 0 R"));
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
             /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {content_no} 0 R >>"
        ));
        objects.push(format!("<< /Length {} >>\nstream\n{content}endstream", content.len()));
    }
    objects[1] = format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), kids.len());
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (n, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", n + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_for_pdf() {
        assert_eq!(pdf_string("a(b)c\\"), "(a\\(b\\)c\\\\)");
        assert_eq!(pdf_string("Müller"), "(M\\374ller)");
        assert_eq!(pdf_string("€ ✓"), "(? ?)");
    }
}
