//! A visitor of an organization's public contact form.

use super::gate;
use super::principal::{Actor, OrgPrincipal};
use super::role::{PermissionSet, Role};
use crate::platform::db::Db;
use crate::platform::db::tenant::{Capability, GateTx};
use crate::platform::ids::OrgId;

/// An organization's public contact form, for a visitor who is not a member.
///
/// Presenting the slug (`app.contact_form_slug`, the `contact_form_by_slug` policy of
/// migration 0005) makes exactly that organization's row readable, and only while its contact
/// form is enabled, so an unknown slug and a disabled form look the same: `None`. The principal
/// returned can write the submission and nothing else of consequence: no permissions, and the
/// Client role without a client record, which scopes it to no project.
pub async fn contact_form(db: &Db, slug: &str) -> Result<Option<(OrgPrincipal, String)>, sqlx::Error> {
    // The slug's region, from the directory (with one region: the one database).
    let db = if db.is_multi_region() {
        let mut tx = db.home().global().await?;
        let placement = super::directory::by_slug(db, &mut tx, slug).await?;
        tx.commit().await?;
        match placement.and_then(|p| db.in_region(p.region)) {
            Some(db) => db,
            None => return Ok(None),
        }
    } else {
        db.clone()
    };
    let mut tx = GateTx::begin(&db, &gate()).await?;
    let region = tx.region();
    tx.set(Capability::ContactFormSlug, slug).await?;
    let row: Option<(OrgId, String)> = sqlx::query_as(
        "SELECT id, name FROM organizations WHERE slug = $1 AND contact_form_enabled AND contact_email IS NOT NULL",
    )
    .bind(slug)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(org_id, name)| {
        let principal = OrgPrincipal {
            org_id,
            actor: Actor::System("public contact form".into()),
            role: Role::Client,
            client_id: None,
            permissions: PermissionSet::default(),
            scope_user: None,
            region,
        };
        (principal, name)
    }))
}
