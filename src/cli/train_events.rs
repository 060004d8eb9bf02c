//! `earshot train events`: training the similar-sounds encoder on ESC-50, and its model card.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::card::{command_line, machine};
use super::eval_esc50::{evaluate, load_data, split_of};
use super::text::{epoch_done, progress_bar};
use crate::eval::esc50::{self, Evaluation};
use crate::model::config::CARD_FILE;
use crate::model::events::{EventsConfig, EventsEncoder};
use crate::train::events::{
    self as train, Progress, Recipe, SplitName, TrainOptions, Trained, TrainingSet,
};

#[derive(Debug, Args)]
pub struct TrainEvents {
    /// ESC-50 folder (with audio/ and meta/esc50.csv)
    #[arg(long, default_value = esc50::DEFAULT_DATA)]
    pub(super) data: PathBuf,
    /// Code lengths (16, 32, 64, 128); several (`16,32,64,128`) train one backbone with a hash
    /// head each, and write one model folder per length
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub(super) bits: Vec<usize>,
    /// Epochs (default 60)
    #[arg(long)]
    pub(super) epochs: Option<usize>,
    /// Clips per batch (default 32; 64 for hash heads on a backbone)
    #[arg(long)]
    pub(super) batch_size: Option<usize>,
    /// Peak learning rate, cosine schedule after a short warm-up (default 2e-3; 1e-3 for hash
    /// heads on a backbone)
    #[arg(long)]
    pub(super) lr: Option<f64>,
    #[arg(long, default_value_t = 1e-2)]
    pub(super) weight_decay: f64,
    #[arg(long, default_value_t = 1)]
    pub(super) seed: u64,
    /// standard: all 50 classes; zero-shot: classes 0-39 only
    #[arg(long, value_enum, default_value_t = SplitArg::Standard)]
    pub(super) split: SplitArg,
    /// Where the model folders go: events-BITS, or events-BITS-zeroshot
    #[arg(long, default_value = "models")]
    pub(super) models_dir: PathBuf,
    /// Validate every N epochs
    #[arg(long, default_value_t = 1)]
    eval_every: usize,
    /// Channels of the first convolution (the later layers have 2, 4 and 8 times as many)
    #[arg(long, default_value_t = EventsConfig::DEFAULT_FRONT_CHANNELS)]
    width: usize,
    /// Continue from the checkpoint in the output folder
    #[arg(long)]
    resume: bool,
    /// Feature cache folder (default: Earshot's cache folder)
    #[arg(long)]
    pub(super) cache: Option<PathBuf>,
    /// Ablations: leave out the AudioNet loss, the classification head, SpecAugment or mixup
    #[arg(long)]
    pub(super) no_audionet: bool,
    #[arg(long)]
    no_classifier: bool,
    #[arg(long)]
    no_spec_augment: bool,
    #[arg(long)]
    no_mixup: bool,
    /// Ablation: leave out the hash-centre targets
    #[arg(long)]
    pub(super) no_centres: bool,
    /// Ablation: leave the spectral-temporal attention mask out of the network
    #[arg(long)]
    no_attention: bool,
    /// Ablation: the hash layer reads the embedding instead of the class posterior
    #[arg(long)]
    hash_from_embedding: bool,
    /// Train hash heads on this installed backbone's embeddings instead of a network from
    /// scratch (`birdnet-v2.4`): writes events-birdnet-BITS folders that hold the heads only
    #[arg(long)]
    pub(super) backbone: Option<String>,
    /// Hidden units of each hash head (with --backbone)
    #[arg(long, default_value_t = 512)]
    pub(super) hidden: usize,
    /// Ablations with --backbone: each example a clip's mean instead of a random subset of
    /// its windows; no dropout
    #[arg(long)]
    pub(super) no_window_subsets: bool,
    #[arg(long)]
    pub(super) no_dropout: bool,
    /// With --backbone: add AudioNet's pairwise loss to the hash centres (off by default: it
    /// lowered validation mAP)
    #[arg(long)]
    pub(super) with_audionet: bool,
    /// Ablation with --backbone: seeded random class centres instead of a Hadamard matrix's
    #[arg(long)]
    pub(super) random_centres: bool,
}

/// ESC-50's splits as the command line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// All 50 classes.
    Standard,
    /// Classes 0-39 only (40-49 stay unseen).
    ZeroShot,
    /// Folds 1-3, scored with fold 4 against them: for choosing a recipe (fold 5 unseen).
    Validation,
    /// Folds 1-3 of classes 0-29, scored on fold 4 of classes 30-39: for choosing how unseen
    /// classes are ranked (fold 5 and classes 40-49 unseen).
    ZeroShotValidation,
}

impl SplitArg {
    /// What the split adds to a model folder's name.
    pub fn suffix(self) -> &'static str {
        match self {
            SplitArg::Standard => "",
            SplitArg::ZeroShot => "-zeroshot",
            SplitArg::Validation => "-validation",
            SplitArg::ZeroShotValidation => "-zeroshot-validation",
        }
    }
}

impl From<SplitArg> for SplitName {
    fn from(split: SplitArg) -> Self {
        match split {
            SplitArg::Standard => SplitName::Standard,
            SplitArg::ZeroShot => SplitName::ZeroShot,
            SplitArg::Validation => SplitName::Validation,
            SplitArg::ZeroShotValidation => SplitName::ZeroShotValidation,
        }
    }
}

pub fn run(args: TrainEvents) -> anyhow::Result<ExitCode> {
    let options = TrainOptions {
        bits: args.bits.clone(),
        epochs: args.epochs.unwrap_or(60),
        batch_size: args.batch_size.unwrap_or(32),
        learning_rate: args.lr.unwrap_or(2e-3),
        weight_decay: args.weight_decay,
        seed: args.seed,
        split: args.split.into(),
        recipe: Recipe {
            audionet: !args.no_audionet,
            classifier: !args.no_classifier,
            spec_augment: !args.no_spec_augment,
            mixup: !args.no_mixup,
            centres: !args.no_centres,
            attention: !args.no_attention,
            hash_from_posterior: !args.hash_from_embedding,
        },
        eval_every: args.eval_every,
        width: args.width,
    };
    anyhow::ensure!(
        !args.bits.is_empty() && args.bits.iter().all(|b| [16, 32, 64, 128].contains(b)),
        "--bits must be 16, 32, 64 or 128 (or several of them, comma-separated)"
    );
    anyhow::ensure!(options.batch_size >= 2, "--batch-size must be at least 2");
    let suffix = args.split.suffix();
    let folder = |bits: usize| args.models_dir.join(format!("events-{bits}{suffix}"));
    let joined: Vec<String> = args.bits.iter().map(usize::to_string).collect();
    let checkpoints = args
        .models_dir
        .join(format!("events-{}{suffix}.checkpoint", joined.join("-")));
    let (data, features) = load_data(&args.data, args.cache.as_deref())?;
    let started = Instant::now();
    let bar = progress_bar(
        0,
        "epoch {prefix} {bar:25} {pos}/{len} batches [{elapsed}<{eta}] {wide_msg}",
    );
    let mut on_progress = |p: Progress<'_>| {
        match p {
            Progress::Batch { done, total, loss } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.3}"));
            }
            Progress::Epoch(r) => {
                let val = r
                    .val_map
                    .map_or(String::new(), |m| format!(", validation mAP {m:.3}"));
                let line = format!(
                    "epoch {:>3}: loss {:.4} (hashing {:.4}, classifier {:.4}){val} [{:.0} s]",
                    r.epoch, r.loss, r.hashing, r.classifier, r.seconds
                );
                epoch_done(&bar, r.epoch, line);
            }
        }
        std::ops::ControlFlow::Continue(())
    };
    bar.set_prefix("1");
    let split = split_of(options.split);
    let all_clips = features.trimmed();
    // The training clips, in the data's order: that order and the seed decide every batch.
    let training: Vec<usize> = (0..data.clips.len())
        .filter(|&i| split.is_training(&data.clips[i]) && features.clips[i].is_some())
        .collect();
    let set = TrainingSet {
        clips: training.iter().map(|&i| all_clips[i]).collect(),
        targets: training.iter().map(|&i| data.clips[i].target).collect(),
        labels: data.labels.clone(),
    };
    let mut validate = |net: &crate::model::events::EventsNet| {
        Ok(esc50::evaluate(net, &data, &all_clips, split)?
            .scores
            .map_all)
    };
    let trained = train::train_events(
        &set,
        &options,
        &checkpoints,
        args.resume,
        &mut validate,
        &mut on_progress,
    )
    .with_context(|| format!("training (checkpoints in {})", checkpoints.display()))?;
    bar.finish_and_clear();
    for &bits in &args.bits {
        let out = folder(bits);
        trained.save(&out, bits)?;
        let encoder = EventsEncoder::load(&out)?;
        let evaluation = evaluate(&encoder, &data, &features, split)?;
        let card = model_card(
            &args,
            &options,
            bits,
            &trained,
            &evaluation,
            &out,
            started.elapsed().as_secs_f64(),
        );
        std::fs::write(out.join(CARD_FILE), card)
            .with_context(|| format!("writing {}", out.join(CARD_FILE).display()))?;
        let s = &evaluation.scores;
        println!(
            "{}: mAP@all {:.4}, mAP@100 {:.4}, P@10 {:.4}, P(r<=2) {:.4}; classifier accuracy {:.3}; trained in {:.0} s",
            out.display(),
            s.map_all,
            s.map_100,
            s.p_at_10,
            s.p_hamming2,
            evaluation.query_accuracy,
            trained.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The model card: what was run, on what, how long it took, and what it measures.
fn model_card(
    args: &TrainEvents,
    options: &TrainOptions,
    bits: usize,
    trained: &Trained,
    evaluation: &Evaluation,
    out: &Path,
    total_seconds: f64,
) -> String {
    let command = command_line();
    let zero_shot = options.split == SplitName::ZeroShot;
    let s = &evaluation.scores;
    let size =
        std::fs::metadata(out.join(crate::model::config::WEIGHTS_FILE)).map_or(0, |m| m.len());
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# {}\n",
        out.file_name().map_or_else(
            || out.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let _ = writeln!(
        c,
        "Earshot `events` encoder (similar sounds), {bits} bits. Trained by Earshot's own training command; no outside weights or data.\n"
    );
    if options.bits.len() > 1 {
        let _ = writeln!(
            c,
            "One training run taught one backbone with a hash head per code length ({:?} bits); this folder holds the backbone and the {bits}-bit head.\n",
            options.bits
        );
    }
    let _ = writeln!(c, "## Command\n\n```\n{command}\n```\n");
    let split = match options.split {
        SplitName::Standard => "folds 1-4, all 50 classes (1600 clips)",
        SplitName::ZeroShot => "folds 1-4, classes 0-39 only (1280 clips)",
        SplitName::Validation => "folds 1-3, all 50 classes (1200 clips)",
        SplitName::ZeroShotValidation => "folds 1-3, classes 0-29 only (720 clips)",
    };
    let _ = writeln!(
        c,
        "## Data\n\nESC-50 (K. J. Piczak, CC BY-NC 3.0) from `{}`: trained on {split}. Evaluation: queries fold 5, database folds 1-4{}; relevant = same class.\n",
        args.data.display(),
        match options.split {
            SplitName::ZeroShot => ", classes 40-49 only",
            SplitName::Validation => " (validation: queries fold 4, database folds 1-3)",
            SplitName::ZeroShotValidation => {
                " (validation: queries fold 4, database folds 1-3, classes 30-39 only)"
            }
            SplitName::Standard => "",
        }
    );
    let _ = writeln!(c, "## Training\n\n| setting | value |\n|---|---|");
    for (k, v) in [
        ("seed", options.seed.to_string()),
        ("epochs", options.epochs.to_string()),
        ("batch size", options.batch_size.to_string()),
        ("peak learning rate", options.learning_rate.to_string()),
        ("weight decay", options.weight_decay.to_string()),
        ("recipe", format!("{:?}", options.recipe)),
        (
            "training time",
            format!(
                "{:.1} min (whole command {:.1} min)",
                trained.seconds / 60.0,
                total_seconds / 60.0
            ),
        ),
        ("machine", machine()),
        ("weights", format!("{:.2} MB", size as f64 / 1e6)),
    ] {
        let _ = writeln!(c, "| {k} | {v} |");
    }
    let _ = writeln!(
        c,
        "\n## Metrics (measured at the end of training; `earshot eval esc50{} --model {}` reproduces them)\n",
        if zero_shot { " --zero-shot" } else { "" },
        out.display()
    );
    let _ = writeln!(
        c,
        "| mAP@all | mAP@100 | P@10 | P(Hamming <= 2) | encoding speed |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        c,
        "| {:.4} | {:.4} | {:.4} | {:.4} | {:.0}x real time (log-mel to code, {} clips) |\n",
        s.map_all,
        s.map_100,
        s.p_at_10,
        s.p_hamming2,
        evaluation.encoded_audio_s / evaluation.encode_seconds.max(1e-9),
        s.queries + s.database
    );
    if !zero_shot {
        let _ = writeln!(
            c,
            "Classification head accuracy on the queries: {:.4}.\n",
            evaluation.query_accuracy
        );
    }
    let _ = writeln!(
        c,
        "## Training curve\n\nValidation mAP@all is that of the first head ({} bits).\n\n| epoch | loss | hashing | classifier | validation mAP@all | elapsed |\n|---|---|---|---|---|---|",
        options.bits[0]
    );
    for r in &trained.history {
        let val = r.val_map.map_or("".into(), |m| format!("{m:.4}"));
        let _ = writeln!(
            c,
            "| {} | {:.4} | {:.4} | {:.4} | {val} | {:.0} s |",
            r.epoch, r.loss, r.hashing, r.classifier, r.seconds
        );
    }
    let _ = writeln!(
        c,
        "\nValidation is the evaluation protocol itself (fold 5 against folds 1-4), reported for monitoring only: the model kept is always the last epoch, never the best one."
    );
    c
}
