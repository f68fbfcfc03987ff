//! The operator's bypass of the tenant door stays in the command line.
//!
//! `OperatorAuthority` opens any organization as its Owner. The type system stops code from
//! making one up (its field is private), but not from calling its named constructor, so this
//! test reads the application's sources: the constructor is called only in the CLI's entry point
//! (`cli.rs`), and the type is named only by the tenant door that defines it and the CLI that
//! uses it. A request handler, a job or a service that wanted one would have to show up here.

use std::path::{Path, PathBuf};

const CONSTRUCTOR: &str = "unsafe_assume_cli_operator";
const TYPE: &str = "OperatorAuthority";

/// Where the constructor may be called (paths relative to the scanned `src`).
const MAY_ASSUME: &[&str] = &["cli.rs"];
/// Where the type may be named: its definition, and the command line.
fn may_name_type(rel: &str) -> bool {
    rel == "platform/db/tenant.rs" || rel == "cli.rs" || rel.starts_with("cli/")
}

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

/// Every place in the sources under `src` that breaks the rules, as `file:line: why`, and how
/// many allowed calls of the constructor were seen.
fn violations(src: &Path) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut allowed_calls = 0;
    let mut literals = 0;
    for (rel, path) in rust_files(src) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code_lines(&text) {
            if line.contains(CONSTRUCTOR) {
                let definition = rel == "platform/db/tenant.rs" && line.contains(&format!("fn {CONSTRUCTOR}("));
                if MAY_ASSUME.contains(&rel.as_str()) {
                    allowed_calls += 1;
                } else if !definition {
                    out.push(format!("{rel}:{n}: assumes the operator's authority: {}", line.trim()));
                }
            }
            if line.contains(TYPE) && !may_name_type(&rel) {
                out.push(format!("{rel}:{n}: names {TYPE} outside the command line: {}", line.trim()));
            }
            // The only struct literal is the constructor's own `Self { _private: () }`.
            if line.contains("_private: ()") {
                let field = rel == "platform/db/tenant.rs" && line.trim() == "_private: (),";
                let constructor = rel == "platform/db/tenant.rs" && line.trim() == "Self { _private: () }";
                if constructor {
                    literals += 1;
                }
                if !(field || constructor) || literals > 1 {
                    out.push(format!("{rel}:{n}: builds the authority by hand: {}", line.trim()));
                }
            }
        }
    }
    (out, allowed_calls)
}

fn app_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../app/src")
}

#[test]
fn only_the_cli_assumes_the_operator_authority() {
    let src = app_src();
    let files = rust_files(&src);
    assert!(
        files.iter().any(|(rel, _)| rel == "platform/db/tenant.rs") && files.len() > 50,
        "the scan did not find the application's sources under {}",
        src.display()
    );
    let (v, allowed_calls) = violations(&src);
    assert!(v.is_empty(), "the operator's authority escaped the command line:\n{}", v.join("\n"));
    // The CLI does assume it: the scan is looking at the right text.
    assert_eq!(allowed_calls, 1, "expected exactly one call of {CONSTRUCTOR} in cli.rs");

    // The binary crate is a thin wrapper and has no business with it either.
    let bin_src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    for (rel, path) in rust_files(&bin_src) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            code_lines(&text).all(|(_, l)| !l.contains(CONSTRUCTOR) && !l.contains(TYPE)),
            "crates/clientflow/src/{rel} uses the operator's authority"
        );
    }
}

/// Negative control: a copy of the sources with the authority smuggled into a request handler,
/// a service that takes it as a parameter, and a hand-built literal is caught on every count.
#[test]
fn the_source_scan_catches_a_smuggled_operator_authority() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path();
    for (rel, path) in rust_files(&app_src()) {
        let dst = copy.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(path, dst).unwrap();
    }
    assert!(violations(copy).0.is_empty(), "the unmodified copy is clean");
    let append = |rel: &str, code: &str| {
        let p = copy.join(rel);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(code);
        std::fs::write(p, text).unwrap();
    };
    append(
        "tenancy/web.rs",
        "\nfn sneaky() { let _a = crate::platform::db::tenant::OperatorAuthority::unsafe_assume_cli_operator(); }\n",
    );
    append("work/clients.rs", "\npub fn takes(_a: &crate::platform::db::tenant::OperatorAuthority) {}\n");
    append("platform/db/tenant.rs", "\nfn forged() -> OperatorAuthority { OperatorAuthority { _private: () } }\n");
    // Mentions in comments are not code.
    append("identity/mod.rs", "\n// OperatorAuthority::unsafe_assume_cli_operator() is for the CLI only.\n");
    let (v, _) = violations(copy);
    let text = v.join("\n");
    assert_eq!(v.len(), 4, "{text}");
    assert!(text.contains("tenancy/web.rs") && text.contains("assumes the operator's authority"), "{text}");
    assert!(text.contains("tenancy/web.rs") && text.contains("names OperatorAuthority"), "{text}");
    assert!(text.contains("work/clients.rs") && text.contains("names OperatorAuthority"), "{text}");
    assert!(text.contains("platform/db/tenant.rs") && text.contains("builds the authority by hand"), "{text}");
    assert!(!text.contains("identity/mod.rs"), "{text}");
}
