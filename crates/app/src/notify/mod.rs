//! Notifications: each person's in-app inbox, their preferences per kind, and the mail that
//! goes out for them through the outbox.
//!
//! This area stores and delivers; it never decides who is told about what. The code of the
//! event (a task assigned, a comment, an invoice paid, an invitation accepted) names the
//! recipients, having checked that each of them may see what the notification is about;
//! [`record`] then leaves out the actor (nobody is told about their own action), anyone who
//! is no longer an active member, and anyone who turned the kind off.
//!
//! Every read and write here is bounded by the recipient: a person counts, lists and marks
//! only rows addressed to them, inside their organization's tenant door, so an id guessed
//! across people or organizations is simply not found.
//!
//! Email is decided when the worker runs ([`send_pending`]), with the preference as it is then:
//! a person who switches a kind to in-app or off after the event gets no mail for it.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::OrgTx;
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::ids::UserId;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Assigned,
    Mentioned,
    Commented,
    TaskChanged,
    InvoiceViewed,
    InvoicePaid,
    /// A repeating invoice's copy waits as a draft, to be checked and sent.
    InvoiceRepeatMade,
    /// A repeating invoice paused itself: a copy could not be made.
    InvoiceRepeatPaused,
    InvitationAccepted,
    /// A project's billable time reached 80% of its budget, or went over it.
    BudgetUsed,
    /// One's week of time was approved, or reopened.
    TimeApproved,
    /// The daily mail of overdue and due-today tasks (mail only, no inbox entry).
    Digest,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Assigned,
        Kind::Mentioned,
        Kind::Commented,
        Kind::TaskChanged,
        Kind::InvoiceViewed,
        Kind::InvoicePaid,
        Kind::InvoiceRepeatMade,
        Kind::InvoiceRepeatPaused,
        Kind::InvitationAccepted,
        Kind::BudgetUsed,
        Kind::TimeApproved,
        Kind::Digest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Assigned => "assigned",
            Kind::Mentioned => "mentioned",
            Kind::Commented => "commented",
            Kind::TaskChanged => "task_changed",
            Kind::InvoiceViewed => "invoice_viewed",
            Kind::InvoicePaid => "invoice_paid",
            Kind::InvoiceRepeatMade => "invoice_repeat_made",
            Kind::InvoiceRepeatPaused => "invoice_repeat_paused",
            Kind::InvitationAccepted => "invitation_accepted",
            Kind::BudgetUsed => "budget_used",
            Kind::TimeApproved => "time_approved",
            Kind::Digest => "digest",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// For people, on the preferences page.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Assigned => "A task is assigned to me",
            Kind::Mentioned => "Someone mentions me in a comment",
            Kind::Commented => "A comment on a task I follow",
            Kind::TaskChanged => "A task I follow moves to another column or its due date changes",
            Kind::InvoiceViewed => "An invoice is viewed by its client",
            Kind::InvoicePaid => "An invoice is paid",
            Kind::InvoiceRepeatMade => "A repeating invoice's copy waits as a draft to check and send",
            Kind::InvoiceRepeatPaused => "A repeating invoice pauses because a copy could not be made",
            Kind::InvitationAccepted => "Someone I invited joins",
            Kind::BudgetUsed => "A project I answer for uses 80% of its budget, or goes over it",
            Kind::TimeApproved => "My week's time is approved, or reopened",
            Kind::Digest => "Daily mail of my overdue and due-today tasks",
        }
    }
}

/// How a person wants one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// In the inbox and by email (the default).
    Email,
    /// In the inbox only.
    InApp,
    Off,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::InApp, Channel::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::InApp => "in_app",
            Channel::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Channel::Email => "In the app and by email",
            Channel::InApp => "In the app only",
            Channel::Off => "Off",
        }
    }
}

/// One event to tell people about.
#[derive(Debug, Clone)]
pub struct New<'a> {
    pub kind: Kind,
    /// Who did it: never told about it.
    pub actor: Option<UserId>,
    pub title: &'a str,
    pub body: &'a str,
    /// A path inside the application (`/o/acme/tasks/…`).
    pub link: &'a str,
}

/// `s` without control characters (line breaks kept), at most `max` characters.
fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control() || *c == '\n').take(max).collect()
}

/// A title, which is never empty.
fn title(s: &str) -> String {
    let s = clip(s, 300);
    if s.trim().is_empty() { "Notification".into() } else { s }
}

/// Records `n` for each of `recipients` in the caller's transaction (one statement for all of
/// them), leaving out the actor, duplicates, people who are not active members and people who
/// turned the kind off. Returns how many were recorded.
pub async fn record(
    tx: &mut OrgTx,
    recipients: &[UserId],
    n: &New<'_>,
    now: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> =
        recipients.iter().map(|u| u.as_uuid()).filter(|u| Some(*u) != n.actor.map(|a| a.as_uuid())).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO notifications (organization_id, id, recipient_id, kind, actor_id, title, body, link, created_at) \
         SELECT m.organization_id, gen_random_uuid(), m.user_id, $2, $3, $4, $5, $6, $7 \
           FROM memberships m \
          WHERE m.organization_id = $1 AND m.status = 'active' AND m.user_id = ANY($8) \
            AND coalesce((SELECT p.channel FROM notification_preferences p WHERE p.organization_id = m.organization_id \
                           AND p.user_id = m.user_id AND p.kind = $2), 'email') <> 'off'",
    )
    .bind(tx.org_id())
    .bind(n.kind.as_str())
    .bind(n.actor)
    .bind(title(n.title))
    .bind(clip(n.body, 2000))
    .bind(n.link)
    .bind(now)
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// One entry of a person's inbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub link: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub read_at: Option<OffsetDateTime>,
}

/// How many of `user`'s notifications are unread (the navigation's count).
pub async fn unread_count(tx: &mut OrgTx, user: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notifications WHERE recipient_id = $1 AND read_at IS NULL")
        .bind(user)
        .fetch_one(&mut **tx)
        .await
}

/// `user`'s newest notifications.
pub async fn inbox(tx: &mut OrgTx, user: UserId, limit: i64, offset: i64) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, title, body, link, created_at, read_at FROM notifications WHERE recipient_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user)
    .bind(limit.clamp(1, 100))
    .bind(offset.max(0))
    .fetch_all(&mut **tx)
    .await
}

/// Marks one of `user`'s notifications read; `None` when `user` has no such notification (a
/// guessed id, or someone else's).
pub async fn mark_read(
    tx: &mut OrgTx,
    user: UserId,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE notifications SET read_at = coalesce(read_at, $3) WHERE id = $1 AND recipient_id = $2 \
         RETURNING id, kind, title, body, link, created_at, read_at",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
}

/// Marks every one of `user`'s notifications read.
pub async fn mark_all_read(tx: &mut OrgTx, user: UserId, now: OffsetDateTime) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE notifications SET read_at = $2 WHERE recipient_id = $1 AND read_at IS NULL")
        .bind(user)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// `user`'s channel for every kind (the default where they chose nothing).
pub async fn preferences(tx: &mut OrgTx, user: UserId) -> Result<Vec<(Kind, Channel)>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, channel FROM notification_preferences WHERE user_id = $1")
            .bind(user)
            .fetch_all(&mut **tx)
            .await?;
    Ok(Kind::ALL
        .into_iter()
        .map(|k| {
            let chosen = rows.iter().find(|(kind, _)| kind == k.as_str()).and_then(|(_, c)| Channel::parse(c));
            (k, chosen.unwrap_or(Channel::Email))
        })
        .collect())
}

/// `user`'s channel for `kind`.
pub async fn channel(tx: &mut OrgTx, user: UserId, kind: Kind) -> Result<Channel, sqlx::Error> {
    let c: Option<String> =
        sqlx::query_scalar("SELECT channel FROM notification_preferences WHERE user_id = $1 AND kind = $2")
            .bind(user)
            .bind(kind.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(c.as_deref().and_then(Channel::parse).unwrap_or(Channel::Email))
}

/// Sets `user`'s channel for each kind given.
pub async fn set_preferences(tx: &mut OrgTx, user: UserId, choices: &[(Kind, Channel)]) -> Result<(), sqlx::Error> {
    for (kind, channel) in choices {
        sqlx::query(
            "INSERT INTO notification_preferences (organization_id, user_id, kind, channel) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (organization_id, user_id, kind) DO UPDATE SET channel = EXCLUDED.channel",
        )
        .bind(tx.org_id())
        .bind(user)
        .bind(kind.as_str())
        .bind(channel.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An organization the worker has something to do for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: crate::platform::ids::OrgId,
    pub timezone: String,
    pub mail_waiting: bool,
    pub last_digest: Option<time::Date>,
}

/// Every organization with whether notification mail waits for it and its last digest day
/// (ids and those facts only: `notify_organizations`, migration 0045).
pub async fn organizations(db: &crate::platform::db::Db) -> Result<Vec<Due>, sqlx::Error> {
    let mut g = db.global().await?;
    let rows = sqlx::query_as("SELECT id, timezone, mail_waiting, last_digest FROM notify_organizations()")
        .fetch_all(&mut *g)
        .await?;
    g.commit().await?;
    Ok(rows)
}

/// Decides every waiting notification mail of the transaction's organization: mailed through
/// the outbox (idempotency key: the notification) when its recipient's preference for its kind
/// is email now, skipped otherwise. Returns how many were queued.
pub async fn send_pending(
    tx: &mut OrgTx,
    public_url: &str,
    now: OffsetDateTime,
    limit: i64,
) -> Result<usize, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Waiting {
        id: Uuid,
        kind: String,
        title: String,
        body: String,
        link: String,
        email: String,
        org_name: String,
        channel: Option<String>,
    }
    let rows: Vec<Waiting> = sqlx::query_as(
        "SELECT n.id, n.kind, n.title, n.body, n.link, u.email, o.name AS org_name, p.channel \
           FROM notifications n JOIN users u ON u.id = n.recipient_id \
           JOIN organizations o ON o.id = n.organization_id \
           LEFT JOIN notification_preferences p ON p.organization_id = n.organization_id \
                AND p.user_id = n.recipient_id AND p.kind = n.kind \
          WHERE n.email_state = 'pending' ORDER BY n.created_at LIMIT $1 FOR UPDATE OF n SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut queued = 0;
    for n in rows {
        let wants = n.channel.as_deref().and_then(Channel::parse).unwrap_or(Channel::Email) == Channel::Email;
        let state = if wants {
            let mut text = n.title.clone();
            if !n.body.is_empty() {
                text.push_str("\n\n");
                text.push_str(&n.body);
            }
            text.push_str(&format!(
                "\n\nOpen it: {public_url}{}\n\nChoose what you are told about, and how: {public_url}{}\n\n-- \nClientFlow\n",
                n.link,
                preferences_link(&n.link)
            ));
            let mail = OutgoingMail {
                to: n.email.clone(),
                subject: n.title.clone(),
                body: text,
                category: Category::Transactional,
                org_name: Some(n.org_name.clone()),
            };
            outbox::enqueue(tx, &mail, &format!("notification:{}:{}", n.kind, n.id), now).await?;
            queued += 1;
            "sent"
        } else {
            "skipped"
        };
        sqlx::query("UPDATE notifications SET email_state = $2 WHERE id = $1")
            .bind(n.id)
            .bind(state)
            .execute(&mut **tx)
            .await?;
    }
    Ok(queued)
}

/// The preferences page of the organization a link points into (`/o/acme/…` or `/portal/acme/…`).
fn preferences_link(link: &str) -> String {
    let mut parts = link.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some(_), Some(slug)) if !slug.is_empty() => format!("/o/{slug}/notifications/preferences"),
        _ => "/orgs".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_channels_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Kind::parse("nope"), None);
        assert_eq!(preferences_link("/o/acme/tasks/1"), "/o/acme/notifications/preferences");
        assert_eq!(preferences_link("/portal/acme/projects/1"), "/o/acme/notifications/preferences");
        assert_eq!(clip("a\u{0}b", 10), "ab");
        // An empty body stays empty (the page shows none); a title never is.
        assert_eq!(clip(" \u{7}", 10).trim(), "");
        assert_eq!(title("\u{0}"), "Notification");
        assert_eq!(title("Done"), "Done");
    }
}
