//! Benchmarks: retrieval metrics and the evaluation protocols of `../shared/data/README.md`.

pub mod esc50;
pub mod esc50_index;
pub mod fingerprint;
pub mod metrics;
