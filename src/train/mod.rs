//! The training wing: training of every model Earshot ships, its losses, its augmentation,
//! and the learning of the fingerprint projection. Inference (`model`, `index`, `search`,
//! `session`) never imports it; it imports them, and is handed its validation by the caller
//! instead of importing the benchmarks.
//!
//! Every random choice (initial weights, batch order, crops, masks, mixing) comes from our own
//! seeded generator ([`crate::model::SeededRng`]): candle's CPU generator cannot be seeded.

pub mod augment;
mod checkpoint;
pub mod events;
pub mod fingerprint;
pub mod hash_head;
pub mod ldahash;
pub mod loss;
pub mod optim;

use std::path::{Path, PathBuf};

use crate::model::SeededRng;
use crate::model::config::ModelError;

pub use optim::{AdamW, seeded_init};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the checkpoint was made with other options ({reason}); start again without --resume or with the same options", path.display())]
    CheckpointMismatch { path: PathBuf, reason: String },
    #[error("{}: not a readable checkpoint: {reason}", path.display())]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("no training clips: {0}")]
    NoData(String),
    #[error("stopped after epoch {epochs_done}; continue with --resume")]
    Stopped { epochs_done: usize },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn shuffle<T>(v: &mut [T], rng: &mut SeededRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// Linear warm-up over the first 3% of steps, then a cosine decay to zero.
pub(crate) fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    let warmup = (total as f64 * 0.03).max(1.0);
    let s = step as f64;
    if s < warmup {
        return base * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (total as f64 - warmup).max(1.0)).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}
