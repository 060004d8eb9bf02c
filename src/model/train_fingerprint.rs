//! Training the `fingerprint` encoder: NT-Xent on (clean, distorted) pairs of 0.96 s windows.
//!
//! A pair is a window of a training recording and the same window shifted by up to 40% of the
//! segment hop, passed through a random [`Distortion`] (noise at 0-25 dB, reverberation, both
//! or neither) and SpecAugment. Codes are trained by NT-Xent on the signs (straight-through)
//! plus a bit-balance term, so that codes fill the bucket index evenly.
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

use super::SeededRng;
use super::augment::{Distortion, NoiseBank, max_offset_samples, spec_augment};
use super::fingerprint::{
    FingerprintConfig, FingerprintNet, SEGMENT_FRAMES, fit_to_segment, l2_normalise,
};
use super::loss::nt_xent;
use super::train::{
    TrainError, cosine_lr, io_error, remove_checkpoint, same_options, save_checkpoint, sorted_vars,
    start_or_resume, write_atomic,
};
use crate::features::{FrameFeature, LOG_MEL_HOP, LogMel, LogMelConfig};

/// NT-Xent temperature (the fingerprint paper's).
const TEMPERATURE: f64 = 0.1;
/// Weight of the bit-balance term.
const BALANCE_WEIGHT: f64 = 1.0;
/// Samples of one window (96 frames of 10 ms, plus the last frame's window).
const WINDOW_SAMPLES: usize = SEGMENT_FRAMES * LOG_MEL_HOP;

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
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    options: FingerprintTrainOptions,
    epochs_done: usize,
    step: usize,
    seconds: f64,
    history: Vec<FingerprintEpoch>,
}

/// Recordings to train on, with the noise bank for the distortions.
pub struct FingerprintData {
    pub recordings: Vec<Vec<f32>>,
    pub bank: NoiseBank,
}

impl FingerprintData {
    /// Decodes `paths` in parallel; returns the files that could not be read with the reason.
    pub fn decode(paths: &[PathBuf], bank: NoiseBank) -> (Self, Vec<(PathBuf, String)>) {
        let results: Vec<_> = paths
            .par_iter()
            .map(|p| (p, crate::audio::decode_file(p)))
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
        (Self { recordings, bank }, failed)
    }
}

pub struct TrainedFingerprint {
    pub varmap: VarMap,
    pub config: FingerprintConfig,
    pub history: Vec<FingerprintEpoch>,
    pub seconds: f64,
}

impl TrainedFingerprint {
    /// Writes `config.json` and `model.safetensors`.
    pub fn save(&self, out: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(out).map_err(io_error(out))?;
        let tensors: std::collections::HashMap<String, Tensor> = sorted_vars(&self.varmap)
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        let weights = out.join(super::config::WEIGHTS_FILE);
        let tmp = weights.with_extension("tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, &weights).map_err(io_error(&weights))?;
        let text =
            serde_json::to_string_pretty(&self.config).map_err(|e| TrainError::BadCheckpoint {
                path: out.join(super::config::CONFIG_FILE),
                reason: e.to_string(),
            })?;
        write_atomic(&out.join(super::config::CONFIG_FILE), text.as_bytes())
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
    for epoch in state.epochs_done..options.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut hits) = (0.0, 0.0);
        for b in 0..options.steps_per_epoch {
            // One generator per step, derived from the seed: a resumed run repeats it exactly.
            let mut rng = SeededRng::new(
                options.seed ^ (state.step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let (clean, distorted) = make_pairs(data, options.batch_size, &mut rng)?;
            let a = net.forward_t(&clean, true)?;
            let p = net.forward_t(&distorted, true)?;
            let codes = (l2_normalise(&a.code)?, l2_normalise(&p.code)?);
            let loss = ((nt_xent(&a.embedding, &p.embedding, TEMPERATURE)?
                + nt_xent(&codes.0, &codes.1, TEMPERATURE)?)?
                + (bit_balance(&Tensor::cat(&[&a.hash, &p.hash], 0)?)? * BALANCE_WEIGHT)?)?;
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
        state.seconds += started.elapsed().as_secs_f64();
        let n = options.steps_per_epoch.max(1) as f64;
        state.history.push(FingerprintEpoch {
            epoch: epoch + 1,
            loss: loss_sum / n,
            pair_accuracy: hits / n,
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
    remove_checkpoint(checkpoint_dir);
    Ok(TrainedFingerprint {
        varmap,
        config,
        history: state.history,
        seconds: state.seconds,
    })
}

/// A batch of (clean, distorted) log-mel windows, each `B x 96 x 64`.
fn make_pairs(
    data: &FingerprintData,
    batch: usize,
    rng: &mut SeededRng,
) -> candle_core::Result<(Tensor, Tensor)> {
    let max_shift = max_offset_samples(crate::model::Mode::Fingerprint.segmentation().hop);
    let mut clean = Vec::with_capacity(batch * SEGMENT_FRAMES * 64);
    let mut distorted = Vec::with_capacity(batch * SEGMENT_FRAMES * 64);
    for _ in 0..batch {
        let rec = &data.recordings[rng.below(data.recordings.len())];
        let start = max_shift + rng.below(rec.len() - WINDOW_SAMPLES - 2 * max_shift);
        let shifted = start + rng.below(2 * max_shift + 1) - max_shift;
        clean.extend(log_mel_window(&rec[start..start + WINDOW_SAMPLES]));
        let view =
            Distortion::random(rng).apply(&rec[shifted..shifted + WINDOW_SAMPLES], &data.bank, rng);
        let mut view = log_mel_window(&view);
        spec_augment(&mut view, rng);
        distorted.extend(view);
    }
    let shape = (batch, SEGMENT_FRAMES, crate::features::LOG_MEL_BANDS);
    Ok((
        Tensor::from_vec(clean, shape, &Device::Cpu)?,
        Tensor::from_vec(distorted, shape, &Device::Cpu)?,
    ))
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
