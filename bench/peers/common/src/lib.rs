//! The measurement the peer benchmarks share with `courier-bench`: flags,
//! warm-up / measure / stop phase clock, HdrHistogram recorder and the
//! one-line result. This crate compiles courier-bench's own
//! `bench/src/measure.rs` (std and `hdrhistogram` only), so the peers and
//! courier measure with the same code, and the two workspaces stay apart (no
//! path dependency pulls courier into this workspace or tarpc/tonic into
//! courier's).

#[path = "../../../src/measure.rs"]
mod measure;

pub use measure::*;
