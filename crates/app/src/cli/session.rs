//! The operator's session: how an operator command connects (the same checks `serve` makes,
//! every region), acts (the authority the CLI's entry point hands down, the audit context of
//! the CLI) and reports (a text for people, or exactly one JSON document with `--json`; errors
//! on standard error with a stable `kind`, and exit status 1).

use std::process::ExitCode;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Connection as _;
use time::OffsetDateTime;

use crate::access::{self, OperatorAuthority, OrgPrincipal, OrgTx};
use crate::audit::Context;
use crate::config::Config;
use crate::platform::db::Db;
use crate::platform::db::provision::{self, Resolved};
use crate::platform::error::{DomainError, FieldError};
use crate::platform::ids::OrgId;
use crate::platform::types::Slug;

/// Why an operator command did not do what was asked. `kind` is part of the JSON contract.
#[derive(Debug)]
pub(crate) enum OpError {
    /// An argument is not acceptable; `field` is the option's name without dashes.
    Invalid(Vec<FieldError>),
    NotFound(String),
    Conflict(String),
    /// A rule of the domain refuses it (whatever the arguments' shape).
    Refused(String),
    Failed(anyhow::Error),
}

impl OpError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        OpError::Invalid(vec![FieldError::new(field, message)])
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            OpError::Invalid(_) => "invalid",
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::Refused(_) => "refused",
            OpError::Failed(_) => "failed",
        }
    }

    /// Adds what the operator should know about the state things were left in.
    pub(crate) fn with_note(self, note: &str) -> Self {
        match self {
            OpError::NotFound(m) => OpError::NotFound(format!("{m} ({note})")),
            OpError::Conflict(m) => OpError::Conflict(format!("{m} ({note})")),
            OpError::Refused(m) => OpError::Refused(format!("{m} ({note})")),
            OpError::Invalid(f) => OpError::Invalid(f),
            OpError::Failed(e) => OpError::Failed(anyhow::anyhow!("{e:#} ({note})")),
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            OpError::Invalid(fields) => {
                fields.iter().map(|f| format!("--{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
            }
            OpError::NotFound(m) | OpError::Conflict(m) | OpError::Refused(m) => m.clone(),
            OpError::Failed(e) => format!("{e:#}"),
        }
    }

    fn fields(&self) -> &[FieldError] {
        match self {
            OpError::Invalid(fields) => fields,
            _ => &[],
        }
    }
}

impl From<DomainError> for OpError {
    fn from(e: DomainError) -> Self {
        match e {
            // The services name fields as the API does (expires_in_days); the CLI's options
            // are kebab-case.
            DomainError::Invalid(fields) => OpError::Invalid(
                fields.into_iter().map(|f| FieldError::new(f.field.replace('_', "-"), f.message)).collect(),
            ),
            DomainError::NotFound => OpError::NotFound("not found".into()),
            DomainError::Conflict(m) => OpError::Conflict(m),
            DomainError::Malformed(m) | DomainError::Forbidden(m) => OpError::Refused(m),
            DomainError::Internal(e) => OpError::Failed(e),
            other => OpError::Failed(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<sqlx::Error> for OpError {
    fn from(e: sqlx::Error) -> Self {
        OpError::Failed(e.into())
    }
}

impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        OpError::Failed(e)
    }
}

impl From<provision::SetupError> for OpError {
    fn from(e: provision::SetupError) -> Self {
        OpError::Failed(e.into())
    }
}

pub(crate) type OpResult<T> = Result<T, OpError>;

/// What a command reports: the JSON document and the text for people.
pub(crate) struct Report {
    pub json: Value,
    pub text: String,
}

/// Prints the report (or the error) the way the operator asked for and picks the exit status.
pub(crate) fn finish(json: bool, result: OpResult<Report>) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json).unwrap_or_default());
            } else {
                print!("{}", report.text);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let fields: Vec<Value> =
                    e.fields().iter().map(|f| json!({ "field": f.field, "message": f.message })).collect();
                let doc = json!({ "error": { "kind": e.kind(), "message": e.message(), "fields": fields } });
                eprintln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                eprintln!("error: {}", e.message());
            }
            ExitCode::FAILURE
        }
    }
}

/// A connection as the app role (after the same checks `serve` makes), and what `resolve`
/// found (the auditor role, a private cluster this process started).
pub(crate) struct Session {
    pub resolved: Resolved,
    pub db: Db,
    /// Every region's owner and auditor roles, where known.
    pub privileged: super::residency::Privileged,
    /// The operator's authority, handed down from the CLI's entry point.
    pub operator: OperatorAuthority,
    /// The audit key: operator actions sign chain heads like the server's do.
    pub signer: std::sync::Arc<crate::audit::chain::Signer>,
}

impl Session {
    pub async fn open(config: &Config, pool_size: u32, operator: OperatorAuthority) -> OpResult<Self> {
        let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
            .map_err(|e| OpError::Failed(anyhow::anyhow!(e)))?
            .applying_retention();
        let resolved = provision::resolve(config).await?;
        provision::migrate(&resolved).await?;
        provision::guard_runtime_role(&resolved.app).await?;
        let db = Db::connect(
            resolved.app.clone(),
            pool_size,
            std::time::Duration::from_secs(config.database.acquire_timeout_secs),
        )
        .await?;
        let (db, privileged) =
            super::residency::connect_regions(config, &resolved, db, pool_size).await.map_err(OpError::Failed)?;
        Ok(Self { resolved, db, privileged, operator, signer: std::sync::Arc::new(signer) })
    }

    /// Closes the pool and ends this command's use of the private cluster, which stops it
    /// unless another process (a running server) uses it.
    pub async fn close(self) {
        self.db.close().await;
        self.resolved.finish().await;
    }
}

/// Runs `f` with a session and closes it whatever happened.
pub(super) async fn with_session<F>(
    config: &Config,
    json: bool,
    operator: OperatorAuthority,
    f: F,
) -> anyhow::Result<ExitCode>
where
    F: AsyncFnOnce(&Session) -> OpResult<Report>,
{
    // Boxed: the commands' futures are large, and opening connects every region.
    let result = match Box::pin(Session::open(config, 2, operator)).await {
        Ok(session) => {
            let r = Box::pin(f(&session)).await;
            session.close().await;
            r
        }
        Err(e) => Err(e),
    };
    Ok(finish(json, result))
}

/// The audit context of operator actions: no request behind them, marked as the CLI.
pub(crate) fn audit_context(s: &Session, now: OffsetDateTime) -> Context {
    Context { user_agent: "clientflow cli".into(), ..Context::system(now, Some(s.signer.clone())) }
}

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// An organization as the commands show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct OrgOut {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Finds the organization `wanted` (an id, or a slug looked up with the auditor role, the only
/// role that sees across organizations) and returns the operator's principal in it.
pub(crate) async fn org_principal(s: &Session, wanted: &str, reason: &str) -> OpResult<(OrgPrincipal, OrgOut)> {
    let not_found = || OpError::NotFound(format!("no organization {wanted}"));
    let id = match wanted.trim().parse::<OrgId>() {
        Ok(id) => id,
        Err(_) => {
            if Slug::parse(wanted).is_err() {
                return Err(not_found());
            }
            if s.db.is_multi_region() {
                // The directory knows every region's slugs.
                let mut tx = s.db.home().global().await?;
                let found = access::directory::by_slug(&s.db, &mut tx, wanted.trim()).await?;
                tx.commit().await?;
                found.map(|p| p.org_id).ok_or_else(not_found)?
            } else {
                let Some(auditor) = &s.resolved.auditor else {
                    return Err(OpError::invalid(
                        "org",
                        "is a slug, and finding an organization by slug needs the auditor role: pass the \
                     organization's id, or set CLIENTFLOW_DATABASE__AUDITOR_URL",
                    ));
                };
                let mut conn = provision::connect(auditor, "auditor role").await?;
                let found: Option<OrgId> = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
                    .bind(wanted.trim())
                    .fetch_optional(&mut conn)
                    .await?;
                let _ = conn.close().await;
                found.ok_or_else(not_found)?
            }
        }
    };
    let principal = access::operator(&s.db, &s.operator, id, reason).await?.ok_or_else(not_found)?;
    let mut tx = OrgTx::begin(&s.db, &principal).await?;
    let org: OrgOut = sqlx::query_as("SELECT id, slug, name, created_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((principal, org))
}
