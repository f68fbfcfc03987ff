//! Per-organization IP allowlists: when an organization's list is non-empty, its dashboard
//! (every `Access::Org` route, checked in [`super::guard::require_org`]) and its API keys
//! (`api::guard::require_key`) answer 403 to any client address outside the list. File
//! downloads, exports and the JSON API go through those guards, so they are covered too; the
//! one public route that serves organization data, a signed file link
//! (`work::web::files::signed_download`), checks the list itself before serving a byte.
//!
//! The address is the [`ClientIp`](crate::platform::http::middleware::ClientIp) of the request:
//! the socket peer, or the forwarded client only behind a configured trusted proxy, so a
//! header can't talk its way in. IPv4-mapped IPv6 addresses are compared as IPv4, in the list
//! (normalized when parsed, by `platform::net::parse_cidr`) and in the request.
//!
//! Client-role members (the client portal) are not held to the list: they are the
//! organization's own customers, outside its network by definition, and the portal shows them
//! only their own records, read-only.
//!
//! Saving a list that would shut out the person saving it is refused unless they confirm it.
//! An Owner who locked themselves out anyway is let back in by the operator:
//! `clientflow org allowlist clear --org <slug or id>` (audited, docs/operations.md).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::json;

use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult, FieldError};
use crate::platform::net;

/// Most entries a list may hold (the column's CHECK says the same).
pub const MAX_ENTRIES: usize = 200;

/// Parses the list as typed: one address or CIDR range per line (commas and spaces separate
/// too), `#` starts a comment. Duplicates are dropped; the order is kept.
pub fn parse(text: &str) -> DomainResult<Vec<IpNet>> {
    let mut list: Vec<IpNet> = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split([',', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()) {
            match net::parse_cidr(item) {
                Ok(entry) if !list.contains(&entry) => list.push(entry),
                Ok(_) => {}
                Err(m) => errors.push(FieldError::new("ip_allowlist", format!("line {}: {m}", n + 1))),
            }
        }
    }
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors));
    }
    if list.len() > MAX_ENTRIES {
        return Err(DomainError::field("ip_allowlist", format!("has {} entries; at most {MAX_ENTRIES}", list.len())));
    }
    Ok(list)
}

/// One entry per line, as the settings page shows it.
pub fn render(list: &[IpNet]) -> String {
    list.iter().map(|n| display(*n)).collect::<Vec<_>>().join("\n")
}

/// A single address without its /32 or /128.
fn display(n: IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() }
}

fn snapshot(list: &[IpNet]) -> serde_json::Value {
    json!({ "ip_allowlist": list.iter().map(|n| display(*n)).collect::<Vec<_>>() })
}

/// Whether `ip` may use an organization with this list (an empty list allows everyone).
pub fn permits(list: &[IpNet], ip: IpAddr) -> bool {
    list.is_empty() || net::contains(list, ip)
}

/// The 403 for a request from outside the list: it says what happened and what to do, and
/// which address we saw (the person may be on an unexpected network or VPN).
pub fn refusal(org_name: &str, ip: IpAddr) -> DomainError {
    DomainError::Forbidden(format!(
        "{org_name} only allows access from its approved network addresses, and your address ({}) is not \
         one of them. Connect from an approved network, or ask an Owner of {org_name} to add this address.",
        net::normalize_ip(ip)
    ))
}

/// The organization's list, read through the principal's own door.
pub async fn load(db: &Db, principal: &OrgPrincipal) -> Result<Vec<IpNet>, sqlx::Error> {
    Ok(load_with_name(db, principal).await?.1)
}

/// The organization's name and list, for a refusal that names it.
pub async fn load_with_name(db: &Db, principal: &OrgPrincipal) -> Result<(String, Vec<IpNet>), sqlx::Error> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let row = sqlx::query_as("SELECT name, ip_allowlist FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// Replaces the list. Refused when the new list is non-empty, does not contain `saver_ip`
/// and the saver has not confirmed (`confirmed`) that they mean to lock themselves out.
pub async fn save(
    db: &Db,
    ctx: &Context,
    principal: &OrgPrincipal,
    list: Vec<IpNet>,
    saver_ip: IpAddr,
    confirmed: bool,
) -> DomainResult<()> {
    if !principal.can(Permission::IpAllowlistManage) {
        return Err(DomainError::Forbidden("Only an Owner can change the IP allowlist (ip_allowlist.manage).".into()));
    }
    if !permits(&list, saver_ip) && !confirmed {
        return Err(DomainError::Invalid(vec![FieldError::new(
            "confirm_lockout",
            format!(
                "your current address ({}) is not in this list, so saving it would lock you out of this \
                 organization at once. Add your address, or tick the box to save the list anyway.",
                net::normalize_ip(saver_ip)
            ),
        )]));
    }
    replace(db, ctx, principal, list).await.map(|_| ())
}

/// Empties the list: the operator's recovery for an organization whose Owners are locked out
/// (run from the command line, audited under the operator's system actor). Returns the list
/// that was removed.
pub async fn clear(db: &Db, ctx: &Context, principal: &OrgPrincipal) -> DomainResult<Vec<IpNet>> {
    replace(db, ctx, principal, Vec::new()).await
}

async fn replace(db: &Db, ctx: &Context, principal: &OrgPrincipal, list: Vec<IpNet>) -> DomainResult<Vec<IpNet>> {
    let mut tx = OrgTx::begin(db, principal).await?;
    let org_id = tx.org_id();
    // Locked, so two concurrent saves audit the before-list each of them actually replaced.
    let before: Vec<IpNet> = sqlx::query_scalar("SELECT ip_allowlist FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
    if before == list {
        tx.commit().await?;
        return Ok(before);
    }
    sqlx::query("UPDATE organizations SET ip_allowlist = $2::cidr[], updated_at = $3 WHERE id = $1")
        .bind(org_id)
        .bind(&list)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.ip_allowlist_changed", "organization", org_id)
            .before(snapshot(&before))
            .after(snapshot(&list)),
    )
    .await?;
    tx.commit().await?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lists_are_parsed_line_by_line_with_comments_and_normalized() {
        let list = parse("203.0.113.0/24  # office\n\n2001:db8::/48, ::ffff:198.51.100.7\n203.0.113.9/24\n").unwrap();
        assert_eq!(render(&list), "203.0.113.0/24\n2001:db8::/48\n198.51.100.7");
        let Err(DomainError::Invalid(errors)) = parse("10.0.0.0/8\nexample.com\n10.0.0.0/33") else {
            panic!("accepted garbage")
        };
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.starts_with("line 2:"), "{:?}", errors);
        let many: String = (0..=MAX_ENTRIES).map(|i| format!("10.0.{}.{}\n", i / 256, i % 256)).collect();
        assert!(parse(&many).is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn inside_and_outside_for_v4_v6_and_mapped_addresses() {
        let list = parse("203.0.113.0/24\n2001:db8:1::/48").unwrap();
        assert!(permits(&list, ip("203.0.113.77")));
        assert!(permits(&list, ip("::ffff:203.0.113.77")));
        assert!(permits(&list, ip("2001:db8:1:ffff::1")));
        assert!(!permits(&list, ip("203.0.114.1")));
        assert!(!permits(&list, ip("::ffff:203.0.114.1")));
        assert!(!permits(&list, ip("2001:db8:2::1")));
        assert!(permits(&[], ip("192.0.2.1")), "an empty list allows everyone");
    }
}
