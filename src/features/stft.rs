//! Short-time Fourier transform, centred like librosa's `stft(center=True, pad_mode="constant")`:
//! the signal is padded with `n_fft / 2` zeros on both sides and frame `t` is centred on sample
//! `t * hop`, so a signal of `n` samples has `1 + n / hop` frames.
//!
//! [`StftStream`] takes the signal in chunks of any size and produces exactly the frames a
//! whole-signal transform would, with memory bounded by one FFT window.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Window length, FFT size and hop, in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StftConfig {
    /// FFT size; the window is zero-padded (centred) to this length.
    pub n_fft: usize,
    /// Length of the Hann window.
    pub win_length: usize,
    pub hop_length: usize,
}

impl StftConfig {
    /// Number of power-spectrum bins per frame.
    pub fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames produced for a signal of `n_samples` samples.
    pub fn n_frames(&self, n_samples: usize) -> usize {
        1 + n_samples / self.hop_length
    }
}

/// Periodic Hann window of `win_length`, centred in `n_fft` zeros (scipy's `get_window("hann",
/// fftbins=True)` then librosa's `pad_center`).
pub fn hann_window(config: &StftConfig) -> Vec<f32> {
    let mut window = vec![0.0; config.n_fft];
    let offset = (config.n_fft - config.win_length) / 2;
    let n = config.win_length as f64;
    for i in 0..config.win_length {
        window[offset + i] = (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos()) as f32;
    }
    window
}

/// Streaming power-spectrogram frames.
pub struct StftStream {
    config: StftConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Padded signal not yet fully consumed; frame `next` starts at `pending[0]`.
    pending: Vec<f32>,
    frame_in: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    finished: bool,
}

impl StftStream {
    pub fn new(config: StftConfig) -> Self {
        assert!(
            config.win_length <= config.n_fft && config.hop_length > 0,
            "invalid STFT config {config:?}"
        );
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            config,
            window: hann_window(&config),
            frame_in: fft.make_input_vec(),
            fft,
            // Centring: half a window of zeros before the first sample.
            pending: vec![0.0; config.n_fft / 2],
            spectrum,
            scratch,
            power: vec![0.0; config.n_bins()],
            finished: false,
        }
    }

    pub fn config(&self) -> &StftConfig {
        &self.config
    }

    /// Adds samples; calls `on_frame` with the power spectrum (`n_fft / 2 + 1` bins) of every
    /// frame that is now complete.
    pub fn push(&mut self, samples: &[f32], on_frame: &mut impl FnMut(&[f32])) {
        self.pending.extend_from_slice(samples);
        self.drain_frames(on_frame);
    }

    /// Ends the signal: pads half a window of zeros and emits the remaining frames.
    pub fn finish(&mut self, on_frame: &mut impl FnMut(&[f32])) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.pending
            .extend(std::iter::repeat_n(0.0, self.config.n_fft / 2));
        self.drain_frames(on_frame);
    }

    fn drain_frames(&mut self, on_frame: &mut impl FnMut(&[f32])) {
        let StftConfig {
            n_fft, hop_length, ..
        } = self.config;
        let mut start = 0;
        while start + n_fft <= self.pending.len() {
            self.transform(start);
            on_frame(&self.power);
            start += hop_length;
        }
        self.pending.drain(..start.min(self.pending.len()));
    }

    fn transform(&mut self, start: usize) {
        let frame = &self.pending[start..start + self.config.n_fft];
        for ((dst, &x), &w) in self.frame_in.iter_mut().zip(frame).zip(&self.window) {
            *dst = x * w;
        }
        // Buffer lengths come from the same plan, so the FFT cannot fail on them.
        if self
            .fft
            .process_with_scratch(&mut self.frame_in, &mut self.spectrum, &mut self.scratch)
            .is_ok()
        {
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.norm_sqr();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: StftConfig = StftConfig {
        n_fft: 512,
        win_length: 400,
        hop_length: 160,
    };

    fn frames(signal: &[f32], chunk: usize) -> Vec<Vec<f32>> {
        let mut stream = StftStream::new(CONFIG);
        let mut out = Vec::new();
        let mut collect = |f: &[f32]| out.push(f.to_vec());
        for c in signal.chunks(chunk.max(1)) {
            stream.push(c, &mut collect);
        }
        stream.finish(&mut collect);
        out
    }

    #[test]
    fn frame_count_matches_librosa_centering() {
        for n in [0, 1, 159, 160, 161, 16_000] {
            let signal = vec![0.1; n];
            assert_eq!(frames(&signal, 100).len(), CONFIG.n_frames(n), "n = {n}");
        }
    }

    #[test]
    fn chunking_does_not_change_frames() {
        let signal: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 263) as f32 / 263.0 - 0.5)
            .collect();
        let whole = frames(&signal, signal.len());
        for chunk in [1, 37, 160, 999] {
            assert_eq!(frames(&signal, chunk), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn sine_peaks_in_its_bin() {
        let bin = 32; // 1000 Hz at 16 kHz with n_fft 512
        let signal: Vec<f32> = (0..4000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let spectra = frames(&signal, 4000);
        let mid = &spectra[spectra.len() / 2];
        let peak = mid
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(peak, Some(bin));
    }
}
