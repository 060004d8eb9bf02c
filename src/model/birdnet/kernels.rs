//! Tight f32 loops over contiguous NHWC data: the parts of the network candle's CPU backend does
//! slowly (depthwise and small 2-D convolutions, pooling, fused bias + activation), written so
//! the compiler vectorises their inner loops over channels.

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln(2)` split in a high part exact in f32 and the remainder (Cody-Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting `1.5 * 2^23` rounds an f32 of magnitude < 2^22 to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// `exp` saturates outside this range (f32 overflow / flush to the smallest normal).
const EXP_MAX_ARG: f32 = 88.0;
const EXP_MIN_ARG: f32 = -87.0;
/// Exponent bias of f32.
const F32_EXPONENT_BIAS: u32 = 127;
/// Mantissa bits of f32.
const F32_MANTISSA_BITS: u32 = 23;

/// `e^x` to about 2 ulp, branch-free so loops over it vectorise (Cephes `expf` polynomial).
/// `2^n` is built from the bits of the rounding sum (its low mantissa bits hold `n`), avoiding
/// Rust's saturating float-to-int cast, which does not vectorise.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN_ARG, EXP_MAX_ARG);
    let rounded = x * LOG2_E + ROUND_MAGIC;
    let n = rounded - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    // (n + 127) << 23, as n + 127 is in 1..=254 after the clamp (higher bits shift out).
    let exponent = rounded.to_bits().wrapping_add(F32_EXPONENT_BIAS) << F32_MANTISSA_BITS;
    poly * f32::from_bits(exponent)
}

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// Swish (SiLU): `x * sigmoid(x)`.
#[inline(always)]
pub fn swish(x: f32) -> f32 {
    x / (1.0 + fast_exp(-x))
}

/// The activation fused after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Swish,
    Sigmoid,
}

/// Whether the CPU has AVX2 and FMA: the hot loops then run from copies compiled for them
/// (8 lanes; the crate is built for baseline x86-64, 4 lanes).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` fn with the same arguments)
/// from a copy compiled for AVX2 + FMA when the CPU has them.
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

simd_dispatch! {
    /// `x[.., c] = act(x[.., c] + bias[c])` over rows of `bias.len()` channels.
    pub fn bias_act(x: &mut [f32], bias: &[f32], act: Act) => bias_act_rows
}

#[inline(always)]
fn bias_act_rows(x: &mut [f32], bias: &[f32], act: Act) {
    for row in x.chunks_exact_mut(bias.len()) {
        match act {
            Act::None => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
            Act::Relu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = (*v + b).max(0.0)),
            Act::Swish => row
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = swish(*v + b)),
            Act::Sigmoid => row
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = sigmoid(*v + b)),
        }
    }
}

simd_dispatch! {
    /// `x = act(x)`.
    pub fn act_in_place(x: &mut [f32], act: Act) => act_all
}

#[inline(always)]
fn act_all(x: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        Act::Swish => x.iter_mut().for_each(|v| *v = swish(*v)),
        Act::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
}

/// Sizes of an NHWC map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Dims {
    /// Values in the map.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn positions(&self) -> usize {
        self.n * self.h * self.w
    }
    fn at(&self, n: usize, y: usize, x: usize) -> usize {
        ((n * self.h + y) * self.w + x) * self.c
    }
}

/// A square depthwise convolution with zero padding `pad` on the top and left (the bottom and
/// right take what the output size needs), then bias and activation.
/// `weights`: `[k * k][c]` (tap-major); `input` is `dims`; returns `[n, oh, ow, c]`.
pub struct DepthwiseParams<'a> {
    pub weights: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub act: Act,
}

/// Output size along one axis (the config check keeps `size + 2 pad >= kernel`).
pub fn depthwise_out(size: usize, p: &DepthwiseParams<'_>) -> usize {
    (size + 2 * p.pad).saturating_sub(p.kernel) / p.stride + 1
}

simd_dispatch! {
    /// Runs a [`DepthwiseParams`] convolution: `dims` in, `[n, oh, ow, c]` out.
    pub fn depthwise(input: &[f32], dims: Dims, p: &DepthwiseParams<'_>) -> (Vec<f32>, Dims) => depthwise_loops
}

#[inline(always)]
fn depthwise_loops(input: &[f32], dims: Dims, p: &DepthwiseParams<'_>) -> (Vec<f32>, Dims) {
    let out_dims = Dims {
        h: depthwise_out(dims.h, p),
        w: depthwise_out(dims.w, p),
        ..dims
    };
    let mut out = vec![0.0f32; out_dims.len()];
    let c = dims.c;
    for (row_index, row) in out.chunks_exact_mut(out_dims.w * c).enumerate() {
        let (n, oy) = (row_index / out_dims.h, row_index % out_dims.h);
        for (ox, acc) in row.chunks_exact_mut(c).enumerate() {
            acc.copy_from_slice(p.bias);
            for ky in 0..p.kernel {
                let Some(iy) = (oy * p.stride + ky)
                    .checked_sub(p.pad)
                    .filter(|&y| y < dims.h)
                else {
                    continue;
                };
                for kx in 0..p.kernel {
                    let Some(ix) = (ox * p.stride + kx)
                        .checked_sub(p.pad)
                        .filter(|&x| x < dims.w)
                    else {
                        continue;
                    };
                    let src = &input[dims.at(n, iy, ix)..][..c];
                    let w = &p.weights[(ky * p.kernel + kx) * c..][..c];
                    for ((a, s), w) in acc.iter_mut().zip(src).zip(w) {
                        *a += s * w;
                    }
                }
            }
        }
    }
    act_all(&mut out, p.act);
    (out, out_dims)
}

/// Patches for a dense convolution as a matrix product: rows are output positions, columns are
/// `(ky, kx, c)` taps (zero outside the input). Padding `(top, left)`.
pub struct Im2col {
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Im2col {
    /// Returns `[n * out_h * out_w, kernel_h * kernel_w * c]`.
    pub fn patches(&self, input: &[f32], dims: Dims) -> Vec<f32> {
        let c = dims.c;
        let cols = self.kernel_h * self.kernel_w * c;
        let mut out = vec![0.0f32; dims.n * self.out_h * self.out_w * cols];
        for (row_index, row) in out.chunks_exact_mut(cols).enumerate() {
            let ox = row_index % self.out_w;
            let oy = (row_index / self.out_w) % self.out_h;
            let n = row_index / (self.out_w * self.out_h);
            for ky in 0..self.kernel_h {
                let Some(iy) = (oy * self.stride + ky)
                    .checked_sub(self.pad_top)
                    .filter(|&y| y < dims.h)
                else {
                    continue;
                };
                let kx_first = self.pad_left.saturating_sub(ox * self.stride);
                let ix_first = (ox * self.stride + kx_first) - self.pad_left;
                let kx_end = self
                    .kernel_w
                    .min((dims.w + self.pad_left).saturating_sub(ox * self.stride));
                if kx_first >= kx_end {
                    continue;
                }
                let taps = kx_end - kx_first;
                let src = &input[dims.at(n, iy, ix_first)..][..taps * c];
                row[(ky * self.kernel_w + kx_first) * c..][..taps * c].copy_from_slice(src);
            }
        }
        out
    }
}

/// Max and average pooling over `(1, 2)` windows with stride `(1, 2)` (VALID), concatenated
/// along channels as `[max, avg]`: `[n, h, w, c]` -> `[n, h, w / 2, 2c]`.
pub fn pool_time_pairs(input: &[f32], dims: Dims) -> (Vec<f32>, Dims) {
    let out_dims = Dims {
        w: dims.w / 2,
        c: 2 * dims.c,
        ..dims
    };
    let c = dims.c;
    let mut out = vec![0.0f32; out_dims.len()];
    for (pos, dst) in out.chunks_exact_mut(2 * c).enumerate() {
        let ox = pos % out_dims.w;
        let row = pos / out_dims.w;
        let a = &input[(row * dims.w + 2 * ox) * c..][..c];
        let b = &input[(row * dims.w + 2 * ox + 1) * c..][..c];
        let (max, avg) = dst.split_at_mut(c);
        for j in 0..c {
            max[j] = a[j].max(b[j]);
            avg[j] = (a[j] + b[j]) * 0.5;
        }
    }
    (out, out_dims)
}

/// Mean over positions per image and channel: `[n, h, w, c]` -> `[n, c]`.
pub fn spatial_mean(input: &[f32], dims: Dims) -> Vec<f32> {
    let per_image = dims.h * dims.w;
    let mut out = vec![0.0f32; dims.n * dims.c];
    for (image, acc) in input
        .chunks_exact(per_image * dims.c)
        .zip(out.chunks_exact_mut(dims.c))
    {
        for pixel in image.chunks_exact(dims.c) {
            acc.iter_mut().zip(pixel).for_each(|(a, v)| *a += v);
        }
        acc.iter_mut().for_each(|a| *a /= per_image as f32);
    }
    out
}

/// `x[n, .., c] *= gate[n, c]`.
pub fn scale_channels(x: &mut [f32], dims: Dims, gate: &[f32]) {
    let per_image = dims.h * dims.w * dims.c;
    for (image, g) in x.chunks_exact_mut(per_image).zip(gate.chunks_exact(dims.c)) {
        for pixel in image.chunks_exact_mut(dims.c) {
            pixel.iter_mut().zip(g).for_each(|(v, g)| *v *= g);
        }
    }
}

/// `x[.., c] = relu(x[.., c] * scale[c] + shift[c])` (an inference batch norm then ReLU).
pub fn affine_relu(x: &mut [f32], scale: &[f32], shift: &[f32]) {
    for row in x.chunks_exact_mut(scale.len()) {
        for ((v, s), b) in row.iter_mut().zip(scale).zip(shift) {
            *v = (*v * s + b).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let exact = (x as f64).exp();
            let rel = ((fast_exp(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(sigmoid(-200.0), 0.0f32.max(sigmoid(-200.0)));
        assert!((sigmoid(200.0) - 1.0).abs() < 1e-7);
        assert!(swish(-200.0).abs() < 1e-30);
    }

    #[test]
    fn im2col_matches_direct_padding() {
        // 1 image, 3 x 5, 2 channels; 2 x 3 kernel, stride 2, pad (1, 1).
        let dims = Dims {
            n: 1,
            h: 3,
            w: 5,
            c: 2,
        };
        let input: Vec<f32> = (0..dims.len()).map(|v| v as f32 + 1.0).collect();
        let op = Im2col {
            kernel_h: 2,
            kernel_w: 3,
            stride: 2,
            pad_top: 1,
            pad_left: 1,
            out_h: 2,
            out_w: 3,
        };
        let patches = op.patches(&input, dims);
        let cols = 2 * 3 * 2;
        for oy in 0..2 {
            for ox in 0..3 {
                for ky in 0..2 {
                    for kx in 0..3 {
                        for c in 0..2 {
                            let iy = (oy * 2 + ky) as isize - 1;
                            let ix = (ox * 2 + kx) as isize - 1;
                            let inside = (0..3).contains(&iy) && (0..5).contains(&ix);
                            let want = if inside {
                                input[((iy as usize) * 5 + ix as usize) * 2 + c]
                            } else {
                                0.0
                            };
                            let got = patches[(oy * 3 + ox) * cols + (ky * 3 + kx) * 2 + c];
                            assert_eq!(got, want, "oy {oy} ox {ox} ky {ky} kx {kx} c {c}");
                        }
                    }
                }
            }
        }
    }
}
