//! A field the API accepts is applied or refused, never dropped: every field of every PATCH body
//! sent with a value, as `null` and, where it used to mean something else, empty; `null` refused
//! on a create wherever the record can't be empty; invoice currencies from the real ISO 4217
//! list; whole numbers written as decimals; ids in queries and paths in their one form; and the
//! document saying all of it.

use axum::http::Method;
use clientflow_test_support::TestApp;
use serde_json::{Value, json};

use crate::support::api::{Res, api_key, get, patch, post, send_raw, tenant, upload};

/// A resource as a GET shows it, without what changes on every read (a download link).
async fn shown(app: &TestApp, url: &str, key: &str) -> Value {
    let res = get(app, url, key).await;
    assert_eq!(res.status, 200, "{url}: {}", res.body);
    let mut data = res.body["data"].clone();
    if let Some(o) = data.as_object_mut() {
        o.remove("download_url");
        o.remove("download_url_expires_at");
    }
    data
}

enum Expect {
    /// 200, and the resource then shows this value at this JSON pointer.
    Applied(&'static str, Value),
    /// 422 naming this field, and nothing changed.
    Refused(&'static str),
}
use Expect::{Applied, Refused};

#[tokio::test]
async fn every_patch_field_is_applied_or_refused_never_dropped() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "fields").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let id = |res: Res| {
        assert!(matches!(res.status, 200 | 201), "{}", res.body);
        res.id()
    };
    let client = t.org.client.to_string();
    let other_client = id(post(&app, "/api/v1/clients", &key, json!({"name": "Other"})).await);
    let client_url = format!("/api/v1/clients/{client}");
    patch(&app, &client_url, &key, json!({"email": "ann@example.com", "phone": "+44 1", "company": "Acme"})).await;
    let project = id(post(
        &app,
        "/api/v1/projects",
        &key,
        json!({"name": "Site", "client_id": client, "budget_minor": 100_000, "start_date": "2030-01-01", "due_date": "2030-02-01"}),
    )
    .await);
    let columns = get(&app, &format!("/api/v1/projects/{project}/columns"), &key).await;
    let second_column = columns.body["data"][1]["id"].clone();
    let parent = id(post(&app, "/api/v1/tasks", &key, json!({"project_id": project, "title": "Parent"})).await);
    let task = id(post(
        &app,
        "/api/v1/tasks",
        &key,
        json!({"project_id": project, "title": "Launch", "parent_id": parent, "due_date": "2030-01-15", "estimate_minutes": 90}),
    )
    .await);
    let comment = id(post(&app, &format!("/api/v1/tasks/{task}/comments"), &key, json!({"body": "First"})).await);
    let entry = id(post(
        &app,
        "/api/v1/time-entries",
        &key,
        json!({"project_id": project, "task_id": task, "minutes": 30, "note": "Call"}),
    )
    .await);
    let lines = json!([{"description": "Design", "quantity_milli": 1000, "unit_price_minor": 5000}]);
    let invoice =
        id(post(&app, "/api/v1/invoices", &key, json!({"client_id": client, "currency": "USD", "lines": lines})).await);
    let file = id(upload(&app, &key, &[("project_id", &project), ("task_id", &task)], Some(("a.txt", b"text"))).await);

    let (c, p, tk) = (client_url, format!("/api/v1/projects/{project}"), format!("/api/v1/tasks/{task}"));
    let (cm, e) = (format!("/api/v1/tasks/{task}/comments/{comment}"), format!("/api/v1/time-entries/{entry}"));
    let (i, f) = (format!("/api/v1/invoices/{invoice}"), format!("/api/v1/files/{file}"));
    let cases: Vec<(&String, Value, Expect)> = vec![
        // Clients: email and phone may be empty (null clears them); the rest may not be null.
        (&c, json!({"name": null}), Refused("name")),
        (&c, json!({"company": null}), Refused("company")),
        (&c, json!({"notes": null}), Refused("notes")),
        (&c, json!({"email": null}), Applied("/email", Value::Null)),
        (&c, json!({"phone": null}), Applied("/phone", Value::Null)),
        (&c, json!({"email": " ann@example.com"}), Refused("email")),
        (&c, json!({"name": "Acme Ltd"}), Applied("/name", json!("Acme Ltd"))),
        // Projects: null clears the budget, the client and the dates.
        (&p, json!({"budget_minor": null}), Applied("/budget_minor", Value::Null)),
        (&p, json!({"budget_minor": 2500.0}), Applied("/budget_minor", json!(2500))),
        (&p, json!({"budget_minor": -1}), Refused("budget_minor")),
        (&p, json!({"client_id": null}), Applied("/client_id", Value::Null)),
        (&p, json!({"client_id": other_client}), Applied("/client_id", json!(other_client))),
        (&p, json!({"client_id": " "}), Refused("client_id")),
        (&p, json!({"start_date": null}), Applied("/start_date", Value::Null)),
        (&p, json!({"due_date": ""}), Applied("/due_date", Value::Null)),
        (&p, json!({"due_date": " 2030-03-01"}), Refused("due_date")),
        (&p, json!({"name": null}), Refused("name")),
        (&p, json!({"description": null}), Refused("description")),
        (&p, json!({"status": null}), Refused("status")),
        (&p, json!({"visible_to_client": null}), Refused("visible_to_client")),
        // Tasks: null detaches the parent and clears the due date and the estimate.
        (&tk, json!({"title": null}), Refused("title")),
        (&tk, json!({"description": null}), Refused("description")),
        (&tk, json!({"status": null}), Refused("status")),
        (&tk, json!({"priority": null}), Refused("priority")),
        (&tk, json!({"visible_to_client": null}), Refused("visible_to_client")),
        (&tk, json!({"assignees": null}), Refused("assignees")),
        (&tk, json!({"assignees": [""]}), Refused("assignees")),
        (&tk, json!({"column_id": ""}), Refused("column_id")),
        (&tk, json!({"column_id": null}), Refused("column_id")),
        (&tk, json!({"column_id": second_column}), Applied("/column_id", second_column.clone())),
        (&tk, json!({"parent_id": null}), Applied("/parent_id", Value::Null)),
        (&tk, json!({"due_date": null}), Applied("/due_date", Value::Null)),
        (&tk, json!({"estimate_minutes": null}), Applied("/estimate_minutes", Value::Null)),
        (&tk, json!({"assignees": [t.admin]}), Applied("/assignees", json!([t.admin]))),
        // Comments.
        (&cm, json!({"body": null}), Refused("body")),
        (&cm, json!({"client_visible": null}), Refused("client_visible")),
        (&cm, json!({"body": "Edited"}), Applied("/body", json!("Edited"))),
        // Time entries: null detaches the task; the date can't be emptied.
        (&e, json!({"minutes": null}), Refused("minutes")),
        (&e, json!({"note": null}), Refused("note")),
        (&e, json!({"spent_on": null}), Refused("spent_on")),
        (&e, json!({"spent_on": ""}), Refused("spent_on")),
        (&e, json!({"minutes": 45.0}), Applied("/minutes", json!(45))),
        (&e, json!({"task_id": null}), Applied("/task_id", Value::Null)),
        // Invoices: the currency of a draft changes, to a real ISO 4217 code only; nothing is
        // emptied by an empty string.
        (&i, json!({"currency": "EUR"}), Applied("/currency", json!("EUR"))),
        (&i, json!({"currency": "XXXX"}), Refused("currency")),
        (&i, json!({"currency": "ABC"}), Refused("currency")),
        (&i, json!({"currency": "eur"}), Refused("currency")),
        (&i, json!({"currency": null}), Refused("currency")),
        (&i, json!({"issue_date": ""}), Refused("issue_date")),
        (&i, json!({"issue_date": null}), Refused("issue_date")),
        (&i, json!({"due_date": null}), Refused("due_date")),
        (&i, json!({"client_id": null}), Refused("client_id")),
        (&i, json!({"tax_rate_bp": null}), Refused("tax_rate_bp")),
        (&i, json!({"notes": null}), Refused("notes")),
        (&i, json!({"lines": null}), Refused("lines")),
        (&i, json!({"tax_rate_bp": 1900.0}), Applied("/tax_rate_bp", json!(1900))),
        // Files: a new name is taken as given or refused, not quietly cut down to its last part.
        (&f, json!({"name": null}), Refused("name")),
        (&f, json!({"shared_with_client": null}), Refused("shared_with_client")),
        (&f, json!({"name": "reports/q1.txt"}), Refused("name")),
        (&f, json!({"name": ". ."}), Refused("name")),
        (&f, json!({"name": "q1.txt"}), Applied("/name", json!("q1.txt"))),
        (&f, json!({"task_id": null}), Applied("/task_id", Value::Null)),
    ];
    let mut failures = Vec::new();
    for (url, body, expect) in &cases {
        let before = shown(&app, url, &key).await;
        let res = patch(&app, url, &key, body.clone()).await;
        let after = shown(&app, url, &key).await;
        match expect {
            Applied(pointer, value) => {
                if res.status != 200
                    || res.body["data"].pointer(pointer) != Some(value)
                    || after.pointer(pointer) != Some(value)
                {
                    failures
                        .push(format!("PATCH {url} {body}: {} {}, expected {pointer} = {value}", res.status, res.body));
                }
            }
            Refused(field) => {
                if res.status != 422 || !res.fields().iter().any(|f| f == field) {
                    failures
                        .push(format!("PATCH {url} {body}: {} {}, expected 422 naming {field}", res.status, res.body));
                } else if after != before {
                    failures.push(format!("PATCH {url} {body}: refused, but changed {before} into {after}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // A sent invoice's currency is as frozen as the rest of it.
    post(&app, &format!("{i}/send"), &key, json!({})).await;
    patch(&app, &i, &key, json!({"currency": "GBP"})).await.assert_problem(409);
    assert_eq!(shown(&app, &i, &key).await["currency"], "EUR");
}

#[tokio::test]
async fn creates_refuse_null_where_a_record_needs_a_value() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "creates").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let client = t.org.client.to_string();
    let project = post(&app, "/api/v1/projects", &key, json!({"name": "Site"})).await.id();
    for (path, body, field) in [
        ("/api/v1/clients", json!({"name": "x", "company": null}), "company"),
        ("/api/v1/projects", json!({"name": "x", "status": null}), "status"),
        ("/api/v1/projects", json!({"name": "x", "visible_to_client": null}), "visible_to_client"),
        ("/api/v1/projects", json!({"name": null}), "name"),
        ("/api/v1/tasks", json!({"project_id": project, "title": "x", "column_id": ""}), "column_id"),
        ("/api/v1/tasks", json!({"project_id": project, "title": "x", "assignees": null}), "assignees"),
        ("/api/v1/tasks", json!({"project_id": project, "title": "x", "priority": null}), "priority"),
        ("/api/v1/time-entries", json!({"project_id": project, "minutes": 30, "spent_on": ""}), "spent_on"),
        ("/api/v1/time-entries", json!({"project_id": project, "minutes": 30, "note": null}), "note"),
        ("/api/v1/invoices", json!({"client_id": client, "currency": "ABC"}), "currency"),
        ("/api/v1/invoices", json!({"client_id": client, "currency": "usd"}), "currency"),
        ("/api/v1/invoices", json!({"client_id": client, "currency": ""}), "currency"),
        ("/api/v1/invoices", json!({"client_id": client, "issue_date": ""}), "issue_date"),
        ("/api/v1/invoices", json!({"client_id": client, "lines": null}), "lines"),
        ("/api/v1/invoices", json!({"client_id": client, "tax_rate_bp": null}), "tax_rate_bp"),
    ] {
        let res = post(&app, path, &key, body.clone()).await;
        assert!(
            res.status == 422 && res.fields().iter().any(|f| f == field),
            "POST {path} {body}: {} {}",
            res.status,
            res.body
        );
    }
    // Nullable fields take null as none, and whole numbers may carry a zero fraction.
    let res = post(&app, "/api/v1/projects", &key, json!({"name": "x", "budget_minor": null, "client_id": null})).await;
    assert_eq!((res.status, &res.body["data"]["budget_minor"]), (201, &Value::Null), "{}", res.body);
    let res = post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "minutes": 30.0})).await;
    assert_eq!((res.status, &res.body["data"]["minutes"]), (201, &json!(30)), "{}", res.body);
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": client, "currency": "CHF"})).await;
    assert_eq!((res.status, &res.body["data"]["currency"]), (201, &json!("CHF")), "{}", res.body);
    // An invoice issued at the end of the calendar is due on its last day, not a crash.
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": client, "issue_date": "9999-12-25"})).await;
    assert_eq!((res.status, &res.body["data"]["due_date"]), (201, &json!("9999-12-31")), "{}", res.body);
}

#[tokio::test]
async fn ids_in_queries_and_paths_are_uuids_in_their_one_form() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "ids").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    // An empty or malformed filter is refused, not read as "no filter".
    for (url, field) in [
        ("/api/v1/tasks?project_id=", "project_id"),
        ("/api/v1/tasks?assignee=", "assignee"),
        ("/api/v1/files?task_id=", "task_id"),
        ("/api/v1/time-entries?project_id=%20", "project_id"),
        ("/api/v1/invoices?client_id=", "client_id"),
        ("/api/v1/projects?client_id=e3e70682c2091caca29f6fbed82c07cd", "client_id"),
        ("/api/v1/invoices?status=", "status"),
        ("/api/v1/projects?status=", "status"),
        ("/api/v1/tasks?status=", "status"),
        ("/api/v1/clients?limit=2.5", "limit"),
    ] {
        get(&app, url, &key).await.assert_problem_field(422, field);
    }
    let long = format!("/api/v1/invoices?q={}", "x".repeat(201));
    get(&app, &long, &key).await.assert_problem_field(422, "q");
    // Whole numbers as JSON Schema reads them.
    let res = get(&app, "/api/v1/clients?limit=5.0&offset=0e0", &key).await;
    assert_eq!((res.status, &res.body["pagination"]["limit"]), (200, &json!(5)), "{}", res.body);
    // A path id is the hyphenated UUID; its other spellings name nothing.
    let client = t.org.client.to_string();
    assert_eq!(get(&app, &format!("/api/v1/clients/{client}"), &key).await.status, 200);
    for other in [client.replace('-', ""), format!("{{{client}}}"), format!("urn:uuid:{client}")] {
        get(&app, &format!("/api/v1/clients/{other}"), &key).await.assert_problem(404);
    }
    // `""` quotes nothing, so it is a two-character Idempotency-Key of its own.
    let call = || async {
        send_raw(
            &app,
            Method::POST,
            "/api/v1/clients",
            Some(&key),
            Some(("application/json", br#"{"name": "Quoted"}"#.to_vec())),
            &[("idempotency-key", "\"\"")],
        )
        .await
    };
    let first = call().await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = call().await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
}

/// What `tests/it/schemathesis.rs` checks by fuzzing, checked here directly on the document,
/// so a machine without schemathesis still notices the document loosening.
#[tokio::test]
async fn the_document_states_the_servers_rules() {
    let app = TestApp::spawn().await;
    let res = send_raw(&app, Method::GET, "/api/v1/openapi.json", None, None, &[]).await;
    let doc = res.body;
    let schemas = &doc["components"]["schemas"];
    // Creates require what they need; updates require nothing and say which fields take null.
    for (create, update, required) in [
        ("ClientInput", "ClientUpdate", json!(["name"])),
        ("ProjectInput", "ProjectUpdate", json!(["name"])),
        ("TaskInput", "TaskUpdate", json!(["project_id", "title"])),
        ("CommentInput", "CommentUpdate", json!(["body"])),
        // Minutes or a duration: neither alone is required.
        ("TimeInput", "TimeUpdate", json!(["project_id"])),
        ("InvoiceInput", "InvoiceUpdate", json!(["client_id"])),
    ] {
        let mut got: Vec<String> = serde_json::from_value(schemas[create]["required"].clone()).unwrap_or_default();
        got.sort();
        assert_eq!(json!(got), required, "{create}");
        assert!(schemas[update]["required"].is_null(), "{update} requires nothing");
        assert_eq!(schemas[update]["additionalProperties"], false, "{update}");
    }
    assert_eq!(schemas["ProjectUpdate"]["properties"]["budget_minor"]["type"], json!(["integer", "null"]));
    assert_eq!(schemas["TaskUpdate"]["properties"]["title"]["type"], "string", "title can't be null");
    assert_eq!(schemas["TaskUpdate"]["properties"]["status"]["$ref"], "#/components/schemas/TaskStatus");
    assert_eq!(schemas["TaskStatus"]["enum"], json!(["todo", "in_progress", "blocked", "done"]));
    let currencies = schemas["Currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&json!("EUR")) && !currencies.contains(&json!("XXXX")) && currencies.len() > 150);
    assert_eq!(schemas["FileUpdate"]["properties"]["task_id"]["anyOf"][1], json!({"type": "string", "enum": [""]}));
    assert!(schemas["ClientInput"]["properties"]["name"]["pattern"].is_string());
    assert_eq!(schemas["ClientInput"]["properties"]["name"]["maxLength"], 200);
    let tasks = &doc["paths"]["/api/v1/tasks"];
    let param = |name: &str| {
        tasks["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["schema"].clone()
    };
    assert_eq!(param("limit")["minimum"], 1);
    assert_eq!(param("offset")["minimum"], 0);
    assert_eq!(param("project_id")["format"], "uuid");
    assert_eq!(param("q")["pattern"], "^[^\\u0000]*$");
    let key_param =
        tasks["post"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!(key_param["schema"]["pattern"], clientflow::api::openapi::IDEMPOTENCY_KEY_PATTERN);
    // Every operation documents the statuses it can give, and creating ones link onwards.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let r = &op["responses"];
            assert!(r["429"]["headers"]["Retry-After"].is_object(), "{method} {path}: 429 with Retry-After");
            assert!(r["500"].is_object(), "{method} {path}");
            if path.contains('{') {
                assert!(r["404"].is_object() && r["400"].is_object(), "{method} {path}: 404 and 400");
            }
            if op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
                || op["requestBody"].is_object()
            {
                assert!(r["422"].is_object(), "{method} {path}: 422");
            }
            if r["201"].is_object() {
                assert!(r["201"]["links"].as_object().is_some_and(|l| !l.is_empty()), "{method} {path}: links");
            }
        }
    }
    let links = &doc["paths"]["/api/v1/tasks/{task}/comments"]["post"]["responses"]["201"]["links"]["update_comment"];
    assert_eq!(links["parameters"], json!({"task": "$request.path.task", "comment": "$response.body#/data/id"}));
}
