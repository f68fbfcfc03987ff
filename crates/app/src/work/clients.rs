//! Clients and their contacts.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{Page, fields};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, ContactId, OrgId};
use crate::platform::keys::{At, Keyring, Scope};
use crate::platform::types::Email;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Client {
    #[schema(value_type = String, format = Uuid)]
    pub organization_id: OrgId,
    #[schema(value_type = String, format = Uuid)]
    pub id: ClientId,
    pub name: String,
    pub company: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub notes: String,
    /// `active` or `archived`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Minor units per hour for time on this client's projects (unless the project or the
    /// person on it has one); `null`: the organization's.
    pub hourly_rate_minor: Option<i64>,
}

const COLUMNS: &str =
    "organization_id, id, name, company, email, phone, notes, status, created_at, updated_at, hourly_rate_minor";

/// A new client.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    #[schema(format = "nonblank-text", max_length = 200)]
    pub name: String,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 200, nullable = false)]
    pub company: Option<String>,
    /// An email address; empty or null for none.
    #[schema(format = "email-or-empty", max_length = 254)]
    pub email: Option<String>,
    /// Empty or null for none.
    #[schema(format = "text", max_length = 50)]
    pub phone: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 20000, nullable = false)]
    pub notes: Option<String>,
    /// Minor units per hour (120.50 is 12050); null for none (the organization's applies).
    #[serde(default, deserialize_with = "fields::int_or_null")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub hourly_rate_minor: Option<i64>,
}

/// Changes to a client: fields left out stay as they are; `null` clears a field that may be
/// empty (email, phone) and is refused for the others.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientUpdate {
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "nonblank-text", max_length = 200, nullable = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 200, nullable = false)]
    pub company: Option<String>,
    /// An email address; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "email-or-empty", max_length = 254)]
    pub email: Option<Option<String>>,
    /// Empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "text", max_length = 50)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 20000, nullable = false)]
    pub notes: Option<String>,
    /// Minor units per hour; null clears it (the organization's applies).
    #[serde(default, deserialize_with = "fields::int_present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 100000000000_i64)]
    pub hourly_rate_minor: Option<Option<i64>>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct ClientFilter {
    /// Matches name, company or email (case-insensitive).
    pub q: Option<String>,
    /// `active` (default), `archived` or `all`.
    pub status: Option<String>,
}

/// A client's or contact's email address, or none for an empty string. Only ASCII addresses, as
/// written (`fields::EMAIL_OR_EMPTY_PATTERN`): the forms trim what people type before it gets
/// here.
fn clean_email(field: &str, v: Option<&str>) -> DomainResult<Option<String>> {
    match v {
        None | Some("") => Ok(None),
        Some(e) if !e.is_ascii() || e.trim() != e => {
            Err(DomainError::field(field, "must be an email address like name@example.com"))
        }
        Some(e) => Email::parse(e).map(|e| Some(e.as_str().to_string())).map_err(|m| DomainError::field(field, m)),
    }
}

/// The SQL condition for "client `alias` is visible", with the member filter as `$n`: a
/// Member sees the clients of the projects they belong to, and no others.
pub(crate) fn client_visible(alias: &str, param: usize) -> String {
    format!(
        "(${param}::uuid IS NULL OR EXISTS (SELECT 1 FROM projects vp JOIN project_members vm \
         ON vm.organization_id = vp.organization_id AND vm.project_id = vp.id \
         WHERE vp.organization_id = {alias}.organization_id AND vp.client_id = {alias}.id AND vm.user_id = ${param}))"
    )
}

pub async fn list(db: &Db, p: &OrgPrincipal, filter: &ClientFilter, page: Page) -> DomainResult<(Vec<Client>, i64)> {
    super::require(p, crate::access::role::Permission::ClientsRead)?;
    let member = super::member_filter(p)?;
    let status = match filter.status.as_deref().unwrap_or("active") {
        "active" => Some("active"),
        "archived" => Some("archived"),
        "all" => None,
        _ => return Err(DomainError::field("status", "must be active, archived or all")),
    };
    let q =
        filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(|q| format!("%{}%", super::like_escape(q)));
    let mut tx = OrgTx::begin(db, p).await?;
    let where_ = format!(
        "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR name ILIKE $2 OR company ILIKE $2 OR email ILIKE $2) \
         AND {}",
        client_visible("clients", 3)
    );
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM clients WHERE {where_}"))
        .bind(status)
        .bind(&q)
        .bind(member)
        .fetch_one(&mut *tx)
        .await?;
    let items = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clients WHERE {where_} ORDER BY lower(name), id LIMIT $4 OFFSET $5"
    ))
    .bind(status)
    .bind(&q)
    .bind(member)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((items, total))
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: ClientId) -> DomainResult<Client> {
    super::require(p, crate::access::role::Permission::ClientsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let c = fetch_visible(&mut tx, p, id).await?;
    tx.commit().await?;
    Ok(c)
}

/// A client the principal may see (404 otherwise, including other organizations').
pub async fn fetch_visible(tx: &mut OrgTx, p: &OrgPrincipal, id: ClientId) -> DomainResult<Client> {
    let member = super::member_filter(p)?;
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients WHERE id = $1 AND {}", client_visible("clients", 2)))
        .bind(id)
        .bind(member)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

async fn fetch(tx: &mut OrgTx, id: ClientId) -> DomainResult<Client> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &ClientInput) -> DomainResult<Client> {
    super::require(p, crate::access::role::Permission::ClientsCreate)?;
    let name = fields::nonblank("name", &input.name, 200)?;
    let company = fields::text("company", input.company.as_deref().unwrap_or(""), 200)?;
    let email = clean_email("email", input.email.as_deref())?;
    let phone = fields::optional_text("phone", input.phone.as_deref(), 50)?;
    let notes = fields::text("notes", input.notes.as_deref().unwrap_or(""), 20000)?;
    let rate = input.hourly_rate_minor.map(|r| super::invoicing::check_rate("hourly_rate_minor", r)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    let c: Client = sqlx::query_as(&format!(
        "INSERT INTO clients (organization_id, id, name, company, email, phone, notes, created_at, updated_at, hourly_rate_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(ClientId::new())
    .bind(&name)
    .bind(&company)
    .bind(&email)
    .bind(&phone)
    .bind(&notes)
    .bind(ctx.now)
    .bind(rate)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, ctx, Entry::new("client.created", "client", c.id).after(snapshot(&c))).await?;
    tx.commit().await?;
    Ok(c)
}

fn snapshot(c: &Client) -> serde_json::Value {
    json!({
        "name": c.name, "company": c.company, "email": c.email, "phone": c.phone, "status": c.status,
        "hourly_rate_minor": c.hourly_rate_minor,
    })
}

pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: ClientId,
    input: &ClientUpdate,
) -> DomainResult<Client> {
    super::require(p, crate::access::role::Permission::ClientsUpdate)?;
    let name = input.name.as_deref().map(|n| fields::nonblank("name", n, 200)).transpose()?;
    let company = input.company.as_deref().map(|c| fields::text("company", c, 200)).transpose()?;
    let email = input.email.as_ref().map(|e| clean_email("email", e.as_deref())).transpose()?;
    let phone = input.phone.as_ref().map(|ph| fields::optional_text("phone", ph.as_deref(), 50)).transpose()?;
    let notes = input.notes.as_deref().map(|n| fields::text("notes", n, 20000)).transpose()?;
    let rate = match input.hourly_rate_minor {
        Some(Some(r)) => Some(Some(super::invoicing::check_rate("hourly_rate_minor", r)?)),
        other => other,
    };
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    let rate = rate.unwrap_or(before.hourly_rate_minor);
    let name = name.unwrap_or_else(|| before.name.clone());
    let company = company.unwrap_or_else(|| before.company.clone());
    let email = email.unwrap_or_else(|| before.email.clone());
    let phone = phone.unwrap_or_else(|| before.phone.clone());
    let notes = notes.unwrap_or_else(|| before.notes.clone());
    let after: Client = sqlx::query_as(&format!(
        "UPDATE clients SET name = $2, company = $3, email = $4, phone = $5, notes = $6, updated_at = $7, hourly_rate_minor = $8 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&name)
    .bind(&company)
    .bind(&email)
    .bind(&phone)
    .bind(&notes)
    .bind(ctx.now)
    .bind(rate)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("client.updated", "client", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn set_archived(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: ClientId,
    archived: bool,
) -> DomainResult<Client> {
    super::require(p, crate::access::role::Permission::ClientsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    let status = if archived { "archived" } else { "active" };
    let after: Client = sqlx::query_as(&format!(
        "UPDATE clients SET status = $2, archived_at = CASE WHEN $3 THEN $4 ELSE NULL END, updated_at = $4 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(archived)
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    let action = if archived { "client.archived" } else { "client.restored" };
    audit::record(&mut tx, ctx, Entry::new(action, "client", id).before(snapshot(&before)).after(snapshot(&after)))
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a client with no projects, invoices or portal users (archive it otherwise).
pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: ClientId) -> DomainResult<()> {
    super::require(p, crate::access::role::Permission::ClientsDelete)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    let in_use: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projects WHERE client_id = $1) OR EXISTS (SELECT 1 FROM invoices WHERE client_id = $1) \
         OR EXISTS (SELECT 1 FROM memberships WHERE client_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if in_use {
        return Err(DomainError::Conflict(
            "This client has projects, invoices or portal users; archive it instead.".into(),
        ));
    }
    sqlx::query("DELETE FROM clients WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("client.deleted", "client", id).before(snapshot(&before))).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    #[schema(value_type = String, format = Uuid)]
    pub id: ContactId,
    #[schema(value_type = String, format = Uuid)]
    pub client_id: ClientId,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub title: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub title: Option<String>,
}

/// Where a contact's sealed details are bound: its organization's data key, this table, the
/// column and the contact's id (docs/security/encryption.md).
pub fn contact_at<'a>(column: &'a str, id: &'a str) -> At<'a> {
    At::new("client_contacts", column, id)
}

/// A contact row as stored: the email address and phone number sealed (or, until
/// `clientflow keys reseal` has run, still in the plaintext columns).
#[derive(sqlx::FromRow)]
struct StoredContact {
    id: ContactId,
    client_id: ClientId,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    title: String,
    email_sealed: Option<Vec<u8>>,
    phone_sealed: Option<Vec<u8>>,
}

const CONTACT_COLUMNS: &str = "id, client_id, name, email, phone, title, email_sealed, phone_sealed";

/// Opens one sealed detail of a contact.
pub fn open_contact_detail(
    keys: &Keyring,
    org: OrgId,
    column: &str,
    id: ContactId,
    sealed: &[u8],
) -> DomainResult<String> {
    let row = id.to_string();
    let plain = keys.open(Scope::org(org), contact_at(column, &row), sealed, None).map_err(DomainError::internal)?;
    String::from_utf8(plain).map_err(DomainError::internal)
}

/// Seals one detail of a contact with the organization's current data key.
pub fn seal_contact_detail(
    keys: &Keyring,
    org: OrgId,
    column: &str,
    id: ContactId,
    version: u32,
    plain: Option<&str>,
) -> DomainResult<Option<Vec<u8>>> {
    let row = id.to_string();
    plain
        .map(|v| keys.seal_with_version(Scope::org(org), contact_at(column, &row), v.as_bytes(), version))
        .transpose()
        .map_err(DomainError::internal)
}

fn open_contact(keys: &Keyring, org: OrgId, c: StoredContact) -> DomainResult<Contact> {
    let email = match &c.email_sealed {
        Some(s) => Some(open_contact_detail(keys, org, "email", c.id, s)?),
        None => c.email,
    };
    let phone = match &c.phone_sealed {
        Some(s) => Some(open_contact_detail(keys, org, "phone", c.id, s)?),
        None => c.phone,
    };
    Ok(Contact { id: c.id, client_id: c.client_id, name: c.name, email, phone, title: c.title })
}

pub async fn contacts(db: &Db, keys: &Keyring, p: &OrgPrincipal, client: ClientId) -> DomainResult<Vec<Contact>> {
    super::require(p, crate::access::role::Permission::ClientsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch(&mut tx, client).await?;
    let rows: Vec<StoredContact> = sqlx::query_as(&format!(
        "SELECT {CONTACT_COLUMNS} FROM client_contacts WHERE client_id = $1 ORDER BY name, id"
    ))
    .bind(client)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // Opened one row at a time: fine at a client's contact-list sizes.
    rows.into_iter().map(|c| open_contact(keys, p.org_id(), c)).collect()
}

pub async fn add_contact(
    db: &Db,
    keys: &Keyring,
    ctx: &Context,
    p: &OrgPrincipal,
    client: ClientId,
    input: &ContactInput,
) -> DomainResult<Contact> {
    super::require(p, crate::access::role::Permission::ClientsUpdate)?;
    let name = fields::nonblank("name", input.name.as_deref().unwrap_or(""), 200)?;
    let email = clean_email("email", input.email.as_deref())?;
    let phone = fields::optional_text("phone", input.phone.as_deref(), 50)?;
    let title = fields::text("title", input.title.as_deref().unwrap_or(""), 200)?;
    let org = p.org_id();
    let id = ContactId::new();
    let version = keys.current_version(Scope::org(org)).map_err(DomainError::internal)?;
    let email_sealed = seal_contact_detail(keys, org, "email", id, version, email.as_deref())?;
    let phone_sealed = seal_contact_detail(keys, org, "phone", id, version, phone.as_deref())?;
    let mut tx = OrgTx::begin(db, p).await?;
    let stored: StoredContact = sqlx::query_as(&format!(
        "INSERT INTO client_contacts (organization_id, id, client_id, name, title, created_at, email_sealed, phone_sealed, \
         key_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {CONTACT_COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(id)
    .bind(client)
    .bind(&name)
    .bind(&title)
    .bind(ctx.now)
    .bind(&email_sealed)
    .bind(&phone_sealed)
    .bind(version as i32)
    .fetch_one(&mut *tx)
    .await?;
    let c = open_contact(keys, org, stored)?;
    // The audit log keeps no copy of the sealed details (it is append-only and unsealed).
    audit::record(
        &mut tx,
        ctx,
        Entry::new("client.contact_added", "client", client)
            .after(json!({ "contact": c.id, "name": c.name, "email": c.email.is_some(), "phone": c.phone.is_some() })),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

pub async fn remove_contact(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    client: ClientId,
    contact: ContactId,
) -> DomainResult<()> {
    super::require(p, crate::access::role::Permission::ClientsUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let done = sqlx::query("DELETE FROM client_contacts WHERE id = $1 AND client_id = $2")
        .bind(contact)
        .bind(client)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("client.contact_removed", "client", client).before(json!({ "contact": contact })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Minimal repository functions over an open `OrgTx` (used by seeding and tests).
pub mod repo {
    use super::{COLUMNS, Client};
    use crate::access::OrgTx;
    use crate::platform::ids::ClientId;

    pub async fn create(tx: &mut OrgTx, name: &str) -> Result<Client, sqlx::Error> {
        let org = tx.org_id();
        sqlx::query_as(&format!(
            "INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
        ))
        .bind(org)
        .bind(ClientId::new())
        .bind(name)
        .fetch_one(&mut **tx)
        .await
    }

    pub async fn get(tx: &mut OrgTx, id: ClientId) -> Result<Option<Client>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients WHERE id = $1")).bind(id).fetch_optional(&mut **tx).await
    }

    pub async fn list(tx: &mut OrgTx, limit: i64) -> Result<Vec<Client>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients ORDER BY name, id LIMIT $1"))
            .bind(limit)
            .fetch_all(&mut **tx)
            .await
    }

    pub async fn rename(tx: &mut OrgTx, id: ClientId, name: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE clients SET name = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
