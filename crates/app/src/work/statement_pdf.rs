//! A client's statement as a PDF, in the invoice's plain style (`invoice_pdf`): per currency,
//! what was owed before the range, each invoice and payment with the balance after it, and what
//! was owed at its end. The portal's and the internal page's are the same document; payment
//! notes, being the organization's, are never in it.

use super::invoice_pdf::{MARGIN, Text, document, text};
use super::money::format_minor;
use super::statement::{EntryKind, Statement};

fn layout(organization: &str, s: &Statement) -> Vec<Vec<Text>> {
    let mut rows: Vec<Vec<Text>> = vec![
        vec![text(true, 18, MARGIN, organization)],
        vec![],
        vec![text(true, 14, MARGIN, "Statement")],
        vec![text(false, 11, MARGIN, format!("Client: {}", s.client_name))],
        vec![text(false, 11, MARGIN, format!("From {} to {}", s.from, s.to))],
    ];
    if s.currencies.is_empty() {
        rows.push(vec![]);
        rows.push(vec![text(false, 11, MARGIN, format!("Nothing was invoiced up to {}.", s.to))]);
    }
    for c in &s.currencies {
        rows.push(vec![]);
        rows.push(vec![text(true, 12, MARGIN, c.currency.clone())]);
        rows.push(vec![
            text(true, 10, MARGIN, "Date"),
            text(true, 10, 130, "Details"),
            text(true, 10, 330, "Invoiced"),
            text(true, 10, 410, "Paid"),
            text(true, 10, 480, "Balance"),
        ]);
        rows.push(vec![
            text(false, 10, MARGIN, s.from.to_string()),
            text(false, 10, 130, "Balance brought forward"),
            text(false, 10, 480, format_minor(c.opening)),
        ]);
        for e in &c.entries {
            let (details, column) = match e.kind {
                EntryKind::Invoice => (format!("Invoice {}", e.invoice()), 330),
                EntryKind::Payment => (format!("Payment for {}", e.invoice()), 410),
            };
            let details: String = details.chars().take(34).collect();
            rows.push(vec![
                text(false, 10, MARGIN, e.day.to_string()),
                text(false, 10, 130, details),
                text(false, 10, column, format_minor(e.amount)),
                text(false, 10, 480, format_minor(e.balance)),
            ]);
        }
        rows.push(vec![
            text(true, 11, 130, format!("Owed at the end of {}", s.to)),
            text(true, 11, 450, format!("{} {}", format_minor(c.closing), c.currency)),
        ]);
    }
    if s.capped {
        rows.push(vec![]);
        rows.push(vec![text(
            false,
            10,
            MARGIN,
            "More entries than a statement lists: choose a shorter range for the rest.",
        )]);
    }
    rows
}

/// The document's file name: `statement-2026-01-01-2026-01-31.pdf`.
pub fn file_name(s: &Statement) -> String {
    format!("statement-{}-{}.pdf", s.from, s.to)
}

/// The statement as a PDF document.
pub fn render(organization: &str, s: &Statement) -> Vec<u8> {
    document(&layout(organization, s))
}
