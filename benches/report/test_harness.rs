//! The report bench's unit tests (`cargo test --test bench_report`): the
//! bench is `harness = false`, so its `#[cfg(test)]` code only builds here,
//! where main.rs is a module under the test harness.

// A bench crate has no public API to document.
#![allow(missing_docs)]

// main.rs allows dead code under cfg(test): its `main`, and what only
// `main` calls, are not used by the tests.
#[path = "main.rs"]
mod report;
