//! Plan limits, enforced in the services that create what a plan counts: inviting past the
//! seat limit (`tenancy::service::invite`), creating a project past the project limit
//! (`work::projects::create`), uploading past storage (`work::files::upload`), issuing an API
//! key past the key limit (`api::web`). Each calls [`check`] in its own transaction, so the web
//! page and the API refuse the same way: `DomainError::PlanLimit`, a 403 problem naming the limit
//! and where to upgrade.
//!
//! Billing off (`Context::plans` is `None`): every limit is unlimited and [`check`] returns at
//! once, without touching the database. Billing on: an organization is on its subscription's
//! plan while the subscription is trialing, active or past due, and on the free plan otherwise;
//! past due for longer than `billing.grace_days`, it is read-only (never deleted).

use time::OffsetDateTime;

use super::service::{self, Account};
use crate::access::OrgTx;
use crate::audit::Context;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::plans::{Plan, PlanBook};

/// What a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Seats,
    Projects,
    StorageBytes,
    ApiKeys,
}

impl Resource {
    pub const ALL: [Resource; 4] = [Resource::Seats, Resource::Projects, Resource::StorageBytes, Resource::ApiKeys];

    /// The limit's name in a problem (`limit`) and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Seats => "seats",
            Resource::Projects => "projects",
            Resource::StorageBytes => "storage",
            Resource::ApiKeys => "api_keys",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Resource::Seats => "Seats (active members and open invitations)",
            Resource::Projects => "Projects",
            Resource::StorageBytes => "File storage",
            Resource::ApiKeys => "API keys",
        }
    }

    pub fn limit_of(self, plan: &Plan) -> Option<i64> {
        match self {
            Resource::Seats => plan.limits.seats,
            Resource::Projects => plan.limits.projects,
            Resource::StorageBytes => plan.limits.storage_bytes,
            Resource::ApiKeys => plan.limits.api_keys,
        }
    }

    /// A quantity of this resource as people read it.
    pub fn show(self, n: i64) -> String {
        match self {
            Resource::StorageBytes if n >= 1024 * 1024 * 1024 => {
                format!("{:.1} GiB", n as f64 / (1024.0 * 1024.0 * 1024.0))
            }
            Resource::StorageBytes => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
            _ => n.to_string(),
        }
    }

    /// `n` of the resource in words, as a refusal says it ("1 project", "3 API keys", "1.0 MiB
    /// of file storage").
    pub fn amount(self, n: i64) -> String {
        let (one, many) = match self {
            Resource::Seats => ("seat", "seats"),
            Resource::Projects => ("project", "projects"),
            Resource::ApiKeys => ("API key", "API keys"),
            Resource::StorageBytes => return format!("{} of file storage", self.show(n)),
        };
        let counted = format!("{} {}", self.show(n), if n == 1 { one } else { many });
        match self {
            Resource::Seats => format!("{counted} (active members and open invitations)"),
            _ => counted,
        }
    }
}

/// An organization's standing under billing: its effective plan and whether it may write.
#[derive(Debug, Clone)]
pub struct Standing {
    pub plan: Plan,
    pub status: String,
    pub read_only: bool,
    pub read_only_from: Option<OffsetDateTime>,
}

/// The plan that applies: the subscription's while it is trialing, active or past due; the
/// free plan otherwise (none yet, or canceled).
pub fn standing(book: &PlanBook, account: Option<&Account>, now: OffsetDateTime) -> Standing {
    let free = book.free_plan().clone();
    let Some(a) = account else {
        return Standing { plan: free, status: "none".into(), read_only: false, read_only_from: None };
    };
    let paid = matches!(a.status.as_str(), "trialing" | "active" | "past_due");
    let plan = if paid { book.plan(&a.plan).cloned().unwrap_or(free) } else { free };
    let read_only_from = match (a.status.as_str(), a.past_due_since) {
        ("past_due", Some(since)) => Some(since + time::Duration::days(book.grace_days)),
        _ => None,
    };
    Standing { plan, status: a.status.clone(), read_only: read_only_from.is_some_and(|f| now >= f), read_only_from }
}

fn upgrade_url(book: &PlanBook, slug: &str) -> String {
    book.upgrade_path.replace("{org}", slug)
}

async fn slug(tx: &mut OrgTx) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT slug FROM organizations WHERE id = $1").bind(tx.org_id()).fetch_one(&mut **tx).await
}

/// How much of `resource` the organization uses now.
pub async fn usage(tx: &mut OrgTx, resource: Resource, now: OffsetDateTime) -> Result<i64, sqlx::Error> {
    let sql = match resource {
        Resource::Seats => {
            "SELECT (SELECT count(*) FROM memberships WHERE status = 'active' AND role <> 'client') \
             + (SELECT count(*) FROM invitations WHERE accepted_at IS NULL AND declined_at IS NULL \
                AND revoked_at IS NULL AND expires_at > $1 AND role <> 'client')"
        }
        Resource::Projects => "SELECT count(*) FROM projects WHERE $1::timestamptz IS NOT NULL",
        Resource::StorageBytes => {
            "SELECT coalesce(sum(size_bytes), 0)::bigint FROM files WHERE $1::timestamptz IS NOT NULL"
        }
        Resource::ApiKeys => {
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)"
        }
    };
    sqlx::query_scalar(sql).bind(now).fetch_one(&mut **tx).await
}

/// Refuses adding `adding` of `resource` when the organization's plan doesn't allow it, or when
/// the organization is read-only. Runs in the caller's transaction; with billing on, it first
/// takes the organization's billing lock (until that transaction ends), so two creations at
/// once can't both take the last place.
pub async fn check(tx: &mut OrgTx, ctx: &Context, resource: Resource, adding: i64) -> DomainResult<()> {
    let Some(book) = ctx.plans.as_deref() else {
        return Ok(());
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('billing:' || $1::text, 0))")
        .bind(tx.org_id())
        .execute(&mut **tx)
        .await?;
    let account = service::account(tx).await?;
    let standing = standing(book, account.as_ref(), ctx.now);
    if standing.read_only {
        let slug = slug(tx).await?;
        return Err(read_only_error(book, &slug));
    }
    let Some(limit) = resource.limit_of(&standing.plan) else {
        return Ok(());
    };
    let used = usage(tx, resource, ctx.now).await?;
    if used.saturating_add(adding) > limit {
        let slug = slug(tx).await?;
        return Err(DomainError::PlanLimit {
            limit: resource.as_str(),
            message: format!(
                "The {} plan allows {} and this organization uses {}. An Owner can upgrade on the billing page ({}).",
                standing.plan.name,
                resource.amount(limit),
                resource.show(used),
                upgrade_url(book, &slug),
            ),
            upgrade: upgrade_url(book, &slug),
        });
    }
    Ok(())
}

fn read_only_error(book: &PlanBook, slug: &str) -> DomainError {
    DomainError::PlanLimit {
        limit: "read_only",
        message: format!(
            "This organization is read-only: a payment is overdue past the grace period. Nothing was deleted; \
             an Owner can update the payment method on the billing page ({}).",
            upgrade_url(book, slug)
        ),
        upgrade: upgrade_url(book, slug),
    }
}

/// Refuses any change while the organization is read-only (the route guard asks, for every
/// unsafe request of an organization's page or API outside billing itself).
pub async fn refuse_if_read_only(tx: &mut OrgTx, book: &PlanBook, now: OffsetDateTime) -> DomainResult<()> {
    let account = service::account(tx).await?;
    if standing(book, account.as_ref(), now).read_only {
        let slug = slug(tx).await?;
        return Err(read_only_error(book, &slug));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Resource;

    #[test]
    fn a_refusal_says_the_amount_in_words() {
        assert_eq!(Resource::Projects.amount(1), "1 project");
        assert_eq!(Resource::Projects.amount(3), "3 projects");
        assert_eq!(Resource::Seats.amount(1), "1 seat (active members and open invitations)");
        assert_eq!(Resource::ApiKeys.amount(2), "2 API keys");
        assert_eq!(Resource::StorageBytes.amount(1024 * 1024), "1.0 MiB of file storage");
    }
}
