//! The mail area's routes: unsubscribe links and the provider's webhook.
//!
//! `GET /u/{token}` only shows what the link would do (link scanners and mail-security
//! gateways fetch links; they must not unsubscribe anyone). `POST /u/{token}` is RFC 8058's
//! one-click request: mail clients send it with no cookie and no CSRF token, so it is declared
//! on the operations surface, which has no CSRF guard; the sealed token (address, category,
//! expiry) is its whole authorization (`mail::unsubscribe`). It changes one preference: that
//! address stops receiving that category. `GET /u/{token}/preferences` shows the preference and
//! lets the person subscribe again (`POST /u/{token}/resubscribe`, authorized the same way).
//! Every unsubscribe route is rate limited per client address (`unsubscribe-ip`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::category::Category;
use super::suppression::{self, Reason};
use super::unsubscribe::{Subscription, TokenError};
use crate::abuse::limits::UNSUBSCRIBE_PER_IP;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/u/{token}", Surface::Web, Access::Public, confirm).limited(&[UNSUBSCRIBE_PER_IP]),
        route!(POST "/u/{token}", Surface::Ops, Access::Public, one_click).limited(&[UNSUBSCRIBE_PER_IP]),
        route!(GET "/u/{token}/preferences", Surface::Web, Access::Public, preferences).limited(&[UNSUBSCRIBE_PER_IP]),
        route!(POST "/u/{token}/resubscribe", Surface::Ops, Access::Public, resubscribe).limited(&[UNSUBSCRIBE_PER_IP]),
        route!(POST "/webhooks/resend", Surface::Ops, Access::Public, super::webhook::resend),
    ]
}

#[derive(Template)]
#[template(path = "mail/unsubscribe.html")]
struct Page {
    title: String,
    paragraphs: Vec<String>,
    /// (action, button label): a POST form.
    form: Option<(String, String)>,
    link: Option<(String, String)>,
}

fn page(status: StatusCode, page: Page) -> AppResult<Response> {
    crate::web::page_with_status(status, &page)
}

/// The token, or the page that says why it can't be used.
fn open(state: &AppState, token: &str) -> Result<Subscription, Box<Response>> {
    state.unsubscribe.open(token, state.clock.now()).map_err(|e| {
        let (status, title, text) = match e {
            TokenError::Expired => (
                StatusCode::GONE,
                "This link has expired",
                "Unsubscribe links work for a limited time. Use the link in a more recent message, \
                 or change your email settings from your account.",
            ),
            TokenError::Invalid => (
                StatusCode::BAD_REQUEST,
                "This link is not valid",
                "The unsubscribe link is incomplete or was changed. Copy the whole link from the message.",
            ),
        };
        let p = Page { title: title.into(), paragraphs: vec![text.into()], form: None, link: None };
        Box::new(page(status, p).unwrap_or_else(IntoResponse::into_response))
    })
}

async fn unsubscribed(state: &AppState, s: &Subscription) -> AppResult<bool> {
    let mut tx = state.db.global().await?;
    let list = suppression::of_address(&mut tx, &s.address).await?;
    tx.commit().await?;
    Ok(list.iter().any(|r| r.reason == Reason::Unsubscribe && r.category == s.category.as_str()))
}

async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> AppResult<Response> {
    let s = match open(&state, &token) {
        Ok(s) => s,
        Err(res) => return Ok(*res),
    };
    if unsubscribed(&state, &s).await? {
        return preferences_page(&token, &s, true);
    }
    page(
        StatusCode::OK,
        Page {
            title: "Unsubscribe?".into(),
            paragraphs: vec![format!(
                "{} will stop receiving {}. Sign-in, security and billing messages are always sent.",
                s.address,
                s.category.describe()
            )],
            form: Some((format!("/u/{token}"), "Unsubscribe".into())),
            link: None,
        },
    )
}

async fn one_click(State(state): State<AppState>, Path(token): Path<String>) -> AppResult<Response> {
    let s = match open(&state, &token) {
        Ok(s) => s,
        Err(res) => return Ok(*res),
    };
    let now = state.clock.now();
    let mut tx = state.db.global().await?;
    suppression::add(&mut tx, &s.address, Reason::Unsubscribe, Some(s.category), "unsubscribe link", "recipient", now)
        .await?;
    tx.commit().await?;
    page(
        StatusCode::OK,
        Page {
            title: "You are unsubscribed".into(),
            paragraphs: vec![format!("{} will no longer receive {}.", s.address, s.category.describe())],
            form: None,
            link: Some((format!("/u/{token}/preferences"), "Changed your mind? Subscribe again".into())),
        },
    )
}

fn preferences_page(token: &str, s: &Subscription, unsubscribed: bool) -> AppResult<Response> {
    let (state_line, form) = if unsubscribed {
        (
            format!("{} is unsubscribed from {}.", s.address, s.category.describe()),
            (format!("/u/{token}/resubscribe"), "Subscribe again".to_string()),
        )
    } else {
        (
            format!("{} receives {}.", s.address, s.category.describe()),
            (format!("/u/{token}"), "Unsubscribe".to_string()),
        )
    };
    page(
        StatusCode::OK,
        Page {
            title: "Email preferences".into(),
            paragraphs: vec![state_line, "Sign-in, security and billing messages are always sent.".into()],
            form: Some(form),
            link: None,
        },
    )
}

async fn preferences(State(state): State<AppState>, Path(token): Path<String>) -> AppResult<Response> {
    let s = match open(&state, &token) {
        Ok(s) => s,
        Err(res) => return Ok(*res),
    };
    let unsubscribed = unsubscribed(&state, &s).await?;
    preferences_page(&token, &s, unsubscribed)
}

async fn resubscribe(State(state): State<AppState>, Path(token): Path<String>) -> AppResult<Response> {
    let s = match open(&state, &token) {
        Ok(s) => s,
        Err(res) => return Ok(*res),
    };
    let now = state.clock.now();
    let mut tx = state.db.global().await?;
    suppression::remove(
        &mut tx,
        &s.address,
        Some(Reason::Unsubscribe),
        Some(s.category),
        "preferences page",
        "recipient",
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/u/{token}/preferences")).into_response())
}

/// For the account page: what stops mail to an address, in words.
pub fn describe(list: &[suppression::Suppression]) -> Vec<String> {
    list.iter()
        .map(|s| match (s.reason, Category::parse(&s.category)) {
            (Reason::Unsubscribe, Some(c)) => format!("Unsubscribed from {}.", c.describe()),
            (r, _) => format!("Since {}: {}.", s.created_at.date(), r.describe()),
        })
        .collect()
}
