//! `/security`: what this installation does about security, read from the configuration and
//! state it runs with at the moment of the request. Every section says whether its feature is on
//! (and, when off, that it is off and what turns it on) and names the tests that prove it
//! (`claims.rs`). Public, cacheable for a few minutes, and free of secrets: the page shows
//! settings and states, never a key, a URL with credentials or a person's data.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::claims;
use super::subprocessors::{self, SubProcessor};
use crate::abuse::botcheck::BotCheck;
use crate::abuse::limits::{LimitAlgorithm, PolicyId};
use crate::access::route::{Access, RouteDef, Surface};
use crate::config::{Config, TlsMode};
use crate::mail::config::MailTransport;
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/security", Surface::Web, Access::Public, security_page)]
}

/// One fact of a section.
pub struct Fact {
    pub label: String,
    pub value: String,
}

fn fact(label: &str, value: impl Into<String>) -> Fact {
    Fact { label: label.into(), value: value.into() }
}

/// A link from a claim to a test that proves it.
pub struct ProofLink {
    pub test: String,
    pub anchor: String,
}

/// One section of the page: a claim about one topic and the facts behind it.
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    /// `on`, `off` or `attention` (on, but something needs the operator).
    pub state: &'static str,
    pub summary: String,
    pub facts: Vec<Fact>,
    pub proofs: Vec<ProofLink>,
}

/// A proving test, listed once at the end of the page.
pub struct ProofView {
    pub anchor: String,
    pub proof: String,
    pub file: String,
    pub test: String,
    pub command: String,
    pub source_href: Option<String>,
}

/// The anchor of a proof on the page (`proof-it-tls-rs-name`).
pub fn anchor(proof: &str) -> String {
    let mut out = String::from("proof-");
    for c in proof.chars() {
        out.push(if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' });
    }
    out
}

fn section(id: &'static str, title: &'static str, state: &'static str, summary: String, facts: Vec<Fact>) -> Section {
    let proofs = claims::proofs_of(id)
        .iter()
        .map(|p| ProofLink { test: p.rsplit("::").next().unwrap_or(p).replace('_', " "), anchor: anchor(p) })
        .collect();
    Section { id, title, state, summary, facts, proofs }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// "3.2 hours", "2 days"…
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 120.0 {
        format!("{s:.0} seconds")
    } else if s < 2.0 * 3600.0 {
        format!("{:.0} minutes", s / 60.0)
    } else if s < 2.0 * 86400.0 {
        format!("{:.1} hours", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

fn window(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" }),
        s if s % 60 == 0 => format!("{} minute{}", s / 60, if s == 60 { "" } else { "s" }),
        s => format!("{s} seconds"),
    }
}

/// What the page shows of the installation's live state (read per request).
#[derive(Default)]
pub struct Live {
    /// Each region's backups, the default region first.
    pub backups: Vec<RegionBackups>,
    /// The newest signed audit checkpoint: when, and the key id.
    pub newest_checkpoint: Option<(OffsetDateTime, String)>,
    pub checkpoint_error: bool,
}

/// One region's backups as the page shows them.
pub struct RegionBackups {
    /// What the region is called on the pages.
    pub label: String,
    /// `false`: the region's database is a server of the operator's (`database_url`), whose
    /// provider owns its backups.
    pub ours: bool,
    /// `None` with `ours`: the status could not be read just now.
    pub status: Option<crate::platform::db::backup::BackupStatus>,
}

async fn live(state: &AppState) -> Live {
    let mut live = Live::default();
    if state.config.database.url.is_none() && state.config.backup.enabled {
        // Every region's own cluster is backed up into its own repository: each is reported.
        let private = crate::platform::db::provision::private_regions(&state.config.residency);
        for region_db in state.db.every_region() {
            let region = region_db.region();
            let label = state.config.residency.label(region);
            if region != state.db.home_region() && !private.contains(&region) {
                live.backups.push(RegionBackups { label, ours: false, status: None });
                continue;
            }
            let status = match region_db.backup_status().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, %region, "security page: cannot read the backup status");
                    None
                }
            };
            live.backups.push(RegionBackups { label, ours: true, status });
        }
    }
    let newest = async {
        let mut tx = state.db.global().await?;
        let row: Option<(Option<OffsetDateTime>, Option<String>)> =
            sqlx::query_as("SELECT signed_at, key_id FROM audit_newest_signed_checkpoint()")
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(row.and_then(|(at, key)| Some((at?, key.unwrap_or_default()))))
    }
    .await;
    match newest {
        Ok(n) => live.newest_checkpoint = n,
        Err(e) => {
            tracing::warn!(error = %e, "security page: cannot read the newest audit checkpoint");
            live.checkpoint_error = true;
        }
    }
    live
}

/// The sections, from the configuration, the state's choices and the live readings.
pub fn sections(state: &AppState, live: &Live, now: OffsetDateTime) -> Vec<Section> {
    let config = &state.config;
    vec![
        tls(config),
        encryption(state),
        isolation(state),
        backups(config, live),
        rate_limits(state),
        bot_check(state),
        audit(state, live, now),
        mail(config),
        sub_processors(config),
        disclosure(config, now),
    ]
}

fn tls(config: &Config) -> Section {
    let (summary, mode) = match config.server.tls {
        TlsMode::Proxy => (
            "TLS is terminated by the reverse proxy in front of this server; the server accepts connections only \
             from the configured trusted proxies.",
            "terminated by the trusted proxy",
        ),
        TlsMode::Files => {
            ("This server speaks TLS 1.3 only (rustls), with the operator's certificate.", "certificate from files")
        }
        TlsMode::SelfSigned => (
            "This server speaks TLS 1.3 only (rustls), with a certificate it generated itself (development or \
             private use).",
            "self-signed certificate",
        ),
    };
    let protocol = if config.server.tls == TlsMode::Proxy { "as the proxy is configured" } else { "TLS 1.3 only" };
    let hsts = if config.server.hsts_preload {
        "Strict-Transport-Security: 2 years, subdomains, preload"
    } else {
        "Strict-Transport-Security: 2 years, subdomains"
    };
    let redirect = if config.server.http_redirect_listen.is_some() {
        "plain HTTP only redirects to HTTPS"
    } else {
        "no plain-HTTP listener"
    };
    section(
        "tls",
        "Encryption in transit",
        "on",
        summary.into(),
        vec![fact("TLS mode", mode), fact("Protocol", protocol), fact("HSTS", hsts), fact("Plain HTTP", redirect)],
    )
}

fn encryption(state: &AppState) -> Section {
    let config = &state.config;
    let store = if config.secrets.master_key.is_some() {
        "master key from the configuration (secrets.master_key, or a file named by secrets.master_key_file)"
    } else {
        "master key generated on first start, in the data directory (readable by the server's user only)"
    };
    let backups = if config.database.url.is_some() {
        "managed by the database provider".to_string()
    } else if config.backup.enabled {
        "AES-256-CBC (pgBackRest), passphrase kept apart from the repository".to_string()
    } else {
        "off (no backups are taken)".to_string()
    };
    section(
        "encryption",
        "Encryption at rest",
        "on",
        "Files and sensitive fields are sealed with AES-256-GCM under each organization's own data key before they \
         are stored; each sealed value is bound to its organization, table, column, row and key version, so a value \
         copied into another row or organization does not open. The data keys live in a key store outside the \
         database: deleting an organization destroys its keys, and with them what its backups hold sealed."
            .into(),
        vec![
            fact("Master key", store),
            fact(
                "Keys",
                format!(
                    "envelope encryption: a random 256-bit data key per organization (and one for the installation's \
                     account secrets), versioned and rotatable, wrapped by a versioned key-encryption key in the {} key \
                     store; the master key wraps only the key-encryption key",
                    state.keys.store().kind()
                ),
            ),
            fact(
                "Sealed with the organization's key",
                "uploaded files, client contacts' email addresses and phone numbers",
            ),
            fact(
                "Sealed with the installation's key",
                "two-factor secrets, Google sign-in verifiers, the text of vulnerability reports",
            ),
            fact("Sealed with a key derived from the master key", "unsubscribe tokens (they travel in links)"),
            fact("Stored hashed, not sealed", "passwords (Argon2id), session tokens, API keys, link tokens"),
            fact("Audit checkpoints", format!("signed with Ed25519, key {}", state.audit_signer.key_id())),
            fact("Backups", backups),
        ],
    )
}

fn isolation(state: &AppState) -> Section {
    let config = &state.config;
    let regions = state.db.region_ids();
    let (region, where_) = if regions.len() == 1 {
        (
            config.disclosure.region.clone(),
            "one PostgreSQL database for every organization of this installation".to_string(),
        )
    } else {
        let named: Vec<String> = regions.iter().map(|r| format!("{} ({r})", config.residency.label(*r))).collect();
        (
            named.join(", "),
            "one PostgreSQL database and file store per region: each organization's rows, files, audit log and mail \
             queue live only in the region its Owner chose; accounts and sign-in live in the default region's \
             directory"
                .to_string(),
        )
    };
    section(
        "isolation",
        "Tenant isolation and region",
        "on",
        "Every organization's rows are guarded by PostgreSQL row-level security (enabled and forced, with a policy \
         that checks writes too) and composite keys, and the server's database role can't bypass it."
            .into(),
        vec![fact("Regions", regions.len().to_string()), fact("Region", region), fact("Where data lives", where_)],
    )
}

fn backups(config: &Config, live: &Live) -> Section {
    if config.database.url.is_some() {
        return section(
            "backups",
            "Backups and recovery",
            "on",
            "The database is provided by the operator's database service, which owns its backups and \
             point-in-time recovery."
                .into(),
            vec![fact("Backups", "managed by the database provider")],
        );
    }
    if !config.backup.enabled {
        return section(
            "backups",
            "Backups and recovery",
            "off",
            "Backups are off on this installation (backup.enabled = false): no WAL archiving, no backups, no drills."
                .into(),
            vec![fact("Backups", "off")],
        );
    }
    let mut facts = vec![
        fact(
            "Recovery window",
            format!("any moment of the last {} days (WAL archiving)", config.backup.retention_days),
        ),
        fact("Repository", if config.backup.s3.is_some() { "S3-compatible object store" } else { "local disk" }),
    ];
    let mut attention = false;
    let several = live.backups.len() > 1;
    for region in &live.backups {
        // With several regions, each fact names its region.
        let named = |label: &str| if several { format!("{label} — {}", region.label) } else { label.to_string() };
        if !region.ours {
            facts.push(fact(&named("Backups"), "managed by the region's database provider"));
            continue;
        }
        let Some(status) = &region.status else {
            attention = true;
            facts.push(fact(&named("State"), "could not be read just now"));
            continue;
        };
        match status.newest_backup_age {
            Some(a) => facts.push(fact(&named("Newest backup"), format!("{} old", age(a)))),
            None => {
                attention = true;
                facts.push(fact(&named("Newest backup"), "none yet"));
            }
        }
        facts.push(fact(
            &named("WAL archiving"),
            match &status.archive {
                Some(a) if a.failing => {
                    attention = true;
                    "failing".to_string()
                }
                Some(_) => "working".to_string(),
                None => {
                    attention = true;
                    "not running on this database".to_string()
                }
            },
        ));
        match (status.last_drill_ok, status.last_drill_age) {
            (Some(ok), Some(a)) => {
                attention |= !ok;
                facts.push(fact(
                    &named("Last restore drill"),
                    format!("{} ago, {}", age(a), if ok { "passed" } else { "FAILED" }),
                ));
                if let (Some(rpo), Some(rto)) = (status.last_drill_rpo, status.last_drill_rto) {
                    facts.push(fact(
                        &named("Drill measured"),
                        format!("data loss {}, restore time {}", age(rpo), age(rto)),
                    ));
                }
            }
            _ => {
                attention = true;
                facts.push(fact(&named("Last restore drill"), "none yet"));
            }
        }
    }
    section(
        "backups",
        "Backups and recovery",
        if attention { "attention" } else { "on" },
        "The database is backed up with pgBackRest and its write-ahead log archived continuously; a restore drill \
         restores the newest backup into a scratch cluster and checks it."
            .into(),
        facts,
    )
}

fn rate_limits(state: &AppState) -> Section {
    let config = &state.config;
    let backend = if config.redis.url.is_some() {
        "shared by every server process through Redis"
    } else {
        "kept in this process (single node)"
    };
    let mut facts = vec![fact("Counted", backend)];
    for id in PolicyId::ALL {
        let c = config.rate_limits.get(id);
        let how = match c.algorithm {
            LimitAlgorithm::SlidingWindow => format!("{} per {} (sliding window)", c.limit, window(c.window_secs)),
            LimitAlgorithm::TokenBucket => {
                format!("bursts of {}, refilled at {} per {} (token bucket)", c.limit, c.limit, window(c.window_secs))
            }
        };
        facts.push(fact(id.name(), how));
    }
    section(
        "rate-limits",
        "Rate limits",
        "on",
        "Sign-in, sign-up, public forms, the API and billing are limited per client address, account, key or \
         organization; a refusal is a 429 with Retry-After."
            .into(),
        facts,
    )
}

fn bot_check(state: &AppState) -> Section {
    let (kind, detail) = match &state.bot_check {
        BotCheck::Turnstile(_) => {
            ("Cloudflare Turnstile", "verified server-side with siteverify; tokens used once".into())
        }
        BotCheck::ProofOfWork(p) => (
            "built-in proof of work",
            format!(
                "the browser finds a hash with {} leading zero bits; challenges are signed and used once",
                p.difficulty()
            ),
        ),
    };
    section(
        "bot-check",
        "Bot checks",
        "on",
        "Sign-up, the contact forms and the vulnerability report form need a bot check.".into(),
        vec![fact("In use", kind), fact("How", detail)],
    )
}

fn audit(state: &AppState, live: &Live, now: OffsetDateTime) -> Section {
    let mut facts = vec![
        fact("Log", "append-only for every database role; one SHA-256 hash chain per organization"),
        fact(
            "Signed checkpoints",
            format!(
                "each chain's head is signed at least every {} minutes (Ed25519)",
                crate::audit::chain::SIGN_EVERY.whole_minutes()
            ),
        ),
    ];
    let state_label = match &live.newest_checkpoint {
        Some((at, key)) => {
            facts.push(fact(
                "Newest signed checkpoint",
                format!("{} ago, key {key}", age((now - *at).as_seconds_f64())),
            ));
            "on"
        }
        None if live.checkpoint_error => {
            facts.push(fact("Newest signed checkpoint", "could not be read just now"));
            "attention"
        }
        None => {
            facts.push(fact("Newest signed checkpoint", "none yet (no organization has audited events)"));
            "on"
        }
    };
    facts.push(fact("Signing key", state.audit_signer.key_id().to_string()));
    section(
        "audit",
        "Audit log",
        state_label,
        "Every privileged action is recorded with its actor, address and before/after snapshots, in the same \
         transaction as the action; `clientflow audit verify` recomputes every chain and checks the signatures."
            .into(),
        facts,
    )
}

fn mail(config: &Config) -> Section {
    let transport = match config.mail.transport {
        MailTransport::Maildrop => "local mail drop (nothing leaves this machine)",
        MailTransport::Smtp => "the operator's SMTP relay, over TLS",
        MailTransport::Resend => "Resend",
    };
    let webhook = if config.mail.resend_webhook_secret.is_some() {
        "on: signed Resend webhooks (Svix signatures, replay window) feed the suppression list"
    } else {
        "off (no bounce webhook configured): hard bounces at send time still suppress"
    };
    section(
        "mail",
        "Email suppression",
        "on",
        "Mail goes through a durable outbox. Addresses that bounce or complain are suppressed; security, sign-in and \
         billing mail is always sent."
            .into(),
        vec![
            fact("Transport", transport),
            fact("Bounce and complaint webhook", webhook),
            fact("Hard bounce, complaint", "suppressed at once"),
            fact(
                "Soft bounces",
                format!(
                    "suppressed after {} within {} hours",
                    config.mail.soft_bounce_limit, config.mail.soft_bounce_window_hours
                ),
            ),
            fact("Unsubscribe", "one click (RFC 8058) on every message that is not critical"),
            fact("Critical mail", "sign-in, security and billing mail bypasses suppression"),
        ],
    )
}

fn sub_processors(config: &Config) -> Section {
    let all = subprocessors::registry(config);
    let on = all.iter().filter(|s| s.enabled).count();
    let summary = if on == 0 {
        "This installation hands no data to any third party.".to_string()
    } else {
        format!("This installation hands data to {on} third part{}, listed below.", if on == 1 { "y" } else { "ies" })
    };
    let facts = all
        .iter()
        .map(|s: &SubProcessor| {
            fact(s.name, if s.enabled { "on".to_string() } else { format!("off (turned on by {})", s.setting) })
        })
        .collect();
    section("sub-processors", "Sub-processors", on_off(on > 0), summary, facts)
}

fn disclosure(config: &Config, now: OffsetDateTime) -> Section {
    let expires = super::security_txt::expires(config, now);
    section(
        "disclosure",
        "Vulnerability disclosure",
        "on",
        "Report a vulnerability through the form or the contacts below. We acknowledge every report by mail with a \
         reference and a private status link, and ask that you give us time to fix an issue before you publish it."
            .into(),
        vec![
            fact("Contacts", super::security_txt::contacts(config).join(", ")),
            fact("security.txt", format!("/.well-known/security.txt (expires {})", expires.date())),
            fact("Report form", "/security/report (bot check, rate limited, text only)"),
            fact("Languages", config.disclosure.preferred_languages.join(", ")),
        ],
    )
}

/// Every proving test the sections name, once, in page order.
pub fn proof_views(config: &Config, sections: &[Section]) -> Vec<ProofView> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for s in sections {
        for p in claims::proofs_of(s.id) {
            if !seen.insert(*p) {
                continue;
            }
            let (file, command) = claims::locate(p).unwrap_or_else(|| (p.to_string(), String::new()));
            let source_href =
                config.disclosure.source_url.as_ref().map(|u| format!("{}/{file}", u.trim_end_matches('/')));
            out.push(ProofView {
                anchor: anchor(p),
                proof: p.to_string(),
                file,
                test: p.rsplit("::").next().unwrap_or(p).to_string(),
                command,
                source_href,
            });
        }
    }
    out
}

#[derive(Template)]
#[template(path = "disclosure/security.html")]
struct SecurityPage {
    public_url: String,
    generated: String,
    sections: Vec<Section>,
    processors: Vec<SubProcessor>,
    proofs: Vec<ProofView>,
}

async fn security_page(State(state): State<AppState>) -> AppResult<Response> {
    let now = state.clock.now();
    let live = live(&state).await;
    let sections = sections(&state, &live, now);
    let proofs = proof_views(&state.config, &sections);
    let page = SecurityPage {
        public_url: state.config.public_url(),
        generated: crate::backup::rfc3339(now.replace_nanosecond(0).unwrap_or(now)),
        sections,
        processors: subprocessors::enabled(&state.config),
        proofs,
    };
    Ok(super::cacheable(crate::web::render(&page)?.into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_has_proofs_and_every_proof_a_place() {
        for (id, proofs) in claims::PROOFS {
            assert!(!proofs.is_empty(), "{id}");
            for p in *proofs {
                let (file, command) = claims::locate(p).unwrap_or_else(|| panic!("{p} can't be located"));
                assert!(file.starts_with("crates/") && file.ends_with(".rs"), "{p}: {file}");
                assert!(command.starts_with("cargo test -p "), "{p}: {command}");
            }
        }
        assert_eq!(anchor("it/tls.rs::a_b"), "proof-it-tls-rs--a-b");
        assert_eq!(age(30.0), "30 seconds");
        assert_eq!(window(3600), "1 hour");
        assert_eq!(window(600), "10 minutes");
    }
}
