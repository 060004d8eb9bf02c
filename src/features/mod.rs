//! Frame features of a 16 kHz mono signal: STFT, log-mel, MFCC and AudioNet's multi-window MFCC.
//!
//! Every extractor is streaming ([`FrameFeature::push`] / [`FrameFeature::finish`]) and gives the
//! same frames as on the whole signal at once; the conventions are librosa's (centred frames,
//! periodic Hann window, Slaney mel, orthonormal DCT-II), checked by golden-value tests
//! (`tests/golden/`). Log values are `10 * log10(max(power, POWER_FLOOR))` without librosa's
//! per-clip `top_db` clipping, so a segment's features do not depend on the rest of its file.

pub mod front_end;
pub mod mel;
pub mod mfcc;
pub mod segment;
pub mod stft;

use serde::{Deserialize, Serialize};

use crate::audio::TARGET_SAMPLE_RATE;
pub use front_end::FrontEnd;
use mel::MelFilterbank;
use mfcc::Dct;
use stft::{StftConfig, StftStream};

/// Rate of every signal the features see.
pub const SAMPLE_RATE: u32 = TARGET_SAMPLE_RATE;
/// 25 ms analysis window at 16 kHz.
pub const LOG_MEL_WINDOW: usize = 400;
/// 10 ms hop at 16 kHz: 100 frames per second.
pub const LOG_MEL_HOP: usize = 160;
/// Smallest power of two holding the window.
pub const LOG_MEL_N_FFT: usize = 512;
pub const LOG_MEL_BANDS: usize = 64;
/// Power below this is clipped before the log (librosa's `amin`): -100 dB.
pub const POWER_FLOOR: f32 = 1e-10;
/// Cepstral coefficients kept by [`Mfcc`] (librosa's default).
pub const MFCC_COEFFS: usize = 20;

/// AudioNet computed its features at 44.1 kHz; its window and hop lengths are kept in time.
const AUDIONET_RATE: usize = 44_100;
const fn audionet_samples_at_16k(samples_at_44k: usize) -> usize {
    (samples_at_44k * SAMPLE_RATE as usize + AUDIONET_RATE / 2) / AUDIONET_RATE
}
/// AudioNet's three windows, 4096, 11025 and 22050 samples at 44.1 kHz (93, 250, 500 ms).
pub const MULTI_WINDOW_LENGTHS: [usize; 3] = [
    audionet_samples_at_16k(4096),
    audionet_samples_at_16k(11_025),
    audionet_samples_at_16k(22_050),
];
/// AudioNet's hop, 1024 samples at 44.1 kHz (23 ms).
pub const MULTI_WINDOW_HOP: usize = audionet_samples_at_16k(1024);
/// Mel bands under each multi-window MFCC (librosa's default for `mfcc`).
pub const MULTI_WINDOW_BANDS: usize = 128;
/// AudioNet keeps 40 coefficients.
pub const MULTI_WINDOW_COEFFS: usize = 40;

/// Settings of a log-mel spectrogram; saved with every index so features stay comparable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogMelConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub win_length: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    pub fmin_hz: f64,
    pub fmax_hz: f64,
}

impl Default for LogMelConfig {
    fn default() -> Self {
        Self {
            sample_rate: SAMPLE_RATE,
            n_fft: LOG_MEL_N_FFT,
            win_length: LOG_MEL_WINDOW,
            hop_length: LOG_MEL_HOP,
            n_mels: LOG_MEL_BANDS,
            fmin_hz: 0.0,
            fmax_hz: f64::from(SAMPLE_RATE) / 2.0,
        }
    }
}

impl LogMelConfig {
    pub fn stft(&self) -> StftConfig {
        StftConfig {
            n_fft: self.n_fft,
            win_length: self.win_length,
            hop_length: self.hop_length,
        }
    }

    /// Whether these settings can be computed (a loaded index may hold anything).
    pub fn is_valid(&self) -> bool {
        self.sample_rate == SAMPLE_RATE
            && self.n_fft.is_power_of_two()
            && (1..=self.n_fft).contains(&self.win_length)
            && self.n_fft <= 1 << 16
            && self.hop_length > 0
            && (1..=512).contains(&self.n_mels)
            && 0.0 <= self.fmin_hz
            && self.fmin_hz < self.fmax_hz
            && self.fmax_hz <= f64::from(self.sample_rate) / 2.0
    }

    pub fn frames_per_second(&self) -> f64 {
        f64::from(self.sample_rate) / self.hop_length as f64
    }

    /// Settings of one of AudioNet's multi-window MFCC branches.
    pub fn multi_window(win_length: usize) -> Self {
        Self {
            n_fft: win_length.next_power_of_two(),
            win_length,
            hop_length: MULTI_WINDOW_HOP,
            n_mels: MULTI_WINDOW_BANDS,
            ..Self::default()
        }
    }
}

/// A frames x dims matrix, frame-major (`data[t * dims + d]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureMatrix {
    pub n_frames: usize,
    pub dims: usize,
    pub data: Vec<f32>,
}

impl FeatureMatrix {
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * self.dims..(t + 1) * self.dims]
    }

    pub fn frames(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dims.max(1))
    }
}

/// A feature computed frame by frame from a streamed signal.
pub trait FrameFeature {
    /// Values per frame.
    fn dims(&self) -> usize;
    /// Adds samples; `on_frame` receives every frame completed by them.
    fn push(&mut self, samples: &[f32], on_frame: &mut dyn FnMut(&[f32]));
    /// Ends the signal and emits the last frames.
    fn finish(&mut self, on_frame: &mut dyn FnMut(&[f32]));

    /// All frames of a whole signal (the extractor must be fresh).
    fn compute(&mut self, samples: &[f32]) -> FeatureMatrix {
        let mut data = Vec::new();
        let mut keep = |frame: &[f32]| data.extend_from_slice(frame);
        self.push(samples, &mut keep);
        self.finish(&mut keep);
        let dims = self.dims();
        FeatureMatrix {
            n_frames: data.len() / dims.max(1),
            dims,
            data,
        }
    }
}

/// Log-mel spectrogram in dB.
pub struct LogMel {
    stft: StftStream,
    mel: MelFilterbank,
    frame: Vec<f32>,
}

impl LogMel {
    pub fn new(config: &LogMelConfig) -> Self {
        let mel = MelFilterbank::new(
            config.sample_rate,
            config.n_fft,
            config.n_mels,
            config.fmin_hz,
            config.fmax_hz,
        );
        Self {
            stft: StftStream::new(config.stft()),
            frame: vec![0.0; mel.n_mels()],
            mel,
        }
    }
}

fn power_to_db(x: f32) -> f32 {
    10.0 * x.max(POWER_FLOOR).log10()
}

/// One power spectrum to one log-mel frame, handed on.
fn log_mel_frame(
    mel: &MelFilterbank,
    power: &[f32],
    frame: &mut [f32],
    on_frame: &mut dyn FnMut(&[f32]),
) {
    mel.apply(power, frame);
    frame.iter_mut().for_each(|x| *x = power_to_db(*x));
    on_frame(frame);
}

impl FrameFeature for LogMel {
    fn dims(&self) -> usize {
        self.mel.n_mels()
    }

    fn push(&mut self, samples: &[f32], on_frame: &mut dyn FnMut(&[f32])) {
        let (mel, frame) = (&self.mel, &mut self.frame);
        self.stft.push(samples, &mut |power: &[f32]| {
            log_mel_frame(mel, power, frame, on_frame)
        });
    }

    fn finish(&mut self, on_frame: &mut dyn FnMut(&[f32])) {
        let (mel, frame) = (&self.mel, &mut self.frame);
        self.stft
            .finish(&mut |power: &[f32]| log_mel_frame(mel, power, frame, on_frame));
    }
}

/// MFCC: orthonormal DCT-II of the log-mel frames.
pub struct Mfcc {
    log_mel: LogMel,
    dct: Dct,
    frame: Vec<f32>,
}

impl Mfcc {
    pub fn new(config: &LogMelConfig, n_coeffs: usize) -> Self {
        let dct = Dct::new(config.n_mels, n_coeffs);
        Self {
            log_mel: LogMel::new(config),
            frame: vec![0.0; n_coeffs],
            dct,
        }
    }
}

impl FrameFeature for Mfcc {
    fn dims(&self) -> usize {
        self.dct.n_out()
    }

    fn push(&mut self, samples: &[f32], on_frame: &mut dyn FnMut(&[f32])) {
        let (dct, frame) = (&self.dct, &mut self.frame);
        self.log_mel.push(samples, &mut |log_mel| {
            dct_frame(dct, log_mel, frame, on_frame)
        });
    }

    fn finish(&mut self, on_frame: &mut dyn FnMut(&[f32])) {
        let (dct, frame) = (&self.dct, &mut self.frame);
        self.log_mel
            .finish(&mut |log_mel| dct_frame(dct, log_mel, frame, on_frame));
    }
}

/// One log-mel frame to one MFCC frame, handed on.
fn dct_frame(dct: &Dct, log_mel: &[f32], frame: &mut [f32], on_frame: &mut dyn FnMut(&[f32])) {
    dct.apply(log_mel, frame);
    on_frame(frame);
}

/// AudioNet's multi-window MFCC: three window lengths, one hop, stacked as channels.
pub struct MultiWindowMfcc {
    branches: Vec<Mfcc>,
}

impl Default for MultiWindowMfcc {
    fn default() -> Self {
        let branches = MULTI_WINDOW_LENGTHS
            .iter()
            .map(|&w| Mfcc::new(&LogMelConfig::multi_window(w), MULTI_WINDOW_COEFFS))
            .collect();
        Self { branches }
    }
}

impl MultiWindowMfcc {
    /// Streams samples through every branch; `on_frame(channel, frame)`.
    pub fn push(&mut self, samples: &[f32], on_frame: &mut dyn FnMut(usize, &[f32])) {
        for (c, branch) in self.branches.iter_mut().enumerate() {
            branch.push(samples, &mut |f| on_frame(c, f));
        }
    }

    pub fn finish(&mut self, on_frame: &mut dyn FnMut(usize, &[f32])) {
        for (c, branch) in self.branches.iter_mut().enumerate() {
            branch.finish(&mut |f| on_frame(c, f));
        }
    }

    /// One matrix per channel, all with the same number of frames.
    pub fn compute(&mut self, samples: &[f32]) -> Vec<FeatureMatrix> {
        self.branches
            .iter_mut()
            .map(|b| b.compute(samples))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_window_constants_follow_audionet() {
        assert_eq!(MULTI_WINDOW_LENGTHS, [1486, 4000, 8000]);
        assert_eq!(MULTI_WINDOW_HOP, 372);
    }

    #[test]
    fn silence_is_at_the_floor() {
        let m = LogMel::new(&LogMelConfig::default()).compute(&vec![0.0; 1600]);
        assert_eq!((m.n_frames, m.dims), (11, 64));
        assert!(m.data.iter().all(|&x| x == -100.0));
    }

    #[test]
    fn multi_window_channels_align() {
        let signal: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin()).collect();
        let channels = MultiWindowMfcc::default().compute(&signal);
        assert_eq!(channels.len(), 3);
        assert!(
            channels
                .iter()
                .all(|c| c.n_frames == 1 + 16_000 / MULTI_WINDOW_HOP && c.dims == 40)
        );
    }
}
