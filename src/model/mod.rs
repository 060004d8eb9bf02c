//! Encoders turn windows of audio into a float embedding and a K-bit hash code.
//!
//! The engine sees encoders only through [`Encoder`]. Each encoder declares what it reads
//! ([`EncoderInput`]): the sample rate, its front end (log-mel for Earshot's own models) and
//! the window and hop; the engine decodes at that rate and streams the front end's frames, so
//! a file of any length is read once, in chunks, whatever the window's overlap. Each mode's trained model is built into the
//! binary (and can be replaced by an installed folder); the data-independent [`lsh::LshEncoder`] is
//! the baseline the benchmarks measure them against.

pub mod attention;
pub mod birdnet;
pub mod catalog;
pub mod config;
pub mod events;
pub mod fingerprint;
pub mod found;
pub mod hash_head;
pub mod hashing;
pub mod learned_lsh;
pub mod lsh;
pub mod occlusion;
mod rng;
mod select;
pub mod tflite;

use serde::{Deserialize, Serialize};

use crate::features::{FrontEnd, LogMelConfig};
pub use rng::SeededRng;
pub use select::{
    architecture, baseline_encoder, default_encoders, default_model_name, encoder_for, model_folder,
};

/// The two ways to search (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Similar sounds: semantic neighbours, ranked per file.
    Events,
    /// Exact match: where a clip occurs, with its time offset.
    Fingerprint,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Events, Mode::Fingerprint];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Events => "events",
            Mode::Fingerprint => "fingerprint",
        }
    }

    /// Whether the index keeps float embeddings (cosine tie-breaks, HNSW). Fingerprint search
    /// uses codes only, and at ten segments a second embeddings would dominate the index size.
    pub fn keeps_embeddings(self) -> bool {
        self == Mode::Events
    }

    /// How library files and queries are cut into segments, in log-mel frames (10 ms).
    pub fn segmentation(self) -> Segmentation {
        match self {
            // 1 s windows every 0.5 s: fine enough to say where in a file a sound is.
            Mode::Events => Segmentation {
                window: 100,
                hop: 50,
                query_hop: 50,
            },
            // The fingerprint paper's 0.96 s segments every 100 ms. Queries are cut every 20 ms, so
            // some query segment falls within 10 ms of a library segment whatever its offset.
            Mode::Fingerprint => Segmentation {
                window: 96,
                hop: 10,
                query_hop: 2,
            },
        }
    }
}

/// Segment window and hops, in the front end's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segmentation {
    pub window: usize,
    /// Hop between library segments.
    pub hop: usize,
    /// Hop between query segments.
    pub query_hop: usize,
}

/// What an encoder reads: mono samples at its front end's rate, turned into frames by the front
/// end, cut into windows of `segmentation.window` frames every `segmentation.hop` (library
/// files) or `segmentation.query_hop` (queries). Saved with every index section: an index
/// holds what its encoder read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EncoderInput {
    pub front_end: FrontEnd,
    pub segmentation: Segmentation,
}

impl EncoderInput {
    /// Earshot's own models: 16 kHz log-mel, cut as `mode` cuts.
    pub fn log_mel(mode: Mode) -> Self {
        Self {
            front_end: FrontEnd::LogMel(LogMelConfig::default()),
            segmentation: mode.segmentation(),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.front_end.sample_rate()
    }

    /// Seconds per front-end frame: the unit of segment starts and offsets.
    pub fn frame_s(&self) -> f64 {
        1.0 / self.front_end.frames_per_second()
    }

    /// Whether these settings can be used (a loaded index may hold anything).
    pub fn is_valid(&self) -> bool {
        let s = &self.segmentation;
        self.front_end.is_valid() && s.window > 0 && s.hop > 0 && s.query_hop > 0
    }
}

/// What identifies an encoder's output: indexes built by another encoder are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderInfo {
    pub name: String,
    /// Hash of the weights (or of the seed and shape for data-independent encoders).
    pub weights_hash: String,
    pub bits: usize,
    pub embedding_dim: usize,
}

impl EncoderInfo {
    /// `u64` words per code.
    pub fn words(&self) -> usize {
        self.bits.div_ceil(64)
    }
}

/// Codes and embeddings of a batch of segments, flat: segment `i` owns
/// `codes[i * words..][..words]`, `embeddings[i * dim..][..dim]` and, where the encoder gives
/// them, `margins[i * bits..][..bits]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    pub codes: Vec<u64>,
    pub embeddings: Vec<f32>,
    /// Each bit's value less its threshold: how far it was from flipping. Fingerprint search
    /// trusts a query's sure bits more than its unsure ones; the index does not keep these.
    pub margins: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("segment {index} has {got} values, not a whole number of {dims}-value frames")]
    Shape {
        index: usize,
        got: usize,
        dims: usize,
    },
    #[error("encoder failed: {0}")]
    Model(#[from] candle_core::Error),
}

/// Checks that every segment is a whole number of `dims`-value frames (at least one).
pub fn check_segments(segments: &[&[f32]], dims: usize) -> Result<(), EncodeError> {
    match segments
        .iter()
        .position(|s| s.is_empty() || s.len() % dims != 0)
    {
        Some(index) => Err(EncodeError::Shape {
            index,
            got: segments[index].len(),
            dims,
        }),
        None => Ok(()),
    }
}

pub trait Encoder: Send + Sync {
    fn info(&self) -> &EncoderInfo;

    /// What the encoder reads, and how library files and queries are cut for it.
    fn input(&self) -> EncoderInput;

    /// Appends the encodings of `segments` (each frame-major, of the front end's frames, any
    /// number of them) to `out`.
    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError>;

    /// Whether its embeddings are a backbone's, standardised, with codes trained on labels
    /// (a hash head's): their cosine then judges any kind of sound, the codes only the kinds
    /// they were trained on, and search weighs the two.
    fn codes_from_labels_on_backbone(&self) -> bool {
        false
    }

    /// For a fingerprint model: the codes scores its matches need to be found, if it was
    /// calibrated (see [`found`]).
    fn found_thresholds(&self) -> Option<found::FoundThresholds> {
        None
    }

    /// Where the encoder looks in a clip (frame-major, of the front end's frames), for drawing
    /// over its spectrogram; `None` for encoders without attention.
    fn attention(&self, _frames: &[f32]) -> Result<Option<AttentionMap>, EncodeError> {
        Ok(None)
    }
}

/// An attention mask over a clip: `rows` bands of frequency (lowest first) by `columns` time
/// steps spread evenly over `frames` (the front end's; the engine's front door hands them to
/// views on the 10 ms frames of the clip's spectrogram), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    pub rows: usize,
    pub columns: usize,
    pub values: Vec<f32>,
    /// The front end's frames of the clip the columns cover.
    pub frames: std::ops::Range<usize>,
    /// `rows + 1` band edges in Hz, lowest first, when the rows do not spread evenly over the
    /// bands of the log-mel the views draw (an encoder with a front end of its own).
    pub row_edges_hz: Option<Vec<f32>>,
}
