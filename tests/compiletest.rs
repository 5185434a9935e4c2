//! The derive's compile-time checks (trybuild): every `tests/ui/fail` case is a mistake a
//! user makes, and its `.stderr` pins the message and the token it points at. The `pass`
//! cases must compile.
//!
//! After changing a message on purpose: `TRYBUILD=overwrite cargo test --test compiletest`,
//! then review the `.stderr` diffs.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

/// One mistake, one error: the derive reports each mistake once, on the offending token,
/// and emits a stub of its API so that the code using the struct adds no errors of its own.
#[test]
fn one_error_per_mistake() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/fail");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/ui/fail") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|ext| ext == "stderr") {
            let stderr = std::fs::read_to_string(&path).expect("a readable .stderr");
            let errors = stderr
                .lines()
                .filter(|line| line.starts_with("error"))
                .count();
            assert_eq!(errors, 1, "{}: {errors} errors, not 1", path.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "no .stderr files in {}", dir.display());
}

/// Every public method of `Session` hides a field accessor of the same name (method
/// resolution finds it first), so the derive must reserve it: a method added to `Session`
/// without adding it to the derive's list fails here.
#[test]
fn every_public_session_method_is_a_reserved_field_name() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let reserved = std::fs::read_to_string(root.join("session-macros/src/valid.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("session-runtime/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let mut inside = false;
        for line in source.lines() {
            if line.starts_with("impl<S: MultiSession> Session<S>") {
                inside = true;
            } else if line.starts_with('}') {
                inside = false;
            } else if inside {
                let name = line
                    .strip_prefix("    pub fn ")
                    .or_else(|| line.strip_prefix("    pub async fn "))
                    .and_then(|rest| rest.split(['(', '<']).next());
                if let Some(name) = name
                    && !reserved.contains(&format!("(\"{name}\","))
                {
                    missing.push(format!("{name} ({})", path.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not reserved in session-macros/src/valid.rs: {missing:?}"
    );
}
