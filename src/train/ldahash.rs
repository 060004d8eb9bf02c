//! Learning the fingerprint projection (LDAHash, Strecha et al., 2012): the directions in
//! which segments differ most from one another relative to how much distortions (noise,
//! reverberation, small time offsets) move them, i.e. the leading generalised eigenvectors of
//! the segment covariance against the distortion covariance. Each is scaled to unit distortion
//! variance, so a bit's margin counts standard deviations of typical distortion.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::model::learned_lsh::Projection;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeededRng;

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
}
