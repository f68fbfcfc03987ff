//! Workload: what each person's open tasks still need per week (estimate less time logged,
//! shared among assignees) against their hours a week; who sets those hours, and how bad input
//! is refused.

use axum::http::Method;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{Res, count, get, patch, post, send};
use crate::support::orgs::{Org, org_with_every_role};
use crate::support::work::add_to_project;
use crate::support::{api_key, sql};

struct Setup {
    org: Org,
    org_id: Uuid,
    key: String,
    project: String,
}

async fn setup(app: &TestApp, slug: &str) -> Setup {
    let org = org_with_every_role(app, slug).await;
    let org_id: Uuid = org.id.parse().unwrap();
    let key = api_key(app, org_id, "planning").await;
    // The Member and the Manager work on it.
    let people = [org.people["member"].user_id.as_str(), org.people["manager"].user_id.as_str()];
    let project = project_of(app, &key, &org, "Relaunch", &people).await;
    Setup { org, org_id, key, project }
}

/// A project of the organization's client made through the API, with `people` on it; its id.
async fn project_of(app: &TestApp, key: &str, org: &Org, name: &str, people: &[&str]) -> String {
    let res = post(app, "/api/v1/projects", key, json!({"name": name, "client_id": org.client_id})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let project = res.id();
    for person in people {
        add_to_project(app, org.id.parse().unwrap(), project.parse().unwrap(), person.parse().unwrap()).await;
    }
    project
}

/// A task of `project` for `assignees`, due `due` with `estimate` minutes; its id.
async fn task(
    app: &TestApp,
    key: &str,
    project: &str,
    title: &str,
    assignees: &[&str],
    due: Option<&str>,
    estimate: Option<i32>,
) -> String {
    let body = json!({"project_id": project, "title": title, "assignees": assignees, "due_date": due,
        "estimate_minutes": estimate});
    let res = post(app, "/api/v1/tasks", key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.id()
}

async fn log(app: &TestApp, key: &str, project: &str, task: &str, minutes: i32) {
    let body = json!({"project_id": project, "task_id": task, "minutes": minutes, "spent_on": "2026-12-01"});
    let res = post(app, "/api/v1/time-entries", key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
}

fn person<'a>(w: &'a Value, id: &str) -> &'a Value {
    w["data"]["people"].as_array().unwrap().iter().find(|p| p["user_id"] == id).unwrap_or_else(|| panic!("{id}: {w}"))
}

fn load(v: &Value) -> (i64, i64, i64) {
    (v["planned_minutes"].as_i64().unwrap(), v["tasks"].as_i64().unwrap(), v["unestimated_tasks"].as_i64().unwrap())
}

async fn put(app: &TestApp, path: &str, key: &str, body: Value) -> Res {
    send(app, Method::PUT, path, key, Some(body)).await
}

#[tokio::test]
async fn the_workload_counts_what_open_tasks_still_need_per_week_against_each_persons_hours() {
    // A Wednesday: this week is the week of Monday 2026-12-07.
    let now = time::macros::datetime!(2026-12-09 12:00 UTC);
    let app = TestApp::builder().manual_clock(clientflow::platform::clock::ManualClock::new(now)).spawn().await;
    let Setup { mut org, key, project, .. } = setup(&app, "load").await;
    let member = org.people["member"].user_id.clone();
    let manager = org.people["manager"].user_id.clone();
    let (m, g) = (member.as_str(), manager.as_str());
    // This week (from Monday 2026-12-07): 10h estimated with 2h logged, and half of 5h shared
    // with the Manager.
    let wireframes = task(&app, &key, &project, "Wireframes", &[m], Some("2026-12-09"), Some(600)).await;
    log(&app, &key, &project, &wireframes, 120).await;
    task(&app, &key, &project, "Copy", &[m, g], Some("2026-12-13"), Some(300)).await;
    // The Manager's overrun task still needs nothing, not less than nothing.
    let overrun = task(&app, &key, &project, "Overrun", &[g], Some("2026-12-07"), Some(60)).await;
    log(&app, &key, &project, &overrun, 90).await;
    // Next week: a task without an estimate.
    task(&app, &key, &project, "Launch", &[m], Some("2026-12-14"), None).await;
    // Earlier, undated, and what is left out: done, past the four weeks, nobody's, archived.
    task(&app, &key, &project, "Overdue audit", &[m], Some("2026-12-01"), Some(60)).await;
    task(&app, &key, &project, "Someday", &[m], None, Some(90)).await;
    let done = task(&app, &key, &project, "Shipped", &[m], Some("2026-12-08"), Some(600)).await;
    let res = patch(&app, &format!("/api/v1/tasks/{done}"), &key, json!({"status": "done"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    task(&app, &key, &project, "Far off", &[m], Some("2027-01-04"), Some(600)).await;
    task(&app, &key, &project, "Unassigned", &[], Some("2026-12-08"), Some(600)).await;
    let old = project_of(&app, &key, &org, "Old", &[m]).await;
    task(&app, &key, &old, "Forgotten", &[m], Some("2026-12-08"), Some(600)).await;
    let res = patch(&app, &format!("/api/v1/projects/{old}"), &key, json!({"status": "archived"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The Member has 6 hours a week.
    let res = put(&app, &format!("/api/v1/workload/{m}/capacity"), &key, json!({"weekly_capacity_minutes": 360})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"], json!({"user_id": m, "weekly_capacity_minutes": 360}));

    let w = get(&app, "/api/v1/workload?week=2026-12-10", &key).await;
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(w.body["data"]["weeks"], json!(["2026-12-07", "2026-12-14", "2026-12-21", "2026-12-28"]));
    // Without a week, this week first: the same answer.
    assert_eq!(get(&app, "/api/v1/workload", &key).await.body, w.body);
    // Everyone but the Client, by name (invited without a display name: their addresses).
    let names: Vec<&str> =
        w.body["data"]["people"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin@load.test", "manager@load.test", "member@load.test", "Test User"]);
    let mp = person(&w.body, m);
    assert_eq!(mp["weekly_capacity_minutes"], 360);
    assert_eq!(load(&mp["weeks"][0]), (480 + 150, 2, 0));
    assert_eq!(mp["weeks"][0]["over_by_minutes"], 630 - 360);
    assert_eq!(load(&mp["weeks"][1]), (0, 1, 1));
    assert_eq!(mp["weeks"][1]["over_by_minutes"], 0);
    assert_eq!(load(&mp["weeks"][2]), (0, 0, 0));
    let items = &mp["weeks"][0]["items"];
    assert_eq!(items[0]["task_id"], wireframes.as_str(), "{items}");
    assert_eq!(items[0]["share_minutes"], 480);
    assert_eq!(items[1]["title"], "Copy");
    assert_eq!(items[1]["share_minutes"], 150);
    assert_eq!(mp["weeks"][1]["items"][0]["share_minutes"], Value::Null);
    assert_eq!(load(&mp["earlier"]), (60, 1, 0));
    assert_eq!(load(&mp["undated"]), (90, 1, 0));
    let gp = person(&w.body, g);
    assert_eq!(gp["weekly_capacity_minutes"], 2400, "the default: 40 hours");
    assert_eq!(load(&gp["weeks"][0]), (150, 2, 0));
    assert_eq!(gp["weeks"][0]["over_by_minutes"], 0);

    // Each person's overview says what their own week holds.
    let slug = org.slug.clone();
    let (_, overview) = org.people.get_mut("member").unwrap().browser.page(&format!("/o/{slug}")).await;
    assert!(
        overview.contains("<p>Planned: 10h 30m of your 6h, for 2 open tasks due this week; over by 4h 30m.</p>"),
        "{overview}"
    );
    let (_, overview) = org.people.get_mut("manager").unwrap().browser.page(&format!("/o/{slug}")).await;
    assert!(overview.contains("<p>Planned: 2h 30m of your 40h, for 2 open tasks due this week.</p>"), "{overview}");
    let (_, overview) = org.people.get_mut("admin").unwrap().browser.page(&format!("/o/{slug}")).await;
    assert!(overview.contains("<p>None of your open tasks is due this week.</p>"), "{overview}");

    // The page says the same, found from the schedule.
    let b = &mut org.people.get_mut("manager").unwrap().browser;
    let (_, schedule) = b.page(&format!("/o/{slug}/schedule")).await;
    assert!(schedule.contains(&format!("<a href=\"/o/{slug}/workload\">")), "{schedule}");
    let (status, html) = b.page(&format!("/o/{slug}/workload")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("1 person is over their hours in at least one of these weeks."), "{html}");
    assert!(html.contains("This week<br><span class=\"nowrap\">2026-12-07</span></th>"), "{html}");
    assert!(html.contains("Week of<br><span class=\"nowrap\">2026-12-14</span></th>"), "{html}");
    assert!(html.contains("data-label=\"This week, 2026-12-07:\""), "{html}");
    assert!(html.contains("data-label=\"Week of 2026-12-14:\""), "{html}");
    assert!(
        html.contains("<span class=\"planned\">10h 30m</span> <strong class=\"over-budget\">Over by 4h 30m</strong>"),
        "{html}"
    );
    // Which tasks make it up, each with the person's share of what it still needs.
    let cell = html
        .split("<summary>2 tasks<span class=\"sr-only\"> of member@load.test, This week, 2026-12-07</span>")
        .nth(1)
        .expect(&html);
    let cell = &cell[..cell.find("</details>").unwrap()];
    assert!(cell.contains(&format!("<a href=\"/o/{slug}/tasks/{wireframes}\">Wireframes</a> <span class=\"muted\">Relaunch · <span class=\"nowrap\">due 2026-12-09</span> · 8h to go</span>")), "{cell}");
    assert!(cell.contains("Copy</a> <span class=\"muted\">Relaunch · <span class=\"nowrap\">due 2026-12-13</span> · 2h 30m to go</span>"), "{cell}");
    assert!(cell.find("Wireframes").unwrap() < cell.find("Copy").unwrap(), "by due date: {cell}");
    assert!(
        html.contains("<td data-label=\"Hours a week:\">6h") && html.contains("name=\"hours_a_week\" value=\"6\""),
        "{html}"
    );
    assert!(html.contains("<summary>1 task, none estimated<span class=\"sr-only\">"), "{html}");
    assert!(html.contains("Launch</a> <span class=\"muted\">Relaunch · <span class=\"nowrap\">due 2026-12-14</span> · no estimate</span>"), "{html}");
    assert!(html.contains(&format!("href=\"/o/{slug}/tasks?assignee={m}\">member@load.test</a>")), "{html}");
    assert!(html.contains("manager@load.test (you)"), "{html}");
    assert!(!html.contains("client@load.test"), "{html}");
    // Eight weeks on, nothing falls due (all of it is earlier); the pager goes back four weeks.
    let (_, later) = b.page(&format!("/o/{slug}/workload?week=2027-02-01")).await;
    assert!(later.contains("Nobody is over their hours in these weeks."), "{later}");
    assert!(later.contains(&format!("href=\"/o/{slug}/workload?week=2027-01-04\" rel=\"prev\"")), "{later}");
    // A week whose four weeks would end past the calendar is refused by name, not a 500.
    let (status, refused) = b.page(&format!("/o/{slug}/workload?week=9999-12-31")).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("9999-12-31"), "{refused}");
    let res = get(&app, "/api/v1/workload?week=9999-12-30", &key).await;
    res.assert_problem_field(422, "week");

    // Someone who plans only the projects they are on (a Member given projects.update) sees
    // only those: not the Manager's task in a project the Member is not on.
    let hidden = project_of(&app, &key, &org, "Hidden", &[g]).await;
    task(&app, &key, &hidden, "Hidden errand", &[g], Some("2026-12-08"), Some(60)).await;
    let w = get(&app, "/api/v1/workload", &key).await;
    assert_eq!(load(&person(&w.body, g)["weeks"][0]), (210, 3, 0), "the Owner sees every project");
    sql(
        &app,
        "INSERT INTO role_permissions VALUES ($1, 'member', 'projects.update', true)",
        &[org.id.parse().unwrap()],
    )
    .await;
    let b = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = b.page(&format!("/o/{slug}/workload")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("Hidden errand"), "{html}");
    let manager_row = html.split("manager@load.test</a></th>").nth(1).expect(&html);
    let manager_row = &manager_row[..manager_row.find("</tr>").unwrap()];
    assert!(manager_row.contains("<span class=\"planned\">2h 30m</span>"), "{manager_row}");

    // A cell lists at most 50 tasks; the rest are a link away.
    let bulk = [org.id.parse().unwrap(), project.parse().unwrap(), m.parse().unwrap()];
    sql(
        &app,
        "WITH made AS (INSERT INTO tasks (organization_id, id, project_id, column_id, title, due_date, created_at, updated_at) \
         SELECT $1, gen_random_uuid(), $2, (SELECT id FROM board_columns WHERE project_id = $2 ORDER BY position LIMIT 1), \
         'Bulk ' || n, '2026-12-22', now(), now() FROM generate_series(1, 51) n RETURNING id) \
         INSERT INTO task_assignees SELECT $1, id, $3 FROM made",
        &bulk,
    )
    .await;
    let (_, html) = b.page(&format!("/o/{slug}/workload")).await;
    let cell = html
        .split("<summary>51 tasks, none estimated<span class=\"sr-only\"> of member@load.test (you), Week of 2026-12-21</span>")
        .nth(1)
        .expect(&html);
    let cell = &cell[..cell.find("</details>").unwrap()];
    assert_eq!(cell.matches("<li>").count(), 51, "{cell}");
    assert!(
        cell.contains(&format!(
            "<li><a href=\"/o/{slug}/tasks?assignee={m}\">and 1 more</a> <span class=\"muted\">on the task list</span></li>"
        )),
        "{cell}"
    );
}

#[tokio::test]
async fn hours_a_week_are_set_by_those_who_plan_with_every_bad_value_refused() {
    let app = TestApp::spawn().await;
    let Setup { mut org, org_id, key, .. } = setup(&app, "hours").await;
    let slug = org.slug.clone();
    let member = org.people["member"].user_id.clone();
    let client = org.people["client"].user_id.clone();
    let page = format!("/o/{slug}/workload");
    let save = format!("/o/{slug}/workload/capacity");

    // A Member neither sees nor sets anyone's hours, and isn't offered the page.
    let b = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(b.page(&page).await.0, 403);
    let (_, schedule) = b.page(&format!("/o/{slug}/schedule")).await;
    assert!(!schedule.contains("/workload"), "{schedule}");
    let res = b
        .submit(&format!("/o/{slug}/schedule"), &save, &[("person", &member), ("hours_a_week", "1"), ("week", "")])
        .await;
    assert_eq!(res.status(), 403);

    let b = &mut org.people.get_mut("manager").unwrap().browser;
    let (_, people) = b.page(&format!("/o/{slug}/members")).await;
    assert!(people.contains(&format!("<a href=\"/o/{slug}/workload\">Workload and hours a week</a>")), "{people}");
    for (hours, message) in [
        ("abc", "must be a duration like 1:30"),
        ("169", "must be at most 168 hours"),
        ("-1", "must not be negative"),
        ("", "is required"),
        ("99999999999999999999", "must be a duration like 1:30"),
    ] {
        let res = b.submit(&page, &save, &[("person", &member), ("hours_a_week", hours), ("week", "2026-12-07")]).await;
        assert_eq!(res.status(), 422, "{hours:?}");
        let body = res.text().await.unwrap();
        assert!(body.contains("<strong>Hours a week</strong>: ") && body.contains(message), "{hours:?}: {body}");
        assert!(body.contains("<h1>Workload</h1>"), "the page again: {body}");
        // The person's form is open again on what was typed; the others are not.
        let typed = hours.replace('&', "&#38;");
        let open = "<details class=\"capacity\" open>";
        assert_eq!(body.matches(open).count(), 1, "{body}");
        let form = &body[body.find(open).unwrap()..];
        let form = &form[..form.find("</details>").unwrap()];
        assert!(form.contains(&format!("value=\"{member}\"")), "{form}");
        assert!(form.contains(&format!("name=\"hours_a_week\" value=\"{typed}\"")), "{form}");
    }
    let res = b.submit(&page, &save, &[("person", &member), ("hours_a_week", "4\u{0}0"), ("week", "")]).await;
    assert!(matches!(res.status().as_u16(), 400 | 422), "a NUL: {}", res.status());
    let res = b.submit(&page, &save, &[("person", "not-an-id"), ("hours_a_week", "8"), ("week", "")]).await;
    assert_eq!(res.status(), 422);
    let res = b.submit(&page, &save, &[("person", &client), ("hours_a_week", "8"), ("week", "")]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("Client users have no workload"));
    // Nobody of this organization: another organization's person, or no one at all.
    let other = org_with_every_role(&app, "elsewhere").await;
    for stranger in [other.people["member"].user_id.clone(), Uuid::now_v7().to_string()] {
        let res = b.submit(&page, &save, &[("person", &stranger), ("hours_a_week", "8"), ("week", "")]).await;
        assert_eq!(res.status(), 404, "{stranger}");
    }
    let events = || async {
        sqlx::query_as::<_, (Value, Value)>(
            "SELECT before, after FROM audit_events WHERE action = 'member.capacity_changed' ORDER BY seq",
        )
        .fetch_all(&mut app.db.admin_conn().await)
        .await
        .unwrap()
    };
    assert!(events().await.is_empty(), "a refusal recorded a change");

    // Saved as typed, back on the same weeks, audited with what it was.
    let res = b.submit(&page, &save, &[("person", &member), ("hours_a_week", "37.5"), ("week", "2026-12-07")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/o/{slug}/workload?week=2026-12-07"));
    let (_, html) = b.page(&location(&res)).await;
    assert!(html.contains("Hours a week saved.") && html.contains(">37h 30m\n"), "{html}");
    assert!(html.contains("name=\"hours_a_week\" value=\"37:30\""), "{html}");
    assert_eq!(events().await, vec![(json!({"weekly_minutes": 2400}), json!({"weekly_minutes": 2250}))]);
    // The same again changes nothing and records nothing.
    let res = b.submit(&page, &save, &[("person", &member), ("hours_a_week", "37:30"), ("week", "")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(events().await.len(), 1);
    let res = b.submit(&page, &save, &[("person", &member), ("hours_a_week", "0"), ("week", "")]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = b.page(&page).await;
    assert!(html.contains("<td data-label=\"Hours a week:\">0h\n"), "{html}");

    // The API's refusals.
    let path = format!("/api/v1/workload/{member}/capacity");
    for bad in [
        json!({"weekly_capacity_minutes": 10081}),
        json!({"weekly_capacity_minutes": -1}),
        json!({"weekly_capacity_minutes": 1e30}),
    ] {
        put(&app, &path, &key, bad).await.assert_problem(422);
    }
    put(&app, &path, &key, json!({"weekly_capacity_minutes": "40h"})).await.assert_problem(422);
    // A whole number written as a float is that number (JSON doesn't tell them apart).
    let res = put(&app, &path, &key, json!({"weekly_capacity_minutes": 480.0})).await;
    assert_eq!(res.body["data"]["weekly_capacity_minutes"], 480, "{}", res.body);
    put(&app, &format!("/api/v1/workload/{client}/capacity"), &key, json!({"weekly_capacity_minutes": 60}))
        .await
        .assert_problem(409);
    let stranger = other.people["member"].user_id.clone();
    put(&app, &format!("/api/v1/workload/{stranger}/capacity"), &key, json!({"weekly_capacity_minutes": 60}))
        .await
        .assert_problem(404);
    // Another organization's key sees none of this organization's people.
    let other_key = api_key(&app, other.id.parse().unwrap(), "theirs").await;
    let theirs = get(&app, "/api/v1/workload", &other_key).await;
    assert!(!theirs.body.to_string().contains(&member), "{}", theirs.body);
    put(&app, &path, &other_key, json!({"weekly_capacity_minutes": 60})).await.assert_problem(404);
    // Leaving the organization takes the hours along.
    sql(&app, "DELETE FROM task_assignees WHERE user_id = $1", &[member.parse().unwrap()]).await;
    let capacities = format!("SELECT count(*) FROM member_capacities WHERE organization_id = '{org_id}'");
    assert_eq!(count(&app, &capacities).await, 1);
    sql(
        &app,
        "DELETE FROM memberships WHERE user_id = $1 AND organization_id = $2",
        &[member.parse().unwrap(), org_id],
    )
    .await;
    assert_eq!(count(&app, &capacities).await, 0);
}
