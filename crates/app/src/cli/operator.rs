//! Operator commands: accounts, organizations, memberships and API keys from the command line.
//!
//! The operator runs these on the server with the server's own database credentials, so they
//! act as the installation itself: organization-scoped actions go through the tenant door with
//! [`access::operator`] and the [`OperatorAuthority`] the CLI's entry point hands down (an
//! Owner-level principal whose actor is `System("operator: …")`) and
//! write their audit event in the same transaction; creating an account, which belongs to no
//! organization yet, is recorded as a security event on the account; resetting an account's
//! second factor is recorded as a security event and in the audit log of each of its
//! organizations under the operator.
//!
//! Output is a short text for people, or with `--json` exactly one JSON document on standard
//! output with stable field names. Errors go to standard error — as `{"error": {"kind",
//! "message", "fields"}}` with `--json` — and exit with status 1. Nothing secret is printed
//! except the one thing the operator must copy: a generated password or a new API key, once.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Connection as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::UserCommand;
use super::session::{
    OpError, OpResult, OrgOut, Report, Session, audit_context, finish, org_principal, rfc3339, with_session,
};
use crate::access::OrgTx;
use crate::access::api_key::{self as keys, ApiKey, NewKey};
use crate::access::role::Role;
use crate::access::{self, NewOrgCreator, OperatorAuthority, OrgPrincipal};
use crate::audit::{self, Entry};
use crate::config::Config;
use crate::identity::password::{PasswordHasher, check_policy};
use crate::identity::repo as users;
use crate::identity::session::RequestMeta;
use crate::platform::db::RegionId;
use crate::platform::db::provision;
use crate::platform::error::{DomainError, FieldError};
use crate::platform::ids::{ClientId, UserId};
use crate::platform::secret::Secret;
use crate::platform::types::{Email, Slug, parse_name};
use crate::tenancy::repo as orgs;

#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create an organization with an existing account as its Owner.
    Create {
        /// Display name, e.g. "Acme Studio".
        #[arg(long)]
        name: String,
        /// URL handle: 1-63 lower-case letters, digits or inner hyphens (default: made from the
        /// name).
        #[arg(long)]
        slug: Option<String>,
        /// Email of the existing account that becomes the Owner (see `clientflow user create`).
        #[arg(long)]
        owner: String,
        /// The region its data lives in (a configured one, e.g. eu; default: the default region).
        #[arg(long)]
        region: Option<String>,
    },
    /// List every organization. Reads across organizations, so it needs the auditor role
    /// (CLIENTFLOW_DATABASE__AUDITOR_URL unless ClientFlow provisioned its own roles).
    List,
    /// An organization's IP allowlist: show it, or clear it for an Owner who locked themselves out.
    Allowlist {
        #[command(subcommand)]
        command: super::AllowlistCommand,
    },
    /// Move an organization's data (rows, files, audit log) to another region. Its data is
    /// read-only while the move runs; an interrupted move continues when run again, or is undone
    /// with --rollback (docs/security/residency.md).
    Move {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The region to move to (a configured one, e.g. eu).
        #[arg(long)]
        to: Option<String>,
        /// Undo the move under way instead (possible until the directory has switched).
        #[arg(long)]
        rollback: bool,
    },
    /// Export all of an organization's data to a ZIP archive (the Data export page's archive),
    /// with a progress line on standard error.
    Export {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The archive to write (refused if it exists).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Import an organization's export into this installation, which must not have that
    /// organization yet. Checks the whole archive and its audit chain first; all or nothing.
    Import {
        /// The archive made by `org export` or the Data export page.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add an existing account to an organization with a role.
    Add {
        /// Organization id or slug (a slug is looked up with the auditor role).
        #[arg(long)]
        org: String,
        /// Email of the existing account.
        #[arg(long)]
        email: String,
        /// owner, admin, manager, member or client.
        #[arg(long)]
        role: String,
        /// For the client role (and only for it): the id of the client record the person may
        /// see in the portal.
        #[arg(long)]
        client: Option<String>,
    },
    /// List an organization's members.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create an API key and print it once (only its SHA-256 digest is stored).
    Create {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// What the key is for, e.g. "CI deploys".
        #[arg(long)]
        name: String,
        /// admin, manager or member (never owner: a key can't manage owners or billing).
        #[arg(long)]
        role: String,
        /// Restrict the key to these permissions of its role (comma-separated, e.g.
        /// tasks.read,tasks.create; `clientflow docs permissions` lists them).
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        /// Days until the key stops working (1-3650; default: no expiry).
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// Email of the member the key acts for (default: the organization's first Owner).
        /// Its projects are a member key's, time it records is theirs, comments it writes are
        /// theirs to edit, and the key never holds more than they do.
        #[arg(long = "as", value_name = "EMAIL")]
        acting_for: Option<String>,
    },
    /// List an organization's API keys (never the keys themselves).
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
    },
    /// Revoke an API key: requests using it fail from now on.
    Revoke {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// The key's id (from `api-key list`).
        #[arg(long)]
        id: String,
    },
}

fn parse_email(field: &str, v: &str) -> OpResult<Email> {
    Email::parse(v).map_err(|m| OpError::invalid(field, m))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

/// Column-aligned text for lists.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// user

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct UserOut {
    id: UserId,
    email: String,
    name: String,
    email_verified: bool,
    two_factor: bool,
    disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const USER_COLUMNS: &str = "id, email, display_name AS name, email_verified_at IS NOT NULL AS email_verified, \
     (totp_enabled_at IS NOT NULL AND totp_secret IS NOT NULL) AS two_factor, disabled_at IS NOT NULL AS disabled, created_at";

async fn user_out(conn: &mut sqlx::PgConnection, id: UserId) -> Result<UserOut, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_one(conn).await
}

fn cli_meta(now: OffsetDateTime) -> RequestMeta {
    RequestMeta {
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        user_agent: "clientflow cli".into(),
        now,
        request_id: String::new(),
    }
}

pub async fn user(
    config: Config,
    json: bool,
    operator: OperatorAuthority,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    // Read the password before connecting, so a pipe that closes early fails fast.
    let password = match &command {
        UserCommand::Create { password_stdin: true, .. } => match read_password_line() {
            Ok(p) => Some(p),
            Err(e) => return Ok(finish(json, Err(e))),
        },
        _ => None,
    };
    with_session(&config, json, operator, async move |s| match command {
        UserCommand::Create { email, name, .. } => create_user(s, &email, name.as_deref(), password).await,
        UserCommand::List => list_users(s).await,
        UserCommand::Disable { email } => set_disabled(s, &email, true).await,
        UserCommand::Enable { email } => set_disabled(s, &email, false).await,
        UserCommand::ResetTwoFactor { email, reason } => reset_two_factor(s, &email, &reason).await,
    })
    .await
}

fn read_password_line() -> OpResult<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| OpError::Failed(anyhow::anyhow!("cannot read the password from standard input: {e}")))?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        return Err(OpError::invalid("password-stdin", "got an empty line; write the password to standard input"));
    }
    Ok(Secret::new(password))
}

async fn create_user(s: &Session, email: &str, name: Option<&str>, password: Option<Secret>) -> OpResult<Report> {
    let email = parse_email("email", email)?;
    let name = match name {
        Some(n) => parse_name(n).map_err(|m| OpError::invalid("name", m))?,
        None => String::new(),
    };
    // 256 random bits, base64url: far beyond the policy, and copyable.
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| Secret::new(crate::platform::crypto::random_token()));
    check_policy(password.expose(), email.as_str(), &name).map_err(|m| OpError::invalid("password-stdin", m))?;
    let hash = PasswordHasher::new(1, 1)
        .hash(&password)
        .await
        .map_err(|e| OpError::Failed(anyhow::anyhow!("cannot hash the password: {e}")))?;
    let now = OffsetDateTime::now_utc();
    let mut tx = s.db.global().await?;
    if users::find_by_email(&mut tx, &email).await?.is_some() {
        return Err(OpError::Conflict(format!("an account with the email address {email} already exists")));
    }
    let created = match users::create(&mut tx, &email, &name, Some(&hash), Some(now), now).await {
        Ok(u) => u,
        Err(e) if is_unique_violation(&e) => {
            return Err(OpError::Conflict(format!("an account with the email address {email} already exists")));
        }
        Err(e) => return Err(e.into()),
    };
    crate::identity::events::record(
        &mut tx,
        Some(created.id),
        "created_by_operator",
        &cli_meta(now),
        json!({
            "actor": "operator: user create",
            "email_verified": true,
            "password_source": if generated { "generated" } else { "stdin" },
        }),
    )
    .await?;
    let out = user_out(&mut tx, created.id).await?;
    tx.commit().await?;
    let mut text = format!("created user {} ({}), email verified\n", out.email, out.id);
    let mut doc = json!({ "user": out });
    if generated {
        text.push_str(&format!("password (shown once, store it now): {}\n", password.expose()));
        doc["password"] = Value::from(password.expose());
    }
    Ok(Report { json: doc, text })
}

async fn list_users(s: &Session) -> OpResult<Report> {
    let mut tx = s.db.global().await?;
    let rows: Vec<UserOut> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, email"))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let text = table(
        &["EMAIL", "NAME", "VERIFIED", "2FA", "STATUS", "CREATED", "ID"],
        &rows
            .iter()
            .map(|u| {
                vec![
                    u.email.clone(),
                    u.name.clone(),
                    yes_no(u.email_verified),
                    yes_no(u.two_factor),
                    if u.disabled { "disabled" } else { "active" }.to_string(),
                    rfc3339(u.created_at),
                    u.id.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(Report { json: json!({ "users": rows }), text })
}

async fn set_disabled(s: &Session, email: &str, disable: bool) -> OpResult<Report> {
    let email = parse_email("email", email)?;
    let now = OffsetDateTime::now_utc();
    let mut tx = s.db.global().await?;
    let Some(user) = users::find_by_email(&mut tx, &email).await? else {
        return Err(OpError::NotFound(format!("no account with the email address {email}")));
    };
    users::set_disabled(&mut tx, user.id, disable, now).await?;
    let kind = if disable { "disabled_by_operator" } else { "enabled_by_operator" };
    crate::identity::events::record(&mut tx, Some(user.id), kind, &cli_meta(now), json!({})).await?;
    let out = user_out(&mut tx, user.id).await?;
    tx.commit().await?;
    crate::access::departure::copy_disabled(&s.db, user.id, disable.then_some(now)).await?;
    let text = format!("{} {}\n", if disable { "disabled" } else { "enabled" }, email);
    Ok(Report { json: json!({ "user": out }), text })
}

async fn reset_two_factor(s: &Session, email: &str, reason: &str) -> OpResult<Report> {
    let email = parse_email("email", email)?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(OpError::invalid("reason", "must be 1 to 200 characters on one line, e.g. a ticket number"));
    }
    let ctx = audit_context(s, OffsetDateTime::now_utc());
    let mut tx = s.db.global().await?;
    let done = crate::identity::service::reset_two_factor_by_operator(&mut tx, &email, reason, &ctx).await.map_err(
        |e| match e {
            DomainError::NotFound => OpError::NotFound(format!("no account with the email address {email}")),
            other => other.into(),
        },
    )?;
    let out = user_out(&mut tx, done.user.id).await?;
    tx.commit().await?;
    let text = format!(
        "reset the two-factor authentication of {email}: removed its authenticator and {} unused recovery codes, \
         ended {} sessions, and told the account by email\n",
        done.recovery_codes_removed, done.sessions_ended
    );
    let doc = json!({
        "user": out,
        "recovery_codes_removed": done.recovery_codes_removed,
        "sessions_ended": done.sessions_ended,
    });
    Ok(Report { json: doc, text })
}

// ---------------------------------------------------------------------------------------------
// org

pub async fn org(
    config: Config,
    json: bool,
    operator: OperatorAuthority,
    command: OrgCommand,
) -> anyhow::Result<ExitCode> {
    let command = match command {
        OrgCommand::Allowlist { command } => return super::org_allowlist(config, &operator, command).await,
        OrgCommand::Move { org, to, rollback } => {
            return super::moving::run(&config, json, operator, &org, to.as_deref(), rollback).await;
        }
        other => other,
    };
    let settings = config.clone();
    with_session(&config, json, operator, async move |s| match command {
        OrgCommand::Create { name, slug, owner, region } => {
            create_org(s, &name, slug.as_deref(), &owner, region.as_deref()).await
        }
        OrgCommand::List => list_orgs(s).await,
        OrgCommand::Export { org, out } => super::org_data::export(s, &settings, &org, &out, json).await,
        OrgCommand::Import { file } => super::org_data::import(s, &settings, &file).await,
        OrgCommand::Allowlist { .. } | OrgCommand::Move { .. } => unreachable!("handled above"),
    })
    .await
}

async fn create_org(
    s: &Session,
    name: &str,
    slug: Option<&str>,
    owner: &str,
    region: Option<&str>,
) -> OpResult<Report> {
    let name = parse_name(name).map_err(|m| OpError::invalid("name", m))?;
    let slug = match slug {
        Some(v) => Slug::parse(v).map_err(|m| OpError::invalid("slug", m))?,
        None => Slug::from_name(&name)
            .ok_or_else(|| OpError::invalid("slug", "can't be made from this name; choose one with --slug"))?,
    };
    let owner_email = parse_email("owner", owner)?;
    let region_db = match region {
        None => s.db.home(),
        Some(r) => RegionId::parse(r.trim())
            .and_then(|id| s.db.in_region(id))
            .ok_or_else(|| OpError::invalid("region", "is not a region this installation offers"))?,
    };
    let now = OffsetDateTime::now_utc();
    let ctx = audit_context(s, now);
    // Accounts are global: the owner is found in the directory's database, and what the
    // organization's pages show of them is copied to its region.
    let owner = {
        let mut g = s.db.home().global().await?;
        let found = users::find_by_email(&mut g, &owner_email).await?;
        g.commit().await?;
        found
    };
    let Some(owner) = owner else {
        return Err(OpError::NotFound(format!(
            "no account with the email address {owner_email} (create it with `clientflow user create`)"
        )));
    };
    if owner.disabled_at.is_some() {
        return Err(OpError::invalid("owner", "is a disabled account; enable it first (`clientflow user enable`)"));
    }
    access::directory::project_user(&s.db, region_db.region(), owner.id).await?;
    let taken =
        || OpError::Conflict(format!("the slug {} is already taken; choose another with --slug", slug.as_str()));
    let mut tx = access::begin_new_organization(&region_db, NewOrgCreator::Operator(&s.operator, "org create")).await?;
    // Outside the directory's region the slug is reserved there first (unique across regions).
    let reserved = !tx.in_directory_region();
    if reserved {
        match access::directory::reserve(&s.db, tx.org_id(), slug.as_str(), tx.region()).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => return Err(taken()),
            Err(e) => return Err(e.into()),
        }
    }
    let org_id = tx.org_id();
    let created = async {
        let org = match orgs::insert_organization(&mut tx, &slug, &name).await {
            Ok(o) => o,
            Err(e) if is_unique_violation(&e) => return Err(taken()),
            Err(e) => return Err(e.into()),
        };
        orgs::add_member(&mut tx, owner.id, Role::Owner).await?;
        audit::record(
            &mut tx,
            &ctx,
            Entry::new("organization.created", "organization", org.id)
                .after(json!({ "name": org.name, "slug": org.slug })),
        )
        .await?;
        audit::record(
            &mut tx,
            &ctx,
            Entry::new("member.added", "member", owner.id)
                .after(json!({ "role": "owner", "status": "active", "email": owner.email })),
        )
        .await?;
        let out: OrgOut = sqlx::query_as("SELECT id, slug, name, created_at FROM organizations WHERE id = $1")
            .bind(org.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
    }
    .await;
    let out = match created {
        Ok(out) => out,
        Err(e) => {
            if reserved && let Err(f) = access::directory::forget(&s.db, org_id).await {
                tracing::warn!(error = %f, "could not release the directory entry of an organization not created");
            }
            return Err(e);
        }
    };
    let text = format!(
        "created organization {} ({}, {}) in region {} with owner {}\n",
        out.slug,
        out.name,
        out.id,
        region_db.region(),
        owner.email
    );
    Ok(Report {
        json: json!({ "organization": out, "region": region_db.region().as_str(),
                      "owner": { "id": owner.id, "email": owner.email } }),
        text,
    })
}

async fn list_orgs(s: &Session) -> OpResult<Report> {
    // Every region's organizations, each read where it lives (through that region's auditor
    // role); an organization being moved is listed once, in the region the directory names.
    let mut rows: Vec<(OrgOut, RegionId)> = Vec::new();
    for region in s.db.region_ids() {
        let Some(auditor) = s.privileged.auditor(region) else {
            return Err(OpError::Failed(anyhow::anyhow!(
                "listing organizations reads across them and needs the auditor role of every region (region \
                 {region} has none here): set CLIENTFLOW_DATABASE__AUDITOR_URL, or a privileged \
                 residency.regions.{region}.database_url (docs/operations.md, \"Database roles\")"
            )));
        };
        let mut conn = provision::connect(auditor, "auditor role").await?;
        let found: Vec<OrgOut> =
            sqlx::query_as("SELECT id, slug, name, created_at FROM organizations ORDER BY created_at, slug")
                .fetch_all(&mut conn)
                .await?;
        let _ = conn.close().await;
        for o in found {
            if s.db.is_multi_region() && access::directory::region_of(&s.db, o.id).await? != region {
                continue;
            }
            rows.push((o, region));
        }
    }
    rows.sort_by(|(a, _), (b, _)| (a.created_at, &a.slug).cmp(&(b.created_at, &b.slug)));
    let text = table(
        &["SLUG", "NAME", "REGION", "CREATED", "ID"],
        &rows
            .iter()
            .map(|(o, r)| vec![o.slug.clone(), o.name.clone(), r.to_string(), rfc3339(o.created_at), o.id.to_string()])
            .collect::<Vec<_>>(),
    );
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|(o, r)| {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["region"] = json!(r.as_str());
            v
        })
        .collect();
    Ok(Report { json: json!({ "organizations": json_rows }), text })
}

// ---------------------------------------------------------------------------------------------
// member

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct MemberOut {
    user_id: UserId,
    email: String,
    name: String,
    role: Role,
    status: String,
    client_id: Option<ClientId>,
}

const MEMBER_COLUMNS: &str = "m.user_id, u.email, u.display_name AS name, m.role, m.status, m.client_id";

pub async fn member(
    config: Config,
    json: bool,
    operator: OperatorAuthority,
    command: MemberCommand,
) -> anyhow::Result<ExitCode> {
    with_session(&config, json, operator, async move |s| match command {
        MemberCommand::Add { org, email, role, client } => add_member(s, &org, &email, &role, client.as_deref()).await,
        MemberCommand::List { org } => list_members(s, &org).await,
    })
    .await
}

async fn add_member(s: &Session, org: &str, email: &str, role: &str, client: Option<&str>) -> OpResult<Report> {
    let role: Role = role.trim().parse().map_err(|m: String| OpError::invalid("role", m))?;
    let client: Option<ClientId> =
        client.map(|c| c.trim().parse().map_err(|_| OpError::invalid("client", "is not a client id"))).transpose()?;
    match (role, client) {
        (Role::Client, None) => {
            return Err(OpError::invalid("client", "is required for the client role: the client record they may see"));
        }
        (r, Some(_)) if r != Role::Client => {
            return Err(OpError::invalid("client", "is only for the client role"));
        }
        _ => {}
    }
    let email = parse_email("email", email)?;
    let (principal, org) = org_principal(s, org, "member add").await?;
    let ctx = audit_context(s, OffsetDateTime::now_utc());
    let mut tx = OrgTx::begin(&s.db, &principal).await?;
    let Some(user) = users::find_by_email(&mut tx, &email).await? else {
        return Err(OpError::NotFound(format!(
            "no account with the email address {email} (create it with `clientflow user create`)"
        )));
    };
    if let Some(c) = client {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)")
            .bind(c)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(OpError::invalid("client", format!("is not a client of {}", org.slug)));
        }
    }
    match orgs::insert_membership(&mut tx, user.id, role, client).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(OpError::Conflict(format!("{email} is already a member of {}", org.slug)));
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    audit::record(
        &mut tx,
        &ctx,
        Entry::new("member.added", "member", user.id)
            .after(json!({ "role": role, "status": "active", "client_id": client, "email": email.as_str() })),
    )
    .await?;
    let out: MemberOut = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.user_id = $1"
    ))
    .bind(user.id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let text = format!("added {} to {} as {}\n", out.email, org.slug, out.role);
    Ok(Report { json: json!({ "organization": org, "member": out }), text })
}

async fn list_members(s: &Session, org: &str) -> OpResult<Report> {
    let (principal, org) = org_principal(s, org, "member list").await?;
    let mut tx = OrgTx::begin(&s.db, &principal).await?;
    let rows: Vec<MemberOut> = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id \
         ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 WHEN 'manager' THEN 2 WHEN 'member' THEN 3 ELSE 4 END, u.email"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let text = table(
        &["EMAIL", "NAME", "ROLE", "STATUS", "CLIENT", "USER ID"],
        &rows
            .iter()
            .map(|m| {
                vec![
                    m.email.clone(),
                    m.name.clone(),
                    m.role.to_string(),
                    m.status.clone(),
                    m.client_id.map(|c| c.to_string()).unwrap_or_default(),
                    m.user_id.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(Report { json: json!({ "organization": org, "members": rows }), text })
}

// ---------------------------------------------------------------------------------------------
// api-key

pub async fn api_key(
    config: Config,
    json: bool,
    operator: OperatorAuthority,
    command: ApiKeyCommand,
) -> anyhow::Result<ExitCode> {
    with_session(&config, json, operator, async move |s| match command {
        ApiKeyCommand::Create { org, name, role, permissions, expires_in_days, acting_for } => {
            let permissions = permissions.map(|list| list.iter().map(|p| p.trim().to_string()).collect());
            let input = NewKey { name, role: role.trim().to_string(), permissions, expires_in_days };
            create_key(s, &org, &input, acting_for.as_deref()).await
        }
        ApiKeyCommand::List { org } => list_keys(s, &org).await,
        ApiKeyCommand::Revoke { org, id } => revoke_key(s, &org, &id).await,
    })
    .await
}

fn describe_key(k: &ApiKey) -> String {
    let perms = match &k.permissions {
        Some(p) => p.join(","),
        None => "(the role's)".into(),
    };
    format!("\"{}\" ({}, role {}, permissions {perms}, prefix {})", k.name, k.id, k.role, k.prefix)
}

/// The member a new key acts for: the one named with `--as`, or the organization's first
/// active Owner.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct KeyHolderOut {
    user_id: UserId,
    email: String,
    role: Role,
}

async fn key_holder(s: &Session, principal: &OrgPrincipal, acting_for: Option<&str>) -> OpResult<KeyHolderOut> {
    let mut tx = OrgTx::begin(&s.db, principal).await?;
    let holder = match acting_for {
        Some(email) => {
            let email = parse_email("as", email)?;
            // `users` is global: readable inside the organization's transaction.
            let Some(user) = users::find_by_email(&mut tx, &email).await? else {
                return Err(OpError::NotFound(format!("no account with the email address {email}")));
            };
            let role: Option<Role> = sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1")
                .bind(user.id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(role) = role else {
                return Err(OpError::invalid("as", format!("{email} is not a member of this organization")));
            };
            KeyHolderOut { user_id: user.id, email: user.email, role }
        }
        None => sqlx::query_as(
            "SELECT m.user_id, u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.role = 'owner' AND m.status = 'active' ORDER BY m.created_at, u.email LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            OpError::Refused(
                "the organization has no active Owner for the key to act for: name a member with --as EMAIL".into(),
            )
        })?,
    };
    tx.commit().await?;
    Ok(holder)
}

async fn create_key(s: &Session, org: &str, input: &NewKey, acting_for: Option<&str>) -> OpResult<Report> {
    // Checked here too so the refusal names the option before any lookup.
    if input.role.parse::<Role>().is_ok_and(|r| r == Role::Owner) {
        return Err(OpError::invalid("role", "can't be owner: an API key is admin, manager or member"));
    }
    let (principal, org) = org_principal(s, org, "api-key create").await?;
    let holder = key_holder(s, &principal, acting_for).await?;
    let ctx = audit_context(s, OffsetDateTime::now_utc());
    let created = keys::create_for(&s.db, &ctx, &principal, holder.user_id, input).await.map_err(|e| match e {
        // The service names the member by the field; the operator knows them by email.
        DomainError::Invalid(fields) => OpError::Invalid(
            fields
                .into_iter()
                .map(|f| {
                    let message = if f.field == "as" { format!("{} {}", holder.email, f.message) } else { f.message };
                    FieldError::new(f.field.replace('_', "-"), message)
                })
                .collect(),
        ),
        other => other.into(),
    })?;
    let expires = created.key.expires_at.map(rfc3339).unwrap_or_else(|| "never".into());
    let text = format!(
        "created API key {} in {}, acting for {} ({}), expires {expires}\nkey (shown once, store it now): {}\n",
        describe_key(&created.key),
        org.slug,
        holder.email,
        holder.role,
        created.secret
    );
    Ok(Report {
        json: json!({ "organization": org, "api_key": created.key, "acts_for": holder, "secret": created.secret }),
        text,
    })
}

async fn list_keys(s: &Session, org: &str) -> OpResult<Report> {
    let (principal, org) = org_principal(s, org, "api-key list").await?;
    let rows = keys::list(&s.db, &principal).await?;
    let holders: Vec<UserId> = rows.iter().filter_map(|k| k.acts_for).collect();
    let mut tx = OrgTx::begin(&s.db, &principal).await?;
    let emails: std::collections::HashMap<UserId, String> =
        sqlx::query_as::<_, (UserId, String)>("SELECT id, email FROM users WHERE id = ANY($1)")
            .bind(&holders)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    tx.commit().await?;
    let when = |t: Option<OffsetDateTime>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    let text = table(
        &["NAME", "ROLE", "ACTS FOR", "PREFIX", "CREATED", "EXPIRES", "LAST USED", "REVOKED", "ID"],
        &rows
            .iter()
            .map(|k| {
                vec![
                    k.name.clone(),
                    k.role.clone(),
                    match k.acts_for {
                        Some(u) => emails.get(&u).cloned().unwrap_or_else(|| u.to_string()),
                        None => "nobody (replace this key)".into(),
                    },
                    k.prefix.clone(),
                    rfc3339(k.created_at),
                    when(k.expires_at),
                    when(k.last_used_at),
                    when(k.revoked_at),
                    k.id.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(Report { json: json!({ "organization": org, "api_keys": rows }), text })
}

async fn revoke_key(s: &Session, org: &str, id: &str) -> OpResult<Report> {
    let id: Uuid = id.trim().parse().map_err(|_| OpError::invalid("id", "is not an API key id"))?;
    let (principal, org) = org_principal(s, org, "api-key revoke").await?;
    let ctx = audit_context(s, OffsetDateTime::now_utc());
    let key = keys::revoke(&s.db, &ctx, &principal, id).await.map_err(|e| match e {
        DomainError::NotFound => OpError::NotFound(format!("no API key {id} in {}", org.slug)),
        other => other.into(),
    })?;
    let text = format!("revoked API key {} in {}\n", describe_key(&key), org.slug);
    Ok(Report { json: json!({ "organization": org, "api_key": key }), text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["long value".into(), "x".into()], vec!["s".into(), "y".into()]]);
        assert_eq!(t, "A           BB\nlong value  x\ns           y\n");
    }

    #[test]
    fn service_field_names_become_option_names() {
        let e: OpError = DomainError::field("expires_in_days", "must be between 1 and 3650").into();
        assert_eq!(e.kind(), "invalid");
        assert_eq!(e.message(), "--expires-in-days: must be between 1 and 3650");
    }
}
