//! Earshot's integration tests: one crate, one module per area.

#[cfg(feature = "gui")]
mod app;
#[cfg(feature = "gui")]
mod app_library;
mod architecture;
mod birdnet;
mod cli;
mod crash;
mod decode;
mod features;
mod fingerprint;
mod fuzz_regressions;
mod hostile;
mod index;
mod library;
mod library_codes;
mod milvus;
mod model;
mod support;

#[global_allocator]
static ALLOCATOR: support::CountingAllocator = support::CountingAllocator;
