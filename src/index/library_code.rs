//! Codes learned on a library, for an encoder that gives embeddings only (a backbone).
//!
//! - Without labels (the default): each dimension standardised by the library's statistics,
//!   projected on its leading principal components, then rotated by ITQ (iterative
//!   quantisation, Gong and Lazebnik, 2011) so that the signs lose as little as possible.
//!   Search reads these codes to find candidates, then re-ranks them by the cosine of the
//!   standardised embeddings (`search::rerank`).
//! - From the user's labels (`earshot learn`): a trained hash head (standardise, dense, ReLU,
//!   dense, balanced sign), kept here as plain weights. Search ranks by its codes.
//!
//! Both are a standardiser, dense layers and a sign rule, saved with the index section.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::model::SeededRng;
use crate::model::hash_head::{HashHead, Standardiser};
use crate::model::hashing::pack_bits;

/// ITQ's alternating steps (the paper's 50).
const ITQ_ITERATIONS: usize = 50;
/// Bits of a library's own code: the design's default code length (64, one word), the length
/// at which `earshot eval esc50 --unsupervised` measured it.
pub const LIBRARY_CODE_BITS: usize = 64;
/// Segments a library needs before a code is learned on it. Below this, search compares every
/// embedding exactly (as fast as codes at this size), and 64 principal directions of fewer
/// rows would be mostly noise.
pub const MIN_SEGMENTS_TO_LEARN: usize = 512;
/// The code is learned again once the library holds this many times the segments it was
/// learned on: what it has not seen may by then be most of it.
pub const RELEARN_GROWTH: usize = 2;
/// At most this many segments (evenly spaced through the library) are read to learn a code:
/// ten times the 1024 dimensions of a backbone's embedding is plenty for its leading 64
/// directions, and keeps learning to seconds and about 100 MB on any library.
pub const MAX_LEARNING_SEGMENTS: usize = 10_000;
/// Labels on at least this share of a library's files describe it: its code from labels ranks
/// alone (below it, beside cosine: [`crate::search::rerank::PARTIAL_LABELS_CODE_WEIGHT`]). A
/// labelled folder tree covers all of a library; a few queries' marks cover a few percent (200
/// marks on ESC-50's 1,600 files: 11%).
pub const LABELS_DESCRIBE_LIBRARY: f64 = 0.5;
/// ITQ's random start, fixed so that the same library gives the same code.
const LEARNING_SEED: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LibraryCodeError {
    #[error(
        "{bits} bits need at least {bits} embeddings of at least {bits} values; the library has {rows} of {dim}"
    )]
    TooFew {
        bits: usize,
        rows: usize,
        dim: usize,
    },
}

/// One dense layer: `outputs x inputs` weights, row-major, and a bias per output.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weights
            .chunks_exact(self.inputs.max(1))
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
    }

    /// Whether the weights and biases fit the shape.
    pub fn is_valid(&self) -> bool {
        self.inputs > 0
            && self.outputs > 0
            && self.weights.len() == self.inputs * self.outputs
            && self.bias.len() == self.outputs
    }
}

/// How the last layer's values become bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignRule {
    /// A bit is set where the value is at least 0 (ITQ).
    Zero,
    /// A bit is set where the value is at least the mean of its vector (a hash head's balanced
    /// sign).
    VectorMean,
}

/// What a code was learned from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum CodeSource {
    /// The library's embeddings alone (PCA + ITQ); search re-ranks its candidates.
    Embeddings,
    /// The user's labels: `classes` labels on `files` files.
    Labels { classes: usize, files: usize },
}

/// Whether labels on `labelled_files` of a library's `library_files` files describe it (see
/// [`LABELS_DESCRIBE_LIBRARY`]).
pub fn labels_describe_library(labelled_files: usize, library_files: usize) -> bool {
    labelled_files as f64 >= LABELS_DESCRIBE_LIBRARY * library_files as f64
}

/// A learned code: standardisation, dense layers (ReLU between them), then signs.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryCode {
    pub standardiser: Standardiser,
    pub layers: Vec<Dense>,
    pub sign: SignRule,
    pub source: CodeSource,
    /// Segments it was learned on (the library's then, for [`Self::is_outgrown`]).
    pub learned_on: usize,
}

impl LibraryCode {
    /// Learns a `bits`-bit code on `rows` (`dim` values each, raw backbone embeddings).
    pub fn learn(
        rows: &[f32],
        dim: usize,
        bits: usize,
        seed: u64,
    ) -> Result<Self, LibraryCodeError> {
        let n = rows.len() / dim.max(1);
        if bits == 0 || n < bits || dim < bits {
            return Err(LibraryCodeError::TooFew { bits, rows: n, dim });
        }
        let standardiser = Standardiser::fit(rows, dim);
        let mut x = rows.to_vec();
        standardiser.apply(&mut x);
        let data = DMatrix::from_row_iterator(n, dim, x.iter().map(|&v| f64::from(v)));
        let covariance = (data.transpose() * &data) / n as f64;
        let eigen = SymmetricEigen::new(covariance);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        // dim x bits: the leading principal directions.
        let pca = DMatrix::from_fn(dim, bits, |r, c| eigen.eigenvectors[(r, order[c])]);
        let projected = &data * &pca;
        let rotation = itq_rotation(&projected, bits, seed);
        let directions = pca * rotation;
        let weights = (0..bits)
            .flat_map(|b| (0..dim).map(move |d| (b, d)))
            .map(|(b, d)| directions[(d, b)] as f32)
            .collect();
        let projection = Dense {
            inputs: dim,
            outputs: bits,
            weights,
            bias: vec![0.0; bits],
        };
        Ok(Self {
            standardiser,
            layers: vec![projection],
            sign: SignRule::Zero,
            source: CodeSource::Embeddings,
            learned_on: n,
        })
    }

    /// A trained hash head's code, as plain weights.
    pub fn from_head(
        head: &HashHead,
        source: CodeSource,
        learned_on: usize,
    ) -> candle_core::Result<Self> {
        let tensors = head.tensors()?;
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("the head has no {name}")))
        };
        let dense = |layer: &str| -> candle_core::Result<Dense> {
            let weight = get(&format!("{layer}.weight"))?;
            let (outputs, inputs) = weight.dims2()?;
            Ok(Dense {
                inputs,
                outputs,
                weights: weight.flatten_all()?.to_vec1()?,
                bias: get(&format!("{layer}.bias"))?.to_vec1()?,
            })
        };
        Ok(Self {
            standardiser: head.standardiser.clone(),
            layers: vec![dense("hidden")?, dense("hash")?],
            sign: SignRule::VectorMean,
            source,
            learned_on,
        })
    }

    /// A [`LIBRARY_CODE_BITS`]-bit code for a library of `segments` embeddings (`dim` each),
    /// learned on at most [`MAX_LEARNING_SEGMENTS`] of them, evenly spaced; `learned_on` counts
    /// the whole library.
    pub fn learn_for_library(embeddings: &[f32], dim: usize) -> Result<Self, LibraryCodeError> {
        let segments = embeddings.len() / dim.max(1);
        let step = segments.div_ceil(MAX_LEARNING_SEGMENTS).max(1);
        let sample: Vec<f32> = embeddings
            .chunks_exact(dim.max(1))
            .step_by(step)
            .flatten()
            .copied()
            .collect();
        let mut code = Self::learn(&sample, dim, LIBRARY_CODE_BITS, LEARNING_SEED)?;
        code.learned_on = segments;
        Ok(code)
    }

    /// Whether a library of `segments` should learn its code again: a code learned without
    /// labels, on less than a [`RELEARN_GROWTH`]th of it. (A code learned from labels stays
    /// until the user learns again.)
    pub fn is_outgrown(&self, segments: usize) -> bool {
        self.source == CodeSource::Embeddings
            && segments >= self.learned_on.saturating_mul(RELEARN_GROWTH)
    }

    /// Whether it was learned from labels on at least [`LABELS_DESCRIBE_LIBRARY`] of the
    /// library's `library_files` files: search then ranks by it alone. Codes learned from fewer
    /// (a few queries' marks) know the marked sounds only, and a code learned without labels
    /// only finds the candidates that cosine ranks.
    pub fn describes_library(&self, library_files: usize) -> bool {
        match self.source {
            CodeSource::Labels { files, .. } => labels_describe_library(files, library_files),
            CodeSource::Embeddings => false,
        }
    }

    pub fn is_from_labels(&self) -> bool {
        matches!(self.source, CodeSource::Labels { .. })
    }

    pub fn bits(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Whether the layers chain from the standardiser's width to the code's bits.
    pub fn is_valid(&self) -> bool {
        let mut width = self.dim();
        for layer in &self.layers {
            if !layer.is_valid() || layer.inputs != width {
                return false;
            }
            width = layer.outputs;
        }
        self.standardiser.scale.len() == self.dim() && !self.layers.is_empty()
    }

    /// `embedding` standardised and scaled to unit length: what re-ranking compares.
    pub fn comparable(&self, embedding: &[f32]) -> Vec<f32> {
        let mut x = embedding.to_vec();
        self.standardiser.apply(&mut x);
        super::vector::normalise(&mut x);
        x
    }

    pub fn dim(&self) -> usize {
        self.standardiser.mean.len()
    }

    pub fn words(&self) -> usize {
        self.bits().div_ceil(64)
    }

    /// Codes of raw embeddings (`dim` values each), appended to `out`.
    pub fn encode(&self, rows: &[f32], out: &mut Vec<u64>) {
        self.encode_with_margins(rows, out, &mut Vec::new());
    }

    /// [`Self::encode`], and each bit's value less its threshold appended to `margins` (a
    /// query's margins weigh its bits: [`crate::search::rerank::margin_agreement`]).
    pub fn encode_with_margins(&self, rows: &[f32], out: &mut Vec<u64>, margins: &mut Vec<f32>) {
        for row in rows.chunks_exact(self.dim().max(1)) {
            let mut x = row.to_vec();
            self.standardiser.apply(&mut x);
            for (i, layer) in self.layers.iter().enumerate() {
                if i > 0 {
                    x.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                x = layer.apply(&x);
            }
            let threshold = match self.sign {
                SignRule::Zero => 0.0,
                SignRule::VectorMean => x.iter().sum::<f32>() / x.len().max(1) as f32,
            };
            pack_bits(x.iter().map(|&v| v >= threshold), self.words(), out);
            margins.extend(x.iter().map(|&v| v - threshold));
        }
    }
}

/// ITQ: the `bits x bits` rotation `R` that minimises `||B - V R||` over binary `B`, from a
/// seeded random orthogonal start, alternating `B = sign(V R)` and the Procrustes solution.
fn itq_rotation(v: &DMatrix<f64>, bits: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = SeededRng::new(seed);
    let start = DMatrix::from_fn(bits, bits, |_, _| rng.normal());
    let mut rotation = start.qr().q();
    for _ in 0..ITQ_ITERATIONS {
        let b = (v * &rotation).map(|x| if x >= 0.0 { 1.0 } else { -1.0 });
        // Procrustes: with SVD  B^T V = U S W^T, the best R is W U^T.
        let svd = (b.transpose() * v).svd(true, true);
        let (Some(u), Some(w_t)) = (svd.u, svd.v_t) else {
            break;
        };
        rotation = w_t.transpose() * u.transpose();
    }
    rotation
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well-separated clusters in 8 dimensions: every 1-bit code splits them.
    #[test]
    fn a_code_learned_on_two_clusters_separates_them() {
        let mut rng = SeededRng::new(3);
        let mut rows = Vec::new();
        for i in 0..200 {
            let centre = if i % 2 == 0 { 5.0 } else { -5.0 };
            rows.extend((0..8).map(|d| {
                let offset = if d < 4 { centre } else { 0.0 };
                (offset + rng.normal()) as f32
            }));
        }
        let code = LibraryCode::learn(&rows, 8, 1, 7).unwrap();
        let mut codes = Vec::new();
        code.encode(&rows, &mut codes);
        let first = codes[0];
        for (i, c) in codes.iter().enumerate() {
            assert_eq!(*c == first, i % 2 == 0, "row {i}");
        }
    }

    #[test]
    fn too_few_rows_are_an_error() {
        assert!(LibraryCode::learn(&[0.0; 16], 8, 4, 1).is_err());
    }
}
