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
