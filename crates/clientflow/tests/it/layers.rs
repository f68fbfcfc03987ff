//! The layering of the code, checked: the platform crate depends on nothing of the application,
//! and within the application an area uses only the areas below it, in the order
//! `docs/ARCHITECTURE.md` states (the test reads the order from there, so the two can't drift).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `layers: root > api > … > audit`, from the architecture document.
fn documented_order() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let line = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix("layers:"))
        .expect("docs/ARCHITECTURE.md states the layers on a line starting `layers:`");
    line.split('>').map(|a| a.trim().trim_matches('`').to_string()).filter(|a| !a.is_empty()).collect()
}

/// The modules of the composition root: they assemble the areas and may use any of them.
/// `state` (every handler's `AppState`) and `config` (the configuration tree) are the root's
/// shared context, which every area may name.
const ROOT: &[&str] = &["lib", "routes", "cli", "ops", "state", "config", "errors"];
const SHARED_ROOT: &[&str] = &["state", "config"];

fn rust_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/"), path));
            }
        }
    }
    out.sort();
    out
}

/// The area a file belongs to: its first path component (`work/web/tasks.rs` → `work`).
fn area_of(rel: &str) -> String {
    rel.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

/// The code of a file without comments and without its test module (tests may reach across).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The areas a piece of code names through `crate::…` (paths and `use crate::{a, b}` lists).
fn named_areas(code: &str) -> BTreeSet<(usize, String)> {
    let mut out = BTreeSet::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(list) = after.strip_prefix('{') {
                let inner = list.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        out.insert((n + 1, name));
                    }
                }
            } else {
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert((n + 1, name));
                }
            }
            rest = after;
        }
    }
    out
}

/// Every use of an area above the user's, as `file:line: area uses area`.
fn violations(src: &Path, order: &[String]) -> Vec<String> {
    let rank = |area: &str| -> Option<usize> {
        if ROOT.contains(&area) {
            return Some(0);
        }
        // `crate::route!` is the access layer's macro.
        let area = if area == "route" { "access" } else { area };
        order.iter().position(|a| a == area).map(|i| i + 1)
    };
    let mut out = Vec::new();
    for (rel, path) in rust_files(src) {
        let from = area_of(&rel);
        let Some(from_rank) = rank(&from) else {
            out.push(format!("{rel}: the area `{from}` is not in the documented order"));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, to) in named_areas(&code(&text)) {
            if to == from || to == "platform" || SHARED_ROOT.contains(&to.as_str()) {
                continue;
            }
            match rank(&to) {
                Some(to_rank) if to_rank > from_rank || (from_rank == 0 && to_rank == 0) => {}
                Some(_) => out.push(format!("{rel}:{line}: {from} uses {to}, which is above it")),
                None => {}
            }
        }
    }
    out
}

#[test]
fn an_area_uses_only_the_areas_below_it() {
    let order = documented_order();
    assert_eq!(order.first().map(String::as_str), Some("root"), "the order starts with the root: {order:?}");
    let order: Vec<String> = order.into_iter().skip(1).collect();
    assert!(order.len() >= 10, "{order:?}");
    let src = root().join("crates/app/src");
    // Every area of the application is placed in the order.
    let areas: BTreeSet<String> = rust_files(&src).iter().map(|(rel, _)| area_of(rel)).collect();
    for area in &areas {
        assert!(
            ROOT.contains(&area.as_str()) || order.contains(area),
            "the area `{area}` is not in docs/ARCHITECTURE.md's order"
        );
    }
    let v = violations(&src, &order);
    assert!(v.is_empty(), "areas using areas above them:\n{}", v.join("\n"));
}

/// A copy of the application's sources, for a negative control to smuggle code into.
fn copy_of_the_app_sources() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (rel, path) in rust_files(&root().join("crates/app/src")) {
        let dst = tmp.path().join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(path, dst).unwrap();
    }
    tmp
}

/// Adds `code` to the copy's file `rel`, before its first line or after its last.
fn add_to(copy: &tempfile::TempDir, rel: &str, code: &str, before: bool) {
    let p = copy.path().join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(p, if before { format!("{code}\n{text}") } else { format!("{text}\n{code}") }).unwrap();
}

/// Negative control: an upward use smuggled into a copy is caught, a comment is not.
#[test]
fn the_layer_check_catches_an_upward_use() {
    let order: Vec<String> = documented_order().into_iter().skip(1).collect();
    let tmp = copy_of_the_app_sources();
    let prepend = |rel: &str, code: &str| add_to(&tmp, rel, code, true);
    prepend("audit/chain.rs", "use crate::work::clients::Client;");
    prepend("access/role.rs", "use crate::{tenancy, identity::session};");
    prepend("identity/mod.rs", "// crate::api is above, but this is a comment.");
    let v = violations(tmp.path(), &order);
    let text = v.join("\n");
    assert!(v.iter().any(|l| l.starts_with("audit/chain.rs:1: audit uses work")), "{text}");
    assert!(v.iter().any(|l| l.starts_with("access/role.rs:1: access uses tenancy")), "{text}");
    assert!(v.iter().any(|l| l.starts_with("access/role.rs:1: access uses identity")), "{text}");
    assert!(!text.contains("identity/mod.rs"), "{text}");
}

/// The platform is a crate of its own that depends on nothing of the application: the
/// compiler enforces it; this says so where a reviewer looks, and catches a path dependency or
/// a name of the application sneaking in.
#[test]
fn the_platform_crate_depends_on_nothing_of_the_application() {
    let manifest = std::fs::read_to_string(root().join("crates/platform/Cargo.toml")).unwrap();
    for name in ["clientflow-app", "clientflow =", "clientflow-test-support", "\"../app\""] {
        assert!(!manifest.contains(name), "crates/platform/Cargo.toml names {name}");
    }
    for (rel, path) in rust_files(&root().join("crates/platform/src")) {
        let text = code(&std::fs::read_to_string(path).unwrap());
        // A path into the application (a log target string such as "clientflow::access" is not).
        let names_app = text.match_indices("clientflow::").any(|(at, _)| !text[..at].ends_with('"'));
        assert!(!names_app, "crates/platform/src/{rel} names the application");
    }
}

/// Test modules share helpers through `support/` only: a test module that names another one
/// (`crate::identity::sign_up`) couples two suites that should change independently.
#[test]
fn test_modules_use_support_not_one_another() {
    let dir = root().join("crates/clientflow/tests/it");
    let modules: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .filter(|m| m != "main")
        .collect();
    assert!(modules.iter().any(|m| m == "identity"), "found the test modules: {modules:?}");
    let mut found = Vec::new();
    for m in &modules {
        let text = std::fs::read_to_string(dir.join(format!("{m}.rs"))).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for other in &modules {
                // Outside string literals (this file quotes application code as test data).
                let named = code
                    .match_indices(&format!("crate::{other}::"))
                    .any(|(at, _)| code[..at].matches('"').count() % 2 == 0);
                if other != m && named {
                    found.push(format!("{m}.rs:{}: uses the test module `{other}`", n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "move shared helpers to tests/it/support/:\n{}", found.join("\n"));
}

/// Names that speak HTTP: the edge's error type and its result, status codes, the web framework.
const HTTP_NAMES: &[&str] = &["AppError", "AppResult", "StatusCode", "axum"];

/// The files that are not an HTTP edge by their name but are one by their job, each with it.
/// Everything else that is not an edge is a service: it returns `DomainResult` and leaves the
/// status, the problem and the page to the edge.
const EDGE_FILES: &[(&str, &str)] = &[
    ("ops.rs", "the operator endpoints: /healthz, /readyz, /metrics"),
    ("access/asking.rs", "reads the session cookie from the request's headers"),
    ("tenancy/audit_log.rs", "the audit-log viewer page and its CSV download"),
    ("tenancy/billing.rs", "the billing settings page"),
    ("tenancy/confirm.rs", "the page that confirms a sensitive request"),
    ("tenancy/frame.rs", "the frame of an organization's pages: navigation, rendering, failures shown in place"),
];

/// An HTTP edge: a page or endpoint (`web.rs`, `*_web.rs`, anything under a `web/` folder), a
/// surface of its own (`api/`, the JSON API; `disclosure/`, the public security pages and the
/// report form), request plumbing by name (`guard.rs`, `routes.rs`, `route.rs`, `extract.rs`,
/// `webhook.rs`, a third party's endpoint), or one of [`EDGE_FILES`].
fn is_http_edge(rel: &str) -> bool {
    let (dirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    name == "web.rs"
        || name.ends_with("_web.rs")
        || dirs.split('/').any(|d| d == "web")
        || rel.starts_with("api/")
        || rel.starts_with("disclosure/")
        || matches!(name, "guard.rs" | "routes.rs" | "route.rs" | "extract.rs" | "webhook.rs")
        || EDGE_FILES.iter().any(|(f, _)| *f == rel)
}

/// Whether code names `token` as a whole identifier (`AppError`, not `MyAppErrorish`).
fn names(code: &str, token: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(token).any(|(at, _)| {
        !code[..at].chars().next_back().is_some_and(ident)
            && !code[at + token.len()..].chars().next().is_some_and(ident)
    })
}

/// The application's files that speak HTTP without being an edge, with the names they use.
fn http_outside_the_edge(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, path) in rust_files(src) {
        let text = code(&std::fs::read_to_string(&path).unwrap());
        let named: Vec<&str> = HTTP_NAMES.iter().copied().filter(|t| names(&text, t)).collect();
        if !named.is_empty() && !is_http_edge(&rel) {
            out.push(format!("{rel} names {}", named.join(", ")));
        }
    }
    out
}

/// Services speak the domain's outcomes (`platform/error.rs`); only the edge knows HTTP.
#[test]
fn only_the_http_edge_speaks_http() {
    let src = root().join("crates/app/src");
    let v = http_outside_the_edge(&src);
    assert!(
        v.is_empty(),
        "services return DomainResult and leave HTTP to the edge (or the file is an edge: see is_http_edge):\n{}",
        v.join("\n")
    );
    // The list of edges by job stays true: each one exists and still speaks HTTP.
    for (rel, job) in EDGE_FILES {
        let text = code(&std::fs::read_to_string(src.join(rel)).unwrap_or_default());
        assert!(
            HTTP_NAMES.iter().any(|t| names(&text, t)),
            "{rel} ({job}) no longer speaks HTTP: take it off EDGE_FILES"
        );
    }
    // The error a service returns knows nothing of HTTP either.
    let platform = root().join("crates/platform/src");
    for rel in ["error.rs", "fields.rs"] {
        let text = code(&std::fs::read_to_string(platform.join(rel)).unwrap());
        for t in HTTP_NAMES {
            assert!(!names(&text, t), "crates/platform/src/{rel} names {t}");
        }
    }
}

/// Negative control: a service that names `AppError` or `StatusCode` is caught; a comment, a
/// test module and an edge are not.
#[test]
fn the_edge_check_catches_a_service_that_speaks_http() {
    let tmp = copy_of_the_app_sources();
    let prepend = |rel: &str, code: &str| add_to(&tmp, rel, code, true);
    let append = |rel: &str, code: &str| add_to(&tmp, rel, code, false);
    prepend("work/tasks.rs", "use crate::platform::http::error::AppError;");
    prepend("tenancy/service.rs", "fn refused() -> u16 { http::StatusCode::FORBIDDEN.as_u16() }");
    prepend("identity/service.rs", "// An AppError is the edge's business.");
    append("billing/limits.rs", "#[cfg(test)]\nmod more { fn f(_: axum::http::StatusCode) {} }");
    prepend("work/web/tasks.rs", "use axum::http::StatusCode;");
    let v = http_outside_the_edge(tmp.path());
    let text = v.join("\n");
    assert!(v.contains(&"work/tasks.rs names AppError".to_string()), "{text}");
    assert!(v.contains(&"tenancy/service.rs names StatusCode".to_string()), "{text}");
    for quiet in ["identity/service.rs", "billing/limits.rs", "work/web/tasks.rs"] {
        assert!(!text.contains(quiet), "{quiet}: {text}");
    }
    assert_eq!(v.len(), 2, "{text}");
}

/// The module file a path names: the longest prefix of `segments` that is a file of `src`.
fn module_file(src: &Path, segments: &[String]) -> Option<String> {
    (1..=segments.len()).rev().find_map(|n| {
        let base = segments[..n].join("/");
        [format!("{base}.rs"), format!("{base}/mod.rs")].into_iter().find(|f| src.join(f).is_file())
    })
}

/// The files of the application that the code of file `rel` names through `crate::…` and
/// `super::…` paths (`use` lists included).
fn named_files(src: &Path, rel: &str, code: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    let mut out = BTreeSet::new();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            if code[..at].chars().next_back().is_some_and(ident) {
                continue;
            }
            let mut segments: Vec<String> =
                if start == "crate::" { Vec::new() } else { module[..module.len() - 1].to_vec() };
            let mut rest = &code[at + start.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                segments.pop();
                rest = r;
            }
            loop {
                if let Some(list) = rest.strip_prefix('{') {
                    for item in list.split('}').next().unwrap_or("").split(',') {
                        let name: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                        let mut path = segments.clone();
                        if !name.is_empty() && name != "self" {
                            path.push(name);
                        }
                        out.extend(module_file(src, &path));
                    }
                    break;
                }
                let name: String = rest.chars().take_while(|c| ident(*c)).collect();
                if !name.is_empty() {
                    rest = &rest[name.len()..];
                    segments.push(name);
                }
                match rest.strip_prefix("::") {
                    Some(r) if !r.starts_with('*') => rest = r,
                    _ => {
                        out.extend(module_file(src, &segments));
                        break;
                    }
                }
            }
        }
    }
    out.remove(rel);
    out
}

/// The application's files that are neither an HTTP edge nor the composition root and yet
/// use an edge (a page, an endpoint, a guard), with the edge they use.
fn edges_used_by_services(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, path) in rust_files(src) {
        if ROOT.contains(&area_of(&rel).as_str()) || is_http_edge(&rel) {
            continue;
        }
        let text = code(&std::fs::read_to_string(&path).unwrap());
        for used in named_files(src, &rel, &text) {
            if is_http_edge(&used) {
                out.push(format!("{rel} uses {used}"));
            }
        }
    }
    out
}

/// Services stand beneath the edge: what the domain does never depends on how it is served,
/// so a page's helper, an endpoint's constant or a route table can't tie a service to HTTP.
#[test]
fn services_use_no_http_edge() {
    let v = edges_used_by_services(&root().join("crates/app/src"));
    assert!(
        v.is_empty(),
        "a service uses an HTTP edge (move what it needs beneath the edge, or the file is an edge: see is_http_edge):\n{}",
        v.join("\n")
    );
}

/// Negative control: a service naming an edge's item, by a `crate::` path, a `super::` path or
/// a `use` list, is caught; an edge using another edge, a comment and a test module are not.
#[test]
fn the_service_check_catches_a_service_that_uses_an_edge() {
    let tmp = copy_of_the_app_sources();
    let prepend = |rel: &str, code: &str| add_to(&tmp, rel, code, true);
    let append = |rel: &str, code: &str| add_to(&tmp, rel, code, false);
    prepend("work/invoicing.rs", "fn count() -> usize { crate::work::web::files::routes().len() }");
    append("identity/account_deletion.rs", "fn device() -> String { super::web::describe_device(\"\") }");
    prepend("mail/suppression.rs", "use crate::tenancy::{guard::OrgAccess, service};");
    prepend("billing/limits.rs", "// crate::work::web::files is an edge, but this is a comment.");
    append("privacy/keys.rs", "#[cfg(test)]\nmod more { use crate::privacy::web; }");
    prepend("work/web/tasks.rs", "use crate::tenancy::frame::OrgNav as _;");
    let v = edges_used_by_services(tmp.path());
    let text = v.join("\n");
    for caught in [
        "work/invoicing.rs uses work/web/files.rs",
        "identity/account_deletion.rs uses identity/web.rs",
        "mail/suppression.rs uses tenancy/guard.rs",
    ] {
        assert!(v.contains(&caught.to_string()), "{caught}: {text}");
    }
    assert_eq!(v.len(), 3, "{text}");
}

/// The import cycles of the crate whose sources are `src` (files that use each other, directly
/// or not), each as the sorted list of its files.
fn import_cycles(src: &Path) -> Vec<Vec<String>> {
    let uses: std::collections::BTreeMap<String, BTreeSet<String>> = rust_files(src)
        .into_iter()
        .map(|(rel, path)| {
            let text = code(&std::fs::read_to_string(&path).unwrap());
            let used = named_files(src, &rel, &text);
            (rel, used)
        })
        .collect();
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(f) = todo.pop() {
            for g in uses.get(&f).into_iter().flatten() {
                if seen.insert(g.clone()) {
                    todo.push(g.clone());
                }
            }
        }
        seen
    };
    let reaches: std::collections::BTreeMap<&String, BTreeSet<String>> = uses.keys().map(|f| (f, reach(f))).collect();
    let mut cycles = BTreeSet::new();
    for (f, from_f) in &reaches {
        let cycle: Vec<String> =
            from_f.iter().filter(|g| reaches.get(g).is_some_and(|r| r.contains(*f))).cloned().collect();
        if !cycle.is_empty() {
            cycles.insert(cycle);
        }
    }
    cycles.into_iter().collect()
}

/// No file imports, through any chain, a file that imports it back, in the application or in
/// the platform: the order of areas holds file by file, the root's shared context
/// (`AppState`, `Config`) is named only by what stands above the parts it holds, and inside
/// an area what several files share stands beneath them (`work/money.rs`, `mail/category.rs`,
/// `tenancy/frame.rs`, `cli/session.rs`) instead of in one of them.
#[test]
fn no_import_cycle() {
    for krate in ["crates/app/src", "crates/platform/src"] {
        let cycles = import_cycles(&root().join(krate));
        assert!(
            cycles.is_empty(),
            "import cycles in {krate}:\n{}",
            cycles.iter().map(|c| c.join(" ⇄ ")).collect::<Vec<_>>().join("\n")
        );
    }
}

/// Negative control: the state named by what it holds makes a cycle across areas, and a
/// service naming its area's page makes one inside an area; both are caught, and a comment
/// naming a file that imports the commenter is not a cycle.
#[test]
fn the_cycle_check_catches_a_cycle() {
    let tmp = copy_of_the_app_sources();
    add_to(&tmp, "identity/oidc.rs", "fn f(_: &crate::state::AppState) {}", true);
    add_to(&tmp, "work/money.rs", "fn g() { let _ = super::invoices::compute; }", true);
    add_to(&tmp, "mail/category.rs", "// crate::mail::outbox uses this file", true);
    let cycles = import_cycles(tmp.path());
    let text = format!("{cycles:?}");
    assert!(
        cycles.iter().any(|c| c.contains(&"state.rs".to_string()) && c.contains(&"identity/oidc.rs".to_string())),
        "{text}"
    );
    assert!(
        cycles.iter().any(|c| c.contains(&"work/money.rs".to_string()) && c.contains(&"work/invoices.rs".to_string())),
        "{text}"
    );
    assert!(!text.contains("mail/category.rs"), "{text}");
}
