//! What kind of mail a message is, which decides whether suppression applies to it and
//! whether it offers an unsubscribe: the outbox, suppression and the unsubscribe pages all
//! speak of it.

use serde::Serialize;

/// The kind of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Authentication, security and billing mail: always sent (bypasses suppression), never
    /// offered an unsubscribe.
    Critical,
    /// Notifications: invitations, contact-form messages, activity.
    Transactional,
    Marketing,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Critical, Category::Transactional, Category::Marketing];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Critical => "critical",
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }

    /// For people, on the unsubscribe and account pages.
    pub fn describe(self) -> &'static str {
        match self {
            Category::Critical => "sign-in, security and billing messages",
            Category::Transactional => "notifications (invitations, messages and activity in your organizations)",
            Category::Marketing => "news and announcements",
        }
    }
}
