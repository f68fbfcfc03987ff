//! Helpers shared by the integration tests.

use clientflow::platform::db::tenant::{self, NewOrgCreator};
use clientflow::platform::db::{Db, OrgPrincipal, OrgTx};
use clientflow::platform::ids::{ClientId, OrgId, ProjectId};
use clientflow::platform::types::Slug;
use clientflow::tenancy::repo as orgs;
use clientflow::work::{clients, projects};
use sqlx::postgres::PgConnectOptions;

pub struct SeededOrg {
    pub id: OrgId,
    pub principal: OrgPrincipal,
    pub client: ClientId,
    pub project: ProjectId,
}

/// An organization with one client and one project on it, created through the app's own
/// door as the operator.
pub async fn seed_org(db: &Db, slug: &str) -> SeededOrg {
    let mut tx = OrgTx::begin_new_organization(db, NewOrgCreator::Operator("test seed")).await.unwrap();
    let org = orgs::insert_organization(&mut tx, &Slug::parse(slug).unwrap(), slug).await.unwrap();
    tx.commit().await.unwrap();
    let principal = tenant::operator(db, org.id, "test seed").await.unwrap().expect("org exists");
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
