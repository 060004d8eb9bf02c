//! Distortions for the fingerprint encoder: the training pairs and the evaluation queries are
//! built by the same code, so the model is trained on what it is scored on.
//!
//! Everything works on mono f32 at [`SAMPLE_RATE`] and draws its randomness from a
//! [`SeededRng`], so a seed fixes every query and every batch.

use realfft::RealFftPlanner;

use crate::features::{LOG_MEL_BANDS, SAMPLE_RATE};
use crate::model::SeededRng;

/// Level below which a signal counts as silent when measuring power (avoids dividing by zero).
const POWER_FLOOR: f64 = 1e-12;
/// SpecAugment: masks per segment and their widest extent.
const FREQ_MASKS: usize = 2;
const FREQ_MASK_BANDS: usize = 8;
const TIME_MASKS: usize = 2;
const TIME_MASK_SHARE: f64 = 0.1;

/// Mean power of a signal.
pub fn power(signal: &[f32]) -> f64 {
    signal.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / signal.len().max(1) as f64
}

/// Signal-to-noise ratio in dB of `signal` over `noise`.
pub fn snr_db(signal: &[f32], noise: &[f32]) -> f64 {
    10.0 * ((power(signal) + POWER_FLOOR) / (power(noise) + POWER_FLOOR)).log10()
}

/// `len` samples of `noise` from a random start, looped if shorter.
pub fn noise_excerpt(noise: &[f32], len: usize, rng: &mut SeededRng) -> Vec<f32> {
    if noise.is_empty() {
        return vec![0.0; len];
    }
    let start = rng.below(noise.len());
    (0..len).map(|i| noise[(start + i) % noise.len()]).collect()
}

/// Adds `noise` (same length as `clean`) scaled so the mixture has the given SNR. Returns the
/// clean signal unchanged when either is silent.
pub fn mix_at_snr(clean: &[f32], noise: &[f32], snr: f64) -> Vec<f32> {
    let (ps, pn) = (power(clean), power(noise));
    if ps < POWER_FLOOR || pn < POWER_FLOOR {
        return clean.to_vec();
    }
    let gain = (ps / (pn * 10f64.powf(snr / 10.0))).sqrt() as f32;
    clean
        .iter()
        .zip(noise)
        .map(|(&s, &n)| s + gain * n)
        .collect()
}

/// A response's direct sound begins at its first tap this close to its strongest (-20 dB): in
/// some rooms a reflection is stronger than the direct sound and arrives up to 87 ms after it
/// (`shared/data/rir`: large_bottle_hall), but a recording made there starts with the direct
/// sound.
const DIRECT_SOUND_LEVEL: f32 = 0.1;

/// Reverberation: `signal` convolved with `rir` (FFT convolution), cut to the signal's length
/// and aligned on the response's onset (its direct sound, see [`DIRECT_SOUND_LEVEL`]), so
/// timestamps do not move. The response is scaled to unit energy, so the output level stays
/// comparable.
pub fn reverberate(signal: &[f32], rir: &[f32]) -> Vec<f32> {
    let energy = rir.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
    if signal.is_empty() || energy < POWER_FLOOR {
        return signal.to_vec();
    }
    let strongest = rir.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let onset = rir
        .iter()
        .position(|x| x.abs() >= DIRECT_SOUND_LEVEL * strongest)
        .unwrap_or(0);
    let scale = (1.0 / energy.sqrt()) as f32;
    let rir: Vec<f32> = rir.iter().map(|&x| x * scale).collect();
    let full = convolve(signal, &rir);
    full[onset..onset + signal.len()].to_vec()
}

/// Full linear convolution (`a.len() + b.len() - 1` samples) through one real FFT.
pub fn convolve(a: &[f32], b: &[f32]) -> Vec<f32> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let out_len = a.len() + b.len() - 1;
    let n = out_len.next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| {
        let mut input = x.to_vec();
        input.resize(n, 0.0);
        let mut out = forward.make_output_vec();
        // Lengths come from the plan itself, the only way this can fail.
        let _ = forward.process(&mut input, &mut out);
        out
    };
    let (fa, fb) = (spectrum(a), spectrum(b));
    let mut product: Vec<_> = fa.iter().zip(&fb).map(|(x, y)| x * y).collect();
    let mut out = inverse.make_output_vec();
    let _ = inverse.process(&mut product, &mut out);
    out.truncate(out_len);
    let norm = 1.0 / n as f32;
    out.iter_mut().for_each(|x| *x *= norm);
    out
}

/// The largest time offset for a segment hop in log-mel frames: 40% of the hop, in samples.
pub fn max_offset_samples(hop_frames: usize) -> usize {
    hop_frames * crate::features::LOG_MEL_HOP * 2 / 5
}

/// One distortion of the evaluation protocol (and of training).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distortion {
    Clean,
    Noise { snr_db: f64 },
    Reverb,
    NoiseReverb { snr_db: f64 },
}

impl Distortion {
    /// The conditions of `earshot eval fingerprint`.
    pub const EVALUATION: [Distortion; 9] = [
        Distortion::Clean,
        Distortion::Noise { snr_db: 0.0 },
        Distortion::Noise { snr_db: 5.0 },
        Distortion::Noise { snr_db: 10.0 },
        Distortion::Noise { snr_db: 15.0 },
        Distortion::Noise { snr_db: 20.0 },
        Distortion::Reverb,
        Distortion::NoiseReverb { snr_db: 0.0 },
        Distortion::NoiseReverb { snr_db: 10.0 },
    ];

    pub fn name(&self) -> String {
        match self {
            Distortion::Clean => "clean".into(),
            Distortion::Noise { snr_db } => format!("noise {snr_db:.0} dB"),
            Distortion::Reverb => "reverb".into(),
            Distortion::NoiseReverb { snr_db } => format!("noise {snr_db:.0} dB + reverb"),
        }
    }

    /// Applies the distortion with a noise and an impulse response drawn from `bank`.
    pub fn apply(&self, clean: &[f32], bank: &NoiseBank, rng: &mut SeededRng) -> Vec<f32> {
        let reverb = |x: &[f32], rng: &mut SeededRng| match bank.pick_rir(rng) {
            Some(rir) => reverberate(x, rir),
            None => x.to_vec(),
        };
        let noisy = |x: &[f32], snr: f64, rng: &mut SeededRng| {
            let noise = bank.excerpt(x.len(), rng);
            mix_at_snr(x, &noise, snr)
        };
        match *self {
            Distortion::Clean => clean.to_vec(),
            Distortion::Noise { snr_db } => noisy(clean, snr_db, rng),
            Distortion::Reverb => reverb(clean, rng),
            Distortion::NoiseReverb { snr_db } => {
                let wet = reverb(clean, rng);
                noisy(&wet, snr_db, rng)
            }
        }
    }

    /// A random training distortion: noise at 0-25 dB, reverb, both, or neither. SNRs lean
    /// towards the low end (median 9 dB), where matching is hard.
    pub fn random(rng: &mut SeededRng) -> Distortion {
        let snr_db = rng.uniform().powf(1.5) * 25.0;
        match rng.below(4) {
            0 => Distortion::Clean,
            1 => Distortion::Noise { snr_db },
            2 => Distortion::Reverb,
            _ => Distortion::NoiseReverb { snr_db },
        }
    }
}

/// Background noises and room impulse responses, decoded once (mono, 16 kHz).
#[derive(Debug, Clone, Default)]
pub struct NoiseBank {
    pub noises: Vec<Vec<f32>>,
    pub rirs: Vec<Vec<f32>>,
}

impl NoiseBank {
    /// A noise excerpt of `len` samples from a random recording (silence if there is none).
    pub fn excerpt(&self, len: usize, rng: &mut SeededRng) -> Vec<f32> {
        if self.noises.is_empty() {
            return vec![0.0; len];
        }
        let noise = &self.noises[rng.below(self.noises.len())];
        noise_excerpt(noise, len, rng)
    }

    pub fn pick_rir(&self, rng: &mut SeededRng) -> Option<&[f32]> {
        (!self.rirs.is_empty()).then(|| self.rirs[rng.below(self.rirs.len())].as_slice())
    }
}

/// SpecAugment on frame-major log-mel: two band ranges and two frame ranges set to the mean level.
pub fn spec_augment(log_mel: &mut [f32], rng: &mut SeededRng) {
    let frames = log_mel.len() / LOG_MEL_BANDS;
    let mean = log_mel.iter().sum::<f32>() / log_mel.len().max(1) as f32;
    for _ in 0..FREQ_MASKS {
        let width = rng.below(FREQ_MASK_BANDS + 1);
        let first = rng.below(LOG_MEL_BANDS - width + 1);
        for t in 0..frames {
            log_mel[t * LOG_MEL_BANDS + first..t * LOG_MEL_BANDS + first + width].fill(mean);
        }
    }
    let widest = (frames as f64 * TIME_MASK_SHARE) as usize;
    for _ in 0..TIME_MASKS {
        let width = rng.below(widest + 1);
        let first = rng.below(frames - width + 1);
        log_mel[first * LOG_MEL_BANDS..(first + width) * LOG_MEL_BANDS].fill(mean);
    }
}

/// Seconds of audio in `samples`.
pub fn seconds(samples: usize) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize, freq: f32) -> Vec<f32> {
        (0..len)
            .map(|i| (i as f32 * freq * std::f32::consts::TAU / SAMPLE_RATE as f32).sin())
            .collect()
    }

    #[test]
    fn noise_is_mixed_at_the_asked_snr() {
        let mut rng = SeededRng::new(3);
        let clean = tone(16_000, 440.0);
        let noise: Vec<f32> = (0..16_000).map(|_| rng.normal() as f32 * 0.3).collect();
        for snr in [0.0, 5.0, 10.0, 20.0, 25.0] {
            let mixed = mix_at_snr(&clean, &noise, snr);
            let added: Vec<f32> = mixed.iter().zip(&clean).map(|(m, c)| m - c).collect();
            assert!((snr_db(&clean, &added) - snr).abs() < 0.5, "snr {snr}");
        }
    }

    #[test]
    fn convolution_has_full_length_and_matches_the_direct_sum() {
        let a = [1.0, 2.0, 3.0];
        let b = [0.5, -1.0];
        let c = convolve(&a, &b);
        let expected = [0.5, 0.0, -0.5, -3.0];
        assert_eq!(c.len(), a.len() + b.len() - 1);
        for (x, y) in c.iter().zip(expected) {
            assert!((x - y).abs() < 1e-5, "{c:?}");
        }
    }

    #[test]
    fn reverb_keeps_length_timing_and_energy_of_a_unit_response() {
        let signal = tone(8_000, 300.0);
        // A delayed unit impulse: aligned on its peak, the output is the input.
        let mut rir = vec![0.0; 400];
        rir[100] = 2.0;
        let wet = reverberate(&signal, &rir);
        assert_eq!(wet.len(), signal.len());
        for (w, s) in wet.iter().zip(&signal) {
            assert!((w - s).abs() < 1e-4);
        }
    }

    #[test]
    fn reverb_starts_at_the_direct_sound_when_a_reflection_is_stronger() {
        let mut rng = SeededRng::new(5);
        let signal: Vec<f32> = (0..4_000).map(|_| rng.normal() as f32).collect();
        // Direct sound at 50, a reflection twice as strong 1,000 samples (62 ms) later.
        let mut rir = vec![0.0; 1_600];
        rir[50] = 0.5;
        rir[1_050] = 1.0;
        let wet = reverberate(&signal, &rir);
        let lag_of = |lag: usize| -> f32 { (0..2_000).map(|i| wet[i + lag] * signal[i]).sum() };
        // The input itself at lag 0 (weight 0.45 of unit-energy 0.5 and 1.0), its reflection
        // 1,000 samples later (0.89); aligned on the strongest tap, lag 1,000 would hold nothing.
        assert!(lag_of(0) > 0.3 * 2_000.0, "{}", lag_of(0));
        assert!(lag_of(1_000) > lag_of(0), "{} {}", lag_of(1_000), lag_of(0));
    }
}
