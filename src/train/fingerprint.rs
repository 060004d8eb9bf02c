//! Training the `fingerprint` encoder: NT-Xent on (clean, distorted) pairs of 0.96 s windows.
//!
//! A pair is a window of a training recording and the same window shifted by up to 40% of the
//! segment hop, passed through a random [`Distortion`] (noise at 0-25 dB, reverberation, both
//! or neither) and SpecAugment. Codes are trained by NT-Xent on the signs (straight-through)
//! plus a bit-balance term, so that codes fill the bucket index evenly.
//!
//! Windows are drawn uniformly over the training audio, never from near-silence (which cannot
//! be told from other silence), and every other pair in a batch has a window 120-480 ms away in
//! the same recording among its negatives, so matches land on the right segment. Both views go
//! through the network as one batch. After each epoch fixed validation pairs are scored with the
//! network in evaluation mode, and the best epoch's weights are the ones saved.
//!
//! Audio is decoded once per run (mono 16 kHz, in memory); log-mel is computed per window,
//! since the distortions act on the waveform.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment::{Distortion, NoiseBank, max_offset_samples, spec_augment};
use super::checkpoint::{remove_checkpoint, same_options, save_checkpoint, start_or_resume};
use super::loss::nt_xent;
use super::optim::var_tensors;
use super::{TrainError, cosine_lr};
use crate::features::{FrameFeature, LOG_MEL_BANDS, LOG_MEL_HOP, LogMel, LogMelConfig};
use crate::model::SeededRng;
use crate::model::config::{write_folder, write_tensors};
use crate::model::fingerprint::{
    FingerprintConfig, FingerprintNet, SEGMENT_FRAMES, fit_to_segment, l2_normalise,
};
use crate::model::lsh::Grid;

/// NT-Xent temperature (the fingerprint paper's).
const TEMPERATURE: f64 = 0.1;
/// Weight of the bit-balance term.
const BALANCE_WEIGHT: f64 = 1.0;
/// Samples of one window (96 frames of 10 ms, plus the last frame's window).
const WINDOW_SAMPLES: usize = SEGMENT_FRAMES * LOG_MEL_HOP;
/// Windows quieter than this mean power (-60 dBFS) are redrawn, up to `QUIET_RETRIES` times.
const QUIET_POWER: f64 = 1e-6;
const QUIET_RETRIES: usize = 20;
/// Distance in samples (120-480 ms at 16 kHz) of the same-recording neighbour in a batch.
const NEIGHBOUR_GAP: (usize, usize) = (1920, 7680);
/// Fixed (clean, distorted) pairs scored after every epoch to keep the best weights.
pub const VALIDATION_PAIRS: usize = 512;
/// The validation pairs' generator seed, apart from the training steps'.
const VALIDATION_SEED: u64 = 0x005E_ED0F_7A11;
/// File in the checkpoint folder with the weights of the best epoch so far.
const BEST_WEIGHTS: &str = "best.safetensors";
/// Windows per forward pass when scoring the validation pairs.
const VALIDATION_CHUNK: usize = 128;

/// Largest time offset between the two views of a pair, in samples.
fn max_shift() -> usize {
    max_offset_samples(crate::model::Mode::Fingerprint.segmentation().hop)
}

/// Window starts in a recording of `len` samples that leave room for the offset either side.
fn window_starts(len: usize) -> usize {
    len.saturating_sub(WINDOW_SAMPLES + 2 * max_shift()).max(1)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FingerprintTrainOptions {
    pub bits: usize,
    pub epochs: usize,
    /// Pairs per step.
    pub batch_size: usize,
    pub steps_per_epoch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

/// Progress for the caller's display; the answer can stop the run (see the events trainer).
pub enum FingerprintProgress<'a> {
    Batch {
        done: usize,
        total: usize,
        loss: f64,
    },
    Epoch(&'a FingerprintEpoch),
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FingerprintEpoch {
    pub epoch: usize,
    pub loss: f64,
    /// Share of pairs whose two views' codes are each other's nearest in the batch.
    pub pair_accuracy: f64,
    /// The same on fixed validation pairs, with the network in evaluation mode (batch-norm
    /// running statistics, as when indexing) and 2 x 512 windows to choose from.
    #[serde(default)]
    pub validation: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    options: FingerprintTrainOptions,
    epochs_done: usize,
    step: usize,
    seconds: f64,
    history: Vec<FingerprintEpoch>,
    /// The epoch with the best validation accuracy so far, and that accuracy.
    #[serde(default)]
    best: Option<(usize, f64)>,
}

/// Recordings to train on, with the noise bank for the distortions.
pub struct FingerprintData {
    recordings: Vec<Vec<f32>>,
    bank: NoiseBank,
    /// Running total of window starts per recording, for picking windows uniformly over time.
    starts_before: Vec<usize>,
}

impl FingerprintData {
    /// Recordings shorter than two windows are left out.
    pub fn new(recordings: Vec<Vec<f32>>, bank: NoiseBank) -> Self {
        let recordings: Vec<Vec<f32>> = recordings
            .into_iter()
            .filter(|r| r.len() > 2 * WINDOW_SAMPLES)
            .collect();
        let starts_before = recordings
            .iter()
            .scan(0, |total, r| {
                *total += window_starts(r.len());
                Some(*total)
            })
            .collect();
        Self {
            recordings,
            bank,
            starts_before,
        }
    }

    pub fn recordings(&self) -> &[Vec<f32>] {
        &self.recordings
    }

    pub fn bank(&self) -> &NoiseBank {
        &self.bank
    }

    /// A window (recording, first sample) drawn uniformly over all audio, skipping near-silent
    /// ones: silence cannot be told apart from other silence, and ESC-50 clips are often padded
    /// with it.
    pub(crate) fn pick_window(&self, rng: &mut SeededRng) -> (usize, usize) {
        let total = self.starts_before.last().copied().unwrap_or(0);
        let mut pick = (0, max_shift());
        for _ in 0..QUIET_RETRIES {
            let n = rng.below(total.max(1));
            let rec = self.starts_before.partition_point(|&s| s <= n);
            let before = if rec == 0 {
                0
            } else {
                self.starts_before[rec - 1]
            };
            pick = (rec, max_shift() + n - before);
            if !self.is_quiet(pick) {
                break;
            }
        }
        pick
    }

    /// A window of the same recording 120-480 ms before or after `(rec, start)`: a near
    /// neighbour the network must tell apart so matches land on the right segment.
    fn neighbour(&self, (rec, start): (usize, usize), rng: &mut SeededRng) -> (usize, usize) {
        let gap = NEIGHBOUR_GAP.0 + rng.below(NEIGHBOUR_GAP.1 - NEIGHBOUR_GAP.0);
        let last = max_shift() + window_starts(self.recordings[rec].len()) - 1;
        let after = start + gap;
        let before = start.checked_sub(gap).filter(|&s| s >= max_shift());
        match (rng.below(2), before) {
            (0, Some(s)) => (rec, s),
            _ if after <= last => (rec, after),
            (_, Some(s)) => (rec, s),
            _ => self.pick_window(rng),
        }
    }

    fn is_quiet(&self, (rec, start): (usize, usize)) -> bool {
        let window = &self.recordings[rec][start..start + WINDOW_SAMPLES];
        super::augment::power(window) < QUIET_POWER
    }

    /// Decodes `paths` in parallel; returns the files that could not be read with the reason.
    pub fn decode(paths: &[PathBuf], bank: NoiseBank) -> (Self, Vec<(PathBuf, String)>) {
        let results: Vec<_> = paths
            .par_iter()
            .map(|p| {
                (
                    p,
                    crate::audio::decode_file(p, crate::features::SAMPLE_RATE),
                )
            })
            .collect();
        let mut recordings = Vec::new();
        let mut failed = Vec::new();
        for (path, result) in results {
            match result {
                Ok(audio) if audio.samples.len() > WINDOW_SAMPLES * 2 => {
                    recordings.push(audio.samples)
                }
                Ok(_) => failed.push((path.clone(), "shorter than two windows".to_string())),
                Err(e) => failed.push((path.clone(), e.to_string())),
            }
        }
        (Self::new(recordings, bank), failed)
    }
}

/// Largest time offset between the two views of a summary pair: half the 20 ms query hop, the
/// most a query segment can be off the nearest library segment.
const SUMMARY_SHIFT: usize = LOG_MEL_HOP;

/// `pairs` (clean, distorted) summaries of windows drawn as for training (see
/// [`FingerprintData::pick_window`]), flat (`pairs x grid.dim()` each). Pair `i` depends only
/// on `seed` and `i`, so the result does not depend on the number of threads.
pub fn summary_pairs(
    data: &FingerprintData,
    pairs: usize,
    seed: u64,
    grid: Grid,
) -> (Vec<f32>, Vec<f32>) {
    let one = |i: usize| {
        let mut rng = SeededRng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (rec, start) = data.pick_window(&mut rng);
        let rec = &data.recordings[rec];
        let shifted = start + rng.below(2 * SUMMARY_SHIFT + 1) - SUMMARY_SHIFT;
        let clean = log_mel_window(&rec[start..start + WINDOW_SAMPLES]);
        let view = Distortion::random(&mut rng).apply(
            &rec[shifted..shifted + WINDOW_SAMPLES],
            &data.bank,
            &mut rng,
        );
        (grid.summary(&clean), grid.summary(&log_mel_window(&view)))
    };
    let summaries: Vec<(Vec<f32>, Vec<f32>)> = (0..pairs).into_par_iter().map(one).collect();
    let (clean, distorted): (Vec<Vec<f32>>, Vec<Vec<f32>>) = summaries.into_iter().unzip();
    (clean.concat(), distorted.concat())
}

pub struct TrainedFingerprint {
    pub varmap: VarMap,
    pub config: FingerprintConfig,
    /// The epoch whose weights these are (the best on the validation pairs).
    pub best_epoch: usize,
    pub history: Vec<FingerprintEpoch>,
    pub seconds: f64,
}

impl TrainedFingerprint {
    /// Writes `config.json` and `model.safetensors`.
    pub fn save(&self, out: &Path) -> Result<(), TrainError> {
        Ok(write_folder(out, &self.config, &var_tensors(&self.varmap))?)
    }
}

/// Trains the fingerprint network; checkpoints after every epoch in `checkpoint_dir`.
pub fn train_fingerprint(
    data: &FingerprintData,
    options: &FingerprintTrainOptions,
    checkpoint_dir: &Path,
    resume: bool,
    on_progress: &mut dyn FnMut(FingerprintProgress<'_>) -> ControlFlow<()>,
) -> Result<TrainedFingerprint, TrainError> {
    if data.recordings.is_empty() || options.batch_size < 2 {
        return Err(TrainError::NoData(format!(
            "{} recordings, batch of {}",
            data.recordings.len(),
            options.batch_size
        )));
    }
    let config = FingerprintConfig {
        bits: options.bits,
        ..FingerprintConfig::default()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = FingerprintNet::load(&config, vb)?;
    let fresh = State {
        options: options.clone(),
        epochs_done: 0,
        step: 0,
        seconds: 0.0,
        history: Vec::new(),
        best: None,
    };
    let (mut adam, mut state) = start_or_resume(
        &varmap,
        (options.seed, options.weight_decay),
        checkpoint_dir,
        resume,
        fresh,
        |s: &State| same_options(&s.options, options),
        |s| s.step,
    )?;
    let total_steps = options.steps_per_epoch * options.epochs;
    let validation = make_pairs(
        data,
        VALIDATION_PAIRS,
        &mut SeededRng::new(options.seed ^ VALIDATION_SEED),
    )?;
    for epoch in state.epochs_done..options.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut hits) = (0.0, 0.0);
        for b in 0..options.steps_per_epoch {
            // One generator per step, derived from the seed: a resumed run repeats it exactly.
            let mut rng = SeededRng::new(
                options.seed ^ (state.step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let views = make_pairs(data, options.batch_size, &mut rng)?;
            let (loss, codes) = pair_loss(&net, &views, options.batch_size)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            loss_sum += value;
            hits += pair_accuracy(&codes.0, &codes.1)?;
            adam.step(
                &loss.backward()?,
                cosine_lr(options.learning_rate, state.step, total_steps),
            )?;
            state.step += 1;
            let answer = on_progress(FingerprintProgress::Batch {
                done: b + 1,
                total: options.steps_per_epoch,
                loss: value,
            });
            if answer.is_break() {
                return Err(TrainError::Stopped {
                    epochs_done: state.epochs_done,
                });
            }
        }
        let validation = validation_accuracy(&net, &validation)?;
        if validation > state.best.map_or(f64::NEG_INFINITY, |(_, v)| v) {
            state.best = Some((epoch + 1, validation));
            write_tensors(&var_tensors(&varmap), &checkpoint_dir.join(BEST_WEIGHTS))?;
        }
        state.seconds += started.elapsed().as_secs_f64();
        let n = options.steps_per_epoch.max(1) as f64;
        state.history.push(FingerprintEpoch {
            epoch: epoch + 1,
            loss: loss_sum / n,
            pair_accuracy: hits / n,
            validation,
            seconds: state.seconds,
        });
        state.epochs_done = epoch + 1;
        save_checkpoint(checkpoint_dir, &state, &varmap, &adam)?;
        if let Some(report) = state.history.last()
            && on_progress(FingerprintProgress::Epoch(report)).is_break()
            && epoch + 1 < options.epochs
        {
            return Err(TrainError::Stopped {
                epochs_done: state.epochs_done,
            });
        }
    }
    // The shipped weights are the best epoch's, by the validation pairs.
    let mut varmap = varmap;
    let best = checkpoint_dir.join(BEST_WEIGHTS);
    if state.best.is_some() {
        varmap.load(&best)?;
    }
    let _ = std::fs::remove_file(&best);
    remove_checkpoint(checkpoint_dir);
    Ok(TrainedFingerprint {
        varmap,
        config,
        best_epoch: state.best.map_or(0, |(e, _)| e),
        history: state.history,
        seconds: state.seconds,
    })
}

/// A batch of `batch` clean log-mel windows followed by their distorted views: `2B x 96 x 64`.
/// In every group of four windows the second is a near neighbour of the first, from the same
/// recording: half the batch has a hard negative that only a precise match tells apart.
fn make_pairs(
    data: &FingerprintData,
    batch: usize,
    rng: &mut SeededRng,
) -> candle_core::Result<Tensor> {
    let mut windows: Vec<(usize, usize)> = Vec::with_capacity(batch);
    for i in 0..batch {
        let window = match windows.last() {
            Some(&previous) if i % 4 == 1 => data.neighbour(previous, rng),
            _ => data.pick_window(rng),
        };
        windows.push(window);
    }
    let max_shift = max_shift();
    let mut clean = Vec::with_capacity(2 * batch * SEGMENT_FRAMES * LOG_MEL_BANDS);
    let mut distorted = Vec::with_capacity(batch * SEGMENT_FRAMES * LOG_MEL_BANDS);
    for (rec, start) in windows {
        let rec = &data.recordings[rec];
        let shifted = start + rng.below(2 * max_shift + 1) - max_shift;
        clean.extend(log_mel_window(&rec[start..start + WINDOW_SAMPLES]));
        let view =
            Distortion::random(rng).apply(&rec[shifted..shifted + WINDOW_SAMPLES], &data.bank, rng);
        let mut view = log_mel_window(&view);
        spec_augment(&mut view, rng);
        distorted.extend(view);
    }
    clean.extend(distorted);
    Tensor::from_vec(
        clean,
        (2 * batch, SEGMENT_FRAMES, LOG_MEL_BANDS),
        &Device::Cpu,
    )
}

/// The training loss of one batch of `views` (clean then distorted, `n` each), and the two
/// views' L2-normalised codes. Both views go through the network together, so batch norm
/// sees clean and distorted windows mixed, as its running statistics will at indexing time.
fn pair_loss(
    net: &FingerprintNet,
    views: &Tensor,
    n: usize,
) -> candle_core::Result<(Tensor, (Tensor, Tensor))> {
    let out = net.forward_t(views, true)?;
    let half = |t: &Tensor, i: usize| t.narrow(0, i * n, n);
    let codes = l2_normalise(&out.code)?;
    let codes = (half(&codes, 0)?, half(&codes, 1)?);
    let loss = ((nt_xent(
        &half(&out.embedding, 0)?,
        &half(&out.embedding, 1)?,
        TEMPERATURE,
    )? + nt_xent(&codes.0, &codes.1, TEMPERATURE)?)?
        + (bit_balance(&out.hash)? * BALANCE_WEIGHT)?)?;
    Ok((loss, codes))
}

/// Share of validation pairs whose distorted view's code is nearest (Hamming) to its own clean
/// window's code, with the network in evaluation mode.
fn validation_accuracy(net: &FingerprintNet, views: &Tensor) -> candle_core::Result<f64> {
    let n = views.dim(0)? / 2;
    let mut codes = Vec::new();
    for chunk in 0..views.dim(0)?.div_ceil(VALIDATION_CHUNK) {
        let start = chunk * VALIDATION_CHUNK;
        let len = VALIDATION_CHUNK.min(2 * n - start);
        codes.push(net.forward_t(&views.narrow(0, start, len)?, false)?.code);
    }
    let codes = Tensor::cat(&codes, 0)?;
    pair_accuracy(&codes.narrow(0, n, n)?, &codes.narrow(0, 0, n)?)
}

/// The 96 log-mel frames of one window.
fn log_mel_window(samples: &[f32]) -> Vec<f32> {
    let frames = LogMel::new(&LogMelConfig::default()).compute(samples);
    fit_to_segment(&frames.data)
}

/// Each bit's mean sign over the batch, squared and averaged: zero when every bit is on for
/// half the segments (buckets then fill evenly).
fn bit_balance(hash: &Tensor) -> candle_core::Result<Tensor> {
    let centred = hash.broadcast_sub(&hash.mean_keepdim(1)?)?;
    centred.tanh()?.mean(0)?.sqr()?.mean_all()
}

/// Share of rows of `a` whose nearest row of `b` (by inner product) is their own pair.
fn pair_accuracy(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let nearest: Vec<u32> = a.matmul(&b.t()?)?.argmax(1)?.to_vec1()?;
    let right = nearest
        .iter()
        .enumerate()
        .filter(|&(i, &j)| i as u32 == j)
        .count();
    Ok(right as f64 / nearest.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        (0..len).map(|_| rng.normal() as f32 * 0.1).collect()
    }

    #[test]
    fn windows_are_drawn_over_audio_time_and_never_from_silence() {
        let n = 10 * WINDOW_SAMPLES;
        let recordings = vec![vec![0.0; 4 * n], noise(n, 1), noise(3 * n, 2)];
        let data = FingerprintData::new(recordings, NoiseBank::default());
        let mut rng = SeededRng::new(3);
        let mut per_recording = [0usize; 3];
        for _ in 0..2000 {
            let (rec, start) = data.pick_window(&mut rng);
            assert!(
                start >= max_shift()
                    && start + WINDOW_SAMPLES + max_shift() <= data.recordings[rec].len()
            );
            per_recording[rec] += 1;
        }
        // The silent recording holds half the audio, but a silent pick is redrawn 20 times.
        assert_eq!(per_recording[0], 0, "{per_recording:?}");
        let ratio = per_recording[2] as f64 / per_recording[1] as f64;
        assert!(
            (2.5..3.6).contains(&ratio),
            "3x longer, drawn {ratio:.2}x as often"
        );
    }

    #[test]
    fn a_neighbour_is_the_same_recording_120_to_480_ms_away() {
        let data = FingerprintData::new(vec![noise(4 * WINDOW_SAMPLES, 1)], NoiseBank::default());
        let mut rng = SeededRng::new(5);
        for _ in 0..500 {
            let window = data.pick_window(&mut rng);
            let (rec, start) = data.neighbour(window, &mut rng);
            assert_eq!(rec, window.0);
            let gap = start.abs_diff(window.1);
            assert!((1920..7680).contains(&gap), "gap {gap}");
            assert!(
                start >= max_shift()
                    && start + WINDOW_SAMPLES + max_shift() <= data.recordings[rec].len()
            );
        }
    }

    #[test]
    fn a_pair_is_matched_when_its_own_code_is_the_nearest() {
        let codes = |rows: [[f32; 4]; 3]| Tensor::new(&rows, &Device::Cpu).unwrap();
        let clean = codes([[1., 1., -1., -1.], [1., -1., 1., -1.], [-1., -1., 1., 1.]]);
        // The first view is one bit from its window; the second is nearer the third window.
        let views = codes([[1., 1., -1., 1.], [-1., -1., 1., 1.], [-1., -1., 1., 1.]]);
        assert!((pair_accuracy(&views, &clean).unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(pair_accuracy(&clean, &clean).unwrap(), 1.0);
    }
}
