//! Learned LSH for fingerprints (the encoder; `earshot train fingerprint` learns it): the
//! baseline's pooled spectrogram summary, projected onto the
//! directions in which segments differ most from one another relative to how much distortions
//! (noise, reverberation, small time offsets) move them. These are the leading generalised
//! eigenvectors of the segment covariance against the distortion covariance, as in LDAHash
//! (Strecha et al., 2012). A random projection spends many bits on directions that noise
//! flips; these do not.
//!
//! Each projection is scaled to unit distortion variance, so a bit's margin is the number of
//! standard deviations of typical distortion between it and a flip: fingerprint verification
//! weighs bits by exactly that.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::{CONFIG_FILE, ModelError, ModelFiles, Versioned, write_config, write_folder};
use super::found::FoundThresholds;
use super::lsh::{Grid, SignProjection};
use super::{EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput, Segmentation};
use crate::features::{FrontEnd, LOG_MEL_BANDS, LogMelConfig};

/// Code length and library hop (frames of 10 ms) of the shipped model. A library segment every
/// 70 ms leaves one within 10 ms of some segment of any query of 1 s or more (whose segments
/// start every 20 ms over its first 40 ms); 128 bits at that rate take 0.82 MB per hour.
/// Against 192 bits every 100 ms on the exact-match protocol (60,000 pairs, single-bit probes):
/// 1 s queries at 0 dB found in place 34.7% of the time instead of 29.3%, 2 s queries in the
/// right file 86.0% instead of 78.7%.
pub const DEFAULT_BITS: usize = 128;
pub const DEFAULT_HOP: usize = 7;

/// What `config.json` says in `architecture` for this kind of fingerprint model.
pub const ARCHITECTURE: &str = "learned-lsh";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedLshConfig {
    pub format_version: u32,
    /// Always [`ARCHITECTURE`]; tells this model from the convolutional one.
    pub architecture: String,
    pub bits: usize,
    pub grid: Grid,
    /// How library files and queries are cut, in log-mel frames (windows of 96).
    pub segmentation: Segmentation,
    /// The codes scores a match needs to be found, calibrated for this model after training
    /// (absent in a model written before models carried them: see [`FoundThresholds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<FoundThresholds>,
}

impl Versioned for LearnedLshConfig {
    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn check(&self) -> Result<(), String> {
        let grid_ok = (1..=96).contains(&self.grid.time_blocks)
            && (1..=64).contains(&self.grid.bands_per_cell)
            && crate::features::LOG_MEL_BANDS.is_multiple_of(self.grid.bands_per_cell);
        if self.architecture != ARCHITECTURE {
            Err(format!(
                "architecture {:?}, not {ARCHITECTURE:?}",
                self.architecture
            ))
        } else if self.segmentation.window != super::fingerprint::SEGMENT_FRAMES
            || !(1..=100).contains(&self.segmentation.hop)
            || !(1..=100).contains(&self.segmentation.query_hop)
        {
            Err("segments must be 96 frames, hops 1 to 100 frames".into())
        } else if !grid_ok
            || !(1..=self.grid.dim()).contains(&self.bits)
            || !self.bits.is_multiple_of(64)
        {
            Err("bits or grid out of range (bits a multiple of 64, at most the grid's size)".into())
        } else {
            self.found.as_ref().map_or(Ok(()), FoundThresholds::check)
        }
    }
}

/// The learned projection: `bits` rows over the summary, and the summaries' mean (the
/// threshold every bit is taken against, so bits are set about half the time).
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub rows: Vec<f32>,
    pub mean: Vec<f32>,
}

/// A learned projection behind the engine's [`Encoder`] trait.
pub struct LearnedLshEncoder {
    config: LearnedLshConfig,
    projection: Projection,
    /// The projection's rows, as encoding reads them.
    signs: SignProjection,
    info: EncoderInfo,
}

impl LearnedLshEncoder {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::from_files(ModelFiles::read(dir)?)
    }

    /// Builds the encoder from a model's files already read (see [`ModelFiles::from_bytes`]).
    pub fn from_files(files: ModelFiles<LearnedLshConfig>) -> Result<Self, ModelError> {
        let (bits, dim) = (files.config.bits, files.config.grid.dim());
        let projection = files.build(|_, vb| {
            let rows = vb
                .get((bits, dim), "projection")?
                .flatten_all()?
                .to_vec1()?;
            let mean = vb.get(dim, "mean")?.to_vec1()?;
            Ok(Projection { rows, mean })
        })?;
        let info = EncoderInfo {
            name: format!("learned-lsh-{bits}"),
            weights_hash: files.weights_hash(),
            bits,
            embedding_dim: dim,
        };
        Ok(Self {
            config: files.config,
            signs: SignProjection::from_rows(&projection.rows, dim),
            projection,
            info,
        })
    }

    /// Writes `config.json` and `model.safetensors` into `out`.
    pub fn save(
        out: &Path,
        config: &LearnedLshConfig,
        projection: &Projection,
    ) -> Result<(), ModelError> {
        let dim = config.grid.dim();
        let tensor = |values: &[f32], shape: &[usize]| {
            Tensor::from_slice(values, shape, &Device::Cpu).map_err(|source| {
                ModelError::Serialise {
                    path: out.join(super::config::WEIGHTS_FILE),
                    source,
                }
            })
        };
        let tensors = HashMap::from([
            (
                "projection".to_string(),
                tensor(&projection.rows, &[config.bits, dim])?,
            ),
            ("mean".to_string(), tensor(&projection.mean, &[dim])?),
        ]);
        write_folder(out, config, &tensors)
    }

    /// Writes `found` into the model folder `dir`'s `config.json`, leaving its weights (and so
    /// the indexes built with them) as they are.
    pub fn write_found_thresholds(dir: &Path, found: FoundThresholds) -> Result<(), ModelError> {
        let mut config = ModelFiles::<LearnedLshConfig>::read(dir)?.config;
        config.found = Some(found);
        config.check().map_err(|reason| ModelError::Config {
            path: dir.join(CONFIG_FILE),
            reason,
        })?;
        write_config(dir, &config)
    }
}

impl Encoder for LearnedLshEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        EncoderInput {
            front_end: FrontEnd::LogMel(LogMelConfig::default()),
            segmentation: self.config.segmentation,
        }
    }

    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError> {
        super::check_segments(segments, LOG_MEL_BANDS)?;
        let words = self.info.words();
        for segment in segments {
            let summary = self.config.grid.summary(segment);
            let centred: Vec<f32> = summary
                .iter()
                .zip(&self.projection.mean)
                .map(|(x, m)| x - m)
                .collect();
            self.signs.encode(&centred, words, out);
            out.embeddings.extend_from_slice(&summary);
        }
        Ok(())
    }

    fn found_thresholds(&self) -> Option<FoundThresholds> {
        self.config.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, SeededRng};

    #[test]
    fn a_saved_model_loads_and_gives_the_same_codes_and_a_bad_config_is_refused() {
        let grid = Grid {
            time_blocks: 8,
            bands_per_cell: 4,
        };
        let (dim, bits) = (grid.dim(), 64);
        let mut rng = SeededRng::new(9);
        let projection = Projection {
            rows: (0..bits * dim).map(|_| rng.normal() as f32).collect(),
            mean: (0..dim).map(|_| 0.01 * rng.normal() as f32).collect(),
        };
        let config = LearnedLshConfig {
            format_version: super::super::config::MODEL_FORMAT_VERSION,
            architecture: ARCHITECTURE.into(),
            bits,
            grid,
            segmentation: Mode::Fingerprint.segmentation(),
            found: None,
        };
        let dir = tempfile::tempdir().unwrap();
        LearnedLshEncoder::save(dir.path(), &config, &projection).unwrap();
        let encoder = LearnedLshEncoder::load(dir.path()).unwrap();
        assert_eq!(encoder.projection, projection);
        let segment: Vec<f32> = (0..96 * 64).map(|_| rng.normal() as f32).collect();
        let mut out = Encoded::default();
        encoder.encode(&[&segment], &mut out).unwrap();
        assert_eq!((out.codes.len(), out.margins.len()), (1, bits));
        for (bit, &margin) in out.margins.iter().enumerate() {
            assert_eq!(out.codes[0] >> bit & 1 == 1, margin > 0.0);
        }
        // Calibrated thresholds go into the config and leave the weights as they were.
        assert_eq!(encoder.found_thresholds(), None);
        let found = FoundThresholds {
            codes: [0.5, 0.6, 0.6, 0.4],
            ..FoundThresholds::default()
        };
        LearnedLshEncoder::write_found_thresholds(dir.path(), found).unwrap();
        let calibrated = LearnedLshEncoder::load(dir.path()).unwrap();
        assert_eq!(calibrated.found_thresholds(), Some(found));
        assert_eq!(calibrated.info.weights_hash, encoder.info.weights_hash);
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            text.replace("\"bits\": 64", "\"bits\": 60"),
        )
        .unwrap();
        let error = LearnedLshEncoder::load(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("config.json") && error.contains("multiple of 64"),
            "{error}"
        );
    }
}
