//! Training losses.
//!
//! AudioNet (`audionet-supervised-deep-hashing.txt`, eq. 1-8), over every ordered pair `i != j`
//! of a batch, with similarity `s_ij` in [0, 1] (1: same class; fractional under mixup):
//! - `theta_ij = c_i . c_j` on the balanced-sign codes;
//! - weighted pairwise likelihood `Lp_ij = w_ij (log(1 + exp(alpha theta_ij)) - alpha s_ij theta_ij)`
//!   (eq. 4) with imbalance weights `w_ij = log((Ns + Nd) / (s_ij Ns + (1 - s_ij) Nd))` (eq. 5),
//!   `Ns`, `Nd` the batch's similar and dissimilar pair counts;
//! - distance `D_ij = ||v_i - v_j||^2 + Lp_ij` on the hash layer outputs `v` (eq. 6);
//! - weighted contrastive `C_ij = s_ij D_ij / 2 + (1 - s_ij) max(0, p - D_ij) / 2` (eq. 7);
//! - `L = lambda mean(C) + beta mean(Lp)` (eq. 8).

use candle_core::{D, DType, Device, Result, Tensor};

use super::shuffle;
use crate::model::SeededRng;
use candle_nn::ops::log_softmax;

#[derive(Debug, Clone, Copy)]
pub struct AudioNetLoss {
    pub lambda: f64,
    pub beta: f64,
    /// Contrastive margin `p`.
    pub margin: f64,
    /// Sigmoid slope on code inner products (the paper leaves it open): `ALPHA_TIMES_BITS / K`,
    /// so the logits span +-10 whatever the code length.
    pub alpha: f64,
}

pub const ALPHA_TIMES_BITS: f64 = 10.0;

impl AudioNetLoss {
    /// The paper's weights: lambda 0.7, beta 0.3, margin 1.
    pub fn for_bits(bits: usize) -> Self {
        Self {
            lambda: 0.7,
            beta: 0.3,
            margin: 1.0,
            alpha: ALPHA_TIMES_BITS / bits as f64,
        }
    }
}

/// The loss and its two terms (scalars).
pub struct AudioNetTerms {
    pub contrastive: Tensor,
    pub pairwise: Tensor,
    pub total: Tensor,
}

impl AudioNetLoss {
    /// `hash`: `B x K` hash-layer outputs, `codes`: `B x K` of +-1, `similarity`: `B x B`.
    pub fn forward(
        &self,
        hash: &Tensor,
        codes: &Tensor,
        similarity: &Tensor,
    ) -> Result<AudioNetTerms> {
        let b = hash.dim(0)?;
        let off_diagonal = (Tensor::ones((b, b), DType::F32, hash.device())?
            - Tensor::eye(b, DType::F32, hash.device())?)?;
        let s = similarity.detach();
        let pairs = (b * (b - 1)).max(1) as f64;
        // Imbalance weights from the batch's pair counts (data, not parameters).
        let n_similar = (&s * &off_diagonal)?.sum_all()?.to_scalar::<f32>()? as f64;
        let n_dissimilar = pairs - n_similar;
        let weights = s
            .affine(n_similar - n_dissimilar, n_dissimilar)?
            .clamp(1e-6, f64::MAX)?
            .recip()?
            .affine(n_similar + n_dissimilar, 0.0)?
            .log()?;
        let theta = codes.matmul(&codes.t()?)?.affine(self.alpha, 0.0)?;
        let pairwise = (weights * (softplus(&theta)? - (&s * &theta)?)?)?;
        let squares = hash.sqr()?.sum_keepdim(1)?;
        let euclidean =
            (squares.broadcast_add(&squares.t()?)? - (hash.matmul(&hash.t()?)? * 2.0)?)?;
        let distance = (euclidean + &pairwise)?;
        let hinge = distance.affine(-1.0, self.margin)?.relu()?;
        let contrastive = ((&s * &distance)? + ((1.0 - &s)? * hinge)?)?.affine(0.5, 0.0)?;
        let mean_pairs = |t: &Tensor| (t * &off_diagonal)?.sum_all()?.affine(1.0 / pairs, 0.0);
        let (contrastive, pairwise) = (mean_pairs(&contrastive)?, mean_pairs(&pairwise)?);
        let total = (contrastive.affine(self.lambda, 0.0)? + pairwise.affine(self.beta, 0.0)?)?;
        Ok(AudioNetTerms {
            contrastive,
            pairwise,
            total,
        })
    }
}

/// `log(1 + exp(x))` without overflow.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Cross-entropy of `logits` (`B x classes`) against soft targets (`B x classes`, rows sum to 1).
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (log_softmax(logits, D::Minus1)? * targets)?
        .sum(D::Minus1)?
        .mean_all()?
        .neg()
}

/// NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) over pairs: row `i` of `a`
/// and row `i` of `b` are two views of one segment, and every other row of either is a negative.
/// Rows must be L2-normalised.
pub fn nt_xent(a: &Tensor, b: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = a.dim(0)?;
    let z = Tensor::cat(&[a, b], 0)?;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    // A row is never its own negative.
    let eye = Tensor::eye(2 * n, DType::F32, a.device())?;
    let log_prob = log_softmax(&(sim - (eye * 1e9)?)?, D::Minus1)?;
    let positive: Vec<u32> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as u32).collect();
    let positive = Tensor::from_vec(positive, (2 * n, 1), a.device())?;
    log_prob.gather(&positive, 1)?.neg()?.mean_all()
}

/// Seeded random class centres in the code space, each with half its bits set (the balanced
/// codes the balanced sign produces), as a `classes x bits` tensor of 0/1.
pub fn hash_centres(classes: usize, bits: usize, seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed ^ 0xC3A5_C85C_97CB_3127 ^ bits as u64);
    let mut values = Vec::with_capacity(classes * bits);
    for _ in 0..classes {
        let mut centre: Vec<f32> = (0..bits)
            .map(|i| if i < bits / 2 { 1.0 } else { 0.0 })
            .collect();
        shuffle(&mut centre, &mut rng);
        values.extend(centre);
    }
    Tensor::from_vec(values, (classes, bits), &Device::Cpu)
}

/// Class centres from a Hadamard matrix (Central Similarity Quantization, Yuan et al., 2020):
/// for a power-of-two `bits`, the rows of the Sylvester matrix but the first, then their
/// complements, are balanced and at least `bits / 2` apart; classes past those get seeded
/// random centres ([`hash_centres`]). `classes x bits` of 0/1.
pub fn hadamard_centres(classes: usize, bits: usize, seed: u64) -> Result<Tensor> {
    if !bits.is_power_of_two() || bits < 2 {
        return hash_centres(classes, bits, seed);
    }
    // Sylvester: H[i][j] = (-1)^popcount(i & j); a bit is set where the entry is +1.
    let row = |i: usize| (0..bits).map(move |j| f32::from((i & j).count_ones().is_multiple_of(2)));
    let rows = (1..bits)
        .map(|i| row(i).collect::<Vec<f32>>())
        .chain((1..bits).map(|i| row(i).map(|b| 1.0 - b).collect()));
    let random = hash_centres(classes, bits, seed)?.to_vec2::<f32>()?;
    let values: Vec<f32> = rows.chain(random).take(classes).flatten().collect();
    Tensor::from_vec(values, (classes, bits), &Device::Cpu)
}

/// Binary cross-entropy of the hash layer (as logits) against target bits in [0, 1].
pub fn centre_loss(hash: &Tensor, target_bits: &Tensor) -> Result<Tensor> {
    let softplus = (hash.relu()? + (hash.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (hash * target_bits)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t2(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    /// Two similar items and one dissimilar, 2-bit codes, worked by hand.
    #[test]
    fn audionet_terms_match_hand_computed_values() {
        let loss = AudioNetLoss {
            lambda: 0.7,
            beta: 0.3,
            margin: 1.0,
            alpha: 0.5,
        };
        let hash = t2(&[&[0.5, -0.5], &[0.5, 0.5], &[-1.0, 0.0]]);
        let codes = t2(&[&[1.0, -1.0], &[1.0, 1.0], &[-1.0, 1.0]]);
        let sim = t2(&[&[1.0, 1.0, 0.0], &[1.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
        let terms = loss.forward(&hash, &codes, &sim).unwrap();
        // Pairs (ordered, 6): (0,1),(1,0) similar; (0,2),(2,0),(1,2),(2,1) dissimilar.
        // Ns = 2, Nd = 4: w_sim = ln(6/2) = ln 3, w_dis = ln(6/4) = ln 1.5.
        let (w_s, w_d) = (3f64.ln(), 1.5f64.ln());
        let sp = |x: f64| (1.0 + x.exp()).ln();
        // Inner products: c0.c1 = 0, c0.c2 = -2, c1.c2 = 0; theta = alpha * c.c.
        let lp01 = w_s * (sp(0.0) - 0.0);
        let lp02 = w_d * sp(-1.0);
        let lp12 = w_d * sp(0.0);
        // Squared distances: |v0-v1|^2 = 1, |v0-v2|^2 = 2.25 + 0.25 = 2.5, |v1-v2|^2 = 2.5.
        let c01 = 0.5 * (1.0 + lp01);
        let c02 = 0.5 * (1.0 - (2.5 + lp02)).max(0.0);
        let c12 = 0.5 * (1.0 - (2.5 + lp12)).max(0.0);
        let contrastive = (2.0 * c01 + 2.0 * c02 + 2.0 * c12) / 6.0;
        let pairwise = (2.0 * lp01 + 2.0 * lp02 + 2.0 * lp12) / 6.0;
        assert!((scalar(&terms.contrastive) - contrastive).abs() < 1e-5);
        assert!((scalar(&terms.pairwise) - pairwise).abs() < 1e-5);
        let total = 0.7 * contrastive + 0.3 * pairwise;
        assert!((scalar(&terms.total) - total).abs() < 1e-5);
        // The same worked out on paper: 0.3225.
        assert!((total - 0.322_5).abs() < 1e-4, "{total}");
    }

    #[test]
    fn dissimilar_pairs_within_the_margin_are_pushed_apart() {
        let loss = AudioNetLoss::for_bits(2);
        let hash = t2(&[&[0.1, 0.0], &[0.0, 0.1]]);
        let codes = t2(&[&[1.0, -1.0], &[-1.0, 1.0]]);
        let sim = t2(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let terms = loss.forward(&hash, &codes, &sim).unwrap();
        // No similar pair: w_dis = ln(2/2) = 0, so Lp = 0 and C = (1 - 0.02) / 2.
        assert!(scalar(&terms.pairwise).abs() < 1e-6);
        assert!((scalar(&terms.contrastive) - 0.49).abs() < 1e-5);
    }

    #[test]
    fn soft_cross_entropy_matches_the_definition() {
        let logits = t2(&[&[0.0, 0.0], &[2.0, 0.0]]);
        let targets = t2(&[&[1.0, 0.0], &[0.5, 0.5]]);
        let got = scalar(&soft_cross_entropy(&logits, &targets).unwrap());
        let row2 =
            -(0.5 * (2f64.exp() / (2f64.exp() + 1.0)).ln() + 0.5 * (1.0 / (2f64.exp() + 1.0)).ln());
        let want = (2f64.ln() + row2) / 2.0;
        assert!((got - want).abs() < 1e-5);
    }

    #[test]
    fn nt_xent_matches_a_hand_computed_value() {
        // Rows e1, e2 twice, temperature 0.5: each row's positive scores 1/0.5 = 2, its two
        // negatives 0, so every row's loss is -ln(e^2 / (e^2 + 2)) = ln(1 + 2 e^-2).
        let a = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &candle_core::Device::Cpu).unwrap();
        let loss = nt_xent(&a, &a, 0.5).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss - 0.239_544_77).abs() < 1e-5, "{loss}");
        // Views that disagree cost more.
        let b = Tensor::new(&[[0f32, 1.0], [1.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        let swapped = nt_xent(&a, &b, 0.5).unwrap().to_scalar::<f32>().unwrap();
        assert!(swapped > 2.0, "{swapped}");
    }
}
