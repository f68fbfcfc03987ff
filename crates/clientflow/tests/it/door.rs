//! The ways past the tenant door's types stay where they belong.
//!
//! The type system stops code from making up a principal, an operator's authority or a gate key
//! (their fields are private), but not from calling a named constructor or implementing a public
//! trait. So this test reads the application's sources and holds each such name to its place:
//!
//! - `OperatorAuthority` (opens any organization as its Owner): assumed only in the CLI's entry
//!   point (`cli.rs`), named only by the access layer that defines it and the command line;
//! - the gate's connection outside any transaction (`GateConn`, one autocommit statement on a
//!   table no capability guards: the session lookup with several regions): named only by the
//!   access layer and the door that defines it;
//! - the platform's gate key (capability transactions, which verifying a principal needs before
//!   one exists): assumed only by the access layer (`access/mod.rs`);
//! - the door's principal traits (`TenantPrincipal` opens an organization's transaction,
//!   `UserPrincipal` a user's): implemented only by the access layer's verified principal and
//!   user;
//! - a verified user is made only from a verified session (`access/session.rs`).
//!
//! A request handler, a job or a service that wanted any of them would have to show up here.

use std::path::{Path, PathBuf};

/// One rule: `needle` may appear in code only in the files `allowed` accepts (paths relative to
/// the scanned `src`, with `/`).
struct Rule {
    needle: &'static str,
    what: &'static str,
    allowed: fn(&str, &str) -> bool,
}

const RULES: &[Rule] = &[
    Rule {
        needle: "unsafe_assume_cli_operator",
        what: "assumes the operator's authority",
        allowed: |rel, line| {
            rel == "cli.rs" || (rel == "access/principal.rs" && line.contains("fn unsafe_assume_cli_operator("))
        },
    },
    Rule {
        needle: "OperatorAuthority",
        what: "names OperatorAuthority outside the command line",
        allowed: |rel, _| {
            rel == "access/principal.rs" || rel == "access/mod.rs" || rel == "cli.rs" || rel.starts_with("cli/")
        },
    },
    Rule {
        needle: "_private: ()",
        what: "builds the authority by hand",
        allowed: |rel, line| {
            (rel == "access/principal.rs" && matches!(line.trim(), "_private: ()," | "Self { _private: () }"))
                || (rel == "platform/db/tenant.rs" && matches!(line.trim(), "_private: ()," | "Self { _private: () }"))
        },
    },
    Rule {
        needle: "unsafe_assume_access_layer",
        what: "assumes the access layer's gate key",
        allowed: |rel, line| {
            rel == "access/mod.rs"
                || (rel == "platform/db/tenant.rs" && line.contains("fn unsafe_assume_access_layer("))
        },
    },
    Rule {
        needle: "GateConn",
        what: "takes a gate connection outside any transaction",
        allowed: |rel, _| rel.starts_with("access/") || rel == "platform/db/tenant.rs",
    },
    Rule {
        needle: "TenantPrincipal for",
        what: "implements the door's principal trait",
        allowed: |rel, _| rel == "access/principal.rs",
    },
    Rule {
        needle: "UserPrincipal for",
        what: "implements the door's user trait",
        allowed: |rel, _| rel == "access/user.rs",
    },
    Rule {
        needle: "from_verified_session(",
        what: "makes a verified user without a verified session",
        allowed: |rel, line| {
            rel == "access/session.rs" || (rel == "access/user.rs" && line.contains("fn from_verified_session("))
        },
    },
];

/// Every `.rs` file under `dir`, with its path relative to `dir` (with `/` separators).
fn rust_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    out
}

/// Code lines (comments and doc comments, where examples live, are not the application).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Every place in the sources under `src` that breaks a rule, as `file:line: why`, and how many
/// allowed uses of each rule's name were seen.
fn violations(src: &Path) -> (Vec<String>, Vec<usize>) {
    let mut out = Vec::new();
    let mut seen = vec![0; RULES.len()];
    for (rel, path) in rust_files(src) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code_lines(&text) {
            for (i, rule) in RULES.iter().enumerate() {
                if line.contains(rule.needle) {
                    if (rule.allowed)(&rel, line) {
                        seen[i] += 1;
                    } else {
                        out.push(format!("{rel}:{n}: {}: {}", rule.what, line.trim()));
                    }
                }
            }
        }
    }
    (out, seen)
}

fn app_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../app/src")
}

fn platform_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../platform/src")
}

/// The sources of the application and its platform in one tree, the platform's under
/// `platform/` (as `crate::platform` names them), copied to `dst`.
fn copy_sources(dst: &Path) {
    for (prefix, dir) in [("", app_src()), ("platform/", platform_src())] {
        for (rel, path) in rust_files(&dir) {
            let to = dst.join(format!("{prefix}{rel}"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(path, to).unwrap();
        }
    }
}

#[test]
fn the_ways_past_the_door_stay_in_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    copy_sources(tmp.path());
    let src = tmp.path().to_path_buf();
    let files = rust_files(&src);
    assert!(
        files.iter().any(|(rel, _)| rel == "platform/db/tenant.rs") && files.len() > 50,
        "the scan did not find the application's sources under {}",
        src.display()
    );
    let (v, seen) = violations(&src);
    assert!(v.is_empty(), "a way past the tenant door escaped its place:\n{}", v.join("\n"));
    // Each name is used where it is allowed: the scan is looking at the right text.
    for (rule, n) in RULES.iter().zip(&seen) {
        assert!(*n > 0, "no allowed use of {} was seen", rule.needle);
    }
    let cli_calls =
        std::fs::read_to_string(app_src().join("cli.rs")).unwrap().matches("unsafe_assume_cli_operator").count();
    assert_eq!(cli_calls, 1, "expected exactly one call of the operator's constructor in cli.rs");

    // The binary crate is a thin wrapper and has no business with any of them either.
    let bin_src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    for (rel, path) in rust_files(&bin_src) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            code_lines(&text).all(|(_, l)| RULES.iter().all(|r| !l.contains(r.needle))),
            "crates/clientflow/src/{rel} uses a way past the door"
        );
    }
}

/// Negative control: a copy of the sources with each way smuggled somewhere it doesn't belong
/// is caught on every count.
#[test]
fn the_source_scan_catches_smuggled_ways_past_the_door() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path();
    copy_sources(copy);
    assert!(violations(copy).0.is_empty(), "the unmodified copy is clean");
    let append = |rel: &str, code: &str| {
        let p = copy.join(rel);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(code);
        std::fs::write(p, text).unwrap();
    };
    append(
        "tenancy/web.rs",
        "\nfn sneaky() { let _a = crate::access::OperatorAuthority::unsafe_assume_cli_operator(); }\n",
    );
    append("work/clients.rs", "\npub fn takes(_a: &crate::access::OperatorAuthority) {}\n");
    append("access/principal.rs", "\nfn forged() -> OperatorAuthority { OperatorAuthority { _private: () } }\n");
    append(
        "api/web.rs",
        "\nfn gate() { let _k = crate::platform::db::tenant::GateKey::unsafe_assume_access_layer(); }\n",
    );
    append(
        "work/tasks.rs",
        "\n#[derive(Clone)] struct Fake; impl crate::platform::db::tenant::TenantPrincipal for Fake { fn org_id(&self) -> crate::platform::ids::OrgId { todo!() } }\n",
    );
    append(
        "tenancy/service.rs",
        "\nfn me() { let _u = crate::access::AuthenticatedUser::from_verified_session(todo!()); }\n",
    );
    append(
        "work/files.rs",
        "\nasync fn raw(db: &crate::platform::db::Db, k: &crate::platform::db::tenant::GateKey) { let _c = crate::platform::db::tenant::GateConn::acquire(db, k).await; }\n",
    );
    // Mentions in comments are not code.
    append("identity/mod.rs", "\n// OperatorAuthority::unsafe_assume_cli_operator() is for the CLI only.\n");
    let (v, _) = violations(copy);
    let text = v.join("\n");
    for (file, why) in [
        ("tenancy/web.rs", "assumes the operator's authority"),
        ("tenancy/web.rs", "names OperatorAuthority"),
        ("work/clients.rs", "names OperatorAuthority"),
        ("access/principal.rs", "builds the authority by hand"),
        ("api/web.rs", "assumes the access layer's gate key"),
        ("work/tasks.rs", "implements the door's principal trait"),
        ("tenancy/service.rs", "makes a verified user without a verified session"),
        ("work/files.rs", "takes a gate connection outside any transaction"),
    ] {
        assert!(v.iter().any(|l| l.starts_with(file) && l.contains(why)), "{file}: {why} not caught:\n{text}");
    }
    assert_eq!(v.len(), 8, "{text}");
    assert!(!text.contains("identity/mod.rs"), "{text}");
}
