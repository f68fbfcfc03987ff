//! Plan limits as data. The platform knows nothing of billing: the application fills a
//! [`PlanBook`] from its configuration and hands it to its services (through the audit
//! context every action already carries), and its billing area decides which plan an
//! organization is on. `None` for a limit means unlimited.

/// What a plan allows. `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanLimits {
    /// Active members (Owners, Admins, Managers, Members; Clients are not seats), open
    /// invitations included.
    pub seats: Option<i64>,
    pub projects: Option<i64>,
    /// Bytes of stored files.
    pub storage_bytes: Option<i64>,
    /// API keys not revoked or expired.
    pub api_keys: Option<i64>,
}

/// A plan: its id (as configured), display name, limits and Stripe price (paid plans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub limits: PlanLimits,
    pub price_id: Option<String>,
}

/// Every plan, and which one an organization without a paid subscription is on.
#[derive(Debug, Clone)]
pub struct PlanBook {
    pub plans: Vec<Plan>,
    pub free: String,
    /// Days a past-due organization keeps working before it becomes read-only.
    pub grace_days: i64,
    /// Where an Owner raises a limit, with `{org}` for the organization's slug.
    pub upgrade_path: &'static str,
}

impl PlanBook {
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    pub fn free_plan(&self) -> &Plan {
        self.plan(&self.free).or(self.plans.first()).expect("a plan book has at least its free plan")
    }

    pub fn by_price(&self, price: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.price_id.as_deref() == Some(price))
    }
}
