//! How a repeat shows on the invoice's page and in the list of repeats, and its form as typed
//! (shared by the invoice pages and the repeat pages).

use serde::Deserialize;

use crate::work::money::format_minor;
use crate::work::repeats::Repeat;

/// A repeat as the invoice's page and the list show it.
pub struct RepeatView {
    pub invoice_id: String,
    pub invoice: String,
    pub client: String,
    pub amount: String,
    /// "A copy every month, counted from 2027-01-01 until 2027-12-31, sent to the client".
    pub schedule: String,
    /// "Running", "Paused" or "Ended".
    pub state: &'static str,
    /// The next copy's day, while it runs.
    pub next: String,
    pub made: i32,
    pub last_invoice_id: String,
    pub problem: String,
    pub paused: bool,
    pub ended: bool,
}

impl RepeatView {
    pub fn of(r: &Repeat) -> Self {
        let until = r.ends_on.map(|d| format!(" until {d}")).unwrap_or_default();
        let sending = if r.send { "sent to the client by email" } else { "left as a draft to check and send" };
        Self {
            invoice_id: r.invoice_id.to_string(),
            invoice: r.invoice_name(),
            client: r.client.clone(),
            amount: format!("{} {}", format_minor(r.total_minor), r.currency),
            schedule: format!("A copy {}, counted from {}{until}, {sending}", r.interval(), r.starts_on),
            state: if r.ended {
                "Ended"
            } else if r.paused {
                "Paused"
            } else {
                "Running"
            },
            next: if r.paused || r.ended { String::new() } else { r.next_on.to_string() },
            made: r.made,
            last_invoice_id: r.last_invoice_id.map(|i| i.to_string()).unwrap_or_default(),
            problem: r.problem.clone().unwrap_or_default(),
            paused: r.paused,
            ended: r.ended,
        }
    }
}

/// The "Repeat" form as typed.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepeatForm {
    #[serde(default)]
    pub every: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub starts_on: String,
    #[serde(default)]
    pub ends_on: String,
    #[serde(default)]
    pub send: String,
}

/// The form that changes a repeat, as the repeat is or as typed.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepeatChangeForm {
    #[serde(default)]
    pub every: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub next_on: String,
    #[serde(default)]
    pub ends_on: String,
    #[serde(default)]
    pub send: String,
}

impl RepeatChangeForm {
    pub fn of(r: &Repeat) -> Self {
        Self {
            every: r.every.to_string(),
            unit: r.unit.as_str().into(),
            next_on: r.next_on.to_string(),
            ends_on: r.ends_on.map(|d| d.to_string()).unwrap_or_default(),
            send: if r.send { "1" } else { "" }.into(),
        }
    }
}

impl RepeatForm {
    /// The form as it starts on an invoice's page: every month, counted from the invoice's
    /// issue date.
    pub fn suggested() -> Self {
        Self { every: "1".into(), unit: "month".into(), ..Self::default() }
    }
}
