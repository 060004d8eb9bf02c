//! Codes for a library without labels, learned on its own embeddings: each dimension
//! standardised by the library's statistics, projected on its leading principal components,
//! then rotated by ITQ (iterative quantisation, Gong and Lazebnik, 2011) so that the signs lose
//! as little as possible. Search reads these codes to find candidates, then re-ranks them by
//! the cosine of the standardised embeddings (`search::rerank`).

use nalgebra::{DMatrix, SymmetricEigen};

use crate::model::SeededRng;
use crate::model::hash_head::Standardiser;
use crate::model::hashing::pack_bits;

/// ITQ's alternating steps (the paper's 50).
const ITQ_ITERATIONS: usize = 50;

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

/// A learned code: standardisation, then `bits` projections (rows of `dim`), then signs.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryCode {
    pub standardiser: Standardiser,
    pub bits: usize,
    /// `bits x dim`, row-major: principal directions times the ITQ rotation.
    pub projection: Vec<f32>,
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
        let projection = (0..bits)
            .flat_map(|b| (0..dim).map(move |d| (b, d)))
            .map(|(b, d)| directions[(d, b)] as f32)
            .collect();
        Ok(Self {
            standardiser,
            bits,
            projection,
        })
    }

    pub fn dim(&self) -> usize {
        self.standardiser.mean.len()
    }

    pub fn words(&self) -> usize {
        self.bits.div_ceil(64)
    }

    /// Codes of raw embeddings (`dim` values each), appended to `out`.
    pub fn encode(&self, rows: &[f32], out: &mut Vec<u64>) {
        let dim = self.dim().max(1);
        for row in rows.chunks_exact(dim) {
            let mut x = row.to_vec();
            self.standardiser.apply(&mut x);
            let bits = self
                .projection
                .chunks_exact(dim)
                .map(|p| p.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>() >= 0.0);
            pack_bits(bits, self.words(), out);
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
