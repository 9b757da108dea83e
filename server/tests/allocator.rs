//! The issuer's allocator is built with the configuration its memory
//! figures depend on: jemalloc returning freed pages to the kernel at once
//! (`.cargo/config.toml` sets `JEMALLOC_SYS_WITH_MALLOC_CONF` for the build
//! of `tikv-jemalloc-sys`). A build that lost that setting (run from outside
//! the repository, or with the file gone) would still work but keep ~10%
//! more resident memory per connected agent; this test fails instead.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn jemalloc_is_built_to_return_freed_pages_at_once() {
    // The C string is read with its terminating NUL.
    let conf = tikv_jemalloc_ctl::config::malloc_conf::read()
        .unwrap()
        .trim_end_matches('\0');
    for option in ["dirty_decay_ms:0", "muzzy_decay_ms:0"] {
        assert!(
            conf.split(',').any(|o| o == option),
            "jemalloc's built-in configuration is {conf:?}, without {option}: \
             build from the repository root so that .cargo/config.toml applies"
        );
    }
}
