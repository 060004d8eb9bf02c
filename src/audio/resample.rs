//! Streaming sample-rate conversion of a mono signal with rubato's FFT resampler.
//!
//! The decoder feeds packets of any size; this module buffers them into the fixed input chunks
//! rubato wants, trims the resampler's start-up delay so output sample 0 lines up with input
//! sample 0, and flushes the tail so the output holds exactly `ceil(n_in * out / in)` samples.

use rubato::audioadapter_buffers::direct::{InterleavedSlice, InterleavedSlice as SliceMut};
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames per resampler call. Larger chunks amortise the FFT; 4096 frames is under 0.1 s
/// at 44.1 kHz, so memory stays small whatever the file length.
const INPUT_CHUNK_FRAMES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("cannot resample from {from} Hz to {to} Hz: {reason}")]
pub struct ResampleError {
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// Converts a mono stream from one fixed rate to another, chunk by chunk.
pub struct StreamResampler {
    /// `None` when the rates are equal and samples pass through untouched.
    fft: Option<Fft<f32>>,
    ratio: f64,
    /// Input received but not yet consumed by the resampler.
    pending: Vec<f32>,
    input_total: u64,
    out: Output,
}

/// The output side: what is ready for the caller, and the delay still to trim.
struct Output {
    /// Output of the current `push`/`finish` call.
    ready: Vec<f32>,
    /// Scratch buffer for one resampler call.
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's start-up delay.
    delay_left: usize,
    total: u64,
}

impl Output {
    /// Moves `produced` frames of scratch output into `ready`, dropping the start-up delay first.
    fn emit(&mut self, produced: usize) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        self.ready.extend_from_slice(&self.scratch[skip..produced]);
        self.total += (produced - skip) as u64;
    }
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let err = |reason: String| ResampleError { from, to, reason };
        if from == 0 || to == 0 {
            return Err(err("sample rate must be positive".into()));
        }
        let fft = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(
                from as usize,
                to as usize,
                INPUT_CHUNK_FRAMES,
                1,
                FixedSync::Input,
            )
            .map_err(|e| err(e.to_string()))?;
            Some(fft)
        };
        let (scratch_len, delay_left) = fft
            .as_ref()
            .map_or((0, 0), |f| (f.output_frames_max(), f.output_delay()));
        Ok(Self {
            fft,
            ratio: f64::from(to) / f64::from(from),
            pending: Vec::with_capacity(2 * INPUT_CHUNK_FRAMES),
            input_total: 0,
            out: Output {
                ready: Vec::new(),
                scratch: vec![0.0; scratch_len],
                delay_left,
                total: 0,
            },
        })
    }

    /// Feeds input samples and returns the output samples that became available.
    pub fn push(&mut self, input: &[f32]) -> &[f32] {
        let out = &mut self.out;
        out.ready.clear();
        self.input_total += input.len() as u64;
        let Some(fft) = self.fft.as_mut() else {
            out.ready.extend_from_slice(input);
            out.total += input.len() as u64;
            return &out.ready;
        };
        self.pending.extend_from_slice(input);
        let mut consumed = 0;
        loop {
            let need = fft.input_frames_next();
            if self.pending.len() - consumed < need {
                break;
            }
            let chunk = &self.pending[consumed..consumed + need];
            let produced = run_chunk(fft, chunk, None, &mut out.scratch);
            consumed += need;
            out.emit(produced);
        }
        self.pending.drain(..consumed);
        &out.ready
    }

    /// Flushes the buffered tail; the stream's total output is then `ceil(n_in * ratio)` samples.
    pub fn finish(&mut self) -> &[f32] {
        let out = &mut self.out;
        out.ready.clear();
        let expected = (self.input_total as f64 * self.ratio).ceil() as u64;
        let Some(fft) = self.fft.as_mut() else {
            return &out.ready;
        };
        // Silence pushes the remaining real samples through the filter delay.
        while out.total < expected {
            let available = self.pending.len().min(fft.input_frames_next());
            let chunk: Vec<f32> = self.pending.drain(..available).collect();
            let produced = run_chunk(fft, &chunk, Some(available), &mut out.scratch);
            if produced == 0 {
                break; // cannot happen with valid buffers; never spin
            }
            let wanted = (expected - out.total) as usize;
            out.emit(produced.min(wanted + out.delay_left));
        }
        &out.ready
    }
}

/// One resampler call on `chunk` (mono); `partial` marks a short final chunk padded with silence.
fn run_chunk(
    fft: &mut Fft<f32>,
    chunk: &[f32],
    partial: Option<usize>,
    scratch: &mut [f32],
) -> usize {
    let frames_out = scratch.len();
    // Both adapters are built from slices whose lengths we just checked, so these cannot fail;
    // a failure would be a bug in this module, reported as zero output rather than a panic.
    let Ok(input) = InterleavedSlice::new(chunk, 1, chunk.len()) else {
        return 0;
    };
    let Ok(mut output) = SliceMut::new_mut(scratch, 1, frames_out) else {
        return 0;
    };
    let indexing = partial.map(|n| Indexing {
        input_offset: 0,
        output_offset: 0,
        partial_len: Some(n),
        active_channels_mask: None,
    });
    match fft.process_into_buffer(&input, &mut output, indexing.as_ref()) {
        Ok((_, written)) => written,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample_all(from: u32, to: u32, input: &[f32], push_size: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(push_size) {
            out.extend_from_slice(r.push(chunk));
        }
        out.extend_from_slice(r.finish());
        out
    }

    fn sine(rate: u32, freq: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn output_length_is_exact_for_any_push_size() {
        let input = sine(44_100, 440.0, 44_100 + 17);
        for push in [1, 100, 4096, 50_000] {
            let out = resample_all(44_100, 16_000, &input, push);
            assert_eq!(
                out.len(),
                ((44_117.0f64 * 16_000.0 / 44_100.0).ceil()) as usize,
                "push {push}"
            );
        }
    }

    #[test]
    fn sine_keeps_phase_and_amplitude() {
        let input = sine(48_000, 1000.0, 48_000);
        let out = resample_all(48_000, 16_000, &input, 1000);
        let expected = sine(16_000, 1000.0, out.len());
        // Skip the edges, where the filter sees zeros outside the clip.
        let worst = out[200..out.len() - 200]
            .iter()
            .zip(&expected[200..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-3, "max error {worst}");
    }

    #[test]
    fn frequencies_above_new_nyquist_are_removed() {
        let input = sine(96_000, 12_000.0, 96_000);
        let out = resample_all(96_000, 16_000, &input, 4096);
        let rms = (out[500..out.len() - 500].iter().map(|x| x * x).sum::<f32>()
            / (out.len() - 1000) as f32)
            .sqrt();
        assert!(rms < 1e-3, "aliased energy rms {rms}");
    }

    #[test]
    fn equal_rates_pass_through() {
        let input = sine(16_000, 440.0, 1234);
        assert_eq!(resample_all(16_000, 16_000, &input, 100), input);
    }

    #[test]
    fn a_single_sample_gives_one_sample() {
        assert_eq!(resample_all(44_100, 16_000, &[0.5], 1).len(), 1);
    }
}
