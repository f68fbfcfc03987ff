//! Web pages for accounts: sign-up, sign-in, second factor, reset, Google, account security.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::Duration;

use super::guard::FormToken;
use super::service::{self, SignedIn};
use super::session::{
    self, CurrentSession, DEVICE_COOKIE, DEVICE_LIFETIME, OIDC_COOKIE, RequestMeta, SESSION_COOKIE, Stage,
};
use super::{events, google, return_to, when};
use crate::abuse::botcheck::Purpose;
use crate::abuse::limits::{
    AUTH_PER_IP, MAIL_PER_ACCOUNT, SECOND_FACTOR_PER_USER, SIGN_IN_PER_ACCOUNT, SIGNUP_PER_IP, TOKEN_PER_ACCOUNT,
};
use crate::abuse::web::{BotCheckView, SubmittedProof};
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::platform::secret::Secret;
use crate::route;
use crate::state::AppState;
use crate::web::page_with_status;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/login", Surface::Web, Access::Public, login_page),
        route!(POST "/login", Surface::Web, Access::Public, login_submit).limited(&[AUTH_PER_IP, SIGN_IN_PER_ACCOUNT]),
        route!(GET "/login/two-factor", Surface::Web, Access::SecondFactor, two_factor_page),
        route!(POST "/login/two-factor", Surface::Web, Access::SecondFactor, two_factor_submit)
            .limited(&[AUTH_PER_IP, SECOND_FACTOR_PER_USER]),
        // Starting Google sign-in stores a state row: anonymous writes are limited too.
        route!(GET "/login/google", Surface::Web, Access::Public, google_start).limited(&[AUTH_PER_IP]),
        route!(GET "/login/google/callback", Surface::Web, Access::Public, google_callback).limited(&[AUTH_PER_IP]),
        route!(GET "/logout", Surface::Web, Access::AnySession, logout_page),
        route!(POST "/logout", Surface::Web, Access::AnySession, logout),
        route!(GET "/signup", Surface::Web, Access::Public, signup_page),
        route!(POST "/signup", Surface::Web, Access::Public, signup_submit).limited(&[
            SIGNUP_PER_IP,
            AUTH_PER_IP,
            MAIL_PER_ACCOUNT,
        ]),
        route!(GET "/signup/check-email", Surface::Web, Access::Public, signup_sent),
        route!(GET "/verify-email", Surface::Web, Access::Public, verify_page),
        // Confirming an address (or an address change) signs the person in: a sign-in path.
        route!(POST "/verify-email", Surface::Web, Access::Public, verify_submit).limited(&[AUTH_PER_IP]),
        route!(GET "/forgot-password", Surface::Web, Access::Public, forgot_page),
        route!(POST "/forgot-password", Surface::Web, Access::Public, forgot_submit)
            .limited(&[AUTH_PER_IP, MAIL_PER_ACCOUNT]),
        route!(GET "/forgot-password/sent", Surface::Web, Access::Public, forgot_sent),
        route!(GET "/reset-password", Surface::Web, Access::Public, reset_page),
        route!(POST "/reset-password", Surface::Web, Access::Public, reset_submit)
            .limited(&[AUTH_PER_IP, TOKEN_PER_ACCOUNT]),
        route!(GET "/account/security", Surface::Web, Access::SignedIn, security_page),
        route!(POST "/account/password", Surface::Web, Access::SignedIn, change_password),
        route!(POST "/account/email", Surface::Web, Access::SignedIn, change_email),
        route!(POST "/account/email/deliverability", Surface::Web, Access::SignedIn, clear_bounce),
        route!(GET "/account/email/confirm", Surface::Web, Access::Public, email_confirm_page),
        route!(POST "/account/email/confirm", Surface::Web, Access::Public, email_confirm_submit)
            .limited(&[AUTH_PER_IP]),
        route!(GET "/account/two-factor/setup", Surface::Web, Access::SignedIn, totp_setup_page),
        route!(POST "/account/two-factor/setup", Surface::Web, Access::SignedIn, totp_setup_submit),
        route!(POST "/account/two-factor/disable", Surface::Web, Access::SignedIn, totp_disable),
        route!(POST "/account/two-factor/recovery-codes", Surface::Web, Access::SignedIn, recovery_codes),
        route!(POST "/account/sessions/{id}/revoke", Surface::Web, Access::SignedIn, revoke_session),
        route!(POST "/account/sessions/revoke-others", Surface::Web, Access::SignedIn, revoke_others),
        route!(POST "/account/delete", Surface::Web, Access::SignedIn, request_account_deletion),
        // A departing session (an account scheduled for deletion) gets only these two.
        route!(GET "/account/deletion", Surface::Web, Access::DeletionPending, account_deletion_page),
        route!(POST "/account/deletion/cancel", Surface::Web, Access::DeletionPending, cancel_account_deletion),
    ]
}

fn page<T: Template>(page: &T) -> AppResult<Response> {
    Ok(crate::web::render(page)?.into_response())
}

/// `Retry-After` for a throttled form, kept when the form is re-rendered.
fn with_retry_after(mut res: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    res
}

fn retry_after(e: &AppError) -> Option<u64> {
    match e {
        AppError::Domain(DomainError::Throttled { retry_after_secs, .. })
        | AppError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
    }
}

/// Expected failures shown on the form; anything else propagates (and is rendered as an
/// error page).
fn form_failure(e: impl Into<AppError>) -> Result<(StatusCode, Option<String>, Vec<FieldError>), AppError> {
    let e = e.into();
    let status = e.status();
    match e {
        AppError::Domain(DomainError::Invalid(errors)) => Ok((status, None, errors)),
        AppError::Unauthorized(m)
        | AppError::BadRequest(m)
        | AppError::Domain(
            DomainError::NotAuthenticated(m)
            | DomainError::Forbidden(m)
            | DomainError::Malformed(m)
            | DomainError::Conflict(m)
            | DomainError::Unavailable(m)
            | DomainError::Throttled { message: m, .. },
        ) => Ok((status, Some(m), vec![])),
        other => Err(other),
    }
}

/// Where to go after signing in: every `next` goes through here (`return_to`).
fn next_path(state: &AppState, raw: Option<&str>) -> String {
    return_to::local_path(&state.config.public_url(), raw)
}

/// A query parameter, decoded leniently (invalid UTF-8 becomes U+FFFD): a hostile `next` falls
/// back to the default page instead of failing the request.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `path`, carrying `next` when it isn't the default page.
fn with_next(path: &str, next: &str) -> String {
    if next == return_to::DEFAULT {
        path.to_string()
    } else {
        format!("{path}?next={}", percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC))
    }
}

fn with_cookies(mut res: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

/// The redirect after a session is established, carrying its cookies: to `next` (a path that
/// went through [`next_path`]), or — for a pending session — to the second-factor page, which
/// carries `next` on.
fn signed_in_response(signed_in: SignedIn, next: &str) -> Response {
    let mut cookies = vec![session::set_cookie(SESSION_COOKIE, &signed_in.session.token, None)];
    if let Some(device) = &signed_in.device_token {
        cookies.push(session::set_cookie(DEVICE_COOKIE, device, Some(DEVICE_LIFETIME)));
    }
    let target = match signed_in.session.stage {
        Stage::Pending => with_next("/login/two-factor", next),
        Stage::Departing => super::guard::DEPARTING_PAGE.to_string(),
        Stage::Complete => next.to_string(),
    };
    with_cookies(Redirect::to(&target).into_response(), &cookies)
}

fn device(headers: &HeaderMap) -> Option<String> {
    crate::access::asking::read_cookie(headers, DEVICE_COOKIE)
}

// ---- sign-in ----

#[derive(Template)]
#[template(path = "identity/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    email: String,
    google: bool,
    /// The Google link, carrying `next`.
    google_href: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

impl LoginPage {
    fn new(state: &AppState, csrf: String, next: String, email: String) -> Self {
        Self {
            csrf,
            google_href: with_next("/login/google", &next),
            next,
            email,
            google: state.google.is_some(),
            message: None,
            errors: vec![],
        }
    }
}

async fn login_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> AppResult<Response> {
    let next = next_path(&state, query_param(query.as_deref(), "next").as_deref());
    if let Some(s) = super::guard::current_session(&state, &headers).await?
        && s.stage == Stage::Complete
    {
        return Ok(Redirect::to(&next).into_response());
    }
    let mut login = LoginPage::new(&state, csrf, next, String::new());
    if query_param(query.as_deref(), "error").as_deref() == Some("google") {
        login.message = Some("Google sign-in failed. Try again, or use your password.".to_string());
    }
    page(&login)
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

async fn login_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let next = next_path(&state, form.next.as_deref());
    match service::sign_in(&state, &meta, &form.email, &Secret::new(form.password), device(&headers).as_deref()).await {
        Ok(signed_in) => Ok(signed_in_response(signed_in, &next)),
        Err(e) => {
            let e = AppError::from(e);
            let retry = retry_after(&e);
            let (status, message, errors) = form_failure(e)?;
            let res = page_with_status(
                status,
                &LoginPage { message, errors, ..LoginPage::new(&state, csrf, next, form.email) },
            )?;
            Ok(with_retry_after(res, retry))
        }
    }
}

#[derive(Template)]
#[template(path = "identity/two_factor.html")]
struct TwoFactorPage {
    csrf: String,
    next: String,
    /// The pending session comes from a password reset, which the code completes.
    resetting: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn two_factor_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let resetting = current.method == super::session::Method::Reset;
    let next = next_path(&state, query_param(query.as_deref(), "next").as_deref());
    page(&TwoFactorPage { csrf, next, resetting, message: None, errors: vec![] })
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
    next: Option<String>,
}

async fn two_factor_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> AppResult<Response> {
    let next = next_path(&state, form.next.as_deref());
    match service::complete_second_factor(&state, &meta, &current, &form.code, device(&headers).as_deref()).await {
        Ok(signed_in) => Ok(signed_in_response(signed_in, &next)),
        Err(e) => {
            let e = AppError::from(e);
            let retry = retry_after(&e);
            let (status, message, errors) = form_failure(e)?;
            let resetting = current.method == super::session::Method::Reset;
            let res = page_with_status(status, &TwoFactorPage { csrf, next, resetting, message, errors })?;
            Ok(with_retry_after(res, retry))
        }
    }
}

#[derive(Template)]
#[template(path = "identity/logout.html")]
struct LogoutPage {
    csrf: String,
}

/// Signing out is a POST (a link can't sign anyone out); the navigation's "Sign out" link
/// leads here, where one click does it.
async fn logout_page(FormToken(csrf): FormToken) -> AppResult<Response> {
    Ok(crate::web::render(&LogoutPage { csrf })?.into_response())
}

async fn logout(State(state): State<AppState>, meta: RequestMeta, current: CurrentSession) -> AppResult<Response> {
    service::sign_out(&state, &meta, &current).await?;
    Ok(with_cookies(Redirect::to("/login").into_response(), &[session::clear_cookie(SESSION_COOKIE)]))
}

// ---- Google ----

async fn google_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let next = next_path(&state, query_param(query.as_deref(), "next").as_deref());
    let (url, browser) = google::start(&state, &meta, Some(&next)).await?;
    Ok(with_cookies(
        Redirect::to(&url).into_response(),
        &[session::set_cookie(OIDC_COOKIE, &browser, Some(Duration::minutes(10)))],
    ))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn google_callback(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> AppResult<Response> {
    let clear = session::clear_cookie(OIDC_COOKIE);
    let result = match (&q.code, &q.state, &q.error) {
        (Some(code), Some(oidc_state), None) => {
            let browser = crate::access::asking::read_cookie(&headers, OIDC_COOKIE);
            google::callback(&state, &meta, code, oidc_state, browser.as_deref(), device(&headers).as_deref()).await
        }
        _ => Err(DomainError::Forbidden("Google sign-in was cancelled or refused.".into())),
    };
    match result {
        Ok((signed_in, next)) => Ok(with_cookies(signed_in_response(signed_in, &next), &[clear])),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            let login = LoginPage::new(&state, csrf, return_to::DEFAULT.into(), String::new());
            let res = page_with_status(status, &LoginPage { message, errors, ..login })?;
            Ok(with_cookies(res, &[clear]))
        }
    }
}

// ---- sign-up and verification ----

#[derive(Template)]
#[template(path = "identity/signup.html")]
struct SignupPage {
    csrf: String,
    email: String,
    display_name: String,
    bot: BotCheckView,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn signup_page(State(state): State<AppState>, FormToken(csrf): FormToken) -> AppResult<Response> {
    let bot = BotCheckView::new(&state.bot_check, Purpose::Signup);
    let res = page(&SignupPage {
        csrf,
        email: String::new(),
        display_name: String::new(),
        bot,
        message: None,
        errors: vec![],
    })?;
    Ok(crate::abuse::web::with_widget_policy(&state, res))
}

#[derive(Deserialize)]
struct SignupForm {
    email: String,
    password: String,
    #[serde(default)]
    display_name: String,
    #[serde(flatten)]
    proof: SubmittedProof,
}

async fn signup_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    Form(form): Form<SignupForm>,
) -> AppResult<Response> {
    // The bot check comes before the password is hashed: its point is that a bulk sign-up
    // costs the sender, so a refused one must cost us as little as possible.
    let result = match crate::abuse::web::verify_form(&state, form.proof, meta.ip, Purpose::Signup).await {
        Ok(()) => service::sign_up(&state, &meta, &form.email, &Secret::new(form.password), &form.display_name).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/signup/check-email").into_response()),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            let bot = BotCheckView::new(&state.bot_check, Purpose::Signup);
            let res = page_with_status(
                status,
                &SignupPage { csrf, email: form.email, display_name: form.display_name, bot, message, errors },
            )?;
            Ok(crate::abuse::web::with_widget_policy(&state, res))
        }
    }
}

#[derive(Template)]
#[template(path = "identity/notice.html")]
pub struct Notice {
    pub title: &'static str,
    pub paragraphs: Vec<&'static str>,
    pub link: Option<(&'static str, &'static str)>,
}

async fn signup_sent() -> AppResult<Response> {
    page(&Notice {
        title: "Check your email",
        paragraphs: vec![
            "If you can create an account with this address, we've sent it a link to confirm it.",
            "The link expires in 24 hours.",
        ],
        link: Some(("/login", "Back to sign in")),
    })
}

#[derive(Template)]
#[template(path = "identity/confirm_token.html")]
struct ConfirmToken {
    title: &'static str,
    explanation: &'static str,
    action: &'static str,
    button: &'static str,
    csrf: String,
    token: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

const VERIFY: (&str, &str, &str, &str) =
    ("Confirm your email address", "Confirm this address to finish creating your account.", "/verify-email", "Confirm");

/// The link in the email only shows a button: a mail scanner fetching the link doesn't use up
/// the token; the person clicking does.
async fn verify_page(FormToken(csrf): FormToken, Query(q): Query<TokenQuery>) -> AppResult<Response> {
    let (title, explanation, action, button) = VERIFY;
    page(&ConfirmToken { title, explanation, action, button, csrf, token: q.token, message: None, errors: vec![] })
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
}

async fn verify_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> AppResult<Response> {
    match service::verify_email(&state, &meta, &form.token, device(&headers).as_deref()).await {
        Ok(signed_in) => Ok(signed_in_response(signed_in, "/app")),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            let (title, explanation, action, button) = VERIFY;
            page_with_status(
                status,
                &ConfirmToken { title, explanation, action, button, csrf, token: form.token, message, errors },
            )
        }
    }
}

// ---- password reset ----

#[derive(Template)]
#[template(path = "identity/forgot.html")]
struct ForgotPage {
    csrf: String,
    email: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn forgot_page(FormToken(csrf): FormToken) -> AppResult<Response> {
    page(&ForgotPage { csrf, email: String::new(), message: None, errors: vec![] })
}

#[derive(Deserialize)]
struct EmailForm {
    email: String,
}

async fn forgot_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    Form(form): Form<EmailForm>,
) -> AppResult<Response> {
    match service::request_password_reset(&state, &meta, &form.email).await {
        Ok(()) => Ok(Redirect::to("/forgot-password/sent").into_response()),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            page_with_status(status, &ForgotPage { csrf, email: form.email, message, errors })
        }
    }
}

async fn forgot_sent() -> AppResult<Response> {
    page(&Notice {
        title: "Check your email",
        paragraphs: vec![
            "If an account uses this address, we've sent it a link to choose a new password.",
            "The link expires in one hour.",
        ],
        link: Some(("/login", "Back to sign in")),
    })
}

#[derive(Template)]
#[template(path = "identity/reset.html")]
struct ResetPage {
    csrf: String,
    token: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn reset_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    if !service::reset_token_valid(&state, &q.token, state.clock.now()).await? {
        return page_with_status(
            StatusCode::BAD_REQUEST,
            &Notice {
                title: "This link has expired",
                paragraphs: vec!["Reset links work once and expire after an hour."],
                link: Some(("/forgot-password", "Ask for a new link")),
            },
        );
    }
    page(&ResetPage { csrf, token: q.token, message: None, errors: vec![] })
}

#[derive(Deserialize)]
struct ResetForm {
    token: String,
    password: String,
}

async fn reset_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<ResetForm>,
) -> AppResult<Response> {
    let result =
        service::reset_password(&state, &meta, &form.token, &Secret::new(form.password), device(&headers).as_deref())
            .await;
    match result {
        Ok(signed_in) => Ok(signed_in_response(signed_in, "/app")),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            page_with_status(status, &ResetPage { csrf, token: form.token, message, errors })
        }
    }
}

// ---- signed in ----

struct SessionRow {
    id: String,
    device: String,
    ip: String,
    created: String,
    last_seen: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "identity/security.html")]
struct SecurityPage {
    csrf: String,
    email: String,
    two_factor: bool,
    has_password: bool,
    recent_minutes: i64,
    /// Days between asking to delete the account and its purge (`privacy.deletion_grace_days`).
    grace_days: u32,
    sessions: Vec<SessionRow>,
    events: Vec<(String, String, String)>,
    /// Why mail to the account's address is stopped, in words (empty: it is not).
    mail_stopped: Vec<String>,
    /// Whether the address is suppressed for a bounce, which the person may clear.
    bounced: bool,
    notice: Option<&'static str>,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// The form whose fields `errors` are about (the page has several with the same fields):
    /// "recovery", "2fa-off", "password", "email", "delete"; empty when none failed.
    failed: &'static str,
}

impl SecurityPage {
    /// The errors when `form` is the one that failed, else none.
    fn errors_of(&self, form: &str) -> &[FieldError] {
        if self.failed == form { &self.errors } else { &[] }
    }
}

#[derive(Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

/// "Firefox on Linux" from a user agent, roughly.
pub fn describe_device(ua: &str) -> String {
    let browser = if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Chrome/") || ua.contains("Chromium/") {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else if ua.is_empty() {
        "Unknown browser"
    } else {
        "Other client"
    };
    let os = if ua.contains("Windows") {
        " on Windows"
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        " on iOS"
    } else if ua.contains("Mac OS X") {
        " on macOS"
    } else if ua.contains("Android") {
        " on Android"
    } else if ua.contains("Linux") {
        " on Linux"
    } else {
        ""
    };
    format!("{browser}{os}")
}

async fn security_view(
    state: &AppState,
    csrf: String,
    current: &CurrentSession,
    notice: Option<&'static str>,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<SecurityPage> {
    let user = service::load_user(state, current.user.id()).await?;
    let mut conn = state.db.global().await?;
    let sessions = session::list(&mut conn, user.id)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            device: describe_device(&s.user_agent),
            ip: s.ip.map(|i| i.addr().to_string()).unwrap_or_default(),
            created: when(s.created_at),
            last_seen: when(s.last_seen_at),
            current: s.id == current.id,
        })
        .collect();
    let events = events::recent(&mut conn, user.id, 20)
        .await?
        .into_iter()
        .map(|e| {
            (when(e.occurred_at), e.kind.replace('_', " "), e.ip.map(|i| i.addr().to_string()).unwrap_or_default())
        })
        .collect();
    let suppressions = crate::mail::suppression::of_address(&mut conn, &user.email).await?;
    conn.commit().await?;
    let bounced = suppressions.iter().any(|s| {
        matches!(s.reason, crate::mail::suppression::Reason::HardBounce | crate::mail::suppression::Reason::SoftBounce)
    });
    Ok(SecurityPage {
        mail_stopped: crate::mail::web::describe(&suppressions),
        bounced,
        csrf,
        email: user.email.clone(),
        two_factor: user.two_factor_enabled(),
        has_password: user.password_hash.is_some(),
        recent_minutes: service::RECENT_SIGN_IN.whole_minutes(),
        grace_days: state.config.privacy.deletion_grace_days,
        sessions,
        events,
        notice,
        message,
        errors,
        failed: "",
    })
}

async fn security_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
    Query(q): Query<DoneQuery>,
) -> AppResult<Response> {
    let notice = match q.done.as_deref() {
        Some("password") => Some("Your password was changed and your other sessions were signed out."),
        Some("email") => Some("Check your new email address for a confirmation link."),
        Some("2fa-off") => Some("Two-factor authentication is off."),
        Some("revoked") => Some("The session was signed out."),
        Some("revoked-others") => Some("All other sessions were signed out."),
        Some("mail") => Some("Mail to your address is on again; a test message is on its way."),
        Some("deletion-cancelled") => Some("The deletion of your account was cancelled. Welcome back."),
        _ => None,
    };
    page(&security_view(&state, csrf, &current, notice, None, vec![]).await?)
}

/// Re-renders the security page with the failure of one of its forms.
async fn security_failure(
    state: &AppState,
    csrf: String,
    current: &CurrentSession,
    form: &'static str,
    e: impl Into<AppError>,
) -> AppResult<Response> {
    let (status, message, errors) = form_failure(e)?;
    let mut page = security_view(state, csrf, current, None, message, errors).await?;
    page.failed = form;
    page_with_status(status, &page)
}

fn rotated(new: &session::NewSession, target: &str) -> Response {
    with_cookies(Redirect::to(target).into_response(), &[session::set_cookie(SESSION_COOKIE, &new.token, None)])
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<PasswordForm>,
) -> AppResult<Response> {
    let result = service::change_password(
        &state,
        &meta,
        &current,
        &Secret::new(form.current_password),
        &form.code,
        &Secret::new(form.new_password),
    )
    .await;
    match result {
        Ok(new) => Ok(rotated(&new, "/account/security?done=password")),
        Err(e) => security_failure(&state, csrf, &current, "password", e).await,
    }
}

#[derive(Deserialize)]
struct EmailChangeForm {
    new_email: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

async fn change_email(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<EmailChangeForm>,
) -> AppResult<Response> {
    let result = service::request_email_change(
        &state,
        &meta,
        &current,
        &Secret::new(form.current_password),
        &form.code,
        &form.new_email,
    )
    .await;
    match result {
        Ok(()) => Ok(Redirect::to("/account/security?done=email").into_response()),
        Err(e) => security_failure(&state, csrf, &current, "email", e).await,
    }
}

const EMAIL_CONFIRM: (&str, &str, &str, &str) = (
    "Confirm your new email address",
    "Confirm to make this the email address of your account. You will be signed out everywhere else.",
    "/account/email/confirm",
    "Confirm new address",
);

async fn email_confirm_page(FormToken(csrf): FormToken, Query(q): Query<TokenQuery>) -> AppResult<Response> {
    let (title, explanation, action, button) = EMAIL_CONFIRM;
    page(&ConfirmToken { title, explanation, action, button, csrf, token: q.token, message: None, errors: vec![] })
}

async fn email_confirm_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> AppResult<Response> {
    match service::confirm_email_change(&state, &meta, &form.token, device(&headers).as_deref()).await {
        Ok(signed_in) => Ok(signed_in_response(signed_in, "/account/security")),
        Err(e) => {
            let (status, message, errors) = form_failure(e)?;
            let (title, explanation, action, button) = EMAIL_CONFIRM;
            page_with_status(
                status,
                &ConfirmToken { title, explanation, action, button, csrf, token: form.token, message, errors },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "identity/totp_setup.html")]
struct TotpSetup {
    csrf: String,
    qr_svg: String,
    secret: String,
    replacing: bool,
    has_password: bool,
    recent_minutes: i64,
    lifetime_minutes: i64,
    message: Option<String>,
    errors: Vec<FieldError>,
}

impl TotpSetup {
    fn new(csrf: String, e: service::Enrollment, message: Option<String>, errors: Vec<FieldError>) -> Self {
        Self {
            csrf,
            qr_svg: e.qr_svg,
            secret: e.secret_base32,
            replacing: e.replacing,
            has_password: e.has_password,
            recent_minutes: service::RECENT_SIGN_IN.whole_minutes(),
            lifetime_minutes: service::ENROLLMENT_LIFETIME.whole_minutes(),
            message,
            errors,
        }
    }
}

/// Each visit starts a new set-up attempt for this session only (a new secret).
async fn totp_setup_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
) -> AppResult<Response> {
    let enrollment = service::start_totp_enrollment(&state, &current, state.clock.now()).await?;
    page(&TotpSetup::new(csrf, enrollment, None, vec![]))
}

#[derive(Template)]
#[template(path = "identity/recovery_codes.html")]
struct RecoveryCodes {
    codes: Vec<String>,
}

#[derive(Deserialize)]
struct SetupForm {
    code: String,
    #[serde(default)]
    current_password: String,
    /// When replacing a factor: a code from the current one (or a recovery code).
    #[serde(default)]
    current_code: String,
}

async fn totp_setup_submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<SetupForm>,
) -> AppResult<Response> {
    let password = Secret::new(form.current_password);
    let proof = service::FactorProof { password: &password, current_code: &form.current_code };
    match service::confirm_totp_enrollment(&state, &meta, &current, &proof, &form.code).await {
        Ok((new, codes)) => {
            let res = page(&RecoveryCodes { codes })?;
            Ok(with_cookies(res, &[session::set_cookie(SESSION_COOKIE, &new.token, None)]))
        }
        Err(e) => {
            let e = AppError::from(e);
            let retry = retry_after(&e);
            let (status, message, errors) = form_failure(e)?;
            let enrollment = service::resume_totp_enrollment(&state, &current, meta.now).await?;
            let res = page_with_status(status, &TotpSetup::new(csrf, enrollment, message, errors))?;
            Ok(with_retry_after(res, retry))
        }
    }
}

#[derive(Deserialize)]
struct ReauthForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

async fn totp_disable(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<ReauthForm>,
) -> AppResult<Response> {
    match service::disable_totp(&state, &meta, &current, &Secret::new(form.current_password), &form.code).await {
        Ok(new) => Ok(rotated(&new, "/account/security?done=2fa-off")),
        Err(e) => security_failure(&state, csrf, &current, "2fa-off", e).await,
    }
}

async fn recovery_codes(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<ReauthForm>,
) -> AppResult<Response> {
    match service::regenerate_recovery_codes(&state, &meta, &current, &Secret::new(form.current_password), &form.code)
        .await
    {
        Ok((new, codes)) => {
            let res = page(&RecoveryCodes { codes })?;
            Ok(with_cookies(res, &[session::set_cookie(SESSION_COOKIE, &new.token, None)]))
        }
        Err(e) => security_failure(&state, csrf, &current, "recovery", e).await,
    }
}

async fn revoke_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    current: CurrentSession,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    service::revoke_session(&state, &meta, &current, id).await?;
    Ok(Redirect::to("/account/security?done=revoked").into_response())
}

/// Clears a bounce of the account's own address (after the person fixed their mailbox) and
/// sends a fresh message to it: if it bounces again, the provider's report suppresses the
/// address again.
async fn clear_bounce(
    State(state): State<AppState>,
    meta: RequestMeta,
    current: CurrentSession,
) -> AppResult<Response> {
    service::clear_bounce(&state, &meta, &current).await?;
    Ok(Redirect::to("/account/security?done=mail").into_response())
}

async fn revoke_others(
    State(state): State<AppState>,
    meta: RequestMeta,
    current: CurrentSession,
) -> AppResult<Response> {
    service::revoke_other_sessions(&state, &meta, &current).await?;
    Ok(Redirect::to("/account/security?done=revoked-others").into_response())
}

/// Signs in (or signs up) the invitee of an invitation (`email`, the invitation's). Returns the
/// user when the sign-in is complete, for the caller to accept the invitation with, and the
/// response that finishes signing in, sending the browser to `then` (where the caller sends it
/// next). A user with two-factor authentication gets no user yet: the response sends them to the
/// second-factor page first, and on to `back` afterwards (the invitation never skips the gate).
pub async fn invitation_sign_in(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    email: &str,
    password: &Secret,
    display_name: &str,
) -> AppResult<InvitationSignIn> {
    let (signed_in, user) =
        service::sign_in_for_invitation(state, meta, email, password, display_name, device(headers).as_deref()).await?;
    Ok(InvitationSignIn { signed_in, user })
}

/// A sign-in made for an invitation (see [`invitation_sign_in`]).
pub struct InvitationSignIn {
    signed_in: SignedIn,
    /// The user, when no second factor stands between them and the invitation.
    pub user: Option<crate::access::AuthenticatedUser>,
}

impl InvitationSignIn {
    /// The response that sets the new session and sends the browser to `next` (a path on this
    /// site; anything else goes to the default page).
    pub fn respond(self, state: &AppState, next: &str) -> Response {
        signed_in_response(self.signed_in, &next_path(state, Some(next)))
    }
}

// ---- deleting one's own account ----

#[derive(Deserialize)]
struct DeleteAccountForm {
    #[serde(default)]
    confirm_email: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

/// Schedules the deletion of the signed-in person's account; every session ends (this one
/// too), so the browser is sent to a page saying what happens next.
async fn request_account_deletion(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    current: CurrentSession,
    Form(form): Form<DeleteAccountForm>,
) -> AppResult<Response> {
    let result = super::account_deletion::request(
        &state,
        &meta,
        &current,
        &Secret::new(form.current_password),
        &form.code,
        &form.confirm_email,
    )
    .await;
    match result {
        Ok(purge_after) => {
            let res = page(&AccountDeletionPage {
                csrf: String::new(),
                purge_on: when(purge_after),
                postponed: false,
                just_requested: true,
            })?;
            Ok(with_cookies(res, &[session::clear_cookie(SESSION_COOKIE)]))
        }
        Err(e) => {
            let e = AppError::from(e);
            let retry = retry_after(&e);
            let res = security_failure(&state, csrf, &current, "delete", e).await?;
            Ok(with_retry_after(res, retry))
        }
    }
}

#[derive(Template)]
#[template(path = "identity/account_deletion.html")]
struct AccountDeletionPage {
    csrf: String,
    purge_on: String,
    postponed: bool,
    /// Just asked for (signed out now): no cancel form, a sign-in link.
    just_requested: bool,
}

/// What a departing session sees, whatever it asked for: when the account goes, and a button
/// to cancel.
async fn account_deletion_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
) -> AppResult<Response> {
    let pending = super::account_deletion::pending(&state.db, current.user.id()).await?;
    page(&AccountDeletionPage {
        csrf,
        purge_on: pending.as_ref().map(|p| when(p.purge_after)).unwrap_or_default(),
        postponed: pending.as_ref().is_some_and(|p| p.postponed_at.is_some()),
        just_requested: false,
    })
}

async fn cancel_account_deletion(
    State(state): State<AppState>,
    meta: RequestMeta,
    current: CurrentSession,
) -> AppResult<Response> {
    let new = super::account_deletion::cancel(&state, &meta, &current).await?;
    Ok(rotated(&new, "/account/security?done=deletion-cancelled"))
}
