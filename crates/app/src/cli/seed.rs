//! `clientflow seed`: a realistic data set, generated fast, through the tenant door.
//!
//! Each organization is one transaction opened with [`OrgTx::begin_new_organization`] as the
//! operator, so row-level security checks every row written (`WITH CHECK`) exactly as it does
//! for the application. Speed comes from writing in bulk on the server, not from going around
//! the door:
//!
//! * the small tables (people, memberships, clients, projects, columns, invoices) are planned
//!   in Rust from a seeded random generator and sent as arrays, one `INSERT … SELECT FROM
//!   unnest(…)` per table;
//! * the large ones (tasks and their assignees, comments, activity and time entries) are two
//!   statements per organization (its top-level tasks, then its subtasks: see [`tasks_sql`]):
//!   `generate_series` over each project's task count, with every attribute a function of
//!   `hashint8extended(task number, seed)`, feeding data-modifying CTEs that insert into all
//!   five tables at once.
//!
//! So the same `--seed` gives the same names, statuses, priorities, dates (relative to the
//! moment of the run) and counts; only the ids differ (organization ids come from the door).
//! Task ids are UUIDv7 built from each task's creation time, like the application's, so the
//! list index (`tasks_list_idx`: organization, created_at, id) is filled in a realistic order.
//!
//! One audit event per organization, `seed.generated`, records what was generated.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Connection as _;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::session::{OpError, OpResult, Report, Session, audit_context, finish};
use crate::access::OrgTx;
use crate::access::{self, NewOrgCreator, OperatorAuthority};
use crate::audit::{self, Entry};
use crate::config::Config;
use crate::platform::db::Db;
use crate::platform::db::provision;
use crate::platform::ids::OrgId;
use crate::platform::types::Slug;
use crate::tenancy::repo as orgs;
use crate::work::invoices::{Line, compute};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Example, the benchmark data set (100 organizations, 1,000,000 tasks):\n  \
clientflow seed --orgs 100 --clients 25 --projects 40 --tasks 1000000 --users 15\n\n\
Seeded accounts have no password. To look around, add an account of your own to an organization:\n  \
clientflow user create --email you@example.com\n  \
clientflow member add --org <slug> --email you@example.com --role owner")]
pub struct SeedArgs {
    /// Organizations to create.
    #[arg(long)]
    pub orgs: u32,
    /// Clients per organization (each with contacts and invoices).
    #[arg(long)]
    pub clients: u32,
    /// Projects per organization (each with board columns and project members).
    #[arg(long)]
    pub projects: u32,
    /// Tasks in total, over all organizations: split evenly between the organizations and
    /// unevenly between each one's projects (about one in ten is a subtask).
    #[arg(long)]
    pub tasks: u64,
    /// People per organization (one Owner, an Admin, Managers and Members); client-portal users
    /// for some clients come on top.
    #[arg(long, default_value_t = 12)]
    pub users: u32,
    /// Seed of the generator: the same seed gives the same data set (and the same slugs, so
    /// use another seed to add more organizations to a database).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Organizations generated at once, each in its own transaction and connection (default:
    /// the number of CPUs, at most 4; the work happens in PostgreSQL, one core per job).
    #[arg(long)]
    pub jobs: Option<u32>,
}

impl SeedArgs {
    fn jobs(&self) -> u32 {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).clamp(1, 4))
    }

    fn check(&self) -> OpResult<()> {
        let bad =
            |field: &str, m: &str| Err(OpError::Invalid(vec![crate::platform::http::error::FieldError::new(field, m)]));
        if !(1..=10_000).contains(&self.orgs) {
            return bad("orgs", "must be between 1 and 10000");
        }
        if self.clients > 10_000 {
            return bad("clients", "must be at most 10000 per organization");
        }
        if self.projects > 10_000 {
            return bad("projects", "must be at most 10000 per organization");
        }
        if self.projects == 0 && self.tasks > 0 {
            return bad("projects", "must be at least 1 when there are tasks");
        }
        if self.tasks / u64::from(self.orgs) > 20_000_000 {
            return bad("tasks", "must be at most 20000000 per organization");
        }
        if !(1..=10_000).contains(&self.users) {
            return bad("users", "must be between 1 and 10000 per organization");
        }
        if !(1..=16).contains(&self.jobs()) {
            return bad("jobs", "must be between 1 and 16");
        }
        Ok(())
    }
}

/// What was written, per organization and in total. Field names are part of the JSON output.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub users: u64,
    pub memberships: u64,
    pub clients: u64,
    pub client_contacts: u64,
    pub projects: u64,
    pub project_members: u64,
    pub board_columns: u64,
    pub tasks: u64,
    pub task_assignees: u64,
    pub comments: u64,
    pub task_activity: u64,
    pub time_entries: u64,
    pub invoices: u64,
    pub invoice_lines: u64,
    pub invoice_payments: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.users += o.users;
        self.memberships += o.memberships;
        self.clients += o.clients;
        self.client_contacts += o.client_contacts;
        self.projects += o.projects;
        self.project_members += o.project_members;
        self.board_columns += o.board_columns;
        self.tasks += o.tasks;
        self.task_assignees += o.task_assignees;
        self.comments += o.comments;
        self.task_activity += o.task_activity;
        self.time_entries += o.time_entries;
        self.invoices += o.invoices;
        self.invoice_lines += o.invoice_lines;
        self.invoice_payments += o.invoice_payments;
    }

    fn rows(&self) -> u64 {
        self.users
            + self.memberships
            + self.clients
            + self.client_contacts
            + self.projects
            + self.project_members
            + self.board_columns
            + self.tasks
            + self.task_assignees
            + self.comments
            + self.task_activity
            + self.time_entries
            + self.invoices
            + self.invoice_lines
            + self.invoice_payments
    }
}

#[derive(Debug, Clone, Serialize)]
struct OrgDone {
    id: OrgId,
    slug: String,
    name: String,
    counts: Counts,
    seconds: f64,
}

pub async fn run(config: Config, json: bool, operator: OperatorAuthority, args: SeedArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = args.check() {
        return Ok(finish(json, Err(e)));
    }
    let session = match Session::open(&config, args.jobs() + 1, operator).await {
        Ok(s) => s,
        Err(e) => return Ok(finish(json, Err(e))),
    };
    let result = seed(&session, json, &args).await;
    session.close().await;
    Ok(finish(json, result))
}

/// Progress goes to standard output, or to standard error when standard output carries JSON.
fn progress(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn seed(s: &Session, json: bool, args: &SeedArgs) -> OpResult<Report> {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let per_org = args.tasks / u64::from(args.orgs);
    let extra = args.tasks % u64::from(args.orgs);
    progress(
        json,
        &format!(
            "seeding {} organizations ({} tasks in total, {} clients, {} projects and {} people each; seed {}, {} at a time)",
            args.orgs,
            args.tasks,
            args.clients,
            args.projects,
            args.users,
            args.seed,
            args.jobs()
        ),
    );
    let mut stream = futures::stream::iter(0..args.orgs)
        .map(|index| {
            let tasks = per_org + u64::from(u64::from(index) < extra);
            let plan = plan_org(args, index, tasks, now);
            async move {
                let t = Instant::now();
                let (id, counts) = write_org(s, &plan, args.seed, now).await?;
                Ok::<_, OpError>((
                    index,
                    OrgDone { id, slug: plan.slug, name: plan.name, counts, seconds: t.elapsed().as_secs_f64() },
                ))
            }
        })
        .buffer_unordered(args.jobs() as usize);
    let mut done: Vec<(u32, OrgDone)> = Vec::new();
    let mut totals = Counts::default();
    while let Some(result) = stream.next().await {
        let (index, org) = match result {
            Ok(r) => r,
            Err(e) => {
                return Err(e.with_note(&match done.len() {
                    0 => "no organization was written".to_string(),
                    n => format!(
                        "each organization is one transaction: the {n} finished before this one are complete, \
                         the others were not written"
                    ),
                }));
            }
        };
        totals.add(&org.counts);
        let elapsed = started.elapsed().as_secs_f64();
        progress(
            json,
            &format!(
                "[{:>width$}/{}] {:<40} {:>7} tasks, {:>7} rows in {:>6.2} s ({:>6.0} tasks/s); total {} tasks, {:.0} tasks/s",
                index + 1,
                args.orgs,
                org.slug,
                org.counts.tasks,
                org.counts.rows(),
                org.seconds,
                org.counts.tasks as f64 / org.seconds.max(1e-9),
                totals.tasks,
                totals.tasks as f64 / elapsed.max(1e-9),
                width = args.orgs.to_string().len()
            ),
        );
        done.push((index, org));
    }
    done.sort_by_key(|(i, _)| *i);
    let write_secs = started.elapsed().as_secs_f64();

    let analyzed = analyze(s).await;
    match &analyzed {
        Ok(true) => progress(json, "analyzed the seeded tables (planner statistics are current)"),
        Ok(false) => progress(
            json,
            "note: no owner-role connection (CLIENTFLOW_DATABASE__ADMIN_URL), so the tables were not analyzed; \
             autovacuum will, or run ANALYZE as the owner",
        ),
        Err(e) => progress(json, &format!("note: ANALYZE failed: {e}")),
    }
    let plan = match done.first() {
        Some((_, org)) => Some(list_plan(&s.db, &s.operator, org.id).await?),
        None => None,
    };
    if let Some(p) = &plan {
        progress(
            json,
            &format!(
                "task list (work::tasks::list_sql, limit 50) in {}: {} ({:.2} ms)",
                done[0].1.slug,
                if p.uses_list_index {
                    "uses tasks_list_idx"
                } else {
                    "does not use tasks_list_idx (expected on small tables; check large ones)"
                },
                p.execution_ms
            ),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let organizations: Vec<OrgDone> = done.into_iter().map(|(_, o)| o).collect();
    let text = format!(
        "seeded {} organizations: {} tasks, {} rows in {:.1} s ({:.0} tasks/s, {:.0} rows/s)\n",
        organizations.len(),
        totals.tasks,
        totals.rows(),
        write_secs,
        totals.tasks as f64 / write_secs.max(1e-9),
        totals.rows() as f64 / write_secs.max(1e-9)
    );
    let doc = json!({
        "seed": args.seed,
        "organizations": organizations,
        "totals": totals,
        "rows": totals.rows(),
        "seconds": seconds,
        "write_seconds": write_secs,
        "tasks_per_second": totals.tasks as f64 / write_secs.max(1e-9),
        "analyzed": matches!(analyzed, Ok(true)),
        "task_list_plan": plan,
    });
    Ok(Report { json: doc, text })
}

/// Planner statistics right away, so the first queries on the new data are planned well. Only
/// the owner of the tables may ANALYZE them; without an owner connection autovacuum does it
/// later.
async fn analyze(s: &Session) -> Result<bool, anyhow::Error> {
    let Some(owner) = &s.resolved.owner else { return Ok(false) };
    let mut conn = provision::connect(owner, "owner role").await?;
    sqlx::query(
        "ANALYZE users, organizations, memberships, clients, client_contacts, projects, project_members, board_columns, \
         tasks, task_assignees, comments, task_activity, time_entries, invoices, invoice_lines, invoice_payments, audit_events",
    )
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(true)
}

/// How the API's task list runs on the generated data, for one organization.
#[derive(Debug, Clone, Serialize)]
struct ListPlan {
    uses_list_index: bool,
    execution_ms: f64,
}

async fn list_plan(db: &Db, operator: &OperatorAuthority, org: OrgId) -> OpResult<ListPlan> {
    let principal = access::operator(db, operator, org, "seed plan check")
        .await?
        .ok_or_else(|| OpError::Failed(anyhow::anyhow!("organization {org} vanished")))?;
    let mut tx = OrgTx::begin(db, &principal).await?;
    let list = crate::work::tasks::list_sql(&crate::work::tasks::ListShape::page(50, 0));
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {list}")).fetch_one(&mut *tx).await?;
    tx.rollback().await?;
    let text = plan.to_string();
    Ok(ListPlan {
        uses_list_index: text.contains("\"Index Name\":\"tasks_list_idx\""),
        execution_ms: plan[0]["Execution Time"].as_f64().unwrap_or(0.0),
    })
}

// ---------------------------------------------------------------------------------------------
// The plan of one organization (small tables, decided in Rust)

struct Person {
    id: Uuid,
    email: String,
    name: String,
    role: &'static str,
    /// Index into `OrgPlan::clients` for the client role.
    client: Option<usize>,
    created_at: OffsetDateTime,
}

struct ClientPlan {
    id: Uuid,
    name: String,
    company: String,
    email: String,
    phone: String,
    notes: String,
    archived: bool,
    created_at: OffsetDateTime,
    contacts: Vec<Contact>,
}

struct Contact {
    id: Uuid,
    name: String,
    email: String,
    phone: String,
    title: String,
}

struct ProjectPlan {
    id: Uuid,
    client: Option<usize>,
    name: String,
    description: String,
    status: &'static str,
    budget_minor: Option<i64>,
    start: Date,
    due: Date,
    visible_to_client: bool,
    created_at: OffsetDateTime,
    /// Indexes into `OrgPlan::people`.
    members: Vec<usize>,
    columns: [Uuid; 4],
    tasks: i32,
    top_level: i32,
    /// Tasks are created between these instants (ms since the epoch).
    window_ms: (i64, i64),
}

struct InvoicePlan {
    id: Uuid,
    client: usize,
    number: Option<i64>,
    status: &'static str,
    issue: Date,
    due: Date,
    tax_rate_bp: i32,
    lines: Vec<Line>,
    totals: (i64, i64, i64),
    created_at: OffsetDateTime,
    sent_at: Option<OffsetDateTime>,
    paid_at: Option<OffsetDateTime>,
    voided_at: Option<OffsetDateTime>,
}

struct OrgPlan {
    name: String,
    slug: String,
    currency: &'static str,
    timezone: &'static str,
    created_at: OffsetDateTime,
    people: Vec<Person>,
    clients: Vec<ClientPlan>,
    projects: Vec<ProjectPlan>,
    invoices: Vec<InvoicePlan>,
    /// The stream of the server-side generator for this organization.
    stream: i64,
}

/// Board columns of every generated project; task statuses map onto them.
const COLUMNS: [&str; 4] = ["To do", "In progress", "Review", "Done"];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

fn slug_part(s: &str) -> String {
    Slug::from_name(s).map(|s| s.as_str().to_string()).unwrap_or_else(|| "x".into())
}

fn at_day(d: Date, hour: u8) -> OffsetDateTime {
    d.with_hms(hour, 0, 0).map(|t| t.assume_utc()).unwrap_or_else(|_| d.midnight().assume_utc())
}

/// A random instant between `from` and `to` (or `from` when the range is empty).
fn between(rng: &mut StdRng, from: OffsetDateTime, to: OffsetDateTime) -> OffsetDateTime {
    let span = (to - from).whole_seconds();
    if span <= 0 { from } else { from + Duration::seconds(rng.gen_range(0..span)) }
}

fn plan_org(args: &SeedArgs, index: u32, tasks: u64, now: OffsetDateTime) -> OrgPlan {
    // One generator per organization, so the data doesn't depend on how many run at once.
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(index));
    let name = format!("{} {} {}", pick(&mut rng, ADJECTIVES), pick(&mut rng, NOUNS), pick(&mut rng, AGENCY_KINDS));
    let slug = format!("{}-s{}-{:03}", slug_part(&name), args.seed, index + 1);
    let (currency, timezone, tax_rate_bp) = *LOCALES.choose(&mut rng).unwrap_or(&LOCALES[0]);
    let created_at = now - Duration::days(rng.gen_range(180..1100)) - Duration::seconds(rng.gen_range(0..86_400));

    // People: Owner, Admin, about a fifth Managers, the rest Members.
    let domain = format!("{slug}.example");
    let mut taken = HashSet::new();
    let mut people = Vec::new();
    let managers = if args.users >= 3 { (args.users as f64 * 0.2).round().max(1.0) as u32 } else { 0 };
    for i in 0..args.users {
        let role = match i {
            0 => "owner",
            1 => "admin",
            i if i < 2 + managers => "manager",
            _ => "member",
        };
        let (first, last) = (pick(&mut rng, FIRST_NAMES), pick(&mut rng, LAST_NAMES));
        let email = unique_email(&mut taken, &format!("{}.{}", first.to_lowercase(), last.to_lowercase()), &domain);
        let joined = if i == 0 { created_at } else { between(&mut rng, created_at, now - Duration::days(7)) };
        people.push(Person {
            id: Uuid::now_v7(),
            email,
            name: format!("{first} {last}"),
            role,
            client: None,
            created_at: joined,
        });
    }

    // Clients, their contacts, and a portal user for about a quarter of them.
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let company = format!("{} {}", pick(&mut rng, ADJECTIVES), pick(&mut rng, NOUNS));
        let name = format!("{company} {}", pick(&mut rng, CLIENT_KINDS));
        let client_domain = format!("{}.example", slug_part(&name));
        let since = between(&mut rng, created_at, now - Duration::days(14));
        let mut contacts = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let (first, last) = (pick(&mut rng, FIRST_NAMES), pick(&mut rng, LAST_NAMES));
            contacts.push(Contact {
                id: Uuid::now_v7(),
                name: format!("{first} {last}"),
                email: format!("{}.{}@{client_domain}", first.to_lowercase(), last.to_lowercase()),
                phone: format!("+1 555 {:04}", rng.gen_range(100..9999)),
                title: pick(&mut rng, CONTACT_TITLES).to_string(),
            });
        }
        if c == 0 || rng.gen_bool(0.25) {
            let (first, last) = (pick(&mut rng, FIRST_NAMES), pick(&mut rng, LAST_NAMES));
            let local = format!("{}.{}", first.to_lowercase(), last.to_lowercase());
            // Under the organization's domain: client names repeat between organizations.
            let email = unique_email(&mut taken, &local, &format!("{}.{domain}", slug_part(&company)));
            people.push(Person {
                id: Uuid::now_v7(),
                email,
                name: format!("{first} {last}"),
                role: "client",
                client: Some(clients.len()),
                created_at: between(&mut rng, since, now),
            });
        }
        clients.push(ClientPlan {
            id: Uuid::now_v7(),
            company: format!("{company} {}", pick(&mut rng, LEGAL_FORMS)),
            email: format!("billing@{client_domain}"),
            phone: format!("+1 555 {:04}", rng.gen_range(100..9999)),
            notes: if rng.gen_bool(0.4) { pick(&mut rng, CLIENT_NOTES).to_string() } else { String::new() },
            archived: rng.gen_bool(0.1),
            created_at: since,
            name,
            contacts,
        });
    }

    // Projects over the organization's life; older ones are more often finished.
    let today = now.date();
    let internal_members: Vec<usize> = (0..people.len()).filter(|&i| people[i].role == "member").collect();
    let leads: Vec<usize> = (0..people.len()).filter(|&i| matches!(people[i].role, "manager" | "admin")).collect();
    let mut projects = Vec::new();
    for _ in 0..args.projects {
        let start = between(&mut rng, created_at, now - Duration::days(10)).date();
        let due = start + Duration::days(rng.gen_range(30..200));
        let age_days = (today - start).whole_days();
        let status = if due < today && rng.gen_bool(0.75) {
            if rng.gen_bool(0.15) { "archived" } else { "completed" }
        } else {
            match rng.gen_range(0..100) {
                0..=9 if age_days < 60 => "planned",
                0..=11 => "on_hold",
                _ => "active",
            }
        };
        let client = if clients.is_empty() || rng.gen_bool(0.12) {
            None
        } else {
            // A few clients bring most of the work.
            let skewed = (rng.gen_range(0.0f64..1.0).powf(1.8) * clients.len() as f64) as usize;
            Some(skewed.min(clients.len() - 1))
        };
        let closed = matches!(status, "completed" | "archived");
        let start_at = at_day(start, 9);
        let end_at = if closed { at_day(due, 18).min(now - Duration::hours(1)) } else { now - Duration::minutes(1) };
        let end_at = end_at.max(start_at + Duration::hours(1));
        let team = rng.gen_range(2..=5).min(internal_members.len());
        let mut members: Vec<usize> = internal_members.choose_multiple(&mut rng, team).copied().collect();
        if let Some(&lead) = leads.choose(&mut rng) {
            members.push(lead);
        }
        members.sort_unstable();
        let kind = pick(&mut rng, PROJECT_KINDS);
        let name = match client {
            Some(c) => format!("{} {kind}", clients[c].name.split(' ').next().unwrap_or("")),
            None => format!("Internal: {kind}"),
        };
        projects.push(ProjectPlan {
            id: Uuid::now_v7(),
            client,
            name,
            description: pick(&mut rng, PROJECT_DESCRIPTIONS).to_string(),
            status,
            budget_minor: rng.gen_bool(0.7).then(|| rng.gen_range(20..400) * 50_000),
            start,
            due,
            visible_to_client: client.is_some() && rng.gen_bool(0.6),
            created_at: start_at - Duration::days(rng.gen_range(0..14)),
            members,
            columns: [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()],
            tasks: 0,
            top_level: 0,
            window_ms: (unix_ms(start_at), unix_ms(end_at)),
        });
    }
    spread_tasks(&mut rng, &mut projects, tasks);

    // Invoices: a few per client over the last year, numbered in issue order once sent.
    let mut invoices = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let n = if client.archived { rng.gen_range(0..=2) } else { rng.gen_range(0..=5) };
        for _ in 0..n {
            let issue = between(&mut rng, client.created_at.max(now - Duration::days(365)), now).date();
            let due = issue + Duration::days(*[14, 30, 30, 45].choose(&mut rng).unwrap_or(&30));
            let age = (today - issue).whole_days();
            let status = if age < 10 {
                if rng.gen_bool(0.6) { "draft" } else { "sent" }
            } else {
                match rng.gen_range(0..100) {
                    0..=71 => "paid",
                    72..=79 => "void",
                    80..=94 => "sent",
                    _ => "draft",
                }
            };
            let mut lines: Vec<Line> = (0..rng.gen_range(1..=4))
                .map(|_| {
                    let (description, hourly, low, high) = *LINE_ITEMS.choose(&mut rng).unwrap_or(&LINE_ITEMS[0]);
                    Line {
                        description: description.to_string(),
                        quantity_milli: if hourly { 500 * rng.gen_range(2..=80) } else { 1000 },
                        unit_price_minor: rng.gen_range(low..=high) / 500 * 500,
                        amount_minor: 0,
                    }
                })
                .collect();
            let totals = compute(&mut lines, tax_rate_bp).unwrap_or((0, 0, 0));
            let created = at_day(issue, 8) + Duration::minutes(rng.gen_range(0..120));
            let sent_at = (status != "draft").then(|| at_day(issue, 10).min(now));
            let paid_at = (status == "paid").then(|| between(&mut rng, at_day(issue, 11), at_day(due, 17).min(now)));
            let voided_at = (status == "void").then(|| between(&mut rng, at_day(issue, 11), now));
            invoices.push(InvoicePlan {
                id: Uuid::now_v7(),
                client: c,
                number: None,
                status,
                issue,
                due,
                tax_rate_bp,
                lines,
                totals,
                created_at: created.min(now),
                sent_at,
                paid_at,
                voided_at,
            });
        }
    }
    // Gapless numbers in the order the invoices went out, as `send` would have assigned them.
    let mut sent: Vec<usize> = (0..invoices.len()).filter(|&i| invoices[i].sent_at.is_some()).collect();
    sent.sort_by_key(|&i| (invoices[i].issue, i));
    for (n, i) in sent.into_iter().enumerate() {
        invoices[i].number = Some(n as i64 + 1);
    }

    OrgPlan {
        name,
        slug,
        currency,
        timezone,
        created_at,
        people,
        clients,
        projects,
        invoices,
        stream: (args.seed as i64).wrapping_mul(1_000_003).wrapping_add(i64::from(index) * 7919),
    }
}

fn unique_email(taken: &mut HashSet<String>, local: &str, domain: &str) -> String {
    let mut n = 1;
    loop {
        let email = if n == 1 { format!("{local}@{domain}") } else { format!("{local}{n}@{domain}") };
        if taken.insert(email.clone()) {
            return email;
        }
        n += 1;
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Splits `total` tasks over the projects with uneven weights (exactly `total` in all); about
/// one task in ten is a subtask of a top-level task of its project.
fn spread_tasks(rng: &mut StdRng, projects: &mut [ProjectPlan], total: u64) {
    if projects.is_empty() {
        return;
    }
    let weights: Vec<f64> = projects
        .iter()
        .map(|p| {
            let w = rng.gen_range(0.3..1.7);
            if p.status == "planned" { w * 0.3 } else { w }
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut shares: Vec<(u64, f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let exact = total as f64 * w / sum;
            (exact.floor() as u64, exact - exact.floor(), i)
        })
        .collect();
    let assigned: u64 = shares.iter().map(|s| s.0).sum();
    // Largest remainders get the tasks that rounding down left over.
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].1.total_cmp(&shares[a].1).then(a.cmp(&b)));
    for &i in order.iter().cycle().take((total - assigned) as usize) {
        shares[i].0 += 1;
    }
    for (n, _, i) in shares {
        let n = n.min(i32::MAX as u64) as i32;
        let subtasks = if n >= 2 { n / 10 } else { 0 };
        projects[i].tasks = n;
        projects[i].top_level = n - subtasks;
    }
}

// ---------------------------------------------------------------------------------------------
// Writing one organization

async fn write_org(s: &Session, plan: &OrgPlan, seed: u64, now: OffsetDateTime) -> OpResult<(OrgId, Counts)> {
    let db = &s.db;
    let mut tx = access::begin_new_organization(db, NewOrgCreator::Operator(&s.operator, "seed")).await?;
    let org_id = tx.org_id();
    let slug =
        Slug::parse(&plan.slug).map_err(|m| OpError::Failed(anyhow::anyhow!("generated slug {}: {m}", plan.slug)))?;
    match orgs::insert_organization(&mut tx, &slug, &plan.name).await {
        Ok(_) => {}
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
            return Err(OpError::Conflict(format!(
                "the organization {} exists already (an earlier run with --seed {seed}?); seed with another --seed",
                plan.slug
            )));
        }
        Err(e) => return Err(e.into()),
    }
    sqlx::query(
        "UPDATE organizations SET currency = $2, timezone = $3, created_at = $4, updated_at = $4 WHERE id = $1",
    )
    .bind(org_id)
    .bind(plan.currency)
    .bind(plan.timezone)
    .bind(plan.created_at)
    .execute(&mut *tx)
    .await?;
    let mut counts = Counts::default();

    let people = &plan.people;
    counts.users = sqlx::query(
        "INSERT INTO users (id, email, display_name, email_verified_at, created_at, updated_at) \
         SELECT id, email, name, created, created, created FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) \
         AS u(id, email, name, created)",
    )
    .bind(people.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.email.clone()).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let clients = &plan.clients;
    counts.clients = sqlx::query(
        "INSERT INTO clients (organization_id, id, name, company, email, phone, notes, status, archived_at, created_at, updated_at) \
         SELECT $1, id, name, company, email, phone, notes, CASE WHEN archived THEN 'archived' ELSE 'active' END, \
                CASE WHEN archived THEN $9 END, created, created \
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $10::timestamptz[]) \
         AS c(id, name, company, email, phone, notes, archived, created)",
    )
    .bind(org_id)
    .bind(clients.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.company.clone()).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.email.clone()).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.phone.clone()).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.notes.clone()).collect::<Vec<_>>())
    .bind(clients.iter().map(|c| c.archived).collect::<Vec<_>>())
    .bind(now - Duration::days(3))
    .bind(clients.iter().map(|c| c.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let contacts: Vec<(&ClientPlan, &Contact)> =
        clients.iter().flat_map(|c| c.contacts.iter().map(move |k| (c, k))).collect();
    counts.client_contacts = sqlx::query(
        "INSERT INTO client_contacts (organization_id, id, client_id, name, email, phone, title, created_at) \
         SELECT $1, id, client_id, name, email, phone, title, created \
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[]) \
         AS k(id, client_id, name, email, phone, title, created)",
    )
    .bind(org_id)
    .bind(contacts.iter().map(|(_, k)| k.id).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(c, _)| c.id).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(_, k)| k.name.clone()).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(_, k)| k.email.clone()).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(_, k)| k.phone.clone()).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(_, k)| k.title.clone()).collect::<Vec<_>>())
    .bind(contacts.iter().map(|(c, _)| c.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    counts.memberships = sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, client_id, created_at, updated_at) \
         SELECT $1, user_id, role, client_id, created, created \
         FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::timestamptz[]) AS m(user_id, role, client_id, created)",
    )
    .bind(org_id)
    .bind(people.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.role.to_string()).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.client.map(|c| clients[c].id)).collect::<Vec<_>>())
    .bind(people.iter().map(|p| p.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let projects = &plan.projects;
    counts.projects = sqlx::query(
        "INSERT INTO projects (organization_id, id, client_id, name, description, status, budget_minor, start_date, due_date, \
                               visible_to_client, archived_at, created_at, updated_at) \
         SELECT $1, id, client_id, name, description, status, budget, start_date, due_date, visible, \
                CASE WHEN status = 'archived' THEN due_date::timestamptz END, created, created \
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::date[], $9::date[], \
                     $10::bool[], $11::timestamptz[]) \
         AS p(id, client_id, name, description, status, budget, start_date, due_date, visible, created)",
    )
    .bind(org_id)
    .bind(projects.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.client.map(|c| clients[c].id)).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.description.clone()).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.status.to_string()).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.budget_minor).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.start).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.due).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.visible_to_client).collect::<Vec<_>>())
    .bind(projects.iter().map(|p| p.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let pm: Vec<(Uuid, Uuid, OffsetDateTime)> = projects
        .iter()
        .flat_map(|p| p.members.iter().map(move |&u| (p.id, people[u].id, p.created_at.max(people[u].created_at))))
        .collect();
    counts.project_members = sqlx::query(
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) \
         SELECT $1, project_id, user_id, added FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS m(project_id, user_id, added)",
    )
    .bind(org_id)
    .bind(pm.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(pm.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(pm.iter().map(|m| m.2).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    counts.board_columns = sqlx::query(
        "INSERT INTO board_columns (organization_id, id, project_id, name, position, status) \
         SELECT $1, id, project_id, $4[1 + (n - 1) % 4], ((n - 1) % 4)::int, \
                (ARRAY['todo', 'in_progress', 'in_progress', 'done'])[1 + (n - 1) % 4] \
         FROM unnest($2::uuid[], $3::uuid[]) WITH ORDINALITY AS c(id, project_id, n)",
    )
    .bind(org_id)
    .bind(projects.iter().flat_map(|p| p.columns).collect::<Vec<_>>())
    .bind(projects.iter().flat_map(|p| [p.id; 4]).collect::<Vec<_>>())
    .bind(COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    if projects.iter().any(|p| p.tasks > 0) {
        let (tasks, assignees, comments, activity, time) = write_tasks(&mut tx, plan, now).await?;
        counts.tasks = tasks;
        counts.task_assignees = assignees;
        counts.comments = comments;
        counts.task_activity = activity;
        counts.time_entries = time;
    }

    let invoices = &plan.invoices;
    counts.invoices = sqlx::query(
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, tax_rate_bp, status, issue_date, due_date, \
                               subtotal_minor, tax_minor, total_minor, created_at, sent_at, paid_at, voided_at) \
         SELECT $1, id, number, client_id, $2, tax, status, issue, due, subtotal, tax_minor, total, created, sent, paid, voided \
         FROM unnest($3::uuid[], $4::int8[], $5::uuid[], $6::int[], $7::text[], $8::date[], $9::date[], $10::int8[], \
                     $11::int8[], $12::int8[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[]) \
         AS i(id, number, client_id, tax, status, issue, due, subtotal, tax_minor, total, created, sent, paid, voided)",
    )
    .bind(org_id)
    .bind(plan.currency)
    .bind(invoices.iter().map(|i| i.id).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.number).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| clients[i.client].id).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.tax_rate_bp).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.status.to_string()).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.issue).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.due).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.totals.0).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.totals.1).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.totals.2).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.created_at).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.sent_at).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.paid_at).collect::<Vec<_>>())
    .bind(invoices.iter().map(|i| i.voided_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let lines: Vec<(Uuid, i32, &Line)> =
        invoices.iter().flat_map(|i| i.lines.iter().enumerate().map(move |(n, l)| (i.id, n as i32, l))).collect();
    counts.invoice_lines = sqlx::query(
        "INSERT INTO invoice_lines (organization_id, invoice_id, position, description, quantity_milli, unit_price_minor, amount_minor) \
         SELECT $1, invoice_id, position, description, quantity, price, amount \
         FROM unnest($2::uuid[], $3::int[], $4::text[], $5::int8[], $6::int8[], $7::int8[]) \
         AS l(invoice_id, position, description, quantity, price, amount)",
    )
    .bind(org_id)
    .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2.description.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2.quantity_milli).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2.unit_price_minor).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2.amount_minor).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // A paid invoice was paid in full, the day it was marked paid.
    counts.invoice_payments = sqlx::query(
        "INSERT INTO invoice_payments (organization_id, id, invoice_id, amount_minor, paid_on, note, created_at) \
         SELECT organization_id, gen_random_uuid(), id, total_minor, coalesce(paid_at, created_at)::date, '', \
                coalesce(paid_at, created_at) \
           FROM invoices WHERE organization_id = $1 AND status = 'paid' AND total_minor > 0",
    )
    .bind(org_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let numbered = invoices.iter().filter(|i| i.number.is_some()).count() as i64;
    sqlx::query("INSERT INTO invoice_counters (organization_id, next_number) VALUES ($1, $2)")
        .bind(org_id)
        .bind(numbered + 1)
        .execute(&mut *tx)
        .await?;

    audit::record(
        &mut tx,
        &audit_context(s, now),
        Entry::new("seed.generated", "organization", org_id).after(json!({
            "name": plan.name,
            "slug": plan.slug,
            "seed": seed,
            "counts": counts,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok((org_id, counts))
}

/// A uniform 63-bit hash of `key` in the organization's stream (`$2`), one stream per `salt`.
fn h(key: &str, salt: u32) -> String {
    format!("(hashint8extended(({key})::int8, $2 + {salt}) & 9223372036854775807)")
}

/// A uniform number in [0, 1) from the same hash.
fn u(key: &str, salt: u32) -> String {
    format!("(({} % 1000003)::float8 / 1000003.0)", h(key, salt))
}

/// A UUIDv7 for the instant `ms` (ms since the epoch), its random part taken from the hex
/// digest `digest` (deterministic, so a subtask can name its parent's id without reading it).
fn uuid_v7(ms: &str, digest: &str) -> String {
    format!("(lpad(to_hex({ms}), 12, '0') || '7' || substr({digest}, 1, 3) || '8' || substr({digest}, 4, 15))::uuid")
}

/// One element of the text array `$n`, chosen by a hash.
fn word(param: u32, key: &str, salt: u32) -> String {
    format!("${param}[(1 + {} % cardinality(${param}))::int]", h(key, salt))
}

fn ts(ms: &str) -> String {
    format!("to_timestamp(({ms})::float8 / 1000.0)")
}

fn day(ms: &str) -> String {
    format!("(to_timestamp(({ms})::float8 / 1000.0) AT TIME ZONE 'UTC')::date")
}

/// The tasks statement: one row per task in `g`, inserted into tasks, task_assignees,
/// comments, task_activity and time_entries by data-modifying CTEs.
///
/// It runs twice, with the same parameters but `$22`: first for the top-level tasks (and all
/// that hangs off them), then for the subtasks. Every task is computed both times (a subtask's
/// position on the board counts the top-level tasks of its column), so the two halves are
/// exactly what one statement would write. Why two: the `tasks_hierarchy` trigger looks up each
/// subtask's ancestors, and PostgreSQL plans that lookup the first time a subtask is written in
/// the session, from the table's size at that moment; a statement that interleaves both kinds
/// plans it against a nearly empty table (a scan of the organization's tasks instead of a
/// primary-key lookup), kept for every later row, which made one organization with a million
/// tasks take hours (quadratic). Written after the top-level tasks, the subtasks find a table
/// of the real size.
///
/// Every stage is `MATERIALIZED`: inlined, each reference to a computed column would repeat
/// its whole expression (hashes within hashes), which made the statement several times slower.
fn tasks_sql() -> String {
    const DAY: i64 = 86_400_000;
    let kj = "kj";
    format!(
        "WITH p AS (
            SELECT * FROM unnest($4::uuid[], $5::int[], $6::int[], $7::int8[], $8::int8[], $9::bool[], $10::bool[], \
                                 $11::int[], $12::int[])
                WITH ORDINALITY AS p(project_id, n, n_top, start_ms, end_ms, closed, visible, e_off, e_n, pidx)
        ),
        s AS MATERIALIZED (
            SELECT p.*, j, p.pidx * 4294967296 + j AS kj,
                   p.pidx * 4294967296 + CASE WHEN j < p.n_top THEN j ELSE {parent_pick} % p.n_top END AS kk,
                   j >= p.n_top AS is_sub
            FROM p CROSS JOIN LATERAL generate_series(0::int8, p.n - 1) AS j
        ),
        r AS MATERIALIZED (
            SELECT s.*, s.start_ms + ({u_parent} * (s.end_ms - s.start_ms))::int8 AS parent_ms,
                   md5($1::text || ':' || s.kj) AS hj, md5($1::text || ':' || s.kk) AS hk,
                   {u_sub} AS r_sub, {u_status} AS r_status, {u_review} AS r_review, {u_updated} AS r_updated,
                   {u_assign} AS r_assign, {u_comments} AS r_comments, {u_detail} AS r_detail, {u_desc} AS r_desc,
                   {u_prio} AS r_prio, {u_due} AS r_due, {u_est} AS r_est, {u_visible} AS r_visible, {u_time} AS r_time,
                   {h_creator} AS h_creator, {h_a1} AS h_a1, {h_a2} AS h_a2, {h_due} AS h_due, {h_est} AS h_est,
                   {verb} || ' ' || {object} AS title_base, {detail} AS detail, {description} AS description_text
            FROM s
        ),
        t1 AS MATERIALIZED (
            SELECT r.*, CASE WHEN is_sub THEN least($3, parent_ms + 3600000 + (r_sub * {five_days})::int8)
                             ELSE parent_ms END AS created_ms
            FROM r
        ),
        t2 AS MATERIALIZED (
            SELECT t1.*, 0.62 * greatest(0.0, least(1.0, ($3 - created_ms)::float8 / greatest($3 - start_ms, 1))) AS aged
            FROM t1
        ),
        t3 AS MATERIALIZED (
            SELECT t2.*,
                CASE WHEN closed THEN CASE WHEN r_status < 0.93 THEN 'done' ELSE 'todo' END
                     WHEN r_status < 0.08 + aged THEN 'done'
                     WHEN r_status < 0.30 + aged THEN 'in_progress'
                     WHEN r_status < 0.35 + aged THEN 'blocked'
                     ELSE 'todo' END AS status,
                e_off + h_a1 % e_n AS a1
            FROM t2
        ),
        t4 AS MATERIALIZED (
            SELECT t3.*,
                CASE status WHEN 'todo' THEN 0 WHEN 'done' THEN 3 WHEN 'blocked' THEN 1
                     ELSE CASE WHEN r_review < 0.35 THEN 2 ELSE 1 END END AS col,
                CASE WHEN status = 'todo' THEN created_ms
                     ELSE least($3, created_ms + (r_updated * {twenty_days})::int8) END AS updated_ms,
                e_off + h_creator % e_n AS ci,
                e_off + (a1 - e_off + 1 + h_a2 % greatest(e_n - 1, 1)) % e_n AS a2,
                CASE WHEN r_assign < 0.15 THEN 0 WHEN r_assign < 0.8 OR e_n < 2 THEN 1 ELSE 2 END AS n_assign,
                CASE WHEN r_comments < 0.65 THEN 0 WHEN r_comments < 0.85 THEN 1 WHEN r_comments < 0.95 THEN 2
                     ELSE 3 END AS n_comments,
                CASE WHEN status = 'todo' THEN 0 WHEN r_time < 0.4 THEN 0 WHEN r_time < 0.75 THEN 1
                     WHEN r_time < 0.92 THEN 2 ELSE 3 END AS n_time
            FROM t3
        ),
        g_all AS MATERIALIZED (
            SELECT t4.*,
                {id} AS id,
                CASE WHEN is_sub THEN {parent_id} END AS parent_id,
                (row_number() OVER (PARTITION BY pidx, col ORDER BY created_ms, kj) - 1)::int AS position,
                title_base || CASE WHEN r_detail < 0.35 THEN ' ' || detail ELSE '' END AS title,
                CASE WHEN r_desc < 0.45 THEN description_text ELSE '' END AS description,
                CASE WHEN r_prio < 0.20 THEN 'low' WHEN r_prio < 0.72 THEN 'normal'
                     WHEN r_prio < 0.93 THEN 'high' ELSE 'urgent' END AS priority,
                CASE WHEN r_due < 0.7 THEN {due} END AS due_date,
                CASE WHEN r_est < 0.6 THEN (15 * (1 + h_est % 32))::int END AS estimate,
                visible AND r_visible < 0.5 AS task_visible,
                {created_ts} AS created_at, {updated_ts} AS updated_at
            FROM t4
        ),
        -- This statement's half: the top-level tasks, or the subtasks (`$22`).
        g AS NOT MATERIALIZED (SELECT * FROM g_all WHERE is_sub = $22),
        ins_tasks AS (
            INSERT INTO tasks (organization_id, id, project_id, column_id, parent_id, title, description, status, priority, \
                               due_date, estimate_minutes, visible_to_client, position, created_by, created_at, updated_at)
            SELECT $1, id, project_id, $13[((pidx - 1) * 4 + col + 1)::int], parent_id, title, description, status, priority,
                   due_date, estimate, task_visible, position, $14[ci::int], created_at, updated_at
            FROM g
            RETURNING 1
        ),
        ins_assignees AS (
            INSERT INTO task_assignees (organization_id, task_id, user_id)
            SELECT $1, g.id, $14[v.a::int] FROM g CROSS JOIN LATERAL (VALUES (1, g.a1), (2, g.a2)) AS v(n, a)
            WHERE v.n <= g.n_assign
            RETURNING 1
        ),
        ins_comments AS (
            INSERT INTO comments (organization_id, id, task_id, author_id, body, client_visible, created_at)
            SELECT $1, {comment_id}, g.id, $14[(g.e_off + {h_author} % g.e_n)::int], {comment_body},
                   g.task_visible AND {u_client_comment} < 0.4, {comment_ts}
            FROM g CROSS JOIN LATERAL (
                SELECT c, least($3, g.created_ms + 60000 + (c * {u_comment_delay} * {three_days})::int8) AS ms
                FROM generate_series(1, g.n_comments) AS c
            ) AS c
            RETURNING 1
        ),
        ins_activity AS (
            INSERT INTO task_activity (organization_id, id, task_id, actor_id, actor_label, field, old_value, new_value,
                                       occurred_at)
            SELECT $1, {created_activity_id}, g.id, $14[g.ci::int], $15[g.ci::int], 'created', NULL, g.title, g.created_at
            FROM g
            UNION ALL
            SELECT $1, {status_activity_id}, g.id, $14[g.a1::int], $15[g.a1::int], 'status', 'todo', g.status, g.updated_at
            FROM g
            WHERE g.status <> 'todo'
            RETURNING 1
        ),
        ins_time AS (
            INSERT INTO time_entries (organization_id, id, project_id, task_id, user_id, minutes, spent_on, note, created_at)
            SELECT $1, {time_id}, g.project_id, g.id, $14[(CASE WHEN g.n_assign > 0 THEN g.a1 ELSE g.ci END)::int],
                   (15 * (1 + {h_minutes} % 24))::int, {spent_on}, CASE WHEN {u_note} < 0.6 THEN {note} ELSE '' END, {time_ts}
            FROM g CROSS JOIN LATERAL (
                SELECT e, least($3, g.created_ms + ({u_time_at} * greatest(g.updated_ms - g.created_ms, 3600000))::int8) AS ms
                FROM generate_series(1, g.n_time) AS e
            ) AS e
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM ins_tasks), (SELECT count(*) FROM ins_assignees), (SELECT count(*) FROM ins_comments),
               (SELECT count(*) FROM ins_activity), (SELECT count(*) FROM ins_time)",
        parent_pick = h("p.pidx * 4294967296 + j", 1),
        u_parent = u("s.kk", 2),
        u_sub = u(kj, 3),
        u_status = u(kj, 4),
        u_review = u(kj, 5),
        u_updated = u(kj, 6),
        h_creator = h(kj, 7),
        h_a1 = h(kj, 8),
        h_a2 = h(kj, 9),
        u_assign = u(kj, 10),
        u_comments = u(kj, 11),
        verb = word(16, kj, 12),
        object = word(17, kj, 13),
        u_detail = u(kj, 14),
        detail = word(18, kj, 15),
        u_desc = u(kj, 16),
        description = word(19, kj, 17),
        u_prio = u(kj, 18),
        u_due = u(kj, 19),
        h_due = h(kj, 20),
        u_est = u(kj, 21),
        h_est = h(kj, 22),
        u_visible = u(kj, 23),
        u_time = u(kj, 24),
        five_days = 5 * DAY,
        twenty_days = 20 * DAY,
        id = uuid_v7("created_ms", "hj"),
        parent_id = uuid_v7("parent_ms", "hk"),
        due = day(&format!("created_ms + (3 + h_due % 43) * {DAY}")),
        created_ts = ts("created_ms"),
        updated_ts = ts("updated_ms"),
        comment_id = uuid_v7("c.ms", "md5(g.hj || ':c' || c.c)"),
        h_author = h("g.kj * 8 + c.c", 30),
        comment_body = word(20, "g.kj * 8 + c.c", 31),
        u_client_comment = u("g.kj * 8 + c.c", 32),
        u_comment_delay = u("g.kj * 8 + c", 33),
        three_days = 3 * DAY,
        comment_ts = ts("c.ms"),
        created_activity_id = uuid_v7("g.created_ms", "md5(g.hj || ':a')"),
        status_activity_id = uuid_v7("g.updated_ms", "md5(g.hj || ':s')"),
        time_id = uuid_v7("e.ms", "md5(g.hj || ':t' || e.e)"),
        h_minutes = h("g.kj * 8 + e.e", 40),
        spent_on = day("e.ms"),
        u_note = u("g.kj * 8 + e.e", 41),
        note = word(21, "g.kj * 8 + e.e", 42),
        time_ts = ts("e.ms"),
        u_time_at = u("g.kj * 8 + e", 43),
    )
}

async fn write_tasks(tx: &mut OrgTx, plan: &OrgPlan, now: OffsetDateTime) -> OpResult<(u64, u64, u64, u64, u64)> {
    let people = &plan.people;
    // Who may be assigned in each project (its members; the Owner when it has none), as
    // slices of one flat array: `e_off` is 1-based, as PostgreSQL arrays are.
    let mut eligible: Vec<usize> = Vec::new();
    let mut e_off = Vec::new();
    let mut e_n = Vec::new();
    for p in &plan.projects {
        e_off.push(eligible.len() as i32 + 1);
        let members: Vec<usize> = if p.members.is_empty() { vec![0] } else { p.members.clone() };
        e_n.push(members.len() as i32);
        eligible.extend(members);
    }
    let projects = &plan.projects;
    // The planner can't see how many rows `generate_series` over the arrays yields, guesses
    // thousands per row, and would JIT-compile the statement: seconds of compiling for a few
    // hundred milliseconds of work.
    sqlx::query("SET LOCAL jit = off").execute(&mut **tx).await?;
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sql = tasks_sql();
    let mut written = (0, 0, 0, 0, 0);
    for subtasks in [false, true] {
        let row: (i64, i64, i64, i64, i64) = sqlx::query_as(&sql)
            .bind(tx.org_id())
            .bind(plan.stream)
            .bind(unix_ms(now))
            .bind(projects.iter().map(|p| p.id).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| p.tasks).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| p.top_level).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| p.window_ms.0).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| p.window_ms.1).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| matches!(p.status, "completed" | "archived")).collect::<Vec<_>>())
            .bind(projects.iter().map(|p| p.visible_to_client).collect::<Vec<_>>())
            .bind(e_off.clone())
            .bind(e_n.clone())
            .bind(projects.iter().flat_map(|p| p.columns).collect::<Vec<_>>())
            .bind(eligible.iter().map(|&i| people[i].id).collect::<Vec<_>>())
            .bind(eligible.iter().map(|&i| people[i].email.clone()).collect::<Vec<_>>())
            .bind(strings(TASK_VERBS))
            .bind(strings(TASK_OBJECTS))
            .bind(strings(TASK_DETAILS))
            .bind(strings(TASK_DESCRIPTIONS))
            .bind(strings(COMMENTS))
            .bind(strings(TIME_NOTES))
            .bind(subtasks)
            .fetch_one(&mut **tx)
            .await?;
        written.0 += row.0 as u64;
        written.1 += row.1 as u64;
        written.2 += row.2 as u64;
        written.3 += row.3 as u64;
        written.4 += row.4 as u64;
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// Words

/// (currency, time zone, tax rate in basis points)
const LOCALES: &[(&str, &str, i32)] = &[
    ("USD", "America/New_York", 0),
    ("USD", "America/Los_Angeles", 0),
    ("USD", "America/Chicago", 0),
    ("EUR", "Europe/Berlin", 1900),
    ("EUR", "Europe/Paris", 2000),
    ("EUR", "Europe/Amsterdam", 2100),
    ("GBP", "Europe/London", 2000),
    ("CAD", "America/Toronto", 1300),
    ("AUD", "Australia/Sydney", 1000),
];

const ADJECTIVES: &[&str] = &[
    "Northwind",
    "Blue Harbor",
    "Bright",
    "Copper",
    "Evergreen",
    "Silver Birch",
    "Red Fern",
    "Golden Gate",
    "Summit",
    "Clearwater",
    "Granite",
    "Lighthouse",
    "Maple",
    "Oakridge",
    "Pioneer",
    "Quarry",
    "Riverstone",
    "Sunrise",
    "Tidal",
    "Upland",
    "Velvet",
    "Westfield",
    "Yellow Pine",
    "Brightside",
    "Cobalt",
    "Driftwood",
    "Ember",
    "Fieldstone",
    "Harborview",
    "Ironwood",
    "Juniper",
    "Kestrel",
    "Lakeside",
    "Meadow",
    "Nimbus",
    "Orchard",
    "Pinecrest",
    "Redwood",
    "Saltmarsh",
    "Thistle",
];

const NOUNS: &[&str] = &[
    "Fox", "Owl", "Pixel", "Anchor", "Atlas", "Beacon", "Bridge", "Canvas", "Compass", "Crane", "Delta", "Falcon",
    "Forge", "Garden", "Harbor", "Hive", "Lantern", "Lens", "Mill", "Nest", "Orbit", "Paper", "Prism", "Quill",
    "Raven", "Signal", "Sparrow", "Thread", "Vector", "Willow",
];

const AGENCY_KINDS: &[&str] =
    &["Studio", "Agency", "Digital", "Partners", "Consulting", "Labs", "Creative", "Collective", "Works", "Group"];

const CLIENT_KINDS: &[&str] = &[
    "Foods",
    "Health",
    "Logistics",
    "Retail",
    "Bank",
    "Hotels",
    "Energy",
    "Dental",
    "Fitness",
    "Books",
    "Coffee",
    "Realty",
    "Motors",
    "Legal",
    "Insurance",
    "Outdoors",
    "Pharmacy",
    "Brewing",
    "Academy",
    "Clinic",
];

const LEGAL_FORMS: &[&str] = &["Ltd", "Inc.", "LLC", "GmbH", "SAS", "B.V.", "Pty Ltd", "Corp."];

const CLIENT_NOTES: &[&str] = &[
    "Prefers a weekly status email on Fridays.",
    "Invoices go to the finance team, not to the main contact.",
    "Brand guidelines were updated last spring; use the new logo.",
    "Decisions need sign-off from the marketing director.",
    "Net 30; has paid late twice, send a reminder a week before the due date.",
    "Very responsive on Slack, slow on email.",
];

const CONTACT_TITLES: &[&str] = &[
    "CEO",
    "Marketing Manager",
    "Head of Product",
    "Operations Lead",
    "Founder",
    "Finance Director",
    "Project Coordinator",
    "Brand Manager",
    "CTO",
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Amir", "Ana", "Ben", "Carla", "Chen", "Dana", "David", "Elena", "Emma", "Farid", "Grace", "Hana", "Henrik",
    "Ines", "Ivan", "Jamal", "Julia", "Kai", "Kofi", "Lara", "Leo", "Lucia", "Malik", "Maria", "Mateo", "Mei", "Nadia",
    "Noah", "Olga", "Omar", "Priya", "Rafael", "Rosa", "Sam", "Sara", "Tariq", "Tom", "Uma", "Victor", "Wei", "Yara",
    "Yusuf", "Zoe",
];

const LAST_NAMES: &[&str] = &[
    "Adams", "Alvarez", "Becker", "Brown", "Castro", "Chen", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Gupta",
    "Hansen", "Ito", "Jensen", "Kim", "Kowalski", "Larsen", "Lopez", "Martin", "Meyer", "Moreau", "Nakamura", "Nguyen",
    "Okafor", "Olsen", "Patel", "Petrov", "Rossi", "Schmidt", "Silva", "Singh", "Smith", "Suzuki", "Taylor", "Walker",
    "Weber", "Wilson", "Yilmaz", "Zhang",
];

const PROJECT_KINDS: &[&str] = &[
    "website redesign",
    "brand refresh",
    "mobile app",
    "SEO audit",
    "spring campaign",
    "e-commerce launch",
    "newsletter program",
    "annual report",
    "analytics dashboard",
    "onboarding flow",
    "support retainer",
    "product photography",
    "social media calendar",
    "accessibility review",
    "CRM migration",
    "landing pages",
    "pitch deck",
    "video series",
    "trade show",
    "intranet",
];

const PROJECT_DESCRIPTIONS: &[&str] = &[
    "Scope agreed in the kickoff meeting; see the statement of work in Files.",
    "Phase one: research and concepts. Phase two: production and launch.",
    "Monthly retainer covering design, copy and small development changes.",
    "Fixed-price project with two rounds of revisions included.",
    "",
];

const TASK_VERBS: &[&str] = &[
    "Draft", "Review", "Design", "Update", "Fix", "Write", "Test", "Prepare", "Publish", "Schedule", "Research",
    "Set up", "Migrate", "Optimize", "Approve", "Outline", "Refine", "Localize", "Audit", "Present",
];

const TASK_OBJECTS: &[&str] = &[
    "homepage copy",
    "pricing page",
    "logo variations",
    "checkout flow",
    "email template",
    "press release",
    "style guide",
    "analytics tags",
    "product photos",
    "blog post",
    "navigation menu",
    "contact form",
    "sitemap",
    "onboarding emails",
    "social posts",
    "invoice template",
    "meeting notes",
    "user interviews",
    "API integration",
    "image assets",
    "FAQ section",
    "launch checklist",
    "color palette",
    "wireframes",
    "staging deploy",
    "A/B test",
    "brand guidelines",
    "client feedback",
    "budget estimate",
    "project timeline",
];

const TASK_DETAILS: &[&str] = &[
    "for mobile",
    "for the client review",
    "before launch",
    "(v2)",
    "with legal",
    "for the newsletter",
    "per client feedback",
    "on staging",
    "in German",
    "for the board meeting",
];

const TASK_DESCRIPTIONS: &[&str] = &[
    "See the client's notes from the last call. Keep it short.",
    "Acceptance: approved by the client in writing.",
    "Blocked on assets from the client until they arrive.",
    "Follow the brand guidelines (v3). Ask before changing fonts.",
    "Estimate agreed with the client; flag anything beyond it early.",
    "Check on desktop, tablet and phone before moving to review.",
];

const COMMENTS: &[&str] = &[
    "First draft is up, let me know what you think.",
    "Looks good to me. Moving it to review.",
    "Can we push this to next week? Waiting on the client.",
    "I left a few notes inline.",
    "Client approved this version.",
    "Found an issue on mobile, fixing it now.",
    "Done; the link is in the project files.",
    "Who owns the copy for this one?",
    "Updated per today's call.",
    "Thanks, this is exactly what we needed.",
];

const TIME_NOTES: &[&str] = &[
    "Design work",
    "Implementation",
    "Client call",
    "Revisions",
    "Research",
    "Internal review",
    "Copywriting",
    "Testing",
    "Setup",
];

/// (description, billed by the hour, unit price range in minor units)
const LINE_ITEMS: &[(&str, bool, i64, i64)] = &[
    ("Design", true, 9_000, 15_000),
    ("Development", true, 10_000, 17_500),
    ("Project management", true, 8_000, 12_000),
    ("Consulting", true, 12_000, 20_000),
    ("Copywriting", true, 7_000, 11_000),
    ("QA and testing", true, 7_000, 10_000),
    ("Hosting (monthly)", false, 2_000, 15_000),
    ("Stock photography license", false, 5_000, 40_000),
    ("Workshop (half day)", false, 60_000, 150_000),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tasks: u64) -> SeedArgs {
        SeedArgs { orgs: 3, clients: 5, projects: 7, tasks, users: 9, seed: 42, jobs: Some(1) }
    }

    #[test]
    fn the_plan_depends_only_on_the_seed_and_the_index() {
        let now = OffsetDateTime::now_utc();
        let a = plan_org(&args(700), 1, 700, now);
        let b = plan_org(&args(700), 1, 700, now);
        assert_eq!(a.name, b.name);
        assert_eq!(a.slug, b.slug);
        assert_eq!(
            a.people.iter().map(|p| &p.email).collect::<Vec<_>>(),
            b.people.iter().map(|p| &p.email).collect::<Vec<_>>()
        );
        assert_eq!(
            a.projects.iter().map(|p| p.tasks).collect::<Vec<_>>(),
            b.projects.iter().map(|p| p.tasks).collect::<Vec<_>>()
        );
        let c = plan_org(&args(700), 2, 700, now);
        assert_ne!(a.slug, c.slug);
    }

    #[test]
    fn tasks_are_spread_exactly_with_subtasks_under_top_level_tasks() {
        let now = OffsetDateTime::now_utc();
        for total in [0, 1, 7, 1000, 12_345] {
            let plan = plan_org(&args(total), 0, total, now);
            assert_eq!(plan.projects.iter().map(|p| p.tasks as u64).sum::<u64>(), total);
            for p in &plan.projects {
                assert!(p.top_level <= p.tasks && (p.tasks == 0 || p.top_level >= 1), "{} {}", p.tasks, p.top_level);
                assert!(p.window_ms.0 < p.window_ms.1);
            }
        }
    }

    #[test]
    fn people_roles_and_emails() {
        let plan = plan_org(&args(10), 0, 10, OffsetDateTime::now_utc());
        let roles: Vec<&str> = plan.people.iter().map(|p| p.role).collect();
        assert_eq!(roles[0], "owner");
        assert_eq!(roles[1], "admin");
        assert!(roles.contains(&"manager") && roles.contains(&"member") && roles.contains(&"client"));
        let emails: HashSet<&String> = plan.people.iter().map(|p| &p.email).collect();
        assert_eq!(emails.len(), plan.people.len());
        for p in &plan.people {
            assert!(crate::platform::types::Email::parse(&p.email).is_ok(), "{}", p.email);
            assert_eq!(p.role == "client", p.client.is_some());
        }
        assert!(Slug::parse(&plan.slug).is_ok(), "{}", plan.slug);
    }

    #[test]
    fn invoices_are_numbered_without_gaps_and_drafts_have_no_number() {
        let plan = plan_org(&SeedArgs { clients: 30, ..args(10) }, 0, 10, OffsetDateTime::now_utc());
        let mut numbers: Vec<i64> = plan.invoices.iter().filter_map(|i| i.number).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
        for i in &plan.invoices {
            assert_eq!(i.number.is_none(), i.status == "draft");
            assert!(!i.lines.is_empty() && i.totals.2 >= i.totals.0);
        }
    }
}
