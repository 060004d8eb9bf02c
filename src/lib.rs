//! Earshot: explore audio collections by example.
//!
//! The engine (decoding, features, library, search) is this library; `src/main.rs` is a thin
//! shell over [`cli`] and [`app`].

pub mod about;
#[cfg(feature = "gui")]
pub mod app;
pub mod audio;
pub mod cli;
pub mod demo;
pub mod eval;
pub mod export;
pub mod features;
pub mod fsutil;
pub mod index;
pub mod learn;
pub mod library;
pub mod model;
pub mod projection;
pub mod search;
pub mod session;
pub mod text;
pub mod train;
