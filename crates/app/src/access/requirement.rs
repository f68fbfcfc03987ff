//! What a route requires, as the route table declares it: the access ([`Access`]) and the rate
//! limits ([`Limit`], keyed by [`KeyBy`], counted by a [`PolicyId`]). Plain values, so that
//! the parts that decide (the limiter's configuration, the guards) can read them without the
//! route table itself (`access::route`, whose routes hold the application's handlers).

use crate::access::role::Permission;
pub use crate::platform::http::route::Surface;

/// What a route requires before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Operations endpoints: from `metrics.allow` addresses or with the metrics token.
    Operator,
    /// A fully signed-in user (second factor done when the account has one).
    SignedIn,
    /// A sign-in waiting for its second factor (the second-factor page only).
    SecondFactor,
    /// Any session, finished or not (signing out).
    AnySession,
    /// A sign-in to an account scheduled for deletion (the page offering to cancel it only).
    DeletionPending,
    /// A member of the organization in the `{org}` path segment holding this permission.
    Org(Permission),
    /// An organization API key (bearer) holding this permission.
    Api(Permission),
}

/// The policies. Their limits come from configuration; their names, failure behaviour and
/// messages are fixed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyId {
    /// Every way of signing in or up (password, second factor, Google, email confirmation,
    /// reset, invitation) from one client address, together.
    AuthIp,
    /// Authentication requests naming one account.
    AuthAccount,
    /// Second-factor attempts of one pending sign-in's user.
    SecondFactor,
    /// Sign-ups from one client address.
    SignupIp,
    /// Contact-form submissions from one client address.
    ContactIp,
    /// Unsubscribe requests from one client address (for the unsubscribe endpoint).
    UnsubscribeIp,
    /// Status-page subscriptions from one client address (for the status page's form).
    StatusSubscribeIp,
    /// API requests from one client address, whatever key they carry.
    ApiIp,
    /// API requests made with one API key.
    ApiKey,
    /// Billing actions of one organization (for the billing routes).
    BillingOrg,
    /// Vulnerability reports from one client address (`/security/report`).
    SecurityReportIp,
    /// Organization data exports: starting one (per organization) and downloading one (per
    /// client address).
    DataExport,
}

impl PolicyId {
    pub const ALL: [PolicyId; 12] = [
        PolicyId::AuthIp,
        PolicyId::AuthAccount,
        PolicyId::SecondFactor,
        PolicyId::SignupIp,
        PolicyId::ContactIp,
        PolicyId::UnsubscribeIp,
        PolicyId::StatusSubscribeIp,
        PolicyId::ApiIp,
        PolicyId::ApiKey,
        PolicyId::BillingOrg,
        PolicyId::SecurityReportIp,
        PolicyId::DataExport,
    ];

    /// The name in `RateLimit-Policy`, logs, metrics and Redis keys.
    pub fn name(self) -> &'static str {
        match self {
            PolicyId::AuthIp => "auth-ip",
            PolicyId::AuthAccount => "auth-account",
            PolicyId::SecondFactor => "second-factor",
            PolicyId::SignupIp => "signup-ip",
            PolicyId::ContactIp => "contact-ip",
            PolicyId::UnsubscribeIp => "unsubscribe-ip",
            PolicyId::StatusSubscribeIp => "status-subscribe-ip",
            PolicyId::ApiIp => "api-ip",
            PolicyId::ApiKey => "api-key",
            PolicyId::BillingOrg => "billing-org",
            PolicyId::SecurityReportIp => "security-report-ip",
            PolicyId::DataExport => "data-export",
        }
    }

    /// Its position in [`PolicyId::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The configuration key under `[rate_limits]`.
    pub fn setting(self) -> &'static str {
        match self {
            PolicyId::AuthIp => "rate_limits.auth_ip",
            PolicyId::AuthAccount => "rate_limits.auth_account",
            PolicyId::SecondFactor => "rate_limits.second_factor",
            PolicyId::SignupIp => "rate_limits.signup_ip",
            PolicyId::ContactIp => "rate_limits.contact_ip",
            PolicyId::UnsubscribeIp => "rate_limits.unsubscribe_ip",
            PolicyId::StatusSubscribeIp => "rate_limits.status_subscribe_ip",
            PolicyId::ApiIp => "rate_limits.api_ip",
            PolicyId::ApiKey => "rate_limits.api_key",
            PolicyId::BillingOrg => "rate_limits.billing_org",
            PolicyId::SecurityReportIp => "rate_limits.security_report_ip",
            PolicyId::DataExport => "rate_limits.data_export",
        }
    }
}

/// What a limit counts requests by (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    ClientIp,
    FormEmail(&'static str),
    FormEmailPerDevice(&'static str),
    FormSecret(&'static str),
    SessionUser,
    ApiKey,
    Organization,
}

impl KeyBy {
    /// Whether the key is known before the route's access guard runs.
    pub fn before_authentication(self) -> bool {
        matches!(self, KeyBy::ClientIp | KeyBy::FormEmail(_) | KeyBy::FormEmailPerDevice(_) | KeyBy::FormSecret(_))
    }

    pub fn form_field(self) -> Option<&'static str> {
        match self {
            KeyBy::FormEmail(f) | KeyBy::FormEmailPerDevice(f) | KeyBy::FormSecret(f) => Some(f),
            _ => None,
        }
    }
}

/// One limit a route declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub policy: PolicyId,
    pub key: KeyBy,
}

impl Limit {
    pub const fn new(policy: PolicyId, key: KeyBy) -> Self {
        Self { policy, key }
    }
}

/// Authentication forms, per client address.
pub const AUTH_PER_IP: Limit = Limit::new(PolicyId::AuthIp, KeyBy::ClientIp);
/// Sign-in per account (and device, see the module documentation).
pub const SIGN_IN_PER_ACCOUNT: Limit = Limit::new(PolicyId::AuthAccount, KeyBy::FormEmailPerDevice("email"));
/// Forms that mail the address they name (sign-up, password reset), per account.
pub const MAIL_PER_ACCOUNT: Limit = Limit::new(PolicyId::AuthAccount, KeyBy::FormEmail("email"));
/// Forms whose token names exactly one account (password reset, invitation), per account.
pub const TOKEN_PER_ACCOUNT: Limit = Limit::new(PolicyId::AuthAccount, KeyBy::FormSecret("token"));
/// The second factor, per user.
pub const SECOND_FACTOR_PER_USER: Limit = Limit::new(PolicyId::SecondFactor, KeyBy::SessionUser);
/// Sign-up, per client address.
pub const SIGNUP_PER_IP: Limit = Limit::new(PolicyId::SignupIp, KeyBy::ClientIp);
/// Contact form, per client address.
pub const CONTACT_PER_IP: Limit = Limit::new(PolicyId::ContactIp, KeyBy::ClientIp);
/// Unsubscribe, per client address.
pub const UNSUBSCRIBE_PER_IP: Limit = Limit::new(PolicyId::UnsubscribeIp, KeyBy::ClientIp);
/// Status-page subscription, per client address.
pub const STATUS_SUBSCRIBE_PER_IP: Limit = Limit::new(PolicyId::StatusSubscribeIp, KeyBy::ClientIp);
/// Every API request, per client address.
pub const API_PER_IP: Limit = Limit::new(PolicyId::ApiIp, KeyBy::ClientIp);
/// Every API-key request, per key.
pub const API_PER_KEY: Limit = Limit::new(PolicyId::ApiKey, KeyBy::ApiKey);
/// Billing actions, per organization.
pub const BILLING_PER_ORG: Limit = Limit::new(PolicyId::BillingOrg, KeyBy::Organization);
/// Vulnerability reports per client address.
pub const SECURITY_REPORT_PER_IP: Limit = Limit::new(PolicyId::SecurityReportIp, KeyBy::ClientIp);
/// Starting an organization's data export, per organization.
pub const EXPORT_PER_ORG: Limit = Limit::new(PolicyId::DataExport, KeyBy::Organization);
/// Downloading an organization's data export through its signed link, per client address.
pub const EXPORT_PER_IP: Limit = Limit::new(PolicyId::DataExport, KeyBy::ClientIp);

/// The limits a route has from its surface and access alone.
pub fn default_limits(surface: Surface, access: Access) -> Vec<Limit> {
    let mut out = Vec::new();
    if surface == Surface::Api {
        out.push(API_PER_IP);
    }
    if matches!(access, Access::Api(_)) {
        out.push(API_PER_KEY);
    }
    out
}
