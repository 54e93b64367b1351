//! Compile-fail cases: each error points at the offending line.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p
//! courier-macros --test ui` after checking the new messages.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
