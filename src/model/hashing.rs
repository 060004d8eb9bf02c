//! Binary codes: AudioNet's balanced sign (eq. 9) with the straight-through hard-tanh gradient
//! (eq. 10-11), and packing of codes into `u64` words for the index.

use candle_core::{Result, Tensor};

/// Balanced sign of each row of `v` (`batch x bits`): +1 where a value is at least the mean of its
/// own row, -1 elsewhere (eq. 9). The forward value is the sign; the gradient is that of the hard
/// tanh `max(-1, min(1, u))` of the centred values `u`, i.e. the incoming gradient where |u| <= 1
/// and zero elsewhere (eq. 10-11).
pub fn balanced_sign(v: &Tensor) -> Result<Tensor> {
    let u = v.broadcast_sub(&v.mean_keepdim(1)?)?;
    let hard = u.clamp(-1f32, 1f32)?;
    let sign = (u.ge(0f32)?.to_dtype(u.dtype())? * 2.0)?.affine(1.0, -1.0)?;
    // Forward: `sign`. Backward: through `hard` only.
    hard.clone() + (sign - hard)?.detach()
}

/// The same balanced sign on plain floats: bit `i` is set when `v[i] >= mean(v)`.
pub fn balanced_bits(v: &[f32]) -> impl Iterator<Item = bool> + '_ {
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    v.iter().map(move |&x| x >= mean)
}

/// How far each value of [`balanced_bits`] is from its threshold (`v[i] - mean(v)`).
pub fn balanced_margins(v: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    v.iter().map(move |&x| x - mean)
}

/// Packs bits into `u64` words, bit `i` in word `i / 64` at position `i % 64`.
pub fn pack_bits(bits: impl IntoIterator<Item = bool>, words: usize, out: &mut Vec<u64>) {
    let start = out.len();
    out.resize(start + words, 0);
    for (i, bit) in bits.into_iter().enumerate() {
        if bit {
            out[start + i / 64] |= 1 << (i % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn each_bit_is_compared_with_the_mean_of_its_own_vector() {
        let v = Tensor::new(
            &[[1f32, 2.0, 3.0, 10.0], [-5.0, -4.0, -3.0, -2.0]],
            &Device::Cpu,
        )
        .unwrap();
        let c = balanced_sign(&v).unwrap().to_vec2::<f32>().unwrap();
        // Means 4 and -3.5: a plain sign would give all +1 and all -1.
        assert_eq!(
            c,
            vec![vec![-1.0, -1.0, -1.0, 1.0], vec![-1.0, -1.0, 1.0, 1.0]]
        );
        let bits: Vec<bool> = balanced_bits(&[1.0, 2.0, 3.0, 10.0]).collect();
        assert_eq!(bits, vec![false, false, false, true]);
    }

    #[test]
    fn the_gradient_passes_straight_through_where_the_centred_value_is_within_one() {
        // Row mean 0: centred values equal the inputs.
        let v = Var::new(&[[-3f32, -0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let weights = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu).unwrap();
        let loss = (balanced_sign(v.as_tensor()).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // d sign / d v = d htanh(v - mean v) / d v: identity inside |u| <= 1, minus the mean's
        // share (1/4 of the in-range gradients, 2 + 3) on every element.
        let shared = -(2.0 + 3.0) / 4.0;
        let expected = [shared, 2.0 + shared, 3.0 + shared, shared];
        for (got, want) in g[0].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?} vs {expected:?}", g[0]);
        }
    }

    #[test]
    fn bits_pack_little_endian_across_words() {
        let mut out = vec![7];
        let bits = (0..70).map(|i| i == 0 || i == 63 || i == 64 || i == 69);
        pack_bits(bits, 2, &mut out);
        assert_eq!(out, vec![7, 1 | 1 << 63, 1 | 1 << 5]);
    }
}
