//! Training hash heads on a backbone's embeddings (`earshot train events --backbone`, and
//! `earshot learn` on a library's own labels): the embeddings are computed once, so a head
//! trains in seconds. Each step sees one example per clip: the mean of a random non-empty
//! subset of its windows (a clip's windows differ; a query may catch any of them), standardised
//! by the training windows' statistics. The loss: hash-centre targets (binary cross-entropy of
//! the hash layer against its class's centre code) and AudioNet's pairwise loss on the balanced
//! sign, each an ablation row; dropout on the hidden layer; AdamW with a cosine schedule.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::loss::{AudioNetLoss, centre_loss, hadamard_centres, hash_centres};
use super::optim::AdamW;
use super::{TrainError, cosine_lr, seeded_init, shuffle};
use crate::model::SeededRng;
use crate::model::config::MODEL_FORMAT_VERSION;
use crate::model::hash_head::{ARCHITECTURE, HashHead, HashHeadConfig, Standardiser};
use crate::model::hashing::balanced_sign;

/// Which parts of the recipe are on (each is an ablation row of the model card).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadRecipe {
    /// Binary cross-entropy of the hash layer against a per-class centre code.
    pub centres: bool,
    /// AudioNet's weighted contrastive + pairwise loss on the balanced-sign codes.
    pub audionet: bool,
    /// Train on means of random subsets of a clip's windows (else on the clip's mean).
    pub window_subsets: bool,
    /// Dropout on the hidden layer.
    pub dropout: bool,
    /// Centres from a Hadamard matrix (else seeded random balanced codes).
    #[serde(default)]
    pub hadamard: bool,
}

impl HeadRecipe {
    /// The shipped recipe, chosen on the validation split (folds 1-3 against fold 4, 64 bits;
    /// fold 5 never chose anything): Hadamard centres raised mAP@all from 0.902 to 0.927 over
    /// random ones; AudioNet's loss is left out, as adding it to random centres lowered
    /// mAP@all from 0.902 to 0.813.
    pub const DEFAULT: HeadRecipe = HeadRecipe {
        centres: true,
        audionet: false,
        window_subsets: true,
        dropout: true,
        hadamard: true,
    };
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadOptions {
    pub hidden: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Share of hidden units dropped in training (when the recipe has dropout).
    pub dropout: f32,
    pub seed: u64,
    pub recipe: HeadRecipe,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            hidden: 512,
            epochs: 60,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            dropout: 0.3,
            seed: 1,
            recipe: HeadRecipe::DEFAULT,
        }
    }
}

/// Labelled clips as a backbone sees them: each clip's window embeddings (`dim` values each).
pub struct LabelledEmbeddings<'a> {
    pub dim: usize,
    pub clips: Vec<&'a [f32]>,
    /// Per clip, its class (below `classes`).
    pub targets: Vec<usize>,
    pub classes: usize,
}

impl LabelledEmbeddings<'_> {
    fn check(&self) -> Result<(), TrainError> {
        let windows_ok = self
            .clips
            .iter()
            .all(|c| !c.is_empty() && c.len().is_multiple_of(self.dim.max(1)));
        if self.dim == 0 || self.clips.is_empty() || !windows_ok {
            return Err(TrainError::NoData(
                "no clips with whole window embeddings".into(),
            ));
        }
        if self.targets.len() != self.clips.len() || self.targets.iter().any(|&t| t >= self.classes)
        {
            return Err(TrainError::NoData("a clip's class is out of range".into()));
        }
        Ok(())
    }
}

/// Trains one head of `bits` bits on `set`, on top of the installed model `backbone`.
pub fn train_head(
    set: &LabelledEmbeddings<'_>,
    backbone: &str,
    bits: usize,
    options: &HeadOptions,
) -> Result<(HashHeadConfig, HashHead), TrainError> {
    set.check()?;
    let config = HashHeadConfig {
        format_version: MODEL_FORMAT_VERSION,
        architecture: ARCHITECTURE.to_string(),
        backbone: backbone.to_string(),
        input_dim: set.dim,
        hidden: options.hidden,
        bits,
    };
    let all_windows: Vec<f32> = set.clips.concat();
    let standardiser = Standardiser::fit(&all_windows, set.dim);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let head = HashHead::with_standardiser(&config, standardiser, vb)?;
    seeded_init(&varmap, options.seed ^ bits as u64)?;
    let mut optimiser = AdamW::new(&varmap, options.weight_decay)?;
    let centres = if options.recipe.hadamard {
        hadamard_centres(set.classes, bits, options.seed)?
    } else {
        hash_centres(set.classes, bits, options.seed)?
    };
    let audionet = AudioNetLoss::for_bits(bits);
    let batches = set.clips.len().div_ceil(options.batch_size.max(1));
    let total_steps = options.epochs * batches;
    let mut order: Vec<usize> = (0..set.clips.len()).collect();
    let mut rng = SeededRng::new(options.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ bits as u64);
    for epoch in 0..options.epochs {
        shuffle(&mut order, &mut rng);
        for (b, batch) in order.chunks(options.batch_size.max(1)).enumerate() {
            let (x, targets) = make_batch(batch, set, &head.standardiser, options, &mut rng)?;
            let mask = hidden_mask(batch.len(), options, &mut rng)?;
            let hash = head.forward_t(&x, mask.as_ref())?;
            let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu)?;
            if options.recipe.centres {
                loss = (loss + centre_loss(&hash, &targets.matmul(&centres)?)?)?;
            }
            if options.recipe.audionet {
                let similarity = targets.matmul(&targets.t()?)?;
                let codes = balanced_sign(&hash)?;
                loss = (loss + audionet.forward(&hash, &codes, &similarity)?.total)?;
            }
            let lr = cosine_lr(options.learning_rate, epoch * batches + b, total_steps);
            optimiser.step(&loss.backward()?, lr)?;
        }
    }
    Ok((config, head))
}

/// A batch of standardised examples (`B x dim`) and one-hot targets (`B x classes`).
fn make_batch(
    batch: &[usize],
    set: &LabelledEmbeddings<'_>,
    standardiser: &Standardiser,
    options: &HeadOptions,
    rng: &mut SeededRng,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dim = set.dim;
    let mut x = Vec::with_capacity(batch.len() * dim);
    let mut targets = vec![0.0f32; batch.len() * set.classes];
    for (row, &i) in batch.iter().enumerate() {
        let windows: Vec<&[f32]> = set.clips[i].chunks_exact(dim).collect();
        let chosen: Vec<&[f32]> = if options.recipe.window_subsets {
            random_subset(&windows, rng)
        } else {
            windows
        };
        let mut mean = vec![0.0f32; dim];
        for w in &chosen {
            mean.iter_mut()
                .zip(*w)
                .for_each(|(m, v)| *m += v / chosen.len() as f32);
        }
        x.extend(mean);
        targets[row * set.classes + set.targets[i]] = 1.0;
    }
    standardiser.apply(&mut x);
    Ok((
        Tensor::from_vec(x, (batch.len(), dim), &Device::Cpu)?,
        Tensor::from_vec(targets, (batch.len(), set.classes), &Device::Cpu)?,
    ))
}

/// A non-empty random subset of `items` (each kept with probability one half, one at least).
fn random_subset<'a>(items: &[&'a [f32]], rng: &mut SeededRng) -> Vec<&'a [f32]> {
    let mut kept: Vec<&[f32]> = items
        .iter()
        .copied()
        .filter(|_| rng.uniform() < 0.5)
        .collect();
    if kept.is_empty() {
        kept.push(items[rng.below(items.len())]);
    }
    kept
}

/// Inverted dropout on the hidden layer from our seeded generator (candle's cannot be seeded).
fn hidden_mask(
    rows: usize,
    options: &HeadOptions,
    rng: &mut SeededRng,
) -> candle_core::Result<Option<Tensor>> {
    if !options.recipe.dropout || options.dropout <= 0.0 {
        return Ok(None);
    }
    let keep = 1.0 - options.dropout;
    let values: Vec<f32> = (0..rows * options.hidden)
        .map(|_| {
            if rng.uniform() < f64::from(keep) {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(values, (rows, options.hidden), &Device::Cpu).map(Some)
}
