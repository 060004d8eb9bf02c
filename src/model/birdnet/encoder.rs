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
        })
    }

    pub fn net(&self) -> &BirdNet {
        &self.net
    }
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
        let embeddings = self
            .net
            .embed(&refs)
            .map_err(|e| EncodeError::Model(candle_core::Error::Msg(e.to_string())))?;
        out.embeddings
            .extend(embeddings.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    /// Where the network's last feature map (the head's, before its global mean) is strongest,
    /// window by window (3 s windows from the clip's start, the last padded). That map has one
    /// frequency row and 6 columns over 0.375-2.625 s of a window; each window is drawn as
    /// [`ATTENTION_COLUMNS`] equal columns taking the nearest of them.
    fn attention(&self, frames: &[f32]) -> Result<Option<AttentionMap>, EncodeError> {
        if frames.is_empty() {
            return Ok(None);
        }
        let windows: Vec<Vec<f32>> = frames.chunks(WINDOW_SAMPLES).map(pad_window).collect();
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let (_, strengths) = self
            .net
            .embed_with_strength(&refs)
            .map_err(|e| EncodeError::Model(candle_core::Error::Msg(e.to_string())))?;
        let window_s = WINDOW_SAMPLES as f32 / SAMPLE_RATE as f32;
        let mut values = Vec::with_capacity(strengths.len() * ATTENTION_COLUMNS);
        for s in &strengths {
            let [from, to] = s.time_span_s;
            for c in 0..ATTENTION_COLUMNS {
                let t = (c as f32 + 0.5) * window_s / ATTENTION_COLUMNS as f32;
                let k = ((t - from) / (to - from) * s.columns as f32).floor();
                let k = (k.max(0.0) as usize).min(s.columns.saturating_sub(1));
                let column = (0..s.rows).map(|r| s.values[r * s.columns + k]);
                values.push(column.sum::<f32>() / s.rows.max(1) as f32);
            }
        }
        // Columns past the clip's end (the padding of its last window) are left out.
        let frames_per_column = WINDOW_SAMPLES / FRAME_SAMPLES / ATTENTION_COLUMNS;
        let clip_frames = frames.len() / FRAME_SAMPLES;
        let columns = clip_frames.div_ceil(frames_per_column).min(values.len());
        values.truncate(columns);
        Ok(Some(AttentionMap {
            rows: 1,
            columns,
            values,
            frames: 0..(columns * frames_per_column).min(clip_frames),
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
