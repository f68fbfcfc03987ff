//! Following the primary of a PostgreSQL pair (or more) across a failover.
//!
//! `DATABASE_URL` may name several hosts the way libpq does
//! (`postgres://user:pw@db1:5432,db2:5432/clientflow?target_session_attrs=read-write`, which is
//! what `pg_autoctl show uri` prints). sqlx connects to one host, so ClientFlow picks the one that
//! is a primary (`pg_is_in_recovery()` false) at start, and while serving checks once a second
//! that new connections still go to a primary; when the primary is gone or demoted it finds the
//! promoted one and points the pool's new connections there. Connections to the old primary fail
//! their health check on the next acquire and are replaced. During the switch, requests fail fast
//! with 503 and `Retry-After` (the outage handling in `db::outage`), never hang.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::Db;

/// A host and port of a multi-host URL.
pub type Host = (String, u16);

/// How long a candidate may take to answer whether it is a primary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pool's target is checked while serving.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// For a URL naming several hosts: the URL with only the first one (for parsing) and every host
/// in order. `None` for a URL with one host.
pub fn split_hosts(url: &str) -> Option<(String, Vec<Host>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, list) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !list.contains(',') {
        return None;
    }
    let mut hosts = Vec::new();
    for item in list.split(',') {
        let (host, port) = if let Some(inner) = item.strip_prefix('[') {
            let (addr, after) = inner.split_once(']')?;
            (format!("[{addr}]"), after.strip_prefix(':'))
        } else {
            match item.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (item.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return None;
        }
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => 5432,
        };
        hosts.push((host, port));
    }
    // sqlx has no target_session_attrs: choosing the primary is this module's job.
    let tail = strip_param(tail, "target_session_attrs");
    let (first, port) = &hosts[0];
    Some((format!("{scheme}://{userinfo}{first}:{port}{tail}"), hosts))
}

fn strip_param(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let kept: Vec<&str> = query.split('&').filter(|kv| kv.split('=').next() != Some(name)).collect();
    if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) }
}

fn on_host(options: &PgConnectOptions, (host, port): &Host) -> PgConnectOptions {
    options.clone().host(host.trim_start_matches('[').trim_end_matches(']')).port(*port)
}

/// Whether `options` reaches a primary that accepts writes (within [`PROBE_TIMEOUT`]).
pub async fn is_primary(options: &PgConnectOptions) -> bool {
    let probe = async {
        let mut conn = options.clone().disable_statement_logging().connect().await.ok()?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut conn).await.ok()?;
        conn.close().await.ok();
        Some(!standby)
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Some(true)))
}

/// The first of `hosts` that is a primary, as `options` pointed at it.
pub async fn find_primary(options: &PgConnectOptions, hosts: &[Host]) -> Option<PgConnectOptions> {
    for host in hosts {
        let candidate = on_host(options, host);
        if is_primary(&candidate).await {
            return Some(candidate);
        }
    }
    None
}

impl Db {
    /// Keeps the pool's new connections on the primary among `hosts` until `stop` (see the
    /// module documentation). Does nothing for a single host.
    pub fn follow_primary(
        &self,
        hosts: Vec<Host>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if hosts.len() < 2 {
            return None;
        }
        let pool = self.pool.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                    _ = stop.changed() => return,
                }
                let current = (*pool.connect_options()).clone();
                if is_primary(&current).await {
                    continue;
                }
                match find_primary(&current, &hosts).await {
                    Some(primary)
                        if primary.get_host() != current.get_host() || primary.get_port() != current.get_port() =>
                    {
                        tracing::warn!(
                            from = %format!("{}:{}", current.get_host(), current.get_port()),
                            to = %format!("{}:{}", primary.get_host(), primary.get_port()),
                            "the database primary moved: new connections go to the new primary"
                        );
                        pool.set_connect_options(primary);
                    }
                    Some(_) => {}
                    None => tracing::warn!("no database host is a primary right now; checking again in a second"),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_host_urls_are_split_as_libpq_reads_them() {
        assert_eq!(split_hosts("postgres://u:p@db1:5432/x"), None);
        let (url, hosts) = split_hosts(
            "postgres://u:p@db1:5433,db2,[::1]:6000/clientflow?target_session_attrs=read-write&sslmode=prefer",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db1:5433/clientflow?sslmode=prefer");
        assert_eq!(hosts, vec![("db1".into(), 5433), ("db2".into(), 5432), ("[::1]".into(), 6000)]);
        let (url, _) = split_hosts("postgresql://a,b/db?target_session_attrs=read-write").unwrap();
        assert_eq!(url, "postgresql://a:5432/db");
        assert_eq!(split_hosts("postgres://u@a,:5432/db"), None, "an empty host is refused");
        assert_eq!(split_hosts("postgres://u@a,b:notaport/db"), None);
    }
}
