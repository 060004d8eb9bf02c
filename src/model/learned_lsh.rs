//! Learned LSH for fingerprints: the baseline's pooled spectrogram summary, projected onto the
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
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::config::{ModelError, ModelFiles, Versioned};
use super::lsh::{Grid, sign_projections};
use super::train::{TrainError, save_model_files};
use super::{EncodeError, Encoded, Encoder, EncoderInfo, Segmentation};

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
            Ok(())
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

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{got} pairs of {dim}-value summaries: need at least {need}")]
    TooFewPairs { got: usize, dim: usize, need: usize },
    #[error("{bits} bits from {dim}-value summaries: at most {dim}")]
    TooManyBits { bits: usize, dim: usize },
    #[error("the distortion covariance is not positive definite")]
    Singular,
}

/// Learns `bits` projections from (clean, distorted) summary pairs, flat (`n x dim` each).
pub fn learn(
    clean: &[f32],
    distorted: &[f32],
    dim: usize,
    bits: usize,
) -> Result<Projection, LearnError> {
    let n = clean.len() / dim.max(1);
    if n < 2 * dim || distorted.len() != clean.len() {
        return Err(LearnError::TooFewPairs {
            got: n,
            dim,
            need: 2 * dim,
        });
    }
    if bits > dim {
        return Err(LearnError::TooManyBits { bits, dim });
    }
    let mean: Vec<f64> = (0..dim)
        .map(|j| (0..n).map(|i| f64::from(clean[i * dim + j])).sum::<f64>() / n as f64)
        .collect();
    let segments = second_moment(n, dim, |i, j| f64::from(clean[i * dim + j]) - mean[j]);
    let distortion = second_moment(n, dim, |i, j| {
        f64::from(clean[i * dim + j]) - f64::from(distorted[i * dim + j])
    });
    let w = generalised_eigenvectors(&segments, &distortion, bits)?;
    let mut rows = Vec::with_capacity(bits * dim);
    for column in w.column_iter() {
        // Unit variance under the distortion itself (without the ridge).
        let variance = (column.transpose() * &distortion * column)[(0, 0)];
        let scale = 1.0 / variance.max(f64::MIN_POSITIVE).sqrt();
        rows.extend(column.iter().map(|&x| (x * scale) as f32));
    }
    Ok(Projection {
        rows,
        mean: mean.iter().map(|&m| m as f32).collect(),
    })
}

/// The `count` leading solutions of `S w = lambda D w`, as columns. With `D = L L'`, these are
/// `w = L^-T u` for the leading eigenvectors `u` of the symmetric `L^-1 S L^-T`.
fn generalised_eigenvectors(
    s: &DMatrix<f64>,
    d: &DMatrix<f64>,
    count: usize,
) -> Result<DMatrix<f64>, LearnError> {
    let dim = d.nrows();
    // A little ridge keeps directions no distortion ever touched from dominating.
    let ridge = 1e-3 * d.trace() / dim as f64;
    let ridged = d + DMatrix::identity(dim, dim) * ridge;
    let l = nalgebra::Cholesky::new(ridged)
        .ok_or(LearnError::Singular)?
        .unpack();
    let left = l.solve_lower_triangular(s).ok_or(LearnError::Singular)?;
    let m = l
        .solve_lower_triangular(&left.transpose())
        .ok_or(LearnError::Singular)?;
    let eigen = SymmetricEigen::new((&m + m.transpose()) * 0.5);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let leading = DMatrix::from_fn(dim, count, |r, c| eigen.eigenvectors[(r, order[c])]);
    l.tr_solve_lower_triangular(&leading)
        .ok_or(LearnError::Singular)
}

/// `dim x dim` mean of `x x'` over `n` rows, `x[j] = value(i, j)`.
fn second_moment(n: usize, dim: usize, value: impl Fn(usize, usize) -> f64) -> DMatrix<f64> {
    let x = DMatrix::from_fn(n, dim, value);
    (x.transpose() * &x) / n as f64
}

/// A learned projection behind the engine's [`Encoder`] trait.
pub struct LearnedLshEncoder {
    config: LearnedLshConfig,
    projection: Projection,
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
            projection,
            info,
        })
    }

    /// Writes `config.json` and `model.safetensors` into `out`.
    pub fn save(
        out: &Path,
        config: &LearnedLshConfig,
        projection: &Projection,
    ) -> Result<(), TrainError> {
        let dim = config.grid.dim();
        let tensors = HashMap::from([
            (
                "projection".to_string(),
                Tensor::from_slice(&projection.rows, (config.bits, dim), &Device::Cpu)?,
            ),
            (
                "mean".to_string(),
                Tensor::from_slice(&projection.mean, dim, &Device::Cpu)?,
            ),
        ]);
        save_model_files(out, config, &tensors)
    }
}

impl Encoder for LearnedLshEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn segmentation(&self) -> Segmentation {
        self.config.segmentation
    }

    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError> {
        super::check_segments(segments)?;
        let (dim, words) = (self.info.embedding_dim, self.info.words());
        for segment in segments {
            let summary = self.config.grid.summary(segment);
            let centred: Vec<f32> = summary
                .iter()
                .zip(&self.projection.mean)
                .map(|(x, m)| x - m)
                .collect();
            sign_projections(&centred, &self.projection.rows, dim, words, out);
            out.embeddings.extend_from_slice(&summary);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, SeededRng};

    const DIM: usize = 6;

    /// Pairs whose first two values vary across segments and barely change under distortion,
    /// and whose other values vary as much across segments but are drowned by distortion.
    fn pairs(n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = SeededRng::new(3);
        let (mut clean, mut distorted) = (Vec::new(), Vec::new());
        for _ in 0..n {
            for j in 0..DIM {
                let x = rng.normal() as f32 + 0.5;
                let noise = if j < 2 { 0.1 } else { 2.0 } * rng.normal() as f32;
                clean.push(x);
                distorted.push(x + noise);
            }
        }
        (clean, distorted)
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_leading_projections_read_the_robust_values_at_unit_distortion_variance() {
        let (clean, distorted) = pairs(4000);
        let p = learn(&clean, &distorted, DIM, 2).unwrap();
        for row in p.rows.chunks_exact(DIM) {
            let robust: f32 = row[..2].iter().map(|w| w * w).sum();
            let total: f32 = row.iter().map(|w| w * w).sum();
            assert!(robust / total > 0.99, "{row:?}");
            // Distortion (clean - distorted) projected on the row has variance about 1.
            let variance = clean
                .chunks_exact(DIM)
                .zip(distorted.chunks_exact(DIM))
                .map(|(c, d)| {
                    let diff: Vec<f32> = c.iter().zip(d).map(|(a, b)| a - b).collect();
                    dot(row, &diff).powi(2)
                })
                .sum::<f32>()
                / 4000.0;
            assert!((variance - 1.0).abs() < 0.05, "{variance}");
        }
        // The threshold is the mean of the clean summaries (0.5 in every value).
        assert!(p.mean.iter().all(|m| (m - 0.5).abs() < 0.1), "{:?}", p.mean);
    }

    #[test]
    fn too_few_pairs_or_too_many_bits_are_errors() {
        let (clean, distorted) = pairs(4000);
        assert!(matches!(
            learn(&clean[..DIM * 5], &distorted[..DIM * 5], DIM, 2),
            Err(LearnError::TooFewPairs { .. })
        ));
        assert!(matches!(
            learn(&clean, &distorted, DIM, DIM + 1),
            Err(LearnError::TooManyBits { .. })
        ));
    }

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
