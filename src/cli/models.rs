//! `earshot train` and `earshot eval`: training encoders, writing their model cards, and the
//! benchmark protocols.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::progress_bar;
use crate::eval::esc50::{self, Esc50, Evaluation, Features, Split};
use crate::model::config::{CARD_FILE, find_model};
use crate::model::events::{EventsConfig, EventsEncoder};
use crate::model::train::{self, Progress, Recipe, SplitName, TrainOptions, Trained};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The similar-sounds encoder, supervised on ESC-50 folds 1-4
    Events(TrainEvents),
    /// The exact-match encoder: NT-Xent on clean and distorted windows of ESC-50 and the
    /// even-position music tracks
    Fingerprint(super::train_fingerprint::TrainFingerprint),
}

#[derive(Debug, Args)]
pub struct TrainEvents {
    /// ESC-50 folder (with audio/ and meta/esc50.csv)
    #[arg(long, default_value = esc50::DEFAULT_DATA)]
    data: PathBuf,
    /// Code lengths (16, 32, 64, 128); several (`16,32,64,128`) train one backbone with a hash
    /// head each, and write one model folder per length
    #[arg(long, value_delimiter = ',', default_value = "64")]
    bits: Vec<usize>,
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate (cosine schedule after a short warm-up)
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// standard: all 50 classes; zero-shot: classes 0-39 only
    #[arg(long, value_enum, default_value_t = SplitName::Standard)]
    split: SplitName,
    /// Where the model folders go: events-BITS, or events-BITS-zeroshot
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
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
    cache: Option<PathBuf>,
    /// Ablations: leave out the AudioNet loss, the classification head, SpecAugment or mixup
    #[arg(long)]
    no_audionet: bool,
    #[arg(long)]
    no_classifier: bool,
    #[arg(long)]
    no_spec_augment: bool,
    #[arg(long)]
    no_mixup: bool,
    /// Ablation: leave out the hash-centre targets
    #[arg(long)]
    no_centres: bool,
    /// Ablation: leave the spectral-temporal attention mask out of the network
    #[arg(long)]
    no_attention: bool,
    /// Ablation: the hash layer reads the embedding instead of the class posterior
    #[arg(long)]
    hash_from_embedding: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// ESC-50 retrieval: database folds 1-4, queries fold 5, relevant = same class
    Esc50(EvalEsc50),
    /// Exact match: music tracks indexed, distorted 1-5 s queries from the odd-position tracks
    Fingerprint(super::eval_fingerprint::EvalFingerprint),
}

#[derive(Debug, Args)]
pub struct EvalEsc50 {
    #[arg(long, default_value = esc50::DEFAULT_DATA)]
    data: PathBuf,
    /// Model folders (default: the installed events-16, -32, -64 and -128)
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Only the installed model of this code length
    #[arg(long)]
    bits: Option<usize>,
    /// Zero-shot: classes 40-49 only (default model: events-64-zeroshot)
    #[arg(long)]
    zero_shot: bool,
    /// One JSON object instead of a table
    #[arg(long)]
    json: bool,
    #[arg(long)]
    cache: Option<PathBuf>,
}

pub fn train(command: TrainCommand) -> anyhow::Result<ExitCode> {
    match command {
        TrainCommand::Events(args) => train_events(args),
        TrainCommand::Fingerprint(args) => super::train_fingerprint::run(args),
    }
}

fn train_events(args: TrainEvents) -> anyhow::Result<ExitCode> {
    let options = TrainOptions {
        bits: args.bits.clone(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        seed: args.seed,
        split: args.split,
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
    anyhow::ensure!(args.batch_size >= 2, "--batch-size must be at least 2");
    let suffix = if args.split == SplitName::ZeroShot {
        "-zeroshot"
    } else {
        ""
    };
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
                // Off a terminal the bar is hidden, and so would its lines be.
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
    bar.set_prefix("1");
    let trained = train::train_events(
        &data,
        &features,
        &options,
        &checkpoints,
        args.resume,
        &mut on_progress,
    )
    .with_context(|| format!("training (checkpoints in {})", checkpoints.display()))?;
    bar.finish_and_clear();
    for &bits in &args.bits {
        let out = folder(bits);
        trained.save(&out, bits)?;
        let encoder = EventsEncoder::load(&out)?;
        let evaluation = evaluate(&encoder, &data, &features, options.split.split())?;
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

fn load_data(root: &Path, cache: Option<&Path>) -> anyhow::Result<(Esc50, Features)> {
    let data = Esc50::load(root)?;
    let cache = cache
        .map(Path::to_path_buf)
        .or_else(esc50::default_cache_dir);
    let features = esc50::features(&data, cache.as_deref())?;
    for (path, reason) in &features.failed {
        eprintln!("cannot read {}: {reason}; left out", path.display());
    }
    Ok((data, features))
}

fn evaluate(
    encoder: &EventsEncoder,
    data: &Esc50,
    features: &Features,
    split: Split,
) -> anyhow::Result<Evaluation> {
    let clips = features.trimmed();
    Ok(esc50::evaluate(encoder.net(), data, &clips, split)?)
}

/// This run's command line as a user would type it: `earshot` and the arguments, wherever the
/// binary was run from.
pub(crate) fn command_line() -> String {
    std::iter::once("earshot".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn eval(command: EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Esc50(args) => eval_esc50(args),
        EvalCommand::Fingerprint(args) => super::eval_fingerprint::run(args),
    }
}

fn eval_esc50(args: EvalEsc50) -> anyhow::Result<ExitCode> {
    let split = if args.zero_shot {
        Split::ZeroShot
    } else {
        Split::Standard
    };
    let models = models_to_evaluate(&args)?;
    let (data, features) = load_data(&args.data, args.cache.as_deref())?;
    let mut results = serde_json::Map::new();
    if !args.json {
        println!(
            "ESC-50 {}: queries fold 5, database folds 1-4{}",
            if args.zero_shot {
                "zero-shot"
            } else {
                "retrieval"
            },
            if args.zero_shot {
                ", classes 40-49"
            } else {
                ""
            }
        );
        println!(
            "{:>5}  {:>7}  {:>7}  {:>6}  {:>9}  {:>10}  model",
            "bits", "mAP@all", "mAP@100", "P@10", "P(r<=2)", "encoding"
        );
    }
    for dir in &models {
        let encoder = EventsEncoder::load(dir)?;
        let e = evaluate(&encoder, &data, &features, split)?;
        let s = &e.scores;
        let speed = e.encoded_audio_s / e.encode_seconds.max(1e-9);
        let bits = encoder.config().bits;
        if !args.json {
            println!(
                "{bits:>5}  {:>7.4}  {:>7.4}  {:>6.4}  {:>9.4}  {:>8.0}x  {}{}",
                s.map_all,
                s.map_100,
                s.p_at_10,
                s.p_hamming2,
                speed,
                dir.display(),
                // The classifier never saw the zero-shot classes.
                if args.zero_shot {
                    String::new()
                } else {
                    format!("  (classifier accuracy {:.3})", e.query_accuracy)
                }
            );
        }
        results.insert(
            bits.to_string(),
            json!({"map_all": s.map_all, "map_100": s.map_100, "p_at_10": s.p_at_10, "p_hamming2": s.p_hamming2,
                   "queries": s.queries, "database": s.database, "encode_x_realtime": speed, "model": dir.to_string_lossy()}),
        );
    }
    if args.json {
        let split_name = if args.zero_shot {
            "zero-shot"
        } else {
            "standard"
        };
        println!(
            "{}",
            json!({"protocol": "esc50", "split": split_name, "bits": results})
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn models_to_evaluate(args: &EvalEsc50) -> anyhow::Result<Vec<PathBuf>> {
    if !args.model.is_empty() {
        return Ok(args.model.clone());
    }
    let suffix = if args.zero_shot { "-zeroshot" } else { "" };
    let bits: Vec<usize> = args.bits.map_or(vec![16, 32, 64, 128], |b| vec![b]);
    let found: Vec<PathBuf> = bits
        .iter()
        .filter_map(|b| find_model(&format!("events-{b}{suffix}")))
        .collect();
    anyhow::ensure!(
        !found.is_empty(),
        "no installed events{suffix} model found; pass --model DIR or train one with `earshot train events`"
    );
    Ok(found)
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
    };
    let _ = writeln!(
        c,
        "## Data\n\nESC-50 (K. J. Piczak, CC BY-NC 3.0) from `{}`: trained on {split}. Evaluation: queries fold 5, database folds 1-4{}; relevant = same class.\n",
        args.data.display(),
        if options.split == SplitName::ZeroShot {
            ", classes 40-49 only"
        } else {
            ""
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

pub(super) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Training runs on rayon's pool, which RAYON_NUM_THREADS may make smaller than the machine.
    let threads = rayon::current_num_threads();
    format!("{cpu}, {cores} cores, {threads} training threads, no GPU")
}
