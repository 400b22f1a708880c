//! Compile-fail cases (one mistake per file, named after it) and run-pass
//! cases, checked with trybuild. The `.stderr` files are pinned to one
//! toolchain; regenerate with `TRYBUILD=overwrite cargo test --test compiletest`.

#[cfg_attr(miri, ignore)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/run-pass/*.rs");
}
