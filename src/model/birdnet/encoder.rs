//! BirdNET v2.4 behind the engine's [`Encoder`] trait, and its model folder (written by
//! [`install`] from the user's `.tflite` file, read by [`BirdNetEncoder::from_files`]).
//!
//! It reads 48 kHz samples in frames of [`FRAME_SAMPLES`] (50 ms, the unit of its segment
//! starts), 3 s windows every [`DEFAULT_HOP_S`] in library files. It gives the 1024-d embedding
//! and no hash code yet: search ranks its segments by the cosine of the embeddings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::import::{ImportError, convert};
use super::{BirdNet, BirdNetConfig, SAMPLE_RATE, WINDOW_SAMPLES, pad_window, var_builder};
use crate::features::FrontEnd;
use crate::model::config::{MODEL_FORMAT_VERSION, ModelError, ModelFiles, Versioned, write_folder};
use crate::model::{
    AttentionMap, EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput, Segmentation,
};

/// What `config.json` says in `architecture`, and the model folder's name.
pub const ARCHITECTURE: &str = "birdnet-v2.4";
/// Samples per front-end frame: 50 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 2400;
/// Library windows start every 1.5 s (half a window), so any 3 s event lies mostly in one.
pub const DEFAULT_HOP_S: f64 = 1.5;
/// Longest and shortest hop a config may ask for (seconds).
const HOP_RANGE_S: std::ops::RangeInclusive<f64> = 0.05..=3.0;
/// Attention columns drawn per 3 s window (a quarter second each).
const ATTENTION_COLUMNS: usize = 12;

/// The license of BirdNET's weights, as the import writes it beside them.
pub const LICENSE_FILE: &str = "LICENSE";
pub const LICENSE_NAME: &str = "CC BY-NC-SA 4.0";

/// A BirdNET model folder's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BirdNetFolderConfig {
    pub format_version: u32,
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// Seconds between library windows.
    pub hop_s: f64,
    /// Where the weights came from: the file's name and its sha256.
    pub source_sha256: String,
    pub network: BirdNetConfig,
}

impl Versioned for BirdNetFolderConfig {
    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn check(&self) -> Result<(), String> {
        if self.architecture != ARCHITECTURE {
            return Err(format!(
                "architecture {:?}, not {ARCHITECTURE}",
                self.architecture
            ));
        }
        if !HOP_RANGE_S.contains(&self.hop_s) {
            return Err(format!("hop_s {} is outside {HOP_RANGE_S:?}", self.hop_s));
        }
        self.network.check()
    }
}

pub struct BirdNetEncoder {
    net: BirdNet,
    info: EncoderInfo,
    hop_frames: usize,
    /// The feature strength of noise windows, computed on the first attention map asked for.
    noise_strength: std::sync::OnceLock<Vec<f32>>,
}

impl BirdNetEncoder {
    pub fn from_files(files: ModelFiles<BirdNetFolderConfig>) -> Result<Self, ModelError> {
        let net = load_network(&files)?;
        let info = EncoderInfo {
            name: ARCHITECTURE.to_string(),
            weights_hash: files.weights_hash(),
            bits: 0,
            embedding_dim: net.embedding_dim(),
        };
        let hop_frames =
            ((files.config.hop_s * f64::from(SAMPLE_RATE)) / FRAME_SAMPLES as f64).round() as usize;
        Ok(Self {
            net,
            info,
            hop_frames: hop_frames.max(1),
            noise_strength: std::sync::OnceLock::new(),
        })
    }

    pub fn net(&self) -> &BirdNet {
        &self.net
    }

    /// The mean feature strength, place by place, of [`NOISE_WINDOWS`] windows of white noise.
    /// Zero padding at the map's borders makes every clip's map strongest at its edges; divided
    /// by this, what is left is where the clip stirs the network more than noise does.
    fn noise_strength(&self) -> Result<&[f32], EncodeError> {
        if let Some(kept) = self.noise_strength.get() {
            return Ok(kept);
        }
        let mut state = NOISE_SEED;
        let windows: Vec<Vec<f32>> = (0..NOISE_WINDOWS)
            .map(|_| (0..WINDOW_SAMPLES).map(|_| uniform(&mut state)).collect())
            .collect();
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let (_, maps) = self.net.embed_with_strength(&refs).map_err(model_error)?;
        let mut mean = vec![0.0f32; maps.first().map_or(0, |m| m.values.len())];
        for map in &maps {
            for (m, v) in mean.iter_mut().zip(&map.values) {
                *m += v / maps.len() as f32;
            }
        }
        Ok(self.noise_strength.get_or_init(|| mean))
    }
}

/// Noise windows averaged for [`BirdNetEncoder::noise_strength`], and their generator's seed.
const NOISE_WINDOWS: usize = 4;
const NOISE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A uniform sample in [-0.5, 0.5) from an xorshift64 stream (the noise needs no quality, only
/// to be the same every time).
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// The engine's encoder error keeps candle's; BirdNET's own (a window of the wrong length, which
/// `pad_window` rules out) travels as its text.
fn model_error(e: super::BirdNetError) -> EncodeError {
    if let super::BirdNetError::Candle(e) = e {
        return EncodeError::Model(e);
    }
    EncodeError::Model(candle_core::Error::Msg(e.to_string()))
}

impl Encoder for BirdNetEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        EncoderInput {
            front_end: FrontEnd::Waveform {
                sample_rate: SAMPLE_RATE,
                frame: FRAME_SAMPLES,
            },
            segmentation: Segmentation {
                window: WINDOW_SAMPLES / FRAME_SAMPLES,
                hop: self.hop_frames,
                query_hop: self.hop_frames,
            },
        }
    }

    /// Each segment (whole frames of samples) becomes one 3 s window: a shorter one (a short
    /// clip) is zero-padded at its end, as BirdNET's own tools pad a recording's last chunk.
    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError> {
        super::super::check_segments(segments, FRAME_SAMPLES)?;
        let windows: Vec<Vec<f32>> = segments.iter().map(|s| pad_window(s)).collect();
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let embeddings = self.net.embed(&refs).map_err(model_error)?;
        out.embeddings
            .extend(embeddings.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    /// Where the network's last feature map (the last block's, as the head reads it) is
    /// strongest compared with noise (see [`Self::noise_strength`]), window by window (3 s
    /// windows from the clip's start, the last padded). That map has 3 frequency rows and 8
    /// columns over each window; each window is drawn as [`ATTENTION_COLUMNS`] equal columns
    /// taking the one under their centre.
    fn attention(&self, frames: &[f32]) -> Result<Option<AttentionMap>, EncodeError> {
        if frames.is_empty() {
            return Ok(None);
        }
        let windows: Vec<Vec<f32>> = frames.chunks(WINDOW_SAMPLES).map(pad_window).collect();
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let (_, strengths) = self.net.embed_with_strength(&refs).map_err(model_error)?;
        let noise = self.noise_strength()?;
        let Some(first) = strengths.first() else {
            return Ok(None);
        };
        let (rows, row_edges_hz) = (first.rows, first.row_edges_hz.clone());
        // Columns past the clip's end (the padding of its last window) are left out.
        let frames_per_column = WINDOW_SAMPLES / FRAME_SAMPLES / ATTENTION_COLUMNS;
        let clip_frames = frames.len() / FRAME_SAMPLES;
        let columns = clip_frames
            .div_ceil(frames_per_column)
            .min(strengths.len() * ATTENTION_COLUMNS);
        let mut values = Vec::with_capacity(rows * columns);
        for r in 0..rows {
            values.extend((0..columns).map(|c| {
                let s = &strengths[c / ATTENTION_COLUMNS];
                // The map column under this column's centre.
                let k = ((c % ATTENTION_COLUMNS) * 2 + 1) * s.columns / (2 * ATTENTION_COLUMNS);
                let at = r * s.columns + k;
                s.values[at] / noise.get(at).map_or(1.0, |n| n.max(f32::EPSILON))
            }));
        }
        Ok(Some(AttentionMap {
            rows,
            columns,
            values,
            frames: 0..(columns * frames_per_column).min(clip_frames),
            row_edges_hz: Some(row_edges_hz),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Source(#[from] super::source::SourceError),
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Import { path: PathBuf, source: ImportError },
    #[error(transparent)]
    Write(#[from] ModelError),
}

/// Converts BirdNET's `.tflite` bytes (read from `source`) into a model folder at `out`, with
/// the license text beside the weights. Everything is written into a temporary folder first
/// and renamed into place, so a failure leaves nothing half-written.
pub fn install(
    source: &Path,
    bytes: &[u8],
    license: &str,
    out: &Path,
) -> Result<BirdNetFolderConfig, InstallError> {
    let (network, weights) = convert(bytes).map_err(|e| InstallError::Import {
        path: source.to_owned(),
        source: e,
    })?;
    let config = BirdNetFolderConfig {
        format_version: MODEL_FORMAT_VERSION,
        architecture: ARCHITECTURE.to_string(),
        hop_s: DEFAULT_HOP_S,
        source_sha256: crate::fsutil::sha256_hex(bytes),
        network,
    };
    let parent = out.parent().unwrap_or(Path::new("."));
    let write_error = |source| ModelError::Write {
        path: parent.to_owned(),
        source,
    };
    std::fs::create_dir_all(parent).map_err(write_error)?;
    // Removed with everything in it if anything below fails.
    let staging = tempfile::Builder::new()
        .prefix(".birdnet-import-")
        .tempdir_in(parent)
        .map_err(write_error)?;
    write_folder(staging.path(), &config, &weights)?;
    let card = card(source, &config);
    for (name, text) in [
        (LICENSE_FILE, license),
        (super::super::config::CARD_FILE, &card),
    ] {
        let path = staging.path().join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes())
            .map_err(|source| ModelError::Write { path, source })?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|source| ModelError::Write {
            path: out.to_owned(),
            source,
        })?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out).map_err(|source| ModelError::Write {
        path: out.to_owned(),
        source,
    })?;
    Ok(config)
}

fn card(source: &Path, config: &BirdNetFolderConfig) -> String {
    format!(
        "# {ARCHITECTURE}\n\nBirdNET v2.4's embedding network (the 1024-d tensor before its 6522-class layer), \
         converted by `earshot models import birdnet` from `{}` (sha256 `{}`). Its weights are the \
         Cornell Lab of Ornithology's and Chemnitz University of Technology's, under {LICENSE_NAME} \
         (see `{LICENSE_FILE}`): non-commercial use, with attribution, sharing alike.\n\n\
         It reads 3 s windows at 48 kHz, one every {} s in library files; Earshot runs it in candle \
         with the same numbers as the TFLite interpreter (tests/golden/birdnet_reference.py).\n",
        source.display(),
        config.source_sha256,
        config.hop_s
    )
}

/// Loads an installed BirdNET folder's network alone (for `earshot embed`).
pub fn load_network(files: &ModelFiles<BirdNetFolderConfig>) -> Result<BirdNet, ModelError> {
    let network = files.config.network.clone();
    files.build(|_, vb| {
        BirdNet::load(network, vb).map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
}

/// A network straight from the `.tflite` bytes (tests and benchmarks).
pub fn network_from_tflite(bytes: &[u8]) -> Result<BirdNet, ImportError> {
    let (cfg, weights) = convert(bytes)?;
    BirdNet::load(cfg, var_builder(weights)).map_err(|e| ImportError::Config(e.to_string()))
}
