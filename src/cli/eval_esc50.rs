//! `earshot eval esc50`: the ESC-50 retrieval protocol on events models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::heads_bench::Bench;
use crate::eval::esc50::{self, Esc50, Evaluation, Features, Split};
use crate::eval::esc50_index;
use crate::eval::metrics::RetrievalScores;
use crate::learn::{LabelSource, LearnReport};
use crate::model::config::find_model;
use crate::model::events::EventsEncoder;
use crate::model::{birdnet, hash_head};
use crate::train::events::SplitName;

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
    /// With a hash head: score it on a validation split instead (fold 4 against folds 1-3;
    /// `zero-shot-validation`: classes 30-39 only), with every way of weighing its codes
    #[arg(long, value_enum, conflicts_with = "zero_shot")]
    validation: Option<ValidationArg>,
    /// With a backbone (`--model birdnet-v2.4`): codes learned without labels on the
    /// database's own embeddings (PCA + ITQ, `--bits`, default 64), alone and re-ranked
    #[arg(long)]
    unsupervised: bool,
    /// Through the engine: index the database's clips (a backbone learns the library's own
    /// code), search each query clip as `earshot query` does, and time 3 s queries
    #[arg(long)]
    through_index: bool,
    /// With `--through-index` and a backbone: learn the library's codes from the database's
    /// classes (as `earshot learn --labels` does) before searching
    #[arg(long, requires = "through_index")]
    learn: bool,
    /// One JSON object instead of a table
    #[arg(long)]
    json: bool,
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ValidationArg {
    Validation,
    ZeroShotValidation,
}

pub fn run(args: EvalEsc50) -> anyhow::Result<ExitCode> {
    let split = match (args.validation, args.zero_shot) {
        (Some(ValidationArg::Validation), _) => Split::Validation,
        (Some(ValidationArg::ZeroShotValidation), _) => Split::ZeroShotValidation,
        (None, true) => Split::ZeroShot,
        (None, false) => Split::Standard,
    };
    let models = models_to_evaluate(&args)?;
    let (data, features) = load_data(&args.data, args.cache.as_deref())?;
    let mut results = serde_json::Map::new();
    if !args.json {
        let what = match split {
            Split::Standard => "retrieval: queries fold 5, database folds 1-4",
            Split::ZeroShot => "zero-shot: queries fold 5, database folds 1-4, classes 40-49",
            Split::Validation => "validation: queries fold 4, database folds 1-3",
            Split::ZeroShotValidation => {
                "zero-shot validation: queries fold 4, database folds 1-3, classes 30-39"
            }
        };
        println!("ESC-50 {what}");
        println!(
            "{:>5}  {:>7}  {:>7}  {:>6}  {:>9}  {:>10}  model",
            "bits", "mAP@all", "mAP@100", "P@10", "P(r<=2)", "encoding"
        );
    }
    for dir in &models {
        if args.through_index {
            let (name, line) = eval_through_index(dir, &data, split, &args)?;
            results.insert(name, line);
            continue;
        }
        let config = std::fs::read(dir.join(crate::model::config::CONFIG_FILE)).unwrap_or_default();
        match crate::model::architecture(&config).as_deref() {
            Some(birdnet::ARCHITECTURE) if args.unsupervised => {
                let bits = args.bits.unwrap_or(64);
                let (name, line) = eval_unsupervised(dir, &data, split, bits, &args)?;
                results.insert(name, line);
                continue;
            }
            Some(birdnet::ARCHITECTURE) => {
                let (name, line) = eval_backbone(dir, &data, split, args.json)?;
                results.insert(name, line);
                continue;
            }
            Some(hash_head::ARCHITECTURE) => {
                let (name, line) = eval_head(dir, &data, split, &args)?;
                results.insert(name, line);
                continue;
            }
            _ => {}
        }
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

/// A backbone's embeddings ranked by cosine (it has no codes yet): raw and standardised.
fn eval_backbone(
    dir: &Path,
    data: &Esc50,
    split: Split,
    json: bool,
) -> anyhow::Result<(String, serde_json::Value)> {
    let encoder = crate::model::encoder_for(crate::model::Mode::Events, Some(dir))?;
    let name = encoder.info().name.clone();
    let encoders = crate::session::Encoders::from([(crate::model::Mode::Events, encoder)]);
    let e = esc50::evaluate_embeddings(&encoders, data, split);
    for (path, reason) in &e.failed {
        eprintln!("cannot read {}: {reason}; left out", path.display());
    }
    let speed = e.encoded_audio_s / e.encode_seconds.max(1e-9);
    if !json {
        println!(
            "{name}: cosine on clip embeddings (mean of its windows), {} queries against {}; decoding and encoding {speed:.0}x real time",
            e.standardised.queries, e.standardised.database
        );
        for (how, s) in [
            ("standardised", &e.standardised),
            ("raw", &e.raw),
            ("standardised, stored in 8 bits", &e.standardised_8bit),
            ("raw, stored in 8 bits", &e.raw_8bit),
        ] {
            println!(
                "  {how:<30}  mAP@all {:.4}  mAP@100 {:.4}  P@10 {:.4}",
                s.map_all, s.map_100, s.p_at_10
            );
        }
    }
    let scores = |s: &crate::eval::metrics::RetrievalScores| json!({"map_all": s.map_all, "map_100": s.map_100, "p_at_10": s.p_at_10, "queries": s.queries, "database": s.database});
    let line = json!({"standardised": scores(&e.standardised), "raw": scores(&e.raw),
                      "standardised_8bit": scores(&e.standardised_8bit), "raw_8bit": scores(&e.raw_8bit),
                      "encode_x_realtime": speed, "model": dir.to_string_lossy()});
    Ok((name, line))
}

/// A hash head on its backbone's (cached) embeddings: ranked by its codes, then re-ranked.
fn eval_head(
    dir: &Path,
    data: &Esc50,
    split: Split,
    args: &EvalEsc50,
) -> anyhow::Result<(String, serde_json::Value)> {
    let files = crate::model::config::ModelFiles::<hash_head::HashHeadConfig>::read(dir)?;
    let head = files.build(hash_head::HashHead::load)?;
    let bench = Bench::new(data, &files.config.backbone, split, args.cache.as_deref())?;
    let scores = bench.head(&head, files.config.bits)?;
    let by_bits = scores
        .fused
        .iter()
        .map(|(w, s)| (format!("re-ranked, code weight {w}"), s));
    let by_margins = (scores.fused_by_margins.iter())
        .map(|(w, s)| (format!("re-ranked, margin agreement weight {w}"), s));
    let fused: Vec<(String, &RetrievalScores)> = by_bits
        .chain(by_margins)
        .filter(|_| args.validation.is_some())
        .collect();
    let mut rows = vec![
        ("Hamming distance, ties by cosine", &scores.hamming),
        ("query margins on database bits", &scores.margins),
        ("Hamming candidates re-ranked by cosine", &scores.reranked),
    ];
    rows.extend(fused.iter().map(|(name, s)| (name.as_str(), *s)));
    Ok(report(dir, files.config.bits, &rows, args.json))
}

/// A backbone with codes learned without labels on the database's own windows.
fn eval_unsupervised(
    dir: &Path,
    data: &Esc50,
    split: Split,
    bits: usize,
    args: &EvalEsc50,
) -> anyhow::Result<(String, serde_json::Value)> {
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bench = Bench::new(data, &name, split, args.cache.as_deref())?;
    let rows = bench.baselines(bits, 1)?;
    let rows: Vec<(&str, &RetrievalScores)> =
        rows.iter().map(|r| (r.name.as_str(), &r.scores)).collect();
    Ok(report(dir, bits, &rows, args.json))
}

/// Any events model through the engine (see [`crate::eval::esc50_index`]), in a scratch index;
/// with `--learn`, its codes learned from the database's classes first.
fn eval_through_index(
    dir: &Path,
    data: &Esc50,
    split: Split,
    args: &EvalEsc50,
) -> anyhow::Result<(String, serde_json::Value)> {
    let mode = crate::model::Mode::Events;
    let encoders =
        crate::session::Encoders::from([(mode, crate::model::encoder_for(mode, Some(dir))?)]);
    let db = std::env::temp_dir().join(format!("earshot-esc50-index-{}", std::process::id()));
    let evaluated = index_learn_search(encoders, data, split, &db, args.learn);
    // A scratch folder: nothing in it is worth keeping, whatever happened.
    let _ = std::fs::remove_dir_all(&db);
    let (e, learned) = evaluated?;
    let json = args.json;
    for (path, reason) in &e.failed {
        eprintln!("{}: {reason}; left out", path.display());
    }
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if !json {
        let code = if learned.is_some() {
            "codes learned from its classes"
        } else if e.library_code {
            "the library's own code"
        } else {
            "the model's codes"
        };
        let s = &e.scores;
        println!(
            "{name} through the index ({} bits, {code}): mAP@all {:.4}  mAP@100 {:.4}  P@10 {:.4}",
            e.bits, s.map_all, s.map_100, s.p_at_10
        );
        println!(
            "  indexing {:.0}x real time, {:.2} MB per hour; query latency p50/p95: whole clip {:.1}/{:.1} ms, {} s {:.1}/{:.1} ms (encoding alone {:.1}/{:.1} ms)",
            e.index_x_realtime,
            e.mb_per_hour,
            e.query_whole.p50_ms,
            e.query_whole.p95_ms,
            esc50_index::LATENCY_QUERY_S,
            e.query_3s.p50_ms,
            e.query_3s.p95_ms,
            e.encode_3s.p50_ms,
            e.encode_3s.p95_ms
        );
        if let Some(l) = &learned {
            println!(
                "  learned from {} labels on {} files in {:.1} s; held out a fifth: mAP@all {:.4} before, {:.4} after",
                l.labels,
                l.files,
                l.elapsed.as_secs_f64(),
                l.before.map_all,
                l.after.map_all
            );
        }
    }
    let mut line = serde_json::to_value(&e)?;
    if let (Some(l), Some(fields)) = (&learned, line.as_object_mut()) {
        fields.insert(
            "learned".into(),
            json!({"labels": l.labels, "files": l.files, "seconds": l.elapsed.as_secs_f64(),
                   "held_out_map_all_before": l.before.map_all, "held_out_map_all_after": l.after.map_all}),
        );
    }
    Ok((name, line))
}

/// Indexes the database into `db`, learns its codes from its classes when asked, and searches
/// the queries.
fn index_learn_search(
    encoders: crate::session::Encoders,
    data: &Esc50,
    split: Split,
    db: &Path,
    learn: bool,
) -> anyhow::Result<(esc50_index::IndexedEvaluation, Option<LearnReport>)> {
    let indexed = esc50_index::index_database(encoders, data, split, db)?;
    let learned = match learn {
        true => {
            let labels = indexed.labels(data);
            Some(crate::learn::learn(db, LabelSource::Csv(&labels), &|_| {})?)
        }
        false => None,
    };
    Ok((esc50_index::search_queries(indexed, data, db)?, learned))
}

/// Prints one model's rows (unless `json`), and gives its JSON entry.
fn report(
    dir: &Path,
    bits: usize,
    rows: &[(&str, &RetrievalScores)],
    json: bool,
) -> (String, serde_json::Value) {
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if !json {
        println!("{name} ({bits} bits):");
    }
    let mut entries = serde_json::Map::new();
    for (how, s) in rows {
        if !json {
            println!(
                "  {how:<72}  mAP@all {:.4}  mAP@100 {:.4}  P@10 {:.4}",
                s.map_all, s.map_100, s.p_at_10
            );
        }
        entries.insert(
            how.to_string(),
            json!({"map_all": s.map_all, "map_100": s.map_100, "p_at_10": s.p_at_10, "queries": s.queries, "database": s.database}),
        );
    }
    entries.insert("model".into(), json!(dir.to_string_lossy()));
    (name, serde_json::Value::Object(entries))
}

fn models_to_evaluate(args: &EvalEsc50) -> anyhow::Result<Vec<PathBuf>> {
    if !args.model.is_empty() {
        return Ok(args
            .model
            .iter()
            .map(|m| crate::model::model_folder(m))
            .collect());
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

pub(super) fn load_data(root: &Path, cache: Option<&Path>) -> anyhow::Result<(Esc50, Features)> {
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

pub(super) fn evaluate(
    encoder: &EventsEncoder,
    data: &Esc50,
    features: &Features,
    split: Split,
) -> anyhow::Result<Evaluation> {
    let clips = features.trimmed();
    Ok(esc50::evaluate(encoder.net(), data, &clips, split)?)
}

/// The protocol's split for a training split.
pub(super) fn split_of(split: SplitName) -> Split {
    match split {
        SplitName::Standard => Split::Standard,
        SplitName::ZeroShot => Split::ZeroShot,
        SplitName::Validation => Split::Validation,
        SplitName::ZeroShotValidation => Split::ZeroShotValidation,
    }
}
