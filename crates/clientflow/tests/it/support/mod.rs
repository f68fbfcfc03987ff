//! Helpers and data builders shared by the integration tests: test modules use these and
//! never one another.

pub mod accounts;
pub mod api;
pub mod net;
pub mod orgs;
pub mod process;
pub mod s3;
pub mod work;

use clientflow::access::{self, NewOrgCreator, OperatorAuthority};
use clientflow::access::{OrgPrincipal, OrgTx};
use clientflow::platform::db::Db;
use clientflow::platform::ids::{ClientId, OrgId, ProjectId};
use clientflow::platform::types::Slug;
use clientflow::tenancy::repo as org_repo;
use clientflow::work::{clients, projects};
use sqlx::postgres::PgConnectOptions;

/// Runs one statement as the database's owner (data set up past the services), its binds ids;
/// panics naming the statement when it fails.
pub async fn sql(app: &clientflow_test_support::TestApp, statement: &str, binds: &[uuid::Uuid]) {
    let mut db = app.db.admin_conn().await;
    let mut q = sqlx::query(statement);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&mut db).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// The operator's authority, as the CLI's entry point holds it: tests seed data as the operator.
pub fn operator() -> OperatorAuthority {
    OperatorAuthority::unsafe_assume_cli_operator()
}

pub struct SeededOrg {
    pub id: OrgId,
    pub principal: OrgPrincipal,
    pub client: ClientId,
    pub project: ProjectId,
}

/// An organization with one client and one project on it, created through the app's own
/// door as the operator.
pub async fn seed_org(db: &Db, slug: &str) -> SeededOrg {
    let mut tx = access::begin_new_organization(db, NewOrgCreator::Operator(&operator(), "test seed")).await.unwrap();
    let org = org_repo::insert_organization(&mut tx, &Slug::parse(slug).unwrap(), slug).await.unwrap();
    tx.commit().await.unwrap();
    let principal = access::operator(db, &operator(), org.id, "test seed").await.unwrap().expect("org exists");
    let mut tx = OrgTx::begin(db, &principal).await.unwrap();
    let client = clients::repo::create(&mut tx, &format!("{slug} client")).await.unwrap();
    let project = projects::repo::create(&mut tx, Some(client.id), &format!("{slug} project")).await.unwrap();
    tx.commit().await.unwrap();
    SeededOrg { id: org.id, principal, client: client.id, project: project.id }
}

/// A `postgres://` URL for connection options (socket or TCP), for handing to the binary.
pub fn url_of(o: &PgConnectOptions, password: Option<&str>) -> String {
    let user = o.get_username();
    let db = o.get_database().unwrap_or("postgres");
    let auth = match password {
        Some(p) => format!("{user}:{p}"),
        None => user.to_string(),
    };
    match o.get_socket() {
        Some(dir) => format!("postgres://{auth}@localhost:{}/{db}?host={}", o.get_port(), dir.display()),
        None => format!("postgres://{auth}@{}:{}/{db}", o.get_host(), o.get_port()),
    }
}

/// The application's routes plus one API-key route (`GET /api/v1/test/whoami`, answering the
/// client address it saw), for tests of what every API route gets from its guard and its
/// surface: there are no API routes in the table of this branch's tests otherwise.
pub fn routes_with_an_api_route() -> Vec<clientflow::access::route::RouteDef> {
    use clientflow::access::role::Permission;
    use clientflow::access::route::{Access, Surface};
    use clientflow::platform::http::middleware::ClientIp;
    let mut routes = clientflow::routes::all();
    routes.push(clientflow::route!(
        GET "/api/v1/test/whoami",
        Surface::Api,
        Access::Api(Permission::ClientsRead),
        |axum::Extension(ip): axum::Extension<ClientIp>| async move { ip.0.to_string() }
    ));
    routes
}

/// A new API key (Manager role) of the organization `org_id`, created as the operator and
/// acting for the organization's first Owner (one is added if it has none, as seeded
/// organizations don't).
pub async fn api_key(app: &clientflow_test_support::TestApp, org_id: uuid::Uuid, name: &str) -> String {
    use clientflow::access::api_key::{self as keys, NewKey};
    let id: OrgId = org_id.to_string().parse().unwrap();
    let principal = access::operator(&app.app_db, &operator(), id, "test").await.unwrap().expect("organization exists");
    let mut db = app.db.admin_conn().await;
    let owner: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner' ORDER BY created_at LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&mut db)
    .await
    .unwrap();
    let owner = match owner {
        Some(owner) => owner,
        None => {
            let owner = uuid::Uuid::now_v7();
            sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
                .bind(owner)
                .bind(format!("owner-{owner}@example.com"))
                .execute(&mut db)
                .await
                .unwrap();
            sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')")
                .bind(org_id)
                .bind(owner)
                .execute(&mut db)
                .await
                .unwrap();
            owner
        }
    };
    let ctx = clientflow::audit::Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()));
    let input = NewKey { name: name.into(), role: "manager".into(), permissions: None, expires_in_days: None };
    keys::create_for(&app.app_db, &ctx, &principal, owner.to_string().parse().unwrap(), &input).await.unwrap().secret
}

/// The id of the organization with this slug (read as the superuser).
pub async fn org_id(app: &clientflow_test_support::TestApp, slug: &str) -> uuid::Uuid {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1").bind(slug).fetch_one(&mut db).await.unwrap()
}

/// All values of a header that may repeat, as one list (`RateLimit`, `RateLimit-Policy`).
pub fn header_list(res: &reqwest::Response, name: &str) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// What `clientflow org move` needs, for an app of two regions (`us`, the default, and `eu`).
pub fn mover(app: &clientflow_test_support::TestApp) -> clientflow::cli::moving::Mover {
    use clientflow::platform::db::RegionId;
    clientflow::cli::moving::Mover {
        db: app.app_db.clone(),
        owners: vec![
            (RegionId::parse("us").unwrap(), app.region_db("us").owner.clone()),
            (RegionId::parse("eu").unwrap(), app.region_db("eu").owner.clone()),
        ],
        stores: app.state.storage.clone(),
        signer: app.state.audit_signer.clone(),
        authority: operator(),
    }
}
