//! The public contact form of an organization (`/contact/{slug}`): anyone may write to an
//! organization that has enabled it, each submission is stored in the organization's
//! `contact_submissions` and announced by mail to its contact address (through the outbox, in
//! the same transaction), and the form is rate limited per client address and bot-checked.
//!
//! The visitor is not a member, so the organization is reached through the tenant door's
//! contact-form capability (`platform::db::tenant::contact_form`): a disabled form and an
//! unknown slug both answer 404. Members with `settings.manage` read the submissions at
//! `/o/{org}/contact-submissions`. The pages are in `web.rs`.

use uuid::Uuid;

use crate::access::{OrgPrincipal, OrgTx};
use crate::identity::session::RequestMeta;
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::error::{DomainError, DomainResult, FieldError};
use crate::platform::types::{Email, parse_name};
use crate::state::AppState;

mod web;
pub use web::routes;

/// Longest message accepted (the column allows exactly this).
pub const MAX_MESSAGE_CHARS: usize = 5000;

/// A validated submission.
pub struct Submission {
    pub name: String,
    pub email: Email,
    pub message: String,
}

impl Submission {
    pub fn parse(name: &str, email: &str, message: &str) -> DomainResult<Self> {
        let mut errors = Vec::new();
        let name = parse_name(name).map_err(|m| errors.push(FieldError::new("name", m))).ok();
        let email = Email::parse(email).map_err(|m| errors.push(FieldError::new("email", m))).ok();
        let message = message.trim().replace("\r\n", "\n");
        if message.is_empty() {
            errors.push(FieldError::new("message", "is required"));
        } else if message.chars().count() > MAX_MESSAGE_CHARS {
            errors.push(FieldError::new("message", format!("is too long (at most {MAX_MESSAGE_CHARS} characters)")));
        } else if message.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            errors.push(FieldError::new("message", "must not contain control characters"));
        }
        match (name, email) {
            (Some(name), Some(email)) if errors.is_empty() => Ok(Self { name, email, message }),
            _ => Err(DomainError::Invalid(errors)),
        }
    }
}

/// Stores the submission and queues the notification to the organization's contact address,
/// in one transaction. The form's settings are read again inside it, so a form disabled a
/// moment ago takes nothing more.
pub async fn record(
    state: &AppState,
    principal: &OrgPrincipal,
    submission: &Submission,
    meta: &RequestMeta,
) -> DomainResult<()> {
    let mut tx = OrgTx::begin(&state.db, principal).await?;
    let row: Option<(String, String, bool, Option<String>)> =
        sqlx::query_as("SELECT name, slug, contact_form_enabled, contact_email FROM organizations WHERE id = $1")
            .bind(tx.org_id())
            .fetch_optional(&mut *tx)
            .await?;
    let Some((org_name, slug, true, Some(to))) = row else {
        return Err(DomainError::NotFound);
    };
    // Not while the organization moves to another region: stored now, the message would stay
    // in the copy the move leaves behind (`access::directory::hold_for_writing`).
    if !crate::access::directory::hold_for_writing(&state.db, &mut tx, principal.region(), principal.org_id()).await? {
        return Err(DomainError::Unavailable(format!(
            "{org_name} can't take messages for a few minutes while its data is moved. Your message is still \
             below: send it again shortly."
        )));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO contact_submissions (organization_id, id, name, email, message, ip, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(&submission.name)
    .bind(submission.email.as_str())
    .bind(&submission.message)
    .bind(meta.ip)
    .bind(&meta.user_agent)
    .bind(meta.now)
    .execute(&mut *tx)
    .await?;
    let mail = notification(&to, &org_name, &format!("{}/contact/{slug}", state.config.public_url()), submission);
    outbox::enqueue(&mut tx, &mail, &format!("contact:{id}"), meta.now).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// The message to the organization. What the visitor wrote goes in the body only: the subject
/// is ours (a header built from visitor input would be a header-injection surface).
fn notification(to: &str, org_name: &str, form_url: &str, s: &Submission) -> OutgoingMail {
    OutgoingMail {
        to: to.to_string(),
        subject: format!("New message through the contact form of {org_name}"),
        body: format!(
            "Someone wrote to {org_name} through the contact form at {form_url}.\n\n\
             Name: {}\nEmail: {}\n\n{}\n\n\
             Reply to them at the address above; it was not verified.\n\n-- \nClientFlow\n",
            s.name, s.email, s.message
        ),
        category: Category::Transactional,
        org_name: Some(org_name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_are_parsed_at_the_edge() {
        let ok = Submission::parse(" Ada ", "ADA@example.com", "Hello\r\nthere").unwrap();
        assert_eq!(ok.name, "Ada");
        assert_eq!(ok.email.as_str(), "ada@example.com");
        assert_eq!(ok.message, "Hello\nthere");
        let Err(DomainError::Invalid(errors)) = Submission::parse("", "nope", "") else { panic!("accepted") };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "message"]);
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert!(Submission::parse("A", "a@example.com", &long).is_err());
        assert!(Submission::parse("A", "a@example.com", "bell \u{7}").is_err());
    }

    #[test]
    fn the_notification_keeps_visitor_input_out_of_the_headers() {
        let s = Submission::parse("Mallory", "m@example.com", "Subject: spoofed\nBcc: everyone").unwrap_or_else(|e| {
            panic!("{e:?}");
        });
        let mail = notification("team@acme.test", "Acme", "https://cf.test/contact/acme", &s);
        assert_eq!(mail.subject, "New message through the contact form of Acme");
        assert!(mail.body.contains("Bcc: everyone"));
        assert_eq!(mail.to, "team@acme.test");
    }
}
