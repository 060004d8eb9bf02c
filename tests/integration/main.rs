//! Earshot's integration tests: one crate, one module per area.

mod app;
mod cli;
mod decode;
mod features;
mod fingerprint;
mod index;
mod library;
mod model;
mod support;

#[global_allocator]
static ALLOCATOR: support::CountingAllocator = support::CountingAllocator;
