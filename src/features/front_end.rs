//! What an encoder reads, declared by the encoder: mono samples at its own rate, turned into
//! frames by its own front end, then cut into windows of frames (see
//! [`crate::model::EncoderInput`]).
//!
//! Every front end streams ([`FrameFeature`]): a file of any length is read in chunks, and the
//! frames are exactly those of the whole signal at once. Earshot's own models read log-mel;
//! an encoder with its own front end inside its network (BirdNET) reads the samples, a frame
//! being `frame` consecutive samples.

use serde::{Deserialize, Serialize};

use super::segment::SILENCE_DB;
use super::{FeatureMatrix, FrameFeature, LogMel, LogMelConfig};

/// A waveform whose loudest sample stays under this (-80 dBFS, as [`SILENCE_DB`] for log-mel)
/// is silence.
pub const SILENT_SAMPLE: f32 = 1e-4;

/// How an encoder turns mono samples into frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FrontEnd {
    /// Log-mel frames in dB at 16 kHz.
    LogMel(LogMelConfig),
    /// The samples themselves, `frame` at a time.
    Waveform { sample_rate: u32, frame: usize },
}

impl FrontEnd {
    /// The rate of the mono samples the front end reads (Hz).
    pub fn sample_rate(&self) -> u32 {
        match self {
            FrontEnd::LogMel(c) => c.sample_rate,
            FrontEnd::Waveform { sample_rate, .. } => *sample_rate,
        }
    }

    /// What the frames are, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            FrontEnd::LogMel(_) => "log-mel",
            FrontEnd::Waveform { .. } => "waveform",
        }
    }

    /// Samples from one frame's start to the next's.
    pub fn frame_samples(&self) -> usize {
        match self {
            FrontEnd::LogMel(c) => c.hop_length,
            FrontEnd::Waveform { frame, .. } => *frame,
        }
    }

    /// Frames the front end makes of a signal of `samples` samples (log-mel frames are
    /// centred: one more than whole hops; waveform frames pad the last one).
    pub fn frame_count(&self, samples: usize) -> usize {
        match self {
            FrontEnd::LogMel(c) => c.stft().n_frames(samples),
            FrontEnd::Waveform { frame, .. } => samples.div_ceil((*frame).max(1)),
        }
    }

    pub fn frames_per_second(&self) -> f64 {
        f64::from(self.sample_rate()) / self.frame_samples() as f64
    }

    /// Values per frame.
    pub fn dims(&self) -> usize {
        match self {
            FrontEnd::LogMel(c) => c.n_mels,
            FrontEnd::Waveform { frame, .. } => *frame,
        }
    }

    /// Whether these settings can be computed (a loaded index may hold anything).
    pub fn is_valid(&self) -> bool {
        match self {
            FrontEnd::LogMel(c) => c.is_valid(),
            FrontEnd::Waveform { sample_rate, frame } => {
                crate::audio::OUTPUT_RATE_RANGE.contains(sample_rate)
                    && (1..=1 << 20).contains(frame)
            }
        }
    }

    /// A fresh streaming front end.
    pub fn stream(&self) -> Box<dyn FrameFeature + Send> {
        match self {
            FrontEnd::LogMel(c) => Box::new(LogMel::new(c)),
            FrontEnd::Waveform { frame, .. } => Box::new(WaveformFrames::new(*frame)),
        }
    }

    /// All frames of a whole signal.
    pub fn compute(&self, samples: &[f32]) -> FeatureMatrix {
        self.stream().compute(samples)
    }

    /// Whether frames of this front end hold nothing to match (see [`SILENCE_DB`] and
    /// [`SILENT_SAMPLE`]): silence would match all other silence.
    pub fn is_silent(&self, values: &[f32]) -> bool {
        match self {
            FrontEnd::LogMel(_) => values.iter().all(|&x| x < SILENCE_DB),
            FrontEnd::Waveform { .. } => values.iter().all(|&x| x.abs() < SILENT_SAMPLE),
        }
    }
}

/// The samples, cut into frames of `frame`; the last, partial frame is completed with zeros.
pub struct WaveformFrames {
    frame: usize,
    pending: Vec<f32>,
}

impl WaveformFrames {
    pub fn new(frame: usize) -> Self {
        Self {
            frame: frame.max(1),
            pending: Vec::new(),
        }
    }
}

impl FrameFeature for WaveformFrames {
    fn dims(&self) -> usize {
        self.frame
    }

    fn push(&mut self, samples: &[f32], on_frame: &mut dyn FnMut(&[f32])) {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / self.frame * self.frame;
        self.pending[..whole]
            .chunks_exact(self.frame)
            .for_each(on_frame);
        self.pending.drain(..whole);
    }

    fn finish(&mut self, on_frame: &mut dyn FnMut(&[f32])) {
        if !self.pending.is_empty() {
            self.pending.resize(self.frame, 0.0);
            on_frame(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waveform_frames_are_the_samples_with_a_zero_padded_tail() {
        let mut frames = Vec::new();
        let mut w = WaveformFrames::new(3);
        let mut keep = |f: &[f32]| frames.push(f.to_vec());
        w.push(&[1.0, 2.0], &mut keep);
        w.push(&[3.0, 4.0], &mut keep);
        w.finish(&mut keep);
        assert_eq!(frames, vec![vec![1.0, 2.0, 3.0], vec![4.0, 0.0, 0.0]]);
    }

    #[test]
    fn log_mel_front_end_reads_16_khz_in_10_ms_frames() {
        let f = FrontEnd::LogMel(LogMelConfig::default());
        assert_eq!(
            (f.sample_rate(), f.frame_samples(), f.dims()),
            (16_000, 160, 64)
        );
        assert!(f.is_silent(&[-100.0; 64]) && !f.is_silent(&[-20.0; 64]));
        assert_eq!(
            f.frame_count(16_000),
            f.compute(&vec![0.1; 16_000]).n_frames
        );
        let w = FrontEnd::Waveform {
            sample_rate: 48_000,
            frame: 2400,
        };
        assert_eq!(w.frames_per_second(), 20.0);
        assert!(w.is_silent(&[0.0; 8]) && !w.is_silent(&[0.0, 0.5]));
        assert_eq!((w.frame_count(4800), w.frame_count(4801)), (2, 3));
    }
}
