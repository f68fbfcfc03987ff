//! Roles and permissions. The default matrix lives here and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A member's role in one organization, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Manager,
    Member,
    Client,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Owner, Role::Admin, Role::Manager, Role::Member, Role::Client];

    /// Rank for "nobody grants a role above their own". Higher is more powerful.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 5,
            Role::Admin => 4,
            Role::Manager => 3,
            Role::Member => 2,
            Role::Client => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Member => "member",
            Role::Client => "client",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Admin => "Admin",
            Role::Manager => "Manager",
            Role::Member => "Member",
            Role::Client => "Client",
        }
    }

    /// The words for a role kept as text ("manager" → "Manager"); the text itself when it
    /// names no role.
    pub fn label_of(stored: &str) -> &str {
        match stored.parse::<Role>() {
            Ok(role) => role.label(),
            Err(_) => stored,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; expected one of owner, admin, manager, member, client"))
    }
}

/// A named action on a resource. The string form (`clients.read`) is what is stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Be inside the organization at all (every role, Client included).
    OrgAccess,
    /// See the organization's internal pages (every role except Client).
    OrgView,
    ClientsRead,
    ClientsCreate,
    ClientsUpdate,
    ClientsDelete,
    ProjectsRead,
    ProjectsCreate,
    ProjectsUpdate,
    ProjectsDelete,
    TasksRead,
    TasksCreate,
    TasksUpdate,
    TasksDelete,
    CommentsCreate,
    TimeTrack,
    InvoicesRead,
    InvoicesCreate,
    InvoicesUpdate,
    InvoicesDelete,
    FilesRead,
    FilesUpload,
    FilesDelete,
    MembersRead,
    MembersInvite,
    MembersManage,
    RolesManage,
    SettingsManage,
    SettingsSecurity,
    IpAllowlistManage,
    BillingManage,
    AuditRead,
    ApiKeysManage,
    WebhooksManage,
    OrgExport,
    OrgDelete,
    OrgTransfer,
    PortalRead,
}

impl Permission {
    pub const ALL: [Permission; 38] = [
        Permission::OrgAccess,
        Permission::OrgView,
        Permission::ClientsRead,
        Permission::ClientsCreate,
        Permission::ClientsUpdate,
        Permission::ClientsDelete,
        Permission::ProjectsRead,
        Permission::ProjectsCreate,
        Permission::ProjectsUpdate,
        Permission::ProjectsDelete,
        Permission::TasksRead,
        Permission::TasksCreate,
        Permission::TasksUpdate,
        Permission::TasksDelete,
        Permission::CommentsCreate,
        Permission::TimeTrack,
        Permission::InvoicesRead,
        Permission::InvoicesCreate,
        Permission::InvoicesUpdate,
        Permission::InvoicesDelete,
        Permission::FilesRead,
        Permission::FilesUpload,
        Permission::FilesDelete,
        Permission::MembersRead,
        Permission::MembersInvite,
        Permission::MembersManage,
        Permission::RolesManage,
        Permission::SettingsManage,
        Permission::SettingsSecurity,
        Permission::IpAllowlistManage,
        Permission::BillingManage,
        Permission::AuditRead,
        Permission::ApiKeysManage,
        Permission::WebhooksManage,
        Permission::OrgExport,
        Permission::OrgDelete,
        Permission::OrgTransfer,
        Permission::PortalRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgAccess => "org.access",
            Permission::OrgView => "org.view",
            Permission::ClientsRead => "clients.read",
            Permission::ClientsCreate => "clients.create",
            Permission::ClientsUpdate => "clients.update",
            Permission::ClientsDelete => "clients.delete",
            Permission::ProjectsRead => "projects.read",
            Permission::ProjectsCreate => "projects.create",
            Permission::ProjectsUpdate => "projects.update",
            Permission::ProjectsDelete => "projects.delete",
            Permission::TasksRead => "tasks.read",
            Permission::TasksCreate => "tasks.create",
            Permission::TasksUpdate => "tasks.update",
            Permission::TasksDelete => "tasks.delete",
            Permission::CommentsCreate => "comments.create",
            Permission::TimeTrack => "time.track",
            Permission::InvoicesRead => "invoices.read",
            Permission::InvoicesCreate => "invoices.create",
            Permission::InvoicesUpdate => "invoices.update",
            Permission::InvoicesDelete => "invoices.delete",
            Permission::FilesRead => "files.read",
            Permission::FilesUpload => "files.upload",
            Permission::FilesDelete => "files.delete",
            Permission::MembersRead => "members.read",
            Permission::MembersInvite => "members.invite",
            Permission::MembersManage => "members.manage",
            Permission::RolesManage => "roles.manage",
            Permission::SettingsManage => "settings.manage",
            Permission::SettingsSecurity => "settings.security",
            Permission::IpAllowlistManage => "ip_allowlist.manage",
            Permission::BillingManage => "billing.manage",
            Permission::AuditRead => "audit.read",
            Permission::ApiKeysManage => "api_keys.manage",
            Permission::WebhooksManage => "webhooks.manage",
            Permission::OrgExport => "org.export",
            Permission::OrgDelete => "org.delete",
            Permission::OrgTransfer => "org.transfer",
            Permission::PortalRead => "portal.read",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Permission::OrgAccess => "Be a member of the organization (sign in to it, leave it)",
            Permission::OrgView => "See the organization's internal pages",
            Permission::ClientsRead => "See clients (Members: only the clients of projects they belong to)",
            Permission::ClientsCreate => "Create clients",
            Permission::ClientsUpdate => "Edit, archive and restore clients",
            Permission::ClientsDelete => "Delete clients",
            Permission::ProjectsRead => {
                "See projects, their time, time totals and the CSV export (Members: only projects they belong to)"
            }
            Permission::ProjectsCreate => "Create projects",
            Permission::ProjectsUpdate => {
                "Edit projects and their members; see anyone's week of time and approve it (never one's own)"
            }
            Permission::ProjectsDelete => "Delete projects",
            Permission::TasksRead => "See tasks",
            Permission::TasksCreate => "Create tasks",
            Permission::TasksUpdate => "Edit and move tasks",
            Permission::TasksDelete => "Delete tasks",
            Permission::CommentsCreate => "Comment on tasks",
            Permission::TimeTrack => "Record time and expenses, and run a timer",
            Permission::InvoicesRead => "See invoices",
            Permission::InvoicesCreate => "Create invoices",
            Permission::InvoicesUpdate => "Edit, send and void invoices; bill time and expenses on drafts",
            Permission::InvoicesDelete => "Delete draft invoices",
            Permission::FilesRead => "Download files",
            Permission::FilesUpload => "Upload files",
            Permission::FilesDelete => "Delete files",
            Permission::MembersRead => "See members and invitations",
            Permission::MembersInvite => "Invite people (never above one's own role)",
            Permission::MembersManage => "Change roles, suspend and remove members",
            Permission::RolesManage => "Customize Manager and Member permissions, set per-member overrides",
            Permission::SettingsManage => {
                "Edit name, address, branding, timezone, currency, the public contact form and the invoicing defaults (prefix, rate, terms, tax)"
            }
            Permission::SettingsSecurity => "Edit session timeout and the two-factor requirement",
            Permission::IpAllowlistManage => "Edit the IP allowlist",
            Permission::BillingManage => "Manage billing",
            Permission::AuditRead => "Read and export the audit log",
            Permission::ApiKeysManage => "Create and revoke API keys",
            Permission::WebhooksManage => "Manage outbound webhooks",
            Permission::OrgExport => "Export all organization data and download the archive (Settings → Data export)",
            Permission::OrgDelete => "Delete the organization",
            Permission::OrgTransfer => "Transfer ownership",
            Permission::PortalRead => "Use the client portal (own client's records, read-only)",
        }
    }

    fn bit(self) -> u64 {
        1u64 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// A set of permissions (a bit set: cheap to copy and compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u64);

impl PermissionSet {
    pub fn of(perms: &[Permission]) -> Self {
        Self(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn all() -> Self {
        Self::of(&Permission::ALL)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    pub fn remove(&mut self, p: Permission) {
        self.0 &= !p.bit();
    }

    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn is_subset(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

use Permission as P;

/// The default matrix: the one place roles meet permissions. `docs/permissions.md` is
/// generated from it (a test fails when the document is stale).
pub fn default_permissions(role: Role) -> PermissionSet {
    match role {
        Role::Owner => PermissionSet::all().without(&[P::PortalRead]),
        Role::Admin => admin_bound(),
        Role::Manager => PermissionSet::of(&[
            P::OrgAccess,
            P::OrgView,
            P::ClientsRead,
            P::ClientsCreate,
            P::ClientsUpdate,
            P::ClientsDelete,
            P::ProjectsRead,
            P::ProjectsCreate,
            P::ProjectsUpdate,
            P::ProjectsDelete,
            P::TasksRead,
            P::TasksCreate,
            P::TasksUpdate,
            P::TasksDelete,
            P::CommentsCreate,
            P::TimeTrack,
            P::InvoicesRead,
            P::InvoicesCreate,
            P::InvoicesUpdate,
            P::InvoicesDelete,
            P::FilesRead,
            P::FilesUpload,
            P::FilesDelete,
            P::MembersRead,
        ]),
        Role::Member => PermissionSet::of(&[
            P::OrgAccess,
            P::OrgView,
            P::ClientsRead,
            P::ProjectsRead,
            P::TasksRead,
            P::TasksCreate,
            P::TasksUpdate,
            P::CommentsCreate,
            P::TimeTrack,
            P::FilesRead,
            P::FilesUpload,
            P::MembersRead,
        ]),
        Role::Client => PermissionSet::of(&[P::OrgAccess, P::PortalRead]),
    }
}

/// Permissions only an Owner ever has, whatever customization says.
pub const OWNER_ONLY: [Permission; 5] =
    [P::BillingManage, P::OrgExport, P::OrgDelete, P::IpAllowlistManage, P::OrgTransfer];

/// The most a non-Owner can hold: everything but the Owner-only permissions (and the portal,
/// which is the Client role's alone).
pub fn admin_bound() -> PermissionSet {
    PermissionSet::all().without(&OWNER_ONLY).without(&[P::PortalRead])
}

impl PermissionSet {
    pub fn without(mut self, perms: &[Permission]) -> Self {
        for p in perms {
            self.remove(*p);
        }
        self
    }
}

/// Whether `role`'s permissions may be customized per organization or per member.
pub fn customizable(role: Role) -> bool {
    matches!(role, Role::Manager | Role::Member)
}

/// The effective permissions of a member: the role's defaults, the organization's
/// customization of the role, then the member's overrides — all clamped to the Admin bound
/// for Managers and Members. Owners, Admins and Clients are not customizable.
pub fn effective_permissions(
    role: Role,
    role_customization: &[(Permission, bool)],
    member_overrides: &[(Permission, bool)],
) -> PermissionSet {
    let mut set = default_permissions(role);
    if !customizable(role) {
        return set;
    }
    for (p, granted) in role_customization.iter().chain(member_overrides) {
        if *granted {
            set.insert(*p);
        } else {
            set.remove(*p);
        }
    }
    // Every member keeps access to the organization itself; nothing goes beyond the bound.
    set.insert(P::OrgAccess);
    set.intersect(admin_bound())
}

/// The generated `docs/permissions.md`.
pub fn permissions_markdown() -> String {
    let mut out = String::from(
        "# Permissions\n\n\
         Generated from `crates/app/src/tenancy/role.rs` (`default_permissions`); a test fails when this\n\
         file is stale. Regenerate with `clientflow docs permissions > docs/permissions.md`.\n\n\
         Every route declares the permission it needs; the route guard checks it before the handler\n\
         runs. Owners and Admins can customize the Manager and Member roles per organization, and set\n\
         per-member overrides, within the Admin column (the Owner-only permissions can never be\n\
         granted to anyone else). Resource-level rules (a Member sees only the projects they belong\n\
         to; a Client only its own client's records) are applied in the database queries.\n\n",
    );
    out.push_str("| Permission | Meaning |");
    for r in Role::ALL {
        out.push_str(&format!(" {} |", r.label()));
    }
    out.push_str("\n|---|---|");
    for _ in Role::ALL {
        out.push_str(":---:|");
    }
    out.push('\n');
    for p in Permission::ALL {
        out.push_str(&format!("| `{}` | {} |", p.as_str(), p.describe()));
        for r in Role::ALL {
            out.push_str(if default_permissions(r).contains(p) { " ✓ |" } else { "  |" });
        }
        out.push('\n');
    }
    out.push_str("\nOwner-only, never grantable: ");
    out.push_str(&OWNER_ONLY.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "));
    out.push_str(".\n\n");
    // Who sees what in search, My work and notifications: rules of the queries, not of the
    // permission table, described next to it.
    out.push_str(include_str!("visibility.md"));
    out
}

/// The organization's customization of a role, as (permission, granted) pairs.
pub async fn role_customization(
    tx: &mut crate::access::OrgTx,
    role: Role,
) -> Result<Vec<(Permission, bool)>, sqlx::Error> {
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT permission, granted FROM role_permissions WHERE organization_id = $1 AND role = $2")
            .bind(tx.org_id())
            .bind(role)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().filter_map(|(p, g)| p.parse().ok().map(|p| (p, g))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_follows_the_product_rules() {
        let owner = default_permissions(Role::Owner);
        let admin = default_permissions(Role::Admin);
        assert!(admin.is_subset(owner));
        for p in OWNER_ONLY {
            assert!(owner.contains(p) && !admin.contains(p), "{p}");
        }
        for r in [Role::Manager, Role::Member] {
            assert!(default_permissions(r).is_subset(admin), "{r}");
        }
        assert!(default_permissions(Role::Member).is_subset(default_permissions(Role::Manager)));
        assert_eq!(default_permissions(Role::Client), PermissionSet::of(&[P::OrgAccess, P::PortalRead]));
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert_eq!(Permission::ALL.len(), Permission::PortalRead as usize + 1);
    }

    #[test]
    fn customization_never_exceeds_the_admin_bound() {
        let widened = effective_permissions(
            Role::Member,
            &[(P::BillingManage, true), (P::OrgDelete, true), (P::InvoicesRead, true)],
            &[(P::AuditRead, true), (P::PortalRead, true)],
        );
        assert!(widened.contains(P::InvoicesRead) && widened.contains(P::AuditRead));
        assert!(!widened.contains(P::BillingManage) && !widened.contains(P::OrgDelete));
        assert!(!widened.contains(P::PortalRead));
        let tightened = effective_permissions(Role::Manager, &[(P::ClientsDelete, false)], &[(P::OrgAccess, false)]);
        assert!(!tightened.contains(P::ClientsDelete));
        assert!(tightened.contains(P::OrgAccess));
        // Member override beats the role customization.
        let m = effective_permissions(Role::Member, &[(P::TasksCreate, false)], &[(P::TasksCreate, true)]);
        assert!(m.contains(P::TasksCreate));
        // Clients and Admins are not customizable.
        assert_eq!(
            effective_permissions(Role::Client, &[(P::ClientsRead, true)], &[]),
            default_permissions(Role::Client)
        );
        assert_eq!(
            effective_permissions(Role::Admin, &[(P::BillingManage, true)], &[]),
            default_permissions(Role::Admin)
        );
    }
}
