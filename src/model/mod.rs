//! Encoders turn log-mel segments into a float embedding and a K-bit hash code.
//!
//! The engine sees encoders only through [`Encoder`]. Each mode's trained model is built into the
//! binary (and can be replaced by an installed folder); the data-independent [`lsh::LshEncoder`] is
//! the baseline the benchmarks measure them against.

pub mod attention;
pub mod augment;
pub mod config;
pub mod events;
pub mod fingerprint;
pub mod hashing;
pub mod learned_lsh;
pub mod loss;
pub mod lsh;
pub mod train;
pub mod train_fingerprint;

use serde::{Deserialize, Serialize};

/// The two ways to search (see DESIGN.md).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
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

/// Segment window and hops, in log-mel frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segmentation {
    pub window: usize,
    /// Hop between library segments.
    pub hop: usize,
    /// Hop between query segments.
    pub query_hop: usize,
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
    #[error("segment {index} has {got} values, not a whole number of {bands}-band frames")]
    Shape {
        index: usize,
        got: usize,
        bands: usize,
    },
    #[error("encoder failed: {0}")]
    Model(String),
}

/// Checks that every segment is a whole number of log-mel frames (at least one).
pub fn check_segments(segments: &[&[f32]]) -> Result<(), EncodeError> {
    let bands = crate::features::LOG_MEL_BANDS;
    match segments
        .iter()
        .position(|s| s.is_empty() || s.len() % bands != 0)
    {
        Some(index) => Err(EncodeError::Shape {
            index,
            got: segments[index].len(),
            bands,
        }),
        None => Ok(()),
    }
}

pub trait Encoder: Send + Sync {
    fn info(&self) -> &EncoderInfo;

    /// How library files and queries are cut into segments for this encoder.
    fn segmentation(&self) -> Segmentation;

    /// Appends the encodings of `segments` (each frame-major log-mel, any number of frames) to `out`.
    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError>;

    /// Where the encoder looks in a clip (frame-major log-mel), for drawing over its
    /// spectrogram; `None` for encoders without attention.
    fn attention(&self, _log_mel: &[f32]) -> Result<Option<AttentionMap>, EncodeError> {
        Ok(None)
    }
}

/// An attention mask over a clip: `rows` groups of mel bands (lowest first) by `columns` time
/// steps spread evenly over `frames`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    pub rows: usize,
    pub columns: usize,
    pub values: Vec<f32>,
    /// The log-mel frames of the clip the columns cover.
    pub frames: std::ops::Range<usize>,
}

/// The data-independent LSH encoder of a mode (the baseline every trained model must beat).
pub fn baseline_encoder(mode: Mode) -> Box<dyn Encoder> {
    let bits = match mode {
        Mode::Events => lsh::EVENTS_BITS,
        Mode::Fingerprint => lsh::FINGERPRINT_BITS,
    };
    Box::new(lsh::LshEncoder::new(mode, bits, lsh::DEFAULT_SEED))
}

/// The model folder a mode uses by default.
pub fn default_model_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Events => config::built_in::EVENTS_NAME,
        Mode::Fingerprint => config::built_in::FINGERPRINT_NAME,
    }
}

/// Where a mode's encoder comes from when no `--model` is given.
enum DefaultSource {
    /// An installed model folder (see [`config::find_model`]).
    Folder(std::path::PathBuf),
    /// The mode's default model, compiled into the binary.
    BuiltIn,
}

fn default_source(mode: Mode) -> DefaultSource {
    match config::find_model(default_model_name(mode)) {
        Some(dir) => DefaultSource::Folder(dir),
        None => DefaultSource::BuiltIn,
    }
}

/// The encoder `index` and `query` use for a mode: the model in `model_dir` when given, else the
/// mode's default model where one is installed (see [`config::find_model`]), else the one built
/// into the binary. A model folder that exists but cannot be loaded is an error, never a
/// fallback.
pub fn encoder_for(
    mode: Mode,
    model_dir: Option<&std::path::Path>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let source = model_dir.map_or_else(
        || default_source(mode),
        |dir| DefaultSource::Folder(dir.to_path_buf()),
    );
    match source {
        DefaultSource::Folder(dir) => {
            let (config, weights) = config::read_folder(&dir)?;
            encoder_from_bytes(mode, &dir, &config, weights)
        }
        DefaultSource::BuiltIn => built_in(mode),
    }
}

fn built_in(mode: Mode) -> Result<Box<dyn Encoder>, config::ModelError> {
    use config::built_in::*;
    let (place, config, weights) = match mode {
        Mode::Events => (EVENTS_PLACE, EVENTS_CONFIG, EVENTS_WEIGHTS),
        Mode::Fingerprint => (FINGERPRINT_PLACE, FINGERPRINT_CONFIG, FINGERPRINT_WEIGHTS),
    };
    encoder_from_bytes(mode, std::path::Path::new(place), config, weights.to_vec())
}

/// A mode's encoder from a model's files (`dir` names them in errors). A fingerprint model is
/// the convolutional network unless its config says `"architecture": "learned-lsh"`.
fn encoder_from_bytes(
    mode: Mode,
    dir: &std::path::Path,
    config: &[u8],
    weights: Vec<u8>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let learned_lsh = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|v| {
            v.get("architecture")?
                .as_str()
                .map(|a| a == learned_lsh::ARCHITECTURE)
        })
        .unwrap_or(false);
    Ok(match mode {
        Mode::Events => Box::new(events::EventsEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
        Mode::Fingerprint if learned_lsh => Box::new(learned_lsh::LearnedLshEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
        Mode::Fingerprint => Box::new(fingerprint::FingerprintEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
    })
}

/// Which encoder each mode uses by default and where it comes from, for `--version`, the About
/// window and messages: `(mode, encoder name, where)`.
pub fn default_encoders() -> Vec<(Mode, String, String)> {
    Mode::ALL
        .iter()
        .map(|&mode| {
            let (name, place) = match default_source(mode) {
                DefaultSource::Folder(dir) => (
                    dir.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    dir.display().to_string(),
                ),
                DefaultSource::BuiltIn => (
                    default_model_name(mode).to_string(),
                    "built into earshot".to_string(),
                ),
            };
            (mode, name, place)
        })
        .collect()
}

/// A small seeded generator (SplitMix64), so weights are the same on every machine and run.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The generator's state, to resume the same sequence later.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
