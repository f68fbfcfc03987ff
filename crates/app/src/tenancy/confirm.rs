//! Confirmation before anything destructive. A destructive form's handler takes [`Confirmed`]:
//! a submission that says `confirm=yes` goes through; any other is answered with a page that
//! asks, naming what will be lost, and repeats the form with the confirmation (so it works
//! without JavaScript; with it, `app.js` asks in a dialog first and adds `confirm=yes`).
//! The check runs after the route's guard, so who may not act gets the same refusal as ever.

use askama::Template;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::frame::OrgNav;
use super::guard::OrgAccess;
use crate::access::session::CurrentSession;
use crate::platform::http::error::{AppError, RenderedByHandler};

/// The person confirmed the destructive action.
pub struct Confirmed;

#[derive(Template)]
#[template(path = "tenancy/confirm.html")]
struct ConfirmPage {
    org: OrgNav,
    csrf: String,
    action: String,
    question: &'static str,
    consequence: &'static str,
    button: &'static str,
    back: String,
}

/// What each destructive route asks, what it means, and its button.
fn wording(route: &str) -> (&'static str, &'static str, &'static str) {
    let end = route.rsplit('/').nth(1).unwrap_or("");
    match (end, route.ends_with("/remove")) {
        ("{invoice}", _) if route.ends_with("/pay") => (
            "Mark this invoice paid in full?",
            "What it still owes is recorded as a payment today, and it leaves the list of what is owed. Deleting that payment makes it owed again.",
            "Mark paid",
        ),
        ("repeat", _) => (
            "Stop repeating this invoice?",
            "No more copies of it are made; the copies made so far stay. To go on later, set up a new repeat.",
            "Stop repeating",
        ),
        ("{payment}", _) => (
            "Delete this payment?",
            "What it paid is owed again, and a paid invoice is sent (owed) again. This can't be undone.",
            "Delete payment",
        ),
        ("{invoice}", _) if route.ends_with("/void") => (
            "Void this invoice?",
            "It stays on record as void: nothing is owed on it, its time and expenses can be billed again, and it can't be sent or changed afterwards.",
            "Void invoice",
        ),
        (_, true) if route.contains("/members/") && route.contains("/projects/") => (
            "Remove this person from the project?",
            "They will no longer see it unless their role shows every project.",
            "Remove from project",
        ),
        (_, true) => ("Remove this member?", "They lose access to the organization at once.", "Remove member"),
        ("{client}", _) => (
            "Delete this client?",
            "Its contacts go with it. This can't be undone; archiving keeps it instead.",
            "Delete client",
        ),
        ("{contact}", _) => ("Remove this contact?", "This can't be undone.", "Remove contact"),
        ("{project}", _) => (
            "Delete this project?",
            "Its board, tasks, time, expenses and files go with it. This can't be undone.",
            "Delete project",
        ),
        ("{column}", _) => ("Delete this column?", "This can't be undone.", "Delete column"),
        ("{entry}", _) => ("Delete this time entry?", "This can't be undone.", "Delete time entry"),
        ("{expense}", _) => ("Delete this expense?", "This can't be undone.", "Delete expense"),
        ("{comment}", _) => ("Delete this comment?", "This can't be undone.", "Delete comment"),
        ("{task}", _) => {
            ("Delete this task?", "Its subtasks and comments go with it. This can't be undone.", "Delete task")
        }
        ("{file}", _) => {
            ("Delete this file?", "Links already shared stop working. This can't be undone.", "Delete file")
        }
        ("{invoice}", _) => ("Delete this draft invoice?", "This can't be undone.", "Delete invoice"),
        _ => ("Are you sure?", "This can't be undone.", "Yes, go ahead"),
    }
}

impl<S: Send + Sync> FromRequest<S> for Confirmed {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| AppError::PayloadTooLarge.into_response())?;
        if form_urlencoded::parse(&bytes).any(|(k, v)| k == "confirm" && v == "yes") {
            return Ok(Confirmed);
        }
        let access = parts.extensions.get::<OrgAccess>().ok_or_else(|| AppError::not_found().into_response())?;
        let csrf = parts.extensions.get::<CurrentSession>().map(|s| s.csrf_token.clone()).unwrap_or_default();
        let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
        let (question, consequence, button) = wording(&route);
        let action = parts.uri.path().to_string();
        // Back to where the form was, when it was one of our pages; else the organization.
        let back = parts
            .headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.find("/o/").map(|i| r[i..].to_string()))
            .filter(|p| p.starts_with(&format!("/o/{}/", access.slug)) && !p.contains(['"', '<', '>']))
            .unwrap_or_else(|| format!("/o/{}", access.slug));
        let page = ConfirmPage { org: OrgNav::of(access), csrf, action, question, consequence, button, back };
        let html = crate::web::render(&page).map_err(IntoResponse::into_response)?;
        let mut res = (StatusCode::OK, html).into_response();
        res.extensions_mut().insert(RenderedByHandler);
        Err(res)
    }
}
