//! The engine's front door: what the app and the command line both call, so that neither
//! re-implements a step of it.
//!
//! - [`Clip`]: a query (or a stretch of a library file) decoded once, with its frames for each
//!   encoder computed once;
//! - [`ingest`]: creating and updating an index (scan, diff, decode, encode, checkpoint);
//! - [`OpenLibrary`]: an index opened for searching, which keeps its search tables between
//!   queries;
//! - [`inspect`]: a result's stretch of its file, for the inspector and for playing it.

pub mod clip;
pub mod ingest;
mod library;

use std::collections::BTreeMap;

pub use clip::{Clip, MAX_QUERY_S};
pub use library::{OpenLibrary, SearchOptions, SearchOutcome, attention};

use crate::model::{Encoder, Mode};
use crate::search::Hit;

/// The encoders of the modes to index or search with, by mode.
pub type Encoders = BTreeMap<Mode, Box<dyn Encoder>>;

/// Seconds of context shown either side of a result when it is inspected.
pub const INSPECT_CONTEXT_S: f64 = 3.0;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error(transparent)]
    Model(#[from] crate::model::config::ModelError),
    #[error(transparent)]
    Encode(#[from] crate::model::EncodeError),
    #[error("no {0} encoder is loaded")]
    NoEncoder(&'static str),
}

/// Every mode's encoder: the trained models where installed, else the ones built in (see
/// [`crate::model::encoder_for`]).
pub fn default_encoders() -> Result<Encoders, SessionError> {
    encoders(&BTreeMap::new())
}

/// Every mode's encoder: the model `chosen` names for it (a folder or an installed model's
/// name), else its default.
pub fn encoders(chosen: &BTreeMap<Mode, std::path::PathBuf>) -> Result<Encoders, SessionError> {
    Mode::ALL
        .iter()
        .map(|&mode| {
            let model = chosen.get(&mode).map(std::path::PathBuf::as_path);
            Ok((mode, crate::model::encoder_for(mode, model)?))
        })
        .collect()
}

/// A result as the inspector shows it: the file around the match.
pub struct Inspected {
    pub hit: Hit,
    pub clip: Clip,
}

impl Inspected {
    /// The match, in seconds from the clip's start.
    pub fn matched(&self) -> (f64, f64) {
        (
            (self.hit.start_s - self.clip.offset_s).max(0.0),
            self.hit.end_s - self.clip.offset_s,
        )
    }
}

/// Decodes the stretch of `hit`'s file around the match ([`INSPECT_CONTEXT_S`] either side).
pub fn inspect(hit: Hit) -> Result<Inspected, SessionError> {
    let window = (
        (hit.start_s - INSPECT_CONTEXT_S).max(0.0),
        hit.end_s + INSPECT_CONTEXT_S,
    );
    let clip = Clip::read(&hit.path, Some(window))?;
    Ok(Inspected { hit, clip })
}
