//! The suppression list: addresses ClientFlow stops mailing, and why.
//!
//! One global list per normalised address (an address that bounced for one organization
//! bounces for all of them). A row has a [`Reason`], the category it stops (`*` for every
//! category, or one category for an unsubscribe), the source that put it there (a provider
//! event id, an SMTP reply, an unsubscribe link, an operator's note) and a time. Whether a
//! reason stops a category is the [`POLICY`] table below, decided here and nowhere else, and
//! printed into `docs/operations.md` by [`policy_markdown`] (a test keeps the two equal).
//!
//! The worker checks the list **when it sends** (an address suppressed after a message was
//! queued still stops it), and a stopped message is recorded as `suppressed`. Critical mail
//! (sign-in, password reset, email verification, two-factor and security alerts, billing) is
//! never stopped. Every change is written to `mail_suppression_log`, append-only for the server.

use serde::Serialize;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::category::Category;
use crate::platform::types::Email;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The receiving server refused the address for good (a provider's permanent bounce, or an
    /// SMTP 5xx when sending).
    HardBounce,
    /// Repeated temporary failures: `mail.soft_bounce_limit` within the window.
    SoftBounce,
    /// The recipient marked a message as spam.
    Complaint,
    /// The recipient unsubscribed from one category.
    Unsubscribe,
    /// An operator added it.
    Manual,
}

impl Reason {
    pub const ALL: [Reason; 5] =
        [Reason::HardBounce, Reason::SoftBounce, Reason::Complaint, Reason::Unsubscribe, Reason::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::SoftBounce => "soft_bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s.trim().replace('-', "_"))
    }

    /// For people: what happened.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::HardBounce => "mail to this address was refused by its mail server",
            Reason::SoftBounce => "mail to this address kept failing temporarily",
            Reason::Complaint => "a message to this address was reported as spam",
            Reason::Unsubscribe => "this address unsubscribed",
            Reason::Manual => "an administrator stopped mail to this address",
        }
    }
}

/// Whether mail of a category is sent to an address suppressed for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    Suppress,
}

/// The policy: category × reason → decision. An unsubscribe stops only the category it names
/// (the table says what it does to the category it names; other categories are not affected).
/// Critical mail is sent whatever the list says: a person locked out of their account must
/// still receive the reset link, and the security page promises it.
pub const POLICY: [(Category, Reason, Decision); 15] = {
    use Category::*;
    use Decision::*;
    use Reason::*;
    [
        (Critical, HardBounce, Send),
        (Critical, SoftBounce, Send),
        (Critical, Complaint, Send),
        (Critical, Unsubscribe, Send),
        (Critical, Manual, Send),
        (Transactional, HardBounce, Suppress),
        (Transactional, SoftBounce, Suppress),
        (Transactional, Complaint, Suppress),
        (Transactional, Unsubscribe, Suppress),
        (Transactional, Manual, Suppress),
        (Marketing, HardBounce, Suppress),
        (Marketing, SoftBounce, Suppress),
        (Marketing, Complaint, Suppress),
        (Marketing, Unsubscribe, Suppress),
        (Marketing, Manual, Suppress),
    ]
};

pub fn decide(category: Category, reason: Reason) -> Decision {
    POLICY.iter().find(|(c, r, _)| *c == category && *r == reason).map(|(_, _, d)| *d).unwrap_or(Decision::Suppress)
}

/// The policy table as Markdown, for `docs/operations.md`.
pub fn policy_markdown() -> String {
    let mut out = String::from("| Category | ");
    out.push_str(&Reason::ALL.map(|r| format!("`{}`", r.as_str())).join(" | "));
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(Reason::ALL.len()));
    out.push('\n');
    for category in Category::ALL {
        out.push_str(&format!("| `{}` |", category.as_str()));
        for reason in Reason::ALL {
            let cell = match decide(category, reason) {
                Decision::Send => " sent |",
                Decision::Suppress if reason == Reason::Unsubscribe => " suppressed (that category only) |",
                Decision::Suppress => " suppressed |",
            };
            out.push_str(cell);
        }
        out.push('\n');
    }
    out
}

/// The address as the list keys it: the bare address of `Name <address>`, trimmed and in
/// lower case.
pub fn normalise(address: &str) -> String {
    let bare = match (address.rfind('<'), address.rfind('>')) {
        (Some(open), Some(close)) if open < close => &address[open + 1..close],
        _ => address,
    };
    Email::parse(bare).map(|e| e.as_str().to_string()).unwrap_or_else(|_| bare.trim().to_lowercase())
}

/// One row of the list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub address: String,
    pub reason: Reason,
    pub category: String,
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The first suppression that stops `category` mail to `address`, if any. One indexed
/// lookup: the worker runs it for every message, just before sending.
pub async fn blocking(
    conn: &mut PgConnection,
    address: &str,
    category: Category,
) -> Result<Option<Suppression>, sqlx::Error> {
    if category == Category::Critical {
        return Ok(None);
    }
    let rows: Vec<Suppression> = sqlx::query_as(
        "SELECT address, reason, category, source, created_at FROM mail_suppressions \
         WHERE address = $1 AND (category = '*' OR category = $2) ORDER BY created_at",
    )
    .bind(normalise(address))
    .bind(category.as_str())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().find(|s| decide(category, s.reason) == Decision::Suppress))
}

/// Every suppression of an address.
pub async fn of_address(conn: &mut PgConnection, address: &str) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT address, reason, category, source, created_at FROM mail_suppressions WHERE address = $1 \
         ORDER BY created_at",
    )
    .bind(normalise(address))
    .fetch_all(conn)
    .await
}

/// The list, newest first, optionally of one reason.
pub async fn list(
    conn: &mut PgConnection,
    reason: Option<Reason>,
    limit: i64,
) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT address, reason, category, source, created_at FROM mail_suppressions \
         WHERE $1::text IS NULL OR reason = $1 ORDER BY created_at DESC, address LIMIT $2",
    )
    .bind(reason.map(Reason::as_str))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The category a suppression row stops: every category, or one (an unsubscribe).
fn scope(reason: Reason, category: Option<Category>) -> &'static str {
    match (reason, category) {
        (Reason::Unsubscribe, Some(c)) => c.as_str(),
        _ => "*",
    }
}

/// Adds a suppression (nothing changes when the same one is there already) and logs the
/// change. Returns whether it was new.
pub async fn add(
    conn: &mut PgConnection,
    address: &str,
    reason: Reason,
    category: Option<Category>,
    source: &str,
    actor: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let address = normalise(address);
    let scope = scope(reason, category);
    let inserted = sqlx::query(
        "INSERT INTO mail_suppressions (address, reason, category, source, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&address)
    .bind(reason)
    .bind(scope)
    .bind(source)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        log(conn, &address, "added", reason.as_str(), scope, source, actor, now).await?;
        tracing::info!(reason = reason.as_str(), category = scope, "mail: address suppressed");
    }
    Ok(inserted)
}

/// Removes the suppressions of `address` (of one reason, or all of them; an unsubscribe of
/// one category when `category` is given) and logs each removal. Returns what was removed.
pub async fn remove(
    conn: &mut PgConnection,
    address: &str,
    reason: Option<Reason>,
    category: Option<Category>,
    source: &str,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Vec<Suppression>, sqlx::Error> {
    let address = normalise(address);
    let removed: Vec<Suppression> = sqlx::query_as(
        "DELETE FROM mail_suppressions WHERE address = $1 AND ($2::text IS NULL OR reason = $2) \
         AND ($3::text IS NULL OR category = $3) \
         RETURNING address, reason, category, source, created_at",
    )
    .bind(&address)
    .bind(reason.map(Reason::as_str))
    .bind(category.map(Category::as_str))
    .fetch_all(&mut *conn)
    .await?;
    for r in &removed {
        log(conn, &address, "removed", r.reason.as_str(), &r.category, source, actor, now).await?;
    }
    Ok(removed)
}

#[allow(clippy::too_many_arguments)]
async fn log(
    conn: &mut PgConnection,
    address: &str,
    change: &str,
    reason: &str,
    category: &str,
    source: &str,
    actor: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mail_suppression_log (id, at, address, change, reason, category, source, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(now)
    .bind(address)
    .bind(change)
    .bind(reason)
    .bind(category)
    .bind(source)
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// One entry of the change log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Change {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub address: String,
    pub change: String,
    pub reason: String,
    pub category: String,
    pub source: String,
    pub actor: String,
}

pub async fn history(conn: &mut PgConnection, address: &str) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, address, change, reason, category, source, actor FROM mail_suppression_log \
         WHERE address = $1 ORDER BY at, id",
    )
    .bind(normalise(address))
    .fetch_all(conn)
    .await
}

/// Soft bounces: `limit` of them within `window` suppress the address.
#[derive(Debug, Clone, Copy)]
pub struct SoftBouncePolicy {
    pub limit: i64,
    pub window: Duration,
}

/// Records a soft bounce; suppresses the address when it is the `limit`th within the window.
/// Returns whether the address is now suppressed.
pub async fn soft_bounce(
    conn: &mut PgConnection,
    policy: SoftBouncePolicy,
    address: &str,
    source: &str,
    actor: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let address = normalise(address);
    // Serialise counting per address, so two bounces arriving together can't both miss the
    // limit.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mail:soft:' || $1))")
        .bind(&address)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO mail_soft_bounces (address, occurred_at, source) VALUES ($1, $2, $3)")
        .bind(&address)
        .bind(now)
        .bind(source)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM mail_soft_bounces WHERE address = $1 AND occurred_at < $2")
        .bind(&address)
        .bind(now - policy.window)
        .execute(&mut *conn)
        .await?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_soft_bounces WHERE address = $1 AND occurred_at >= $2")
            .bind(&address)
            .bind(now - policy.window)
            .fetch_one(&mut *conn)
            .await?;
    if count >= policy.limit {
        add(conn, &address, Reason::SoftBounce, None, &format!("{count} soft bounces, the last: {source}"), actor, now)
            .await?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_mail_is_never_suppressed_and_everything_else_is() {
        for reason in Reason::ALL {
            assert_eq!(decide(Category::Critical, reason), Decision::Send);
            assert_eq!(decide(Category::Transactional, reason), Decision::Suppress);
            assert_eq!(decide(Category::Marketing, reason), Decision::Suppress);
        }
        assert_eq!(POLICY.len(), Category::ALL.len() * Reason::ALL.len());
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalise("  Ann@Example.COM "), "ann@example.com");
        assert_eq!(normalise("Ann Lee <Ann@Example.com>"), "ann@example.com");
    }
}
