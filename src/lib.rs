//! Workspace-level examples and integration tests of courier; see
//! `examples/` and `tests/`.

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
