//! Training the `events` encoder on labelled clips (ESC-50 for the shipped models): log-mel
//! features, random crops of 1-5 s, SpecAugment, mixup, the AudioNet loss plus a
//! classification head, AdamW with a cosine schedule, validation by the caller's callback, a
//! checkpoint after every epoch and exact resume.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::augment::spec_augment;
use super::checkpoint::{remove_checkpoint, same_options, save_checkpoint, start_or_resume};
use super::loss::{AudioNetLoss, centre_loss, hash_centres, soft_cross_entropy};
use super::optim::var_tensors;
use super::{TrainError, cosine_lr, shuffle};
use crate::features::LOG_MEL_BANDS;
use crate::model::SeededRng;
use crate::model::config::write_folder;
use crate::model::events::{EventsConfig, EventsNet, EventsOutput};

/// Crop lengths drawn per batch, in log-mel frames (1 to 5 s).
pub const MIN_CROP_FRAMES: usize = 100;
pub const MAX_CROP_FRAMES: usize = 500;
/// Mixup's Beta(a, a) parameter.
const MIXUP_ALPHA: f64 = 0.4;
/// Random level change, in dB either way.
const GAIN_DB: f64 = 6.0;

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
    #[serde(default = "crate::model::events::enabled")]
    pub centres: bool,
    /// The spectral-temporal attention mask in the network.
    #[serde(default = "crate::model::events::enabled")]
    pub attention: bool,
    /// The hash layer on the class posterior (else on the embedding).
    #[serde(default = "crate::model::events::enabled")]
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

/// Which of ESC-50's splits the clips come from (recorded so that a resumed run trains on the
/// same; the caller picks the clips).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitName {
    /// Folds 1-4 of every class.
    Standard,
    /// Folds 1-4 of classes 0-39: classes 40-49 stay unseen.
    ZeroShot,
    /// Folds 1-3 of every class (fold 4 validates, fold 5 stays unseen).
    Validation,
    /// Folds 1-3 of classes 0-29 (fold 4 of classes 30-39 validates).
    ZeroShotValidation,
}

/// Labelled clips to train on: trimmed frame-major log-mel, and each clip's class.
pub struct TrainingSet<'a> {
    pub clips: Vec<&'a [f32]>,
    /// Per clip, its class's position in `labels`.
    pub targets: Vec<usize>,
    pub labels: Vec<String>,
}

/// Scores the network on held-out clips (mAP@all for ESC-50), every `eval_every` epochs.
pub type Validate<'a> = dyn FnMut(&EventsNet) -> candle_core::Result<f64> + 'a;

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
    set: &TrainingSet<'_>,
    options: &TrainOptions,
    checkpoint_dir: &Path,
    resume: bool,
    validate: &mut Validate<'_>,
    on_progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<Trained, TrainError> {
    let usable = set.clips.len().min(set.targets.len());
    if usable < options.batch_size.max(2) || options.bits.is_empty() {
        return Err(TrainError::NoData(format!(
            "{usable} usable clips for a batch of {}",
            options.batch_size
        )));
    }
    let classes = set.labels.len();
    let mut config = EventsConfig::new(options.bits[0], set.labels.clone());
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
    let batches_per_epoch = usable / options.batch_size;
    let total_steps = batches_per_epoch * options.epochs;
    for epoch in state.epochs_done..options.epochs {
        let started = Instant::now();
        // One generator per epoch, derived from the seed: a resumed run repeats it exactly.
        let mut rng = SeededRng::new(options.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9));
        let mut order: Vec<usize> = (0..usable).collect();
        shuffle(&mut order, &mut rng);
        let mut sums = LossSums::default();
        for (b, batch) in order.chunks_exact(options.batch_size).enumerate() {
            let lr = cosine_lr(options.learning_rate, state.step, total_steps);
            let (x, targets) = make_batch(batch, set, classes, &options.recipe, &mut rng)?;
            let out = net.forward_t(&x, true)?;
            let hashing = losses.forward(&out, &targets, &options.recipe)?;
            let mut loss = hashing.clone();
            if options.recipe.classifier {
                let ce = soft_cross_entropy(&out.logits, &targets)?;
                sums.classifier += f64::from(ce.to_scalar::<f32>()?);
                loss = (loss + ce)?;
            }
            sums.hashing += f64::from(hashing.to_scalar::<f32>()?);
            let value = f64::from(loss.to_scalar::<f32>()?);
            sums.total += value;
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
            Some(validate(&net)?)
        } else {
            None
        };
        state.seconds += started.elapsed().as_secs_f64();
        let n = batches_per_epoch.max(1) as f64;
        state.history.push(EpochReport {
            epoch: epoch + 1,
            loss: sums.total / n,
            hashing: sums.hashing / n,
            classifier: sums.classifier / n,
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

/// An epoch's losses, summed over its batches.
#[derive(Default)]
struct LossSums {
    total: f64,
    hashing: f64,
    classifier: f64,
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

/// A batch of equal-length crops (`B x L x 64`) and soft class targets (`B x classes`).
fn make_batch(
    batch: &[usize],
    set: &TrainingSet<'_>,
    classes: usize,
    recipe: &Recipe,
    rng: &mut SeededRng,
) -> candle_core::Result<(Tensor, Tensor)> {
    let len = MIN_CROP_FRAMES + rng.below(MAX_CROP_FRAMES - MIN_CROP_FRAMES + 1);
    let mut crops: Vec<Vec<f32>> = batch
        .iter()
        .map(|&i| crop(set.clips[i], len, rng))
        .collect();
    let mut targets: Vec<Vec<f32>> = batch
        .iter()
        .map(|&i| one_hot(set.targets[i], classes))
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

/// Writes `config.json` and `model.safetensors` (weights and batch-norm statistics) of the
/// model of `config.bits`: other code lengths' hash heads are left out.
pub fn save_model(out: &Path, config: &EventsConfig, varmap: &VarMap) -> Result<(), TrainError> {
    let own_head = format!("hash.{}.", config.bits);
    let mut tensors = var_tensors(varmap);
    tensors.retain(|name, _| !name.starts_with("hash.") || name.starts_with(&own_head));
    Ok(write_folder(out, config, &tensors)?)
}
