//! Training the `events` encoder on ESC-50: cached log-mel features, random crops of 1-5 s,
//! SpecAugment, mixup, the AudioNet loss plus a classification head, AdamW with a cosine
//! schedule, validation mAP, a checkpoint after every epoch and exact resume.
//!
//! Every random choice (initial weights, batch order, crops, masks, mixing) comes from our own
//! seeded generator: candle's CPU generator cannot be seeded.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::SeededRng;
use super::augment::spec_augment;
use super::config::{CONFIG_FILE, WEIGHTS_FILE};
use super::events::{EventsConfig, EventsNet, EventsOutput};
use super::loss::{AudioNetLoss, soft_cross_entropy};
use crate::eval::esc50::{Esc50, Features, Split, evaluate};
use crate::features::LOG_MEL_BANDS;

/// Crop lengths drawn per batch, in log-mel frames (1 to 5 s).
pub const MIN_CROP_FRAMES: usize = 100;
pub const MAX_CROP_FRAMES: usize = 500;
/// Mixup's Beta(a, a) parameter.
const MIXUP_ALPHA: f64 = 0.4;
/// Random level change, in dB either way.
const GAIN_DB: f64 = 6.0;
const CHECKPOINT_WEIGHTS: &str = "checkpoint.safetensors";
const CHECKPOINT_STATE: &str = "checkpoint.json";

/// Which parts of the recipe are on (each is an ablation row of the model card).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// AudioNet's weighted contrastive + weighted pairwise loss on the hash layer.
    pub audionet: bool,
    /// Cross-entropy of a classification head on the embedding.
    pub classifier: bool,
    pub spec_augment: bool,
    pub mixup: bool,
    /// Binary cross-entropy of each hash layer against a per-class centre code.
    #[serde(default = "super::events::enabled")]
    pub centres: bool,
    /// The spectral-temporal attention mask in the network.
    #[serde(default = "super::events::enabled")]
    pub attention: bool,
    /// The hash layer on the class posterior (else on the embedding).
    #[serde(default = "super::events::enabled")]
    pub hash_from_posterior: bool,
}

impl Recipe {
    pub const FULL: Recipe = Recipe {
        audionet: true,
        classifier: true,
        spec_augment: true,
        mixup: true,
        centres: true,
        attention: true,
        hash_from_posterior: true,
    };
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// One hash head per code length, trained together on one backbone.
    pub bits: Vec<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub split: SplitName,
    pub recipe: Recipe,
    /// Validate every this many epochs (and after the last).
    pub eval_every: usize,
    /// Channels of the network's first layer (later layers have 2, 4 and 8 times as many).
    #[serde(default = "default_width")]
    pub width: usize,
}

fn default_width() -> usize {
    EventsConfig::DEFAULT_FRONT_CHANNELS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SplitName {
    Standard,
    ZeroShot,
}

impl SplitName {
    pub fn split(self) -> Split {
        match self {
            SplitName::Standard => Split::Standard,
            SplitName::ZeroShot => Split::ZeroShot,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    /// The hashing terms (AudioNet, hash centres), averaged over heads.
    pub hashing: f64,
    pub classifier: f64,
    pub seconds: f64,
    pub val_map: Option<f64>,
}

/// What a checkpoint holds besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    options: TrainOptions,
    epochs_done: usize,
    step: usize,
    seconds: f64,
    history: Vec<EpochReport>,
}

/// Progress for the caller's display. The caller's answer can stop the run: at a batch, as a
/// kill would (the last checkpoint stays); at an epoch, after its checkpoint is saved.
pub enum Progress<'a> {
    Batch {
        done: usize,
        total: usize,
        loss: f64,
    },
    Epoch(&'a EpochReport),
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the checkpoint was made with other options ({reason}); start again without --resume or with the same options", path.display())]
    CheckpointMismatch { path: PathBuf, reason: String },
    #[error("{}: not a readable checkpoint: {reason}", path.display())]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("no training clips: {0}")]
    NoData(String),
    #[error("stopped after epoch {epochs_done}; continue with --resume")]
    Stopped { epochs_done: usize },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The result of a run: the weights (every head), the base config and the history.
pub struct Trained {
    pub varmap: VarMap,
    pub config: EventsConfig,
    pub history: Vec<EpochReport>,
    pub seconds: f64,
}

impl Trained {
    /// Writes the model folder of one code length (see [`save_model`]).
    pub fn save(&self, out: &Path, bits: usize) -> Result<(), TrainError> {
        let config = EventsConfig {
            bits,
            ..self.config.clone()
        };
        save_model(out, &config, &self.varmap)
    }
}

/// Trains the events network with one hash head per entry of `options.bits`. Checkpoints go to
/// `checkpoint_dir` after every epoch (and are removed at the end); `resume` continues from them.
pub fn train_events(
    data: &Esc50,
    features: &Features,
    options: &TrainOptions,
    checkpoint_dir: &Path,
    resume: bool,
    on_progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<Trained, TrainError> {
    let split = options.split.split();
    let train: Vec<usize> = (0..data.clips.len())
        .filter(|&i| split.is_training(&data.clips[i]) && features.clips[i].is_some())
        .collect();
    if train.len() < options.batch_size.max(2) || options.bits.is_empty() {
        return Err(TrainError::NoData(format!(
            "{} usable clips for a batch of {}",
            train.len(),
            options.batch_size
        )));
    }
    let classes = data.labels.len();
    let mut config = EventsConfig::new(options.bits[0], data.labels.clone());
    config.attention = options.recipe.attention;
    config.hash_from_posterior = options.recipe.hash_from_posterior;
    config.front_channels = options.width;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = EventsNet::load_heads(&config, &options.bits, vb)?;
    let fresh = CheckpointState {
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
        |s: &CheckpointState| same_options(&s.options, options),
        |s| s.step,
    )?;
    let losses = HeadLosses::new(&options.bits, classes, options.seed)?;
    let batches_per_epoch = train.len() / options.batch_size;
    let total_steps = batches_per_epoch * options.epochs;
    let clips = features.trimmed();
    for epoch in state.epochs_done..options.epochs {
        let started = Instant::now();
        // One generator per epoch, derived from the seed: a resumed run repeats it exactly.
        let mut rng = SeededRng::new(options.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9));
        let mut order = train.clone();
        shuffle(&mut order, &mut rng);
        let mut sums = [0.0f64; 3];
        for (b, batch) in order.chunks_exact(options.batch_size).enumerate() {
            let lr = cosine_lr(options.learning_rate, state.step, total_steps);
            let (x, targets) = make_batch(batch, &clips, data, classes, &options.recipe, &mut rng)?;
            let out = net.forward_t(&x, true)?;
            let hashing = losses.forward(&out, &targets, &options.recipe)?;
            let mut loss = hashing.clone();
            if options.recipe.classifier {
                let ce = soft_cross_entropy(&out.logits, &targets)?;
                sums[2] += f64::from(ce.to_scalar::<f32>()?);
                loss = (loss + ce)?;
            }
            sums[1] += f64::from(hashing.to_scalar::<f32>()?);
            let value = f64::from(loss.to_scalar::<f32>()?);
            sums[0] += value;
            adam.step(&loss.backward()?, lr)?;
            state.step += 1;
            let answer = on_progress(Progress::Batch {
                done: b + 1,
                total: batches_per_epoch,
                loss: value,
            });
            if answer.is_break() {
                return Err(TrainError::Stopped {
                    epochs_done: state.epochs_done,
                });
            }
        }
        let last = epoch + 1 == options.epochs;
        let val_map = if last || (epoch + 1) % options.eval_every.max(1) == 0 {
            Some(evaluate(&net, data, &clips, split)?.scores.map_all)
        } else {
            None
        };
        state.seconds += started.elapsed().as_secs_f64();
        let n = batches_per_epoch.max(1) as f64;
        state.history.push(EpochReport {
            epoch: epoch + 1,
            loss: sums[0] / n,
            hashing: sums[1] / n,
            classifier: sums[2] / n,
            seconds: state.seconds,
            val_map,
        });
        state.epochs_done = epoch + 1;
        save_checkpoint(checkpoint_dir, &state, &varmap, &adam)?;
        if let Some(report) = state.history.last()
            && on_progress(Progress::Epoch(report)).is_break()
            && epoch + 1 < options.epochs
        {
            return Err(TrainError::Stopped {
                epochs_done: state.epochs_done,
            });
        }
    }
    remove_checkpoint(checkpoint_dir);
    Ok(Trained {
        varmap,
        config,
        history: state.history,
        seconds: state.seconds,
    })
}

/// The hashing losses of every head: AudioNet's, and hash-centre targets.
struct HeadLosses {
    /// Per head: its AudioNet loss and its class centres (`classes x bits` of 0/1).
    heads: Vec<(AudioNetLoss, Tensor)>,
}

impl HeadLosses {
    fn new(bits: &[usize], classes: usize, seed: u64) -> candle_core::Result<Self> {
        let heads = bits
            .iter()
            .map(|&k| Ok((AudioNetLoss::for_bits(k), hash_centres(classes, k, seed)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { heads })
    }

    /// Mean over heads of the enabled hashing terms.
    fn forward(
        &self,
        out: &EventsOutput,
        targets: &Tensor,
        recipe: &Recipe,
    ) -> candle_core::Result<Tensor> {
        let similarity = targets.matmul(&targets.t()?)?;
        let mut total = Tensor::zeros((), DType::F32, &Device::Cpu)?;
        for (head, (audionet, centres)) in out.heads.iter().zip(&self.heads) {
            if recipe.audionet {
                total = (total + audionet.forward(&head.hash, &head.code, &similarity)?.total)?;
            }
            if recipe.centres {
                // A mixed clip's target bit is the mixture of its classes' centre bits.
                let target_bits = targets.matmul(centres)?;
                total = (total + centre_loss(&head.hash, &target_bits)?)?;
            }
        }
        total.affine(1.0 / self.heads.len().max(1) as f64, 0.0)
    }
}

/// Seeded random class centres in the code space, each with half its bits set (the balanced
/// codes the balanced sign produces), as a `classes x bits` tensor of 0/1.
fn hash_centres(classes: usize, bits: usize, seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = SeededRng::new(seed ^ 0xC3A5_C85C_97CB_3127 ^ bits as u64);
    let mut values = Vec::with_capacity(classes * bits);
    for _ in 0..classes {
        let mut centre: Vec<f32> = (0..bits)
            .map(|i| if i < bits / 2 { 1.0 } else { 0.0 })
            .collect();
        shuffle(&mut centre, &mut rng);
        values.extend(centre);
    }
    Tensor::from_vec(values, (classes, bits), &Device::Cpu)
}

/// Binary cross-entropy of the hash layer (as logits) against target bits in [0, 1].
fn centre_loss(hash: &Tensor, target_bits: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (hash.relu()? + (hash.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (hash * target_bits)?)?.mean_all()
}

/// A batch of equal-length crops (`B x L x 64`) and soft class targets (`B x classes`).
fn make_batch(
    batch: &[usize],
    clips: &[&[f32]],
    data: &Esc50,
    classes: usize,
    recipe: &Recipe,
    rng: &mut SeededRng,
) -> candle_core::Result<(Tensor, Tensor)> {
    let len = MIN_CROP_FRAMES + rng.below(MAX_CROP_FRAMES - MIN_CROP_FRAMES + 1);
    let mut crops: Vec<Vec<f32>> = batch.iter().map(|&i| crop(clips[i], len, rng)).collect();
    let mut targets: Vec<Vec<f32>> = batch
        .iter()
        .map(|&i| one_hot(data.clips[i].target, classes))
        .collect();
    for c in &mut crops {
        let gain = (rng.uniform() * 2.0 - 1.0) * GAIN_DB;
        c.iter_mut().for_each(|x| *x += gain as f32);
        if recipe.spec_augment {
            spec_augment(c, rng);
        }
    }
    if recipe.mixup {
        mixup(&mut crops, &mut targets, rng);
    }
    let b = batch.len();
    let x = Tensor::from_vec(crops.concat(), (b, len, LOG_MEL_BANDS), &Device::Cpu)?;
    let y = Tensor::from_vec(targets.concat(), (b, classes), &Device::Cpu)?;
    Ok((x, y))
}

/// `len` frames of a clip from a random start; a shorter clip is looped.
fn crop(clip: &[f32], len: usize, rng: &mut SeededRng) -> Vec<f32> {
    let frames = clip.len() / LOG_MEL_BANDS;
    let start = if frames > len {
        rng.below(frames - len + 1)
    } else {
        0
    };
    (0..len)
        .flat_map(|t| {
            let f = (start + t) % frames.max(1);
            clip[f * LOG_MEL_BANDS..(f + 1) * LOG_MEL_BANDS]
                .iter()
                .copied()
        })
        .collect()
}

fn one_hot(target: usize, classes: usize) -> Vec<f32> {
    let mut v = vec![0.0; classes];
    v[target] = 1.0;
    v
}

/// Mixup: each crop mixed with another of the batch, weight from Beta(a, a), targets alike.
fn mixup(crops: &mut [Vec<f32>], targets: &mut [Vec<f32>], rng: &mut SeededRng) {
    let mut partner: Vec<usize> = (0..crops.len()).collect();
    shuffle(&mut partner, rng);
    let (x0, y0) = (crops.to_vec(), targets.to_vec());
    for (i, &j) in partner.iter().enumerate() {
        let a = beta(MIXUP_ALPHA, rng) as f32;
        let a = a.max(1.0 - a); // the crop keeps its own class as the larger share
        let mix = |dst: &mut Vec<f32>, other: &[f32]| {
            dst.iter_mut()
                .zip(other)
                .for_each(|(d, o)| *d = a * *d + (1.0 - a) * o)
        };
        mix(&mut crops[i], &x0[j]);
        mix(&mut targets[i], &y0[j]);
    }
}

/// Beta(a, a) from two Gamma(a) draws.
fn beta(a: f64, rng: &mut SeededRng) -> f64 {
    let (x, y) = (gamma(a, rng), gamma(a, rng));
    if x + y > 0.0 { x / (x + y) } else { 0.5 }
}

/// Gamma(a, 1) by Marsaglia and Tsang (with the a < 1 boost).
fn gamma(a: f64, rng: &mut SeededRng) -> f64 {
    if a < 1.0 {
        return gamma(a + 1.0, rng) * rng.uniform().max(f64::MIN_POSITIVE).powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v > 0.0
            && rng.uniform().max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d - d * v + d * v.ln()
        {
            return d * v;
        }
    }
}

pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut SeededRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// Linear warm-up over the first 3% of steps, then a cosine decay to zero.
pub(crate) fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    let warmup = (total as f64 * 0.03).max(1.0);
    let s = step as f64;
    if s < warmup {
        return base * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (total as f64 - warmup).max(1.0)).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Sets every weight from our seeded generator: matrices and kernels He-uniform, biases zero,
/// attention projections zero (the mask starts uniform); batch-norm statistics keep their
/// constant starts.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let mut rng = SeededRng::new(seed);
    let vars = sorted_vars(varmap);
    for (name, var) in vars {
        let dims = var.dims().to_vec();
        let value = if name.contains("attention")
            || (dims.len() == 1 && name.ends_with(".bias") && !name.contains("bn"))
        {
            Some(Tensor::zeros(dims.as_slice(), DType::F32, &Device::Cpu)?)
        } else if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = (6.0 / fan_in.max(1) as f64).sqrt();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            Some(Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?)
        } else {
            None
        };
        if let Some(v) = value {
            var.set(&v)?;
        }
    }
    Ok(())
}

pub(crate) fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// AdamW (decoupled weight decay on matrices and kernels only), with its moments kept by name so
/// that a checkpoint can restore them.
pub struct AdamW {
    vars: Vec<(String, Var, Tensor, Tensor)>,
    step: usize,
    weight_decay: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    pub fn new(varmap: &VarMap, weight_decay: f64) -> candle_core::Result<Self> {
        let vars = sorted_vars(varmap)
            .into_iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok((name, var, zeros.clone(), zeros))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            step: 0,
            weight_decay,
        })
    }

    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let scale_m = 1.0 / (1.0 - BETA1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - BETA2.powi(self.step as i32));
        for (_, var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients remember the graph they came from; the moments must not, or every
            // step's graph would stay alive through them.
            let g = g.detach();
            *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let update = ((&*m * scale_m)? / ((&*v * scale_v)?.sqrt()? + EPS)?)?;
            let decay = if var.rank() >= 2 {
                lr * self.weight_decay
            } else {
                0.0
            };
            let next = ((var.as_tensor() * (1.0 - decay))? - (update * lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }

    fn moments(&self) -> impl Iterator<Item = (String, Tensor)> + '_ {
        self.vars.iter().flat_map(|(name, _, m, v)| {
            [
                (format!("adam.m.{name}"), m.clone()),
                (format!("adam.v.{name}"), v.clone()),
            ]
        })
    }
}

/// Saves the weights, the optimiser's moments and `state` (the caller's progress record).
pub(crate) fn save_checkpoint<S: Serialize>(
    out: &Path,
    state: &S,
    varmap: &VarMap,
    adam: &AdamW,
) -> Result<(), TrainError> {
    let mut tensors = var_tensors(varmap);
    tensors.extend(adam.moments());
    save_tensors(&tensors, &out.join(CHECKPOINT_WEIGHTS))?;
    let json = out.join(CHECKPOINT_STATE);
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::BadCheckpoint {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&json, text.as_bytes())
}

/// Seeds the weights and makes the optimiser; when resuming from a checkpoint in `dir`,
/// restores both and returns the saved state in place of `fresh`. `same_options` says why the
/// saved state's options differ from this run's, if they do; `step` reads its step.
pub(crate) fn start_or_resume<S: serde::de::DeserializeOwned>(
    varmap: &VarMap,
    (seed, weight_decay): (u64, f64),
    dir: &Path,
    resume: bool,
    fresh: S,
    same_options: impl Fn(&S) -> Result<(), String>,
    step: impl Fn(&S) -> usize,
) -> Result<(AdamW, S), TrainError> {
    seeded_init(varmap, seed)?;
    let mut adam = AdamW::new(varmap, weight_decay)?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    if resume && dir.join(CHECKPOINT_STATE).is_file() {
        let state = load_checkpoint(dir, varmap, &mut adam, same_options, step)?;
        return Ok((adam, state));
    }
    Ok((adam, fresh))
}

/// Restores weights and optimiser moments, and returns the saved state.
fn load_checkpoint<S: serde::de::DeserializeOwned>(
    out: &Path,
    varmap: &VarMap,
    adam: &mut AdamW,
    same_options: impl Fn(&S) -> Result<(), String>,
    step: impl Fn(&S) -> usize,
) -> Result<S, TrainError> {
    let json = out.join(CHECKPOINT_STATE);
    let bad = |path: &Path, reason: String| TrainError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(&json).map_err(io_error(&json))?;
    let state: S = serde_json::from_slice(&text).map_err(|e| bad(&json, e.to_string()))?;
    same_options(&state).map_err(|reason| TrainError::CheckpointMismatch {
        path: json.clone(),
        reason,
    })?;
    let weights = out.join(CHECKPOINT_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .map_err(|e| bad(&weights, e.to_string()))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| bad(&weights, format!("no tensor {name}")))
    };
    for (name, var) in sorted_vars(varmap) {
        var.set(get(&name)?)
            .map_err(|e| bad(&weights, e.to_string()))?;
    }
    for (name, _, m, v) in &mut adam.vars {
        *m = get(&format!("adam.m.{name}"))?.clone();
        *v = get(&format!("adam.v.{name}"))?.clone();
    }
    adam.step = step(&state);
    Ok(state)
}

/// Removes a finished run's checkpoint.
pub(crate) fn remove_checkpoint(out: &Path) {
    for f in [CHECKPOINT_WEIGHTS, CHECKPOINT_STATE] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let _ = std::fs::remove_dir(out);
}

/// The options check of a resumed run: saved and current options must serialise the same.
pub(crate) fn same_options<O: Serialize + std::fmt::Debug>(
    saved: &O,
    current: &O,
) -> Result<(), String> {
    if serde_json::to_value(saved).ok() == serde_json::to_value(current).ok() {
        Ok(())
    } else {
        Err(format!("saved {saved:?}"))
    }
}

/// Writes `config.json` and `model.safetensors` (weights and batch-norm statistics) of the
/// model of `config.bits`: other code lengths' hash heads are left out.
pub fn save_model(out: &Path, config: &EventsConfig, varmap: &VarMap) -> Result<(), TrainError> {
    let own_head = format!("hash.{}.", config.bits);
    let mut tensors = var_tensors(varmap);
    tensors.retain(|name, _| !name.starts_with("hash.") || name.starts_with(&own_head));
    save_model_files(out, config, &tensors)
}

/// Writes a model folder's `model.safetensors` and `config.json`, creating the folder.
pub(crate) fn save_model_files<C: Serialize>(
    out: &Path,
    config: &C,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    save_tensors(tensors, &out.join(WEIGHTS_FILE))?;
    let text = serde_json::to_string_pretty(config).map_err(|e| TrainError::BadCheckpoint {
        path: out.join(CONFIG_FILE),
        reason: e.to_string(),
    })?;
    write_atomic(&out.join(CONFIG_FILE), text.as_bytes())
}

/// Every variable's current value, by name.
pub(crate) fn var_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    sorted_vars(varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect()
}

/// Writes `tensors` to `path` as safetensors, through a temporary file renamed into place.
pub(crate) fn save_tensors(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    // candle writes its file readable by its owner only; the bytes go through `write_atomic` so
    // the weights get the usual permissions (an installed model must be readable by everyone).
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(tensors, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(io_error(&tmp));
    let _ = std::fs::remove_file(&tmp);
    write_atomic(path, &bytes?)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::fsutil::write_atomic(path, bytes).map_err(io_error(path))
}
