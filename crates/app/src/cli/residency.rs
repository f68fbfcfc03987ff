//! Connecting every region's database (`[residency]`, `docs/security/residency.md`): the
//! default region is the resolved `[database]`; each further region is a database of its own,
//! provisioned and migrated like the default one, then joined to the same [`Db`] handle, whose
//! tenant door routes each organization to its region.

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

use crate::config::Config;
use crate::platform::db::provision::{self, Mode, Resolved};
use crate::platform::db::{Db, MigrationStatus, RegionId};

/// The roles of one further region's database.
pub struct RegionRoles {
    pub region: RegionId,
    pub app: PgConnectOptions,
    /// The owner role, when known (migrations).
    pub owner: Option<PgConnectOptions>,
    /// The auditor role, when known (operator commands across organizations).
    pub auditor: Option<PgConnectOptions>,
}

/// Works out (provisioning and migrating where this process may) each further region's
/// database. Errors name the setting to change.
pub async fn resolve_regions(config: &Config, resolved: &Resolved) -> anyhow::Result<Vec<RegionRoles>> {
    let secrets_dir = config.data_dir.join("secrets");
    let mut out = Vec::new();
    for (name, region) in &config.residency.regions {
        let id = RegionId::parse(name).ok_or_else(|| anyhow::anyhow!("residency.regions.{name}: not a region name"))?;
        let roles = match &region.database_url {
            Some(url) => {
                let setting = format!("residency.regions.{name}.database_url");
                let options = provision::parse_url(url.expose(), &setting)?;
                let mut conn = provision::connect(&options, &setting).await?;
                let facts = crate::platform::db::role_facts(&mut conn).await?;
                conn.close().await.ok();
                if facts.superuser {
                    let p = provision::provision(&options, &secrets_dir, options.get_database()).await?;
                    RegionRoles { region: id, app: p.app, owner: Some(p.owner), auditor: Some(p.auditor) }
                } else {
                    let role = |url: &Option<crate::platform::secret::Secret>, what: &str| {
                        url.as_ref()
                            .map(|u| provision::parse_url(u.expose(), &format!("residency.regions.{name}.{what}")))
                            .transpose()
                    };
                    RegionRoles {
                        region: id,
                        app: options,
                        owner: role(&region.admin_url, "admin_url")?,
                        auditor: role(&region.auditor_url, "auditor_url")?,
                    }
                }
            }
            None if resolved.mode == Mode::PrivateCluster => {
                // Its own private cluster, started with the default region's (`provision::resolve`).
                let own = resolved.regions.iter().find(|r| r.region == id).ok_or_else(|| {
                    anyhow::anyhow!("region {name}: its private cluster was not started with the default region's")
                })?;
                RegionRoles { region: id, app: own.app.clone(), owner: own.owner.clone(), auditor: own.auditor.clone() }
            }
            None => {
                let admin = match (resolved.mode, &config.database.url) {
                    (Mode::Provisioned, Some(url)) => provision::parse_url(url.expose(), "database.url")?,
                    _ => anyhow::bail!(
                        "residency.regions.{name}: set database_url (database.url is the app role, which can't create \
                         the region's database {})",
                        config.residency.database_name(id)
                    ),
                };
                let p = provision::provision(&admin, &secrets_dir, Some(&config.residency.database_name(id))).await?;
                RegionRoles { region: id, app: p.app, owner: Some(p.owner), auditor: Some(p.auditor) }
            }
        };
        out.push(roles);
    }
    Ok(out)
}

/// Migrates each region's database (as its owner role) or checks it is current.
pub async fn migrate_regions(regions: &[RegionRoles]) -> anyhow::Result<()> {
    for r in regions {
        match &r.owner {
            Some(owner) => provision::run_migrations(owner).await?,
            None => {
                let db = Db::connect(r.app.clone(), 1, std::time::Duration::from_secs(10)).await?;
                let status = db.migration_status().await;
                db.close().await;
                match status? {
                    MigrationStatus::Current => {}
                    other => anyhow::bail!(
                        "region {}: migrations are not current ({other:?}); set residency.regions.{}.database_url to a \
                         privileged role once so ClientFlow applies them",
                        r.region,
                        r.region
                    ),
                }
            }
        }
        provision::guard_runtime_role(&r.app).await?;
    }
    Ok(())
}

/// The default region's handle joined with every further region's, checked against the
/// directory (every region it names must be configured).
pub async fn join_regions(
    config: &Config,
    home: Db,
    regions: &[RegionRoles],
    max_connections: u32,
) -> anyhow::Result<Db> {
    let home = if config.residency.default_region == home.region() {
        home
    } else {
        home.named(config.residency.default_region)
    };
    if regions.is_empty() {
        return Ok(home);
    }
    let timeout = std::time::Duration::from_secs(config.database.acquire_timeout_secs);
    let mut others = Vec::new();
    for r in regions {
        let db = Db::connect(r.app.clone(), max_connections, timeout).await?.named(r.region);
        others.push((r.region, db));
    }
    let db = home.with_regions(others);
    let missing = crate::access::directory::unconfigured_regions(&db).await?;
    if !missing.is_empty() {
        anyhow::bail!(
            "organizations live in region(s) {} that this configuration lacks: add [residency.regions.<name>] for each \
             (or set residency.default_region)",
            missing.join(", ")
        );
    }
    Ok(db)
}

/// Every region's privileged roles where this process knows them, the default region first:
/// the owner role (the purge of deleted organizations, moves) and the auditor role (operator
/// commands that read across organizations: `org list`, `audit verify`).
#[derive(Debug, Clone, Default)]
pub struct Privileged {
    pub owners: Vec<(RegionId, PgConnectOptions)>,
    pub auditors: Vec<(RegionId, PgConnectOptions)>,
}

impl Privileged {
    fn from(home: RegionId, resolved: &Resolved, regions: &[RegionRoles]) -> Self {
        let mut p = Privileged::default();
        p.owners.extend(resolved.owner.clone().map(|o| (home, o)));
        p.auditors.extend(resolved.auditor.clone().map(|o| (home, o)));
        for r in regions {
            p.owners.extend(r.owner.clone().map(|o| (r.region, o)));
            p.auditors.extend(r.auditor.clone().map(|o| (r.region, o)));
        }
        p
    }

    pub fn auditor(&self, region: RegionId) -> Option<&PgConnectOptions> {
        self.auditors.iter().find(|(r, _)| *r == region).map(|(_, o)| o)
    }
}

/// [`resolve_regions`], [`migrate_regions`] and [`join_regions`] in one: what every process
/// that opens organizations does after connecting the default region.
pub async fn connect_regions(
    config: &Config,
    resolved: &Resolved,
    home: Db,
    max_connections: u32,
) -> anyhow::Result<(Db, Privileged)> {
    if config.residency.regions.is_empty() && config.residency.default_region == home.region() {
        let privileged = Privileged::from(home.home_region(), resolved, &[]);
        return Ok((home, privileged));
    }
    let regions = Box::pin(resolve_regions(config, resolved)).await?;
    Box::pin(migrate_regions(&regions)).await?;
    let db = Box::pin(join_regions(config, home, &regions, max_connections)).await?;
    let privileged = Privileged::from(db.home_region(), resolved, &regions);
    Ok((db, privileged))
}
