//! 2-D maps of hash codes: PCA for an instant first view, t-SNE (Barnes-Hut, from `bhtsne`)
//! for the map itself. Codes are read as vectors of +-1, one per bit.

use crate::index::ModeIndex;

/// t-SNE settings: a perplexity of 30 and 1000 iterations are van der Maaten's defaults; theta
/// 0.5 is the usual Barnes-Hut accuracy.
pub const TSNE_PERPLEXITY: f32 = 30.0;
pub const TSNE_EPOCHS: usize = 1000;
pub const TSNE_THETA: f32 = 0.5;

/// One code per file: each bit is the majority over the file's segments, so a file lands where
/// most of it sounds like. Files without segments get `None`.
pub fn file_codes(data: &ModeIndex, n_files: usize) -> Vec<Option<Vec<u64>>> {
    let (words, bits) = (data.words(), data.bits());
    let mut ones = vec![vec![0u32; bits]; n_files];
    let mut counts = vec![0u32; n_files];
    for (i, s) in data.segments.iter().enumerate() {
        let f = s.file as usize;
        counts[f] += 1;
        for (b, one) in ones[f].iter_mut().enumerate() {
            *one += ((data.code(i)[b / 64] >> (b % 64)) & 1) as u32;
        }
    }
    ones.iter()
        .zip(&counts)
        .map(|(ones, &n)| {
            (n > 0).then(|| {
                let mut code = vec![0u64; words];
                for (b, &o) in ones.iter().enumerate() {
                    if 2 * o > n || (2 * o == n && b % 2 == 0) {
                        code[b / 64] |= 1 << (b % 64);
                    }
                }
                code
            })
        })
        .collect()
}

/// Codes as rows of +-1.
pub fn signs(codes: &[&[u64]], bits: usize) -> Vec<Vec<f32>> {
    codes
        .iter()
        .map(|c| {
            (0..bits)
                .map(|b| {
                    if (c[b / 64] >> (b % 64)) & 1 == 1 {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .collect()
        })
        .collect()
}

/// The rows projected on their first two principal components (power iteration on the
/// covariance, deflated for the second).
pub fn pca_2d(rows: &[Vec<f32>]) -> Vec<[f32; 2]> {
    let Some(dim) = rows.first().map(Vec::len) else {
        return Vec::new();
    };
    let n = rows.len() as f32;
    let mean: Vec<f32> = (0..dim)
        .map(|d| rows.iter().map(|r| r[d]).sum::<f32>() / n)
        .collect();
    let mut cov = vec![vec![0.0f32; dim]; dim];
    for r in rows {
        for i in 0..dim {
            let a = r[i] - mean[i];
            for j in 0..dim {
                cov[i][j] += a * (r[j] - mean[j]) / n;
            }
        }
    }
    let first = principal_axis(&cov);
    let lambda = rayleigh(&cov, &first);
    for i in 0..dim {
        for j in 0..dim {
            cov[i][j] -= lambda * first[i] * first[j];
        }
    }
    let second = principal_axis(&cov);
    rows.iter()
        .map(|r| {
            let centred = r.iter().zip(&mean).map(|(x, m)| x - m);
            let (mut x, mut y) = (0.0, 0.0);
            for ((c, a), b) in centred.zip(&first).zip(&second) {
                x += c * a;
                y += c * b;
            }
            [x, y]
        })
        .collect()
}

fn principal_axis(cov: &[Vec<f32>]) -> Vec<f32> {
    let dim = cov.len();
    // A fixed, uneven start vector: never orthogonal to the axis by construction.
    let mut v: Vec<f32> = (0..dim).map(|i| 1.0 + (i as f32 * 0.37).sin()).collect();
    for _ in 0..100 {
        let next: Vec<f32> = cov
            .iter()
            .map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum())
            .collect();
        let norm = next.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm < 1e-12 {
            break;
        }
        v = next.into_iter().map(|x| x / norm).collect();
    }
    v
}

fn rayleigh(cov: &[Vec<f32>], v: &[f32]) -> f32 {
    cov.iter()
        .zip(v)
        .map(|(row, vi)| vi * row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
        .sum()
}

/// Barnes-Hut t-SNE of the rows to 2-D, started from their PCA (scaled small, as t-SNE
/// expects), which also makes it repeatable. `on_epoch` hears each finished epoch. Perplexity
/// is lowered for small sets (it must stay below a third of the points).
pub fn tsne_2d(rows: &[Vec<f32>], mut on_epoch: impl FnMut(usize)) -> Vec<[f32; 2]> {
    if rows.len() < 4 {
        return pca_2d(rows);
    }
    let perplexity = TSNE_PERPLEXITY.min((rows.len() as f32 - 1.0) / 3.0);
    let samples: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let start = pca_2d(rows);
    let spread = (start.iter().map(|p| p[0] * p[0] + p[1] * p[1]).sum::<f32>()
        / start.len() as f32)
        .sqrt()
        .max(1e-12);
    let initial: Vec<f32> = start
        .iter()
        .flat_map(|p| [p[0], p[1]])
        .map(|x| x * 1e-4 / spread)
        .collect();
    let mut tsne: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&samples);
    tsne.perplexity(perplexity)
        .epochs(TSNE_EPOCHS)
        .initial_embedding(initial)
        .epoch_callback(move |epoch, _| on_epoch(epoch))
        .barnes_hut(TSNE_THETA, |a, b| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt()
        });
    tsne.embedding()
        .chunks_exact(2)
        .map(|p| [p[0], p[1]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters of codes far apart in Hamming space must land apart on the map.
    fn two_clusters() -> Vec<Vec<f32>> {
        let mut rng = crate::model::SeededRng::new(3);
        (0..40)
            .map(|i| {
                (0..32)
                    .map(|b| {
                        let base = if (b < 16) == (i % 2 == 0) { 1.0 } else { -1.0 };
                        if rng.uniform() < 0.1 { -base } else { base }
                    })
                    .collect()
            })
            .collect()
    }

    fn separated(points: &[[f32; 2]]) -> bool {
        let centre = |parity: usize| {
            let p: Vec<_> = points.iter().skip(parity).step_by(2).collect();
            let n = p.len() as f32;
            [
                p.iter().map(|q| q[0]).sum::<f32>() / n,
                p.iter().map(|q| q[1]).sum::<f32>() / n,
            ]
        };
        let (a, b) = (centre(0), centre(1));
        let between = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let spread = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = if i % 2 == 0 { a } else { b };
                ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt()
            })
            .sum::<f32>()
            / points.len() as f32;
        between > 2.0 * spread
    }

    #[test]
    fn pca_separates_two_clusters() {
        assert!(separated(&pca_2d(&two_clusters())));
    }

    #[test]
    fn tsne_separates_two_clusters() {
        assert!(separated(&tsne_2d(&two_clusters(), |_| {})));
    }

    #[test]
    fn signs_read_bits_low_first() {
        let rows = signs(&[&[0b101]], 3);
        assert_eq!(rows, vec![vec![1.0, -1.0, 1.0]]);
    }
}
