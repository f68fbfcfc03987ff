//! Vulnerability reports: the form at `/security/report` (bot-checked, rate limited per client
//! address, text only), what is stored, the two mails, the reporter's status page, and what
//! the operator's `clientflow security reports` commands do.
//!
//! - The report's text is sealed before it is stored (`platform::seal`, bound to the report's
//!   id): a database dump does not disclose an unfixed vulnerability.
//! - The reporter gets an acknowledgement with the report's reference and a status link. The
//!   link carries a random token of which only the SHA-256 digest is stored, so nobody can
//!   reach a report by guessing, by its reference or from the database. The status page shows
//!   the reference, the dates, the status and the operator's resolution note: never the text.
//! - The acknowledgement repeats nothing the sender typed (the form could otherwise relay
//!   someone's text to any address): it is ours, word for word, except the reference and link.
//!   It is ordinary mail (a suppressed address gets none); the notification to the security
//!   contact is critical mail, so a past bounce never silences a report.
//! - Attachments are refused (`multipart/form-data` is a 415 before anything is read into a
//!   report); the text is capped at `disclosure.report_max_chars`, the body at
//!   `server.body_limit_bytes`.

use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::abuse::botcheck::Purpose;
use crate::abuse::limits::SECURITY_REPORT_PER_IP;
use crate::abuse::web::{BotCheckView, SubmittedProof, verify_form, with_widget_policy};
use crate::access::route::{Access, RouteDef, Surface};
use crate::identity::guard::FormToken;
use crate::identity::session::RequestMeta;
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::crypto::{random_bytes, random_token, sha256};
use crate::platform::error::{DomainError, DomainResult, FieldError};
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::keys::{At, Keyring, Scope};
use crate::platform::types::Email;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/security/report", Surface::Web, Access::Public, form_page),
        route!(POST "/security/report", Surface::Web, Access::Public, submit).limited(&[SECURITY_REPORT_PER_IP]),
        route!(GET "/security/report/sent", Surface::Web, Access::Public, sent_page),
        route!(GET "/security/report/status/{token}", Surface::Web, Access::Public, status_page),
    ]
}

/// Longest summary (the column allows exactly this).
pub const MAX_SUMMARY_CHARS: usize = 200;
/// Longest name (the column allows exactly this).
pub const MAX_NAME_CHARS: usize = 200;

/// A validated report.
#[derive(Debug)]
pub struct NewReport {
    pub email: Email,
    pub name: String,
    pub summary: String,
    pub details: String,
}

fn text_field(errors: &mut Vec<FieldError>, field: &str, value: &str, required: bool, max: usize) -> String {
    let value = value.trim().replace("\r\n", "\n");
    if required && value.is_empty() {
        errors.push(FieldError::new(field, "is required"));
    } else if value.chars().count() > max {
        errors.push(FieldError::new(field, format!("is too long (at most {max} characters)")));
    } else if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.push(FieldError::new(field, "must not contain control characters"));
    }
    value
}

impl NewReport {
    pub fn parse(email: &str, name: &str, summary: &str, details: &str, max_details: usize) -> DomainResult<Self> {
        let mut errors = Vec::new();
        let email = Email::parse(email).map_err(|m| errors.push(FieldError::new("email", m))).ok();
        let name = text_field(&mut errors, "name", name, false, MAX_NAME_CHARS);
        if name.contains('\n') {
            errors.push(FieldError::new("name", "must be one line"));
        }
        let summary = text_field(&mut errors, "summary", summary, true, MAX_SUMMARY_CHARS);
        if summary.contains('\n') {
            errors.push(FieldError::new("summary", "must be one line"));
        }
        let details = text_field(&mut errors, "details", details, true, max_details);
        match email {
            Some(email) if errors.is_empty() => Ok(Self { email, name, summary, details }),
            _ => Err(DomainError::Invalid(errors)),
        }
    }
}

/// A report's reference: `SR-` and 10 characters of an alphabet without look-alikes (50 bits;
/// it names a report, it opens nothing).
fn new_reference() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<10>();
    let tail: String = bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect();
    format!("SR-{tail}")
}

fn seal_context(id: Uuid) -> String {
    format!("security-report:{id}")
}

/// What storing a report gave: its reference, and the status token (for the reporter's mail
/// only; the database keeps its digest).
pub struct Stored {
    pub id: Uuid,
    pub reference: String,
    pub status_token: String,
}

/// Stores the report and queues the acknowledgement and the notifications, in one transaction.
pub async fn record(state: &AppState, report: &NewReport, meta: &RequestMeta) -> DomainResult<Stored> {
    let id = Uuid::now_v7();
    let reference = new_reference();
    let status_token = random_token();
    let mut tx = state.db.global().await?;
    sqlx::query(
        "INSERT INTO security_reports (id, reference, reporter_email, reporter_name, summary, details_sealed, \
         status_token_digest, ip, user_agent, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(&reference)
    .bind(report.email.as_str())
    .bind(&report.name)
    .bind(&report.summary)
    .bind(
        state
            .keys
            .seal(
                Scope::Installation,
                At::new("security_reports", "details", &id.to_string()),
                report.details.as_bytes(),
            )
            .map_err(DomainError::internal)?,
    )
    .bind(sha256(status_token.as_bytes()).as_slice())
    .bind(meta.ip)
    .bind(meta.user_agent.chars().take(500).collect::<String>())
    .bind(meta.now)
    .execute(&mut *tx)
    .await?;
    let public_url = state.config.public_url();
    let status_url = format!("{public_url}/security/report/status/{status_token}");
    let ack = acknowledgement(report.email.as_str(), &reference, &status_url);
    outbox::enqueue(&mut tx, &ack, &format!("security-report-ack:{id}"), meta.now).await?;
    for to in state.config.disclosure.notify_addresses() {
        let mail = notification(&to, &reference, report, &public_url);
        outbox::enqueue(&mut tx, &mail, &format!("security-report:{id}:{to}"), meta.now).await?;
    }
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(Stored { id, reference, status_token })
}

/// The acknowledgement: nothing of what the sender typed, only the reference and the link.
pub fn acknowledgement(to: &str, reference: &str, status_url: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_string(),
        subject: format!("We received your security report {reference}"),
        body: format!(
            "Thank you for reporting a security issue. We received it as {reference}.\n\n\
             We read every report and will reply to this address. You can see where it stands at\n\
             {status_url}\n\n\
             Keep that link to yourself: anyone who has it sees the report's status.\n\n\
             If you did not send a report, ignore this message.\n\n-- \nClientFlow security\n"
        ),
        category: Category::Transactional,
        org_name: None,
    }
}

/// The notification to the security contact. The report's text is in the body only; the
/// subject is ours (a header built from a stranger's input would be an injection surface).
fn notification(to: &str, reference: &str, report: &NewReport, public_url: &str) -> OutgoingMail {
    let from =
        if report.name.is_empty() { report.email.to_string() } else { format!("{} <{}>", report.name, report.email) };
    OutgoingMail {
        to: to.to_string(),
        subject: format!("New security report {reference}"),
        body: format!(
            "A security report arrived through {public_url}/security/report.\n\n\
             Reference: {reference}\nFrom: {from} (not verified)\nSummary: {}\n\n{}\n\n\
             Close it with `clientflow security reports close {reference}` once answered.\n\n-- \nClientFlow\n",
            report.summary, report.details
        ),
        category: Category::Critical,
        org_name: None,
    }
}

// ---- the operator's view (`clientflow security reports`) ----

/// A report as the operator lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    pub reference: String,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub reporter_email: String,
    pub summary: String,
}

/// A report as the operator reads it, its text opened.
#[derive(Debug, Clone, Serialize)]
pub struct ReportDetail {
    #[serde(flatten)]
    pub row: ReportRow,
    pub reporter_name: String,
    pub details: String,
    pub ip: Option<String>,
    pub user_agent: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub resolution: String,
}

type Row = (Uuid, String, String, OffsetDateTime, String, String);

/// The newest reports, optionally in one status.
pub async fn list(conn: &mut PgConnection, status: Option<&str>, limit: i64) -> Result<Vec<ReportRow>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, reference, status, created_at, reporter_email, summary FROM security_reports \
         WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(_, reference, status, created_at, reporter_email, summary)| ReportRow {
            reference,
            status,
            created_at,
            reporter_email,
            summary,
        })
        .collect())
}

/// One report, its text opened with the installation's key.
pub async fn show(conn: &mut PgConnection, keys: &Keyring, reference: &str) -> anyhow::Result<Option<ReportDetail>> {
    type Full = (
        Uuid,
        String,
        String,
        OffsetDateTime,
        String,
        String,
        String,
        Vec<u8>,
        Option<String>,
        String,
        Option<OffsetDateTime>,
        String,
    );
    let row: Option<Full> = sqlx::query_as(
        "SELECT id, reference, status, created_at, reporter_email, summary, reporter_name, details_sealed, \
         host(ip), user_agent, closed_at, resolution FROM security_reports WHERE reference = $1",
    )
    .bind(reference.trim().to_ascii_uppercase())
    .fetch_optional(conn)
    .await?;
    let Some((
        id,
        reference,
        status,
        created_at,
        reporter_email,
        summary,
        reporter_name,
        sealed,
        ip,
        user_agent,
        closed_at,
        resolution,
    )) = row
    else {
        return Ok(None);
    };
    let details = keys
        .open(
            Scope::Installation,
            At::new("security_reports", "details", &id.to_string()),
            &sealed,
            Some(&seal_context(id)),
        )
        .map_err(|e| {
            anyhow::anyhow!("report {reference}: {e} (are this installation's master key and key store in use?)")
        })?;
    Ok(Some(ReportDetail {
        row: ReportRow { reference, status, created_at, reporter_email, summary },
        reporter_name,
        details: String::from_utf8_lossy(&details).into_owned(),
        ip,
        user_agent,
        closed_at,
        resolution,
    }))
}

/// Closes an open report with a note the reporter sees on their status page. `None`: no such
/// report; `Some(false)`: it was closed already.
pub async fn close(
    conn: &mut PgConnection,
    reference: &str,
    resolution: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Option<bool>> {
    let resolution = resolution.trim();
    if resolution.chars().count() > 2000 || resolution.chars().any(|c| c.is_control() && c != '\n') {
        anyhow::bail!("--note must be at most 2000 characters of text");
    }
    let reference = reference.trim().to_ascii_uppercase();
    let updated = sqlx::query(
        "UPDATE security_reports SET status = 'closed', closed_at = $2, resolution = $3 \
         WHERE reference = $1 AND status = 'open'",
    )
    .bind(&reference)
    .bind(now)
    .bind(resolution)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 1 {
        return Ok(Some(true));
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM security_reports WHERE reference = $1)")
        .bind(&reference)
        .fetch_one(conn)
        .await?;
    Ok(exists.then_some(false))
}

// ---- pages ----

#[derive(Template)]
#[template(path = "disclosure/report.html")]
struct FormPage {
    csrf: String,
    email: String,
    name: String,
    summary: String,
    details: String,
    max_details: usize,
    bot: BotCheckView,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn form_page(State(state): State<AppState>, FormToken(csrf): FormToken) -> AppResult<Response> {
    let page = FormPage {
        csrf,
        email: String::new(),
        name: String::new(),
        summary: String::new(),
        details: String::new(),
        max_details: state.config.disclosure.report_max_chars,
        bot: BotCheckView::new(&state.bot_check, Purpose::SecurityReport),
        message: None,
        errors: vec![],
    };
    Ok(with_widget_policy(&state, crate::web::render(&page)?.into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    details: String,
    #[serde(rename = "cf-turnstile-response", default)]
    turnstile_response: Option<String>,
    #[serde(default)]
    pow_challenge: Option<String>,
    #[serde(default)]
    pow_solution: Option<String>,
}

async fn submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    form: Result<Form<ReportForm>, FormRejection>,
) -> AppResult<Response> {
    let Form(form) = form.map_err(|e| match e {
        FormRejection::InvalidFormContentType(_) => AppError::UnsupportedMediaType(
            "Attachments are not accepted: describe the issue in the text, and link to anything larger.".into(),
        ),
        other => AppError::BadRequest(format!("The form could not be read: {}", other.body_text())),
    })?;
    let proof = SubmittedProof {
        turnstile_response: form.turnstile_response.clone(),
        pow_challenge: form.pow_challenge.clone(),
        pow_solution: form.pow_solution.clone(),
    };
    let max_details = state.config.disclosure.report_max_chars;
    let result = async {
        let report = NewReport::parse(&form.email, &form.name, &form.summary, &form.details, max_details)?;
        verify_form(&state, proof, meta.ip, Purpose::SecurityReport).await.map_err(DomainError::from)?;
        record(&state, &report, &meta).await.map_err(AppError::from)
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/security/report/sent").into_response()),
        Err(e) => {
            let (status, message, errors) = crate::web::public_form_failure(e)?;
            let page = FormPage {
                csrf,
                email: form.email,
                name: form.name,
                summary: form.summary,
                details: form.details,
                max_details,
                bot: BotCheckView::new(&state.bot_check, Purpose::SecurityReport),
                message,
                errors,
            };
            Ok(with_widget_policy(&state, crate::web::page_with_status(status, &page)?))
        }
    }
}

#[derive(Template)]
#[template(path = "disclosure/report_sent.html")]
struct SentPage;

async fn sent_page() -> AppResult<Response> {
    Ok(crate::web::render(&SentPage)?.into_response())
}

#[derive(Template)]
#[template(path = "disclosure/report_status.html")]
struct StatusPage {
    reference: String,
    received: String,
    status: String,
    closed: Option<String>,
    resolution: String,
}

/// The reporter's view of their own report, found by the digest of the token in their link.
async fn status_page(State(state): State<AppState>, Path(token): Path<String>) -> AppResult<Response> {
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(AppError::not_found());
    }
    let mut tx = state.db.global().await?;
    let row: Option<(String, OffsetDateTime, String, Option<OffsetDateTime>, String)> = sqlx::query_as(
        "SELECT reference, created_at, status, closed_at, resolution FROM security_reports WHERE status_token_digest = $1",
    )
    .bind(sha256(token.as_bytes()).as_slice())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (reference, created_at, status, closed_at, resolution) = row.ok_or(AppError::not_found())?;
    let day = |t: OffsetDateTime| crate::backup::rfc3339(t);
    let status = if status == "closed" { "Closed" } else { "Open: we are looking into it" }.to_string();
    let page = StatusPage { reference, received: day(created_at), status, closed: closed_at.map(day), resolution };
    let mut res = crate::web::render(&page)?.into_response();
    // The link is the reporter's alone: no cache keeps it, no page it links to learns it.
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    res.headers_mut().insert(axum::http::header::REFERRER_POLICY, axum::http::HeaderValue::from_static("no-referrer"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_parsed_at_the_edge() {
        let ok = NewReport::parse("R@Example.com", " Eve ", "XSS in search", "Steps:\r\n1. …", 100).unwrap();
        assert_eq!(
            (ok.email.as_str(), ok.name.as_str(), ok.details.as_str()),
            ("r@example.com", "Eve", "Steps:\n1. …")
        );
        let Err(DomainError::Invalid(errors)) = NewReport::parse("nope", "a\nb", "", "", 100) else { panic!() };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "name", "summary", "details"]);
        assert!(NewReport::parse("r@example.com", "", "s", &"x".repeat(101), 100).is_err());
        assert!(NewReport::parse("r@example.com", "", "s\u{7}", "d", 100).is_err());
        assert!(NewReport::parse("r@example.com", "", &"s".repeat(201), "d", 100).is_err());
    }

    #[test]
    fn references_fit_the_column_and_the_acknowledgement_repeats_nothing_typed() {
        for _ in 0..100 {
            let r = new_reference();
            assert!(r.len() == 13 && r[3..].bytes().all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)), "{r}");
        }
        let mail = acknowledgement("r@example.com", "SR-ABCDEFGHJK", "https://cf.test/security/report/status/t");
        assert_eq!(mail.subject, "We received your security report SR-ABCDEFGHJK");
        assert_eq!(mail.category, Category::Transactional);
    }
}
