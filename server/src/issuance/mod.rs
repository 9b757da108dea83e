//! Issuance: which registered gold images a workload's evidence matches, and
//! the binding document its SVIDs carry.
//!
//! The [`matcher::Matcher`] is built from images whose signatures were
//! verified when they were loaded; it indexes them by executable digest so a
//! lookup costs the same with ten images or ten thousand. A refusal names,
//! for each candidate image, the first constraint that failed.

pub mod binding;
pub mod matcher;
