//! BirdNET's front end, as its TFLite graph computes it, for one 3 s window at 48 kHz:
//!
//! 1. min-max normalisation: `y = ((x - min) / (max(x - min) + eps) - 0.5) * 2` (eps = 1e-6, so a
//!    constant window becomes all -1 rather than a division by zero);
//! 2. per branch: frames of `frame_length` every `hop` samples without padding, times a periodic
//!    Hann window (a constant of the graph), real FFT;
//! 3. the graph keeps the **real part** of each bin (a complex64 -> float32 CAST), not the
//!    magnitude; a mel filterbank (the FULLY_CONNECTED weights, `bands x bins`) maps it to bands;
//! 4. each band value `m` becomes `(m * m) ^ exponent` (MUL then POW);
//! 5. the band axis is reversed (row 0 = highest band), giving `bands x frames` per branch; the
//!    two branches are the two channels of the network's input image;
//! 6. a per-channel affine map (a folded batch norm).
//!
//! TFLite's RFFT2D runs in double precision, so the FFT here does too.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::{BirdNetConfig, MelBranchConfig};

/// A mel band: its weights over a contiguous run of FFT bins.
struct Band {
    first_bin: usize,
    weights: Vec<f32>,
}

struct Branch {
    cfg: MelBranchConfig,
    /// `frame_length` samples.
    window: Vec<f32>,
    /// Lowest band first, as in the filterbank.
    bands: Vec<Band>,
    fft: Arc<dyn RealToComplex<f64>>,
}

pub struct FrontEnd {
    epsilon: f32,
    sample_rate: u32,
    window_samples: usize,
    branches: Vec<Branch>,
    /// Per branch (channel): the folded batch norm.
    norm_scale: Vec<f32>,
    norm_shift: Vec<f32>,
}

/// The constants of one branch, as loaded: window `[frame_length]`, filterbank `[bands, bins]`.
pub struct BranchWeights {
    pub window: Vec<f32>,
    pub filterbank: Vec<f32>,
}

impl FrontEnd {
    pub fn new(
        cfg: &BirdNetConfig,
        weights: Vec<BranchWeights>,
        norm_scale: Vec<f32>,
        norm_shift: Vec<f32>,
    ) -> Self {
        let mut planner = RealFftPlanner::<f64>::new();
        let branches = cfg
            .branches
            .iter()
            .zip(weights)
            .map(|(b, w)| Branch {
                cfg: b.clone(),
                bands: sparse_bands(&w.filterbank, b.bins()),
                window: w.window,
                fft: planner.plan_fft_forward(b.frame_length),
            })
            .collect();
        Self {
            epsilon: cfg.normalize_epsilon,
            sample_rate: cfg.sample_rate,
            window_samples: cfg.window_samples,
            branches,
            norm_scale,
            norm_shift,
        }
    }

    /// Step 1: the window scaled to [-1, 1).
    pub fn normalize(&self, window: &[f32]) -> Vec<f32> {
        let min = window.iter().copied().fold(f32::INFINITY, f32::min);
        let range = window.iter().map(|&v| v - min).fold(0.0f32, f32::max);
        let denominator = range + self.epsilon;
        window
            .iter()
            .map(|&v| ((v - min) / denominator - 0.5) * 2.0)
            .collect()
    }

    /// Steps 1-5 per branch: `[bands, frames]` each, row 0 = highest band (before step 6).
    /// A window of another length is cut or zero-padded at the end first.
    pub fn branch_outputs(&self, window: &[f32]) -> Vec<Vec<f32>> {
        let mut padded = window[..self.window_samples.min(window.len())].to_vec();
        padded.resize(self.window_samples, 0.0);
        let normalized = self.normalize(&padded);
        self.branches
            .iter()
            .map(|b| {
                let mut out = vec![0.0f32; b.cfg.bands * b.cfg.frames];
                b.compute(&normalized, |band, frame, v| {
                    out[band * b.cfg.frames + frame] = v;
                });
                out
            })
            .collect()
    }

    /// The network's input image for one window of `window_samples`:
    /// `[bands, frames, branches]` (NHWC without N).
    pub(crate) fn image(&self, window: &[f32], out: &mut [f32]) {
        let normalized = self.normalize(window);
        let channels = self.branches.len();
        for (c, b) in self.branches.iter().enumerate() {
            let (scale, shift) = (self.norm_scale[c], self.norm_shift[c]);
            b.compute(&normalized, |band, frame, v| {
                out[(band * b.cfg.frames + frame) * channels + c] = v * scale + shift;
            });
        }
    }

    /// Each band of `branch` as the Hz of its first and last weighted FFT bin, lowest band first.
    pub fn band_ranges_hz(&self, branch: usize) -> Vec<[f32; 2]> {
        let Some(b) = self.branches.get(branch) else {
            return Vec::new();
        };
        let hz_per_bin = self.sample_rate as f32 / b.cfg.frame_length as f32;
        b.bands
            .iter()
            .map(|band| {
                let last = band.first_bin + band.weights.len().saturating_sub(1);
                [band.first_bin as f32 * hz_per_bin, last as f32 * hz_per_bin]
            })
            .collect()
    }
}

impl Branch {
    /// Calls `put(row, frame, value)` for every band and frame; row 0 is the highest band.
    fn compute(&self, normalized: &[f32], mut put: impl FnMut(usize, usize, f32)) {
        let n = self.cfg.frame_length;
        let mut input = vec![0.0f64; n];
        let mut spectrum = vec![Complex::new(0.0f64, 0.0); n / 2 + 1];
        let mut scratch = self.fft.make_scratch_vec();
        let mut real = vec![0.0f32; n / 2 + 1];
        let top = self.bands.len() - 1;
        for frame in 0..self.cfg.frames {
            let samples = &normalized[frame * self.cfg.hop..][..n];
            for ((dst, &s), &w) in input.iter_mut().zip(samples).zip(&self.window) {
                // The graph multiplies in f32, then its RFFT kernel widens to f64.
                *dst = f64::from(s * w);
            }
            // Lengths match the plan, so the transform cannot fail.
            if self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .is_err()
            {
                continue;
            }
            for (r, c) in real.iter_mut().zip(&spectrum) {
                *r = c.re as f32;
            }
            for (band_index, band) in self.bands.iter().enumerate() {
                let bins = &real[band.first_bin..][..band.weights.len()];
                let m: f32 = bins.iter().zip(&band.weights).map(|(r, w)| r * w).sum();
                put(top - band_index, frame, (m * m).powf(self.cfg.exponent));
            }
        }
    }
}

/// Each filterbank row reduced to its run of nonzero weights (`filterbank`: `[bands, bins]`).
fn sparse_bands(filterbank: &[f32], bins: usize) -> Vec<Band> {
    filterbank
        .chunks_exact(bins)
        .map(|row| {
            let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&w| w != 0.0).unwrap_or(0);
            Band {
                first_bin: first,
                weights: row[first..=last.max(first)].to_vec(),
            }
        })
        .collect()
}
