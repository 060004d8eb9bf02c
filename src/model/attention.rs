//! The channel-wise spectral-temporal attention mask of the attention-fingerprint paper
//! (`attention-based-audio-embeddings-qbe.txt`, eq. 1-4), made to work at any clip length.
//!
//! On a feature map `X` of `C x F x T` (channels, frequency, time), per channel:
//! - temporal weights `a_t = softmax_t(sum_f W_t[c, f] X[c, f, t])` (eq. 2: a projection over the
//!   fixed frequency axis, softmax over time);
//! - spectral weights `a_f = softmax_f(sum_c' W_f[c, c'] mean_t X[c', f, t])` (eq. 1: the paper
//!   projects over a fixed time axis; a clip of any length is first averaged over time);
//! - mask `A = S * a_f (outer) a_t` (eq. 3) and output `X' = A * X` (eq. 4).
//!
//! The scaling factor `S` is `F * T`, so the mask averages 1 at every clip length (the paper's
//! fixed `S = 100` played the same role for its fixed 0.96 s input).

use candle_core::{D, Result, Tensor};
use candle_nn::VarBuilder;
use candle_nn::ops::softmax;

pub struct SpectralTemporalAttention {
    /// `C x F`: per channel, the projection over frequency that scores each time step.
    w_time: Tensor,
    /// `C x C`: mixes channels' time-averaged spectra into per-channel frequency scores.
    w_freq: Tensor,
}

impl SpectralTemporalAttention {
    pub fn load(channels: usize, bands: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            w_time: vb.get((channels, bands), "w_time")?,
            w_freq: vb.get((channels, channels), "w_freq")?,
        })
    }

    /// `x`: `B x C x F x T`. Returns the reweighted map and the mask `A` (same shape).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, _, f, t) = x.dims4()?;
        // Temporal scores: sum over frequency of W_t[c, f] X[b, c, f, t] -> B x C x 1 x T.
        let time_scores = x
            .broadcast_mul(&self.w_time.unsqueeze(0)?.unsqueeze(D::Minus1)?)?
            .sum_keepdim(2)?;
        let a_time = softmax(&time_scores, D::Minus1)?;
        // Spectral scores: channel mixing of the time-averaged map -> B x C x F x 1.
        let spectrum = x.mean(D::Minus1)?; // B x C x F
        let freq_scores = self
            .w_freq
            .broadcast_matmul(&spectrum)?
            .unsqueeze(D::Minus1)?;
        let a_freq = softmax(&freq_scores, 2)?;
        let mask = (a_freq.broadcast_mul(&a_time)? * (f * t) as f64)?;
        Ok(((&mask * x)?, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn the_mask_averages_one_and_follows_the_input_shape() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let att = SpectralTemporalAttention::load(4, 8, vb).unwrap();
        for t in [1, 7, 300] {
            let x = Tensor::randn(0f32, 1.0, (2, 4, 8, t), &Device::Cpu).unwrap();
            let (y, mask) = att.forward(&x).unwrap();
            assert_eq!(y.dims(), &[2, 4, 8, t]);
            assert_eq!(mask.dims(), &[2, 4, 8, t]);
            let mean = mask.mean_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((mean - 1.0).abs() < 1e-4, "mask mean {mean} at T = {t}");
        }
    }
}
