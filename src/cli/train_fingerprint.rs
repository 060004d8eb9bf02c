//! `earshot train fingerprint`: trains the exact-match encoder, evaluates it with the
//! exact-match protocol and writes `models/fingerprint/` with its card.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::progress_bar;
use crate::eval::esc50::Esc50;
use crate::eval::fingerprint::{self, BankPart, FingerprintOptions, FingerprintReport, MusicSet};
use crate::index::build::Encoders;
use crate::model::Mode;
use crate::model::config::CARD_FILE;
use crate::model::fingerprint::FingerprintEncoder;
use crate::model::train_fingerprint::{
    FingerprintData, FingerprintProgress, FingerprintTrainOptions, TrainedFingerprint,
    train_fingerprint,
};

#[derive(Debug, Args)]
pub struct TrainFingerprint {
    /// The shared data folder (with esc50/, music/, noise/ and rir/)
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    #[arg(long, default_value_t = 64)]
    bits: usize,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 100)]
    steps_per_epoch: usize,
    /// Pairs per step (NT-Xent negatives: twice this, less two)
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the model folder (`fingerprint/`) goes
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Continue from the checkpoint in `MODELS_DIR/fingerprint.checkpoint`
    #[arg(long)]
    resume: bool,
    /// Queries per length for the evaluation written into the card
    #[arg(long, default_value_t = 150)]
    eval_queries_per_length: usize,
}

pub fn run(args: TrainFingerprint) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        [32, 64, 128].contains(&args.bits),
        "--bits must be 32, 64 or 128"
    );
    let started = Instant::now();
    let data = load_training_data(&args)?;
    let options = FingerprintTrainOptions {
        bits: args.bits,
        epochs: args.epochs,
        batch_size: args.batch_size,
        steps_per_epoch: args.steps_per_epoch,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        seed: args.seed,
    };
    let checkpoints = args.models_dir.join("fingerprint.checkpoint");
    let bar = progress_bar(
        0,
        "epoch {prefix} {bar:25} {pos}/{len} steps [{elapsed}<{eta}] {wide_msg}",
    );
    bar.set_prefix("1");
    let mut on_progress = |p: FingerprintProgress<'_>| {
        match p {
            FingerprintProgress::Batch { done, total, loss } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.3}"));
            }
            FingerprintProgress::Epoch(r) => {
                let line = format!(
                    "epoch {:>3}: loss {:.4}, pairs matched {:.3}, validation {:.3} [{:.0} s]",
                    r.epoch, r.loss, r.pair_accuracy, r.validation, r.seconds
                );
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
                bar.set_prefix((r.epoch + 1).to_string());
            }
        }
        std::ops::ControlFlow::Continue(())
    };
    let trained =
        train_fingerprint(&data, &options, &checkpoints, args.resume, &mut on_progress)
            .with_context(|| format!("training (checkpoints in {})", checkpoints.display()))?;
    bar.finish_and_clear();
    let out = args.models_dir.join("fingerprint");
    trained.save(&out)?;
    let report = evaluate(&args, &out)?;
    let card = model_card(
        &args,
        &out,
        &trained,
        &report,
        started.elapsed().as_secs_f64(),
    );
    std::fs::write(out.join(CARD_FILE), card)
        .with_context(|| format!("writing {}", out.join(CARD_FILE).display()))?;
    println!("{}: trained in {:.0} s", out.display(), trained.seconds);
    super::eval_fingerprint::print_report(&report);
    Ok(ExitCode::SUCCESS)
}

/// ESC-50 audio and the even-position music tracks, and the training share of the noise bank.
fn load_training_data(args: &TrainFingerprint) -> anyhow::Result<FingerprintData> {
    let music = MusicSet::load(&args.data.join("music"))?;
    let esc50 = Esc50::load(&args.data.join("esc50"))?;
    let mut paths: Vec<PathBuf> = music.training_tracks().cloned().collect();
    paths.extend(esc50.clips.iter().map(|c| c.path.clone()));
    let (bank, bank_failed) = fingerprint::noise_bank(&args.data, BankPart::Training);
    let (data, failed) = FingerprintData::decode(&paths, bank);
    for (path, reason) in bank_failed.iter().chain(&failed) {
        eprintln!("cannot use {}: {reason}; left out", path.display());
    }
    eprintln!(
        "training on {} recordings ({:.2} h); {} noises, {} impulse responses",
        data.recordings().len(),
        data.recordings().iter().map(Vec::len).sum::<usize>() as f64 / 16_000.0 / 3600.0,
        data.bank().noises.len(),
        data.bank().rirs.len()
    );
    Ok(data)
}

/// The exact-match protocol with the new model.
fn evaluate(args: &TrainFingerprint, model: &std::path::Path) -> anyhow::Result<FingerprintReport> {
    let music = MusicSet::load(&args.data.join("music"))?;
    let (bank, _) = fingerprint::noise_bank(&args.data, BankPart::Evaluation);
    let encoders: Encoders = [(
        Mode::Fingerprint,
        Box::new(FingerprintEncoder::load(model)?) as Box<dyn crate::model::Encoder>,
    )]
    .into_iter()
    .collect();
    let db = tempfile::Builder::new().prefix("earshot-eval-").tempdir()?;
    let options = FingerprintOptions {
        per_length: args.eval_queries_per_length,
        seed: fingerprint::DEFAULT_SEED,
    };
    Ok(fingerprint::evaluate(
        &music,
        &bank,
        &encoders,
        db.path(),
        &options,
        &|what| eprintln!("evaluation: {what}"),
    )?)
}

fn model_card(
    args: &TrainFingerprint,
    out: &std::path::Path,
    trained: &TrainedFingerprint,
    report: &FingerprintReport,
    total_seconds: f64,
) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# fingerprint\n\nEarshot `fingerprint` encoder (exact match), {} bits. Trained by Earshot's own training command; no outside weights or data.\n",
        args.bits
    );
    let _ = writeln!(
        c,
        "## Command\n\n```\n{}\n```\n",
        super::models::command_line()
    );
    let _ = writeln!(
        c,
        "## Data\n\nTraining: ESC-50 audio (K. J. Piczak, CC BY-NC 3.0) and the music tracks at even positions of `music/manifest.csv` (licences per track in the manifest), from `{}`. Distortions: noise from `noise/` and the noisy ESC-50 classes of folds 1-4, impulse responses from `rir/`, two of every three files (the third is held out for evaluation).\n",
        args.data.display()
    );
    let _ = writeln!(
        c,
        "## Training\n\n| setting | value |\n|---|---|\n| seed | {} |\n| epochs x steps | {} x {} |\n| pairs per step | {} |\n| peak learning rate | {} |\n| weight decay | {} |\n| training time | {:.1} min (whole command {:.1} min) |\n| machine | {} |\n",
        args.seed,
        args.epochs,
        args.steps_per_epoch,
        args.batch_size,
        args.lr,
        args.weight_decay,
        trained.seconds / 60.0,
        total_seconds / 60.0,
        super::models::machine()
    );
    let _ = writeln!(
        c,
        "## Metrics (`earshot eval fingerprint --model {} --queries-per-length {}` reproduces them)\n",
        out.display(),
        args.eval_queries_per_length
    );
    c.push_str(&super::eval_fingerprint::markdown(report));
    let _ = writeln!(
        c,
        "\n## Training curve\n\nThe weights are those of epoch {}, the best on {} fixed validation pairs (distorted window against clean windows, Hamming nearest, evaluation mode).\n\n| epoch | loss | pairs matched in the batch | validation pairs matched | elapsed |\n|---|---|---|---|---|",
        trained.best_epoch,
        crate::model::train_fingerprint::VALIDATION_PAIRS
    );
    for r in &trained.history {
        let _ = writeln!(
            c,
            "| {} | {:.4} | {:.3} | {:.3} | {:.0} s |",
            r.epoch, r.loss, r.pair_accuracy, r.validation, r.seconds
        );
    }
    c
}
