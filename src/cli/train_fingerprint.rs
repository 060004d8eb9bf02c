//! `earshot train fingerprint`: trains the exact-match encoder (a learned projection by
//! default, or the convolutional network), evaluates it with the exact-match protocol next to
//! the LSH baseline and writes `models/fingerprint/` with its card.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::card::{command_line, machine};
use super::text::{epoch_done, progress_bar};
use crate::eval::esc50::Esc50;
use crate::eval::fingerprint::{self, BankPart, FingerprintReport, MusicSet};
use crate::model::config::{CARD_FILE, MODEL_FORMAT_VERSION, Versioned};
use crate::model::learned_lsh::{self, LearnedLshConfig, LearnedLshEncoder};
use crate::model::lsh::{FINGERPRINT_GRID, Grid};
use crate::model::{Mode, Segmentation};
use crate::train::fingerprint::{
    FingerprintData, FingerprintProgress, FingerprintTrainOptions, summary_pairs, train_fingerprint,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Architecture {
    LearnedLsh,
    Cnn,
}

#[derive(Debug, Args)]
pub struct TrainFingerprint {
    /// The shared data folder (with esc50/, music/, noise/ and rir/)
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// What to train: a projection of the pooled spectrogram learned in closed form, or the
    /// attention CNN trained with NT-Xent
    #[arg(long, value_enum, default_value_t = Architecture::LearnedLsh)]
    architecture: Architecture,
    /// Code length (default: 128 for learned-lsh, 64 for cnn)
    #[arg(long)]
    bits: Option<usize>,
    /// learned-lsh: frames (10 ms) between library segments
    #[arg(long, default_value_t = learned_lsh::DEFAULT_HOP)]
    hop: usize,
    /// learned-lsh: time blocks the 0.96 s segment is pooled into
    #[arg(long, default_value_t = FINGERPRINT_GRID.time_blocks)]
    time_blocks: usize,
    /// learned-lsh: mel bands pooled into each cell of the summary (64 bands in all)
    #[arg(long, default_value_t = FINGERPRINT_GRID.bands_per_cell)]
    bands_per_cell: usize,
    /// learned-lsh: (clean, distorted) window pairs the projection is learned from
    #[arg(long, default_value_t = 100_000)]
    pairs: usize,
    /// cnn: training epochs (and steps per epoch, pairs per step, learning rate below)
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
    /// learned-lsh: queries per length, and negative queries per length of each kind, on
    /// the calibration split that sets the model's found thresholds
    #[arg(long, default_value_t = 40)]
    calibration_queries_per_length: usize,
    #[arg(long, default_value_t = 100)]
    calibration_negatives_per_length: usize,
}

pub fn run(args: TrainFingerprint) -> anyhow::Result<ExitCode> {
    let bits = args.bits.unwrap_or(match args.architecture {
        Architecture::LearnedLsh => learned_lsh::DEFAULT_BITS,
        Architecture::Cnn => 64,
    });
    // Settings are checked before the data is read, so a mistake fails at once.
    let projection = match args.architecture {
        Architecture::LearnedLsh => {
            let config = LearnedLshConfig {
                format_version: MODEL_FORMAT_VERSION,
                architecture: learned_lsh::ARCHITECTURE.to_string(),
                bits,
                grid: Grid {
                    time_blocks: args.time_blocks,
                    bands_per_cell: args.bands_per_cell,
                },
                segmentation: Segmentation {
                    hop: args.hop,
                    ..Mode::Fingerprint.segmentation()
                },
                found: None,
            };
            config.check().map_err(anyhow::Error::msg)?;
            Some(config)
        }
        Architecture::Cnn => {
            anyhow::ensure!(
                [32, 64, 128].contains(&bits),
                "--bits must be 32, 64 or 128"
            );
            None
        }
    };
    let started = Instant::now();
    let data = load_training_data(&args)?;
    let out = args.models_dir.join("fingerprint");
    let (trained, calibration) = match projection {
        Some(config) => {
            let trained = learn_projection(&args, &data, &config, &out)?;
            (trained, Some(calibrate(&args, &out)?))
        }
        None => (train_network(&args, &data, bits, &out)?, None),
    };
    let options = fingerprint::FingerprintOptions {
        per_length: args.eval_queries_per_length,
        // The found / not found thresholds were calibrated on the calibration split.
        negatives_per_length: 0,
        seed: fingerprint::DEFAULT_SEED,
        verify_audio: true,
        split: fingerprint::FingerprintSplit::Protocol,
    };
    let reports = super::eval_fingerprint::evaluate(&args.data, Some(&out), true, &options)?;
    let card = model_card(
        &args,
        bits,
        &trained,
        calibration.as_ref(),
        &reports,
        started.elapsed().as_secs_f64(),
    );
    std::fs::write(out.join(CARD_FILE), card)
        .with_context(|| format!("writing {}", out.join(CARD_FILE).display()))?;
    println!("{}: trained in {:.0} s", out.display(), trained.seconds);
    for report in &reports {
        super::eval_fingerprint::print_report(report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets the new model's found thresholds from queries of audio it has not indexed, on the
/// calibration split (never the protocol's), and writes them into its config.
fn calibrate(args: &TrainFingerprint, out: &Path) -> anyhow::Result<FingerprintReport> {
    let options = fingerprint::FingerprintOptions {
        per_length: args.calibration_queries_per_length,
        negatives_per_length: args.calibration_negatives_per_length,
        seed: fingerprint::DEFAULT_SEED,
        verify_audio: true,
        split: fingerprint::FingerprintSplit::Calibration,
    };
    eprintln!("calibrating the found thresholds on the calibration split");
    let mut reports = super::eval_fingerprint::evaluate(&args.data, Some(out), false, &options)?;
    let report = reports.pop().context("the calibration measured no model")?;
    super::eval_fingerprint::write_thresholds(out, &report)?;
    Ok(report)
}

/// What the card says about a training run besides the command and the evaluation.
struct TrainingRecord {
    seconds: f64,
    /// `(setting, value)` rows of the card's training table.
    settings: Vec<(String, String)>,
    /// Markdown after the metrics (the CNN's training curve).
    details: String,
}

/// Learns the projection in closed form and writes the model folder.
fn learn_projection(
    args: &TrainFingerprint,
    data: &FingerprintData,
    config: &LearnedLshConfig,
    out: &std::path::Path,
) -> anyhow::Result<TrainingRecord> {
    let started = Instant::now();
    let grid = config.grid;
    eprintln!("summarising {} (clean, distorted) window pairs", args.pairs);
    let (clean, distorted) = summary_pairs(data, args.pairs, args.seed, grid);
    let projection = crate::train::ldahash::learn(&clean, &distorted, grid.dim(), config.bits)?;
    LearnedLshEncoder::save(out, config, &projection)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainingRecord {
        seconds,
        settings: vec![
            (
                "architecture".into(),
                "learned LSH: generalised eigenvectors of segment against distortion covariance"
                    .into(),
            ),
            (
                "summary".into(),
                format!(
                    "{} time blocks x {} band cells ({} values)",
                    grid.time_blocks,
                    grid.cells(),
                    grid.dim()
                ),
            ),
            (
                "segments".into(),
                format!("0.96 s every {} ms", 10 * args.hop),
            ),
            ("window pairs".into(), args.pairs.to_string()),
            ("seed".into(), args.seed.to_string()),
            ("training time".into(), format!("{:.1} min", seconds / 60.0)),
        ],
        details: String::new(),
    })
}

/// Trains the attention CNN with NT-Xent and writes the model folder.
fn train_network(
    args: &TrainFingerprint,
    data: &FingerprintData,
    bits: usize,
    out: &std::path::Path,
) -> anyhow::Result<TrainingRecord> {
    let options = FingerprintTrainOptions {
        bits,
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
                epoch_done(&bar, r.epoch, line);
            }
        }
        std::ops::ControlFlow::Continue(())
    };
    let trained = train_fingerprint(data, &options, &checkpoints, args.resume, &mut on_progress)
        .with_context(|| format!("training (checkpoints in {})", checkpoints.display()))?;
    bar.finish_and_clear();
    trained.save(out)?;
    let mut details = format!(
        "\n## Training curve\n\nThe weights are those of epoch {}, the best on {} fixed validation pairs (distorted window against clean windows, Hamming nearest, evaluation mode).\n\n| epoch | loss | pairs matched in the batch | validation pairs matched | elapsed |\n|---|---|---|---|---|\n",
        trained.best_epoch,
        crate::train::fingerprint::VALIDATION_PAIRS
    );
    for r in &trained.history {
        let _ = writeln!(
            details,
            "| {} | {:.4} | {:.3} | {:.3} | {:.0} s |",
            r.epoch, r.loss, r.pair_accuracy, r.validation, r.seconds
        );
    }
    Ok(TrainingRecord {
        seconds: trained.seconds,
        settings: vec![
            ("architecture".into(), "attention CNN, NT-Xent".into()),
            ("seed".into(), args.seed.to_string()),
            (
                "epochs x steps".into(),
                format!("{} x {}", args.epochs, args.steps_per_epoch),
            ),
            ("pairs per step".into(), args.batch_size.to_string()),
            ("peak learning rate".into(), args.lr.to_string()),
            ("weight decay".into(), args.weight_decay.to_string()),
            (
                "training time".into(),
                format!("{:.1} min", trained.seconds / 60.0),
            ),
        ],
        details,
    })
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

fn model_card(
    args: &TrainFingerprint,
    bits: usize,
    trained: &TrainingRecord,
    calibration: Option<&FingerprintReport>,
    reports: &[FingerprintReport],
    total_seconds: f64,
) -> String {
    let out = args.models_dir.join("fingerprint");
    let mut c = format!(
        "# fingerprint\n\nEarshot `fingerprint` encoder (exact match), {bits} bits. Trained by Earshot's own training command; no outside weights or data.\n\n## Command\n\n```\n{}\n```\n\n",
        command_line()
    );
    let _ = writeln!(
        c,
        "## Data\n\nTraining: ESC-50 audio (K. J. Piczak, CC BY-NC 3.0) and the music tracks at even positions of `music/manifest.csv` (licences per track in the manifest), from `{}`. Distortions: noise from `noise/` and the noisy ESC-50 classes of folds 1-4, impulse responses from `rir/`, two of every three files (the third is held out for evaluation).\n",
        args.data.display()
    );
    c.push_str("## Training\n\n| setting | value |\n|---|---|\n");
    for (setting, value) in &trained.settings {
        let _ = writeln!(c, "| {setting} | {value} |");
    }
    let _ = writeln!(
        c,
        "| whole command | {:.1} min (with the evaluation) |\n| machine | {} |\n",
        total_seconds / 60.0,
        machine()
    );
    let _ = writeln!(
        c,
        "## Metrics\n\n`earshot eval fingerprint --model {} --queries-per-length {}` reproduces them; it prints the LSH baseline's figures first, as this card does. Each search checks its first three files against the tracks' audio, as `earshot search` and the app do; `--codes-only` measures the index's codes alone.\n",
        out.display(),
        args.eval_queries_per_length
    );
    for report in reports {
        let _ = writeln!(c, "### {}\n", report.encoder);
        c.push_str(&super::eval_fingerprint::markdown(report));
        c.push('\n');
    }
    if let Some(report) = calibration {
        c.push_str(&found_thresholds_section(args, report));
    }
    c.push_str(&trained.details);
    c
}

/// The card's account of the found thresholds: what set them, and what they gave there.
fn found_thresholds_section(args: &TrainFingerprint, report: &FingerprintReport) -> String {
    let mut c = format!(
        "## Found thresholds\n\nSet after training on the calibration split (a quarter of the training-half tracks indexed, the training noises and rooms; negatives: other training-half tracks and ESC-50 folds 1-4, not indexed), never on the protocol: per query length and kind of backing, the highest codes score a negative reached, plus 0.02. `earshot eval fingerprint --calibrate --no-baseline --model {} --queries-per-length {} --negatives-per-length {} --write-thresholds` sets them again.\n\n",
        args.models_dir.join("fingerprint").display(),
        args.calibration_queries_per_length,
        args.calibration_negatives_per_length,
    );
    if let Some(found) = report.calibrated_thresholds() {
        c.push_str(&super::eval_fingerprint::thresholds_table(&found));
        let _ = writeln!(c, "\nWith them, there: {}.\n", report.decided_with(&found));
    }
    c
}
