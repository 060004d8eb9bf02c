//! `earshot eval fingerprint`: the exact-match benchmark, for the installed fingerprint encoder
//! and the LSH baseline side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::eval::fingerprint::{
    self, BankPart, Cell, FingerprintOptions, FingerprintReport, FingerprintSplit, MusicSet,
    QUERY_SECONDS,
};
use crate::model::config::CONFIG_FILE;
use crate::model::found::{FOUND_AT_SECONDS, FoundThresholds};
use crate::model::learned_lsh::LearnedLshEncoder;
use crate::model::{Mode, baseline_encoder, encoder_for};
use crate::session::Encoders;

#[derive(Debug, Args)]
pub struct EvalFingerprint {
    /// The shared data folder (with music/, noise/, rir/ and esc50/)
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Fingerprint model folder (default: the installed one, if any)
    #[arg(long)]
    model: Option<PathBuf>,
    /// Queries per length (1, 2, 3 and 5 s); each is tried under every condition
    #[arg(long, default_value_t = 150)]
    queries_per_length: usize,
    #[arg(long, default_value_t = fingerprint::DEFAULT_SEED)]
    seed: u64,
    /// Rank and place matches by the index's codes alone, without checking them against the
    /// tracks' audio as `earshot search` and the app do
    #[arg(long)]
    codes_only: bool,
    /// Negative queries per length, of each kind (tracks not indexed, ESC-50 clips), each
    /// tried under every condition: audio that must come back "not found"
    #[arg(long, default_value_t = fingerprint::DEFAULT_NEGATIVES_PER_LENGTH)]
    negatives_per_length: usize,
    /// Run on the calibration split instead of the protocol: the training half of the tracks,
    /// the training noises and rooms, ESC-50 folds 1-4 (what the found / not found thresholds
    /// are chosen on)
    #[arg(long)]
    calibrate: bool,
    /// With --calibrate: write the found thresholds this run's negatives give into the
    /// model folder's config.json (--model, a learned-lsh folder)
    #[arg(long, requires_all = ["calibrate", "model"], conflicts_with = "codes_only")]
    write_thresholds: bool,
    /// Write every query's first hit (score, correlation, found, right, and where the query
    /// was cut from and where the hit places it) to this file, one JSON object per line
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Leave out the LSH baseline (by default it is measured first, for comparison)
    #[arg(long)]
    no_baseline: bool,
    /// One JSON object instead of tables
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalFingerprint) -> anyhow::Result<ExitCode> {
    let split = match args.calibrate {
        true => FingerprintSplit::Calibration,
        false => FingerprintSplit::Protocol,
    };
    let options = FingerprintOptions {
        per_length: args.queries_per_length,
        negatives_per_length: args.negatives_per_length,
        seed: args.seed,
        verify_audio: !args.codes_only,
        split,
    };
    let reports = evaluate(
        &args.data,
        args.model.as_deref(),
        !args.no_baseline,
        &options,
    )?;
    if let Some(path) = &args.dump {
        let mut lines = String::new();
        for report in &reports {
            for record in &report.records {
                let mut line = serde_json::to_value(record)?;
                line["encoder"] = report.encoder.clone().into();
                lines.push_str(&format!("{line}\n"));
            }
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        for report in &reports {
            print_report(report);
        }
    }
    if let (true, Some(dir), Some(model)) = (args.write_thresholds, &args.model, reports.last()) {
        write_thresholds(dir, model)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the found thresholds that calibration `report` gives into the model folder `dir`.
pub(super) fn write_thresholds(dir: &Path, report: &FingerprintReport) -> anyhow::Result<()> {
    let found = report.calibrated_thresholds().with_context(|| {
        format!(
            "no thresholds to write into {}: the calibration needs negative queries of every \
             length (--negatives-per-length 1 or more)",
            dir.display()
        )
    })?;
    LearnedLshEncoder::write_found_thresholds(dir, found)?;
    eprintln!(
        "{}: found thresholds written",
        dir.join(CONFIG_FILE).display()
    );
    Ok(())
}

/// The exact-match protocol for the LSH baseline if `baseline`, then for the model in `model`
/// (default: the installed one) unless that is the baseline itself.
pub(super) fn evaluate(
    data: &Path,
    model: Option<&Path>,
    baseline: bool,
    options: &FingerprintOptions,
) -> anyhow::Result<Vec<FingerprintReport>> {
    let music = MusicSet::load(&data.join("music"))?;
    let part = match options.split {
        FingerprintSplit::Protocol => BankPart::Evaluation,
        FingerprintSplit::Calibration => BankPart::Training,
    };
    let (bank, failed) = fingerprint::noise_bank(data, part);
    for (path, reason) in &failed {
        eprintln!("cannot read {}: {reason}; left out", path.display());
    }
    anyhow::ensure!(
        !bank.noises.is_empty() && !bank.rirs.is_empty(),
        "{}: no noise or no impulse responses found (need audio files in noise/ and rir/)",
        data.display()
    );
    let trained = encoder_for(Mode::Fingerprint, model)?;
    let lsh = baseline_encoder(Mode::Fingerprint);
    let encoders = if trained.info() == lsh.info() {
        vec![lsh]
    } else if baseline {
        vec![lsh, trained]
    } else {
        vec![trained]
    };
    let mut reports = Vec::new();
    for encoder in encoders {
        let db = tempfile_dir()?;
        let name = encoder.info().name.clone();
        let set: Encoders = [(Mode::Fingerprint, encoder)].into_iter().collect();
        let progress = |what: &str| eprintln!("{name}: {what}");
        let report = fingerprint::evaluate(&music, &bank, &set, db.path(), options, &progress)
            .with_context(|| format!("fingerprint benchmark with {name}"))?;
        reports.push(report);
    }
    Ok(reports)
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("earshot-eval-")
        .tempdir()
        .context("creating a temporary index folder")
}

/// Query latency over all positive queries, then per query length.
fn latency(r: &FingerprintReport) -> String {
    let by_length: Vec<String> = (r.latency_by_length.iter())
        .map(|l| format!("{} s {:.1}/{:.1}", l.seconds, l.p50_ms, l.p95_ms))
        .collect();
    format!(
        "query latency p50 {:.1} ms, p95 {:.1} ms (p50/p95 by length: {})",
        r.latency_ms_p50,
        r.latency_ms_p95,
        by_length.join(", ")
    )
}

pub(super) fn print_report(r: &FingerprintReport) {
    println!(
        "\n{}: {} tracks, {:.2} h; index {:.2} MB per hour, built at {:.0}x real time",
        r.encoder, r.tracks, r.indexed_hours, r.index_mb_per_hour, r.index_x_realtime
    );
    println!(
        "{}; buckets max {} / mean {:.1}; {:.4}% of the index compared per query segment",
        latency(r),
        r.bucket_max,
        r.bucket_mean,
        100.0 * r.scanned_fraction
    );
    println!(
        "found and right {:.1}% of queries, found but wrong {:.2}% (in another file {:.2}%, \
         at a repeat of the passage in its track {:.2}%)",
        100.0 * r.found_right_rate(),
        100.0 * r.found_wrong_rate(),
        100.0 * r.found_wrong_file_rate(),
        100.0 * r.found_at_repeat_rate()
    );
    for n in &r.negatives {
        println!(
            "negatives ({}s): {} of {} found ({:.2}%)",
            n.kind,
            n.found,
            n.queries,
            100.0 * n.found as f64 / n.queries.max(1) as f64
        );
    }
    if let Some(found) = r.calibrated_thresholds() {
        println!(
            "found thresholds these negatives calibrate:\n{}with them, here: {}",
            thresholds_table(&found),
            r.decided_with(&found)
        );
    }
    print_cells(r, "found and right", |c| {
        format!("{:.1}%", 100.0 * c.found_right_rate())
    });
    print_cells(r, "segment (file) hits", |c| {
        format!(
            "{:.1}% ({:.1}%)",
            100.0 * c.segment_rate(),
            100.0 * c.file_rate()
        )
    });
}

/// Found thresholds as a markdown table: one row per kind of backing, one column per query
/// length.
pub(super) fn thresholds_table(found: &FoundThresholds) -> String {
    let lengths = FOUND_AT_SECONDS.map(|s| format!("{s} s"));
    let mut s = format!(
        "| codes score needed, backed by | {} |\n|---|{}\n",
        lengths.join(" | "),
        "---|".repeat(lengths.len())
    );
    let rows = [
        ("the codes alone", found.codes),
        ("confirming samples", found.confirmed),
        ("a room's onsets", found.room),
        ("agreeing blocks", found.agreed),
    ];
    for (backing, row) in rows {
        let row = row.map(|t| format!("{t:.2}"));
        s.push_str(&format!("| {backing} | {} |\n", row.join(" | ")));
    }
    s
}

/// A table of `what` per condition (rows) and query length (columns).
fn print_cells(r: &FingerprintReport, what: &str, cell_text: impl Fn(&Cell) -> String) {
    print!("{what:<22}");
    for s in QUERY_SECONDS {
        print!("{:>16}", format!("{s} s"));
    }
    println!();
    let mut conditions: Vec<&str> = r.cells.iter().map(|c| c.condition.as_str()).collect();
    conditions.dedup();
    for condition in conditions {
        print!("{condition:<22}");
        for cell in r.cells.iter().filter(|c| c.condition == condition) {
            print!("{:>16}", cell_text(cell));
        }
        println!();
    }
}

/// The report as markdown: the summary figures, then segment (file) hit rates per condition
/// and query length.
pub(super) fn markdown(r: &FingerprintReport) -> String {
    let mut s = format!(
        "{} tracks ({:.2} h) indexed at {:.0}x real time into {:.2} MB per hour; {}; buckets max {} / mean {:.1}; {:.4}% of the index compared per query segment.\n\n| condition | {} |\n|---|{}\n",
        r.tracks,
        r.indexed_hours,
        r.index_x_realtime,
        r.index_mb_per_hour,
        latency(r),
        r.bucket_max,
        r.bucket_mean,
        100.0 * r.scanned_fraction,
        QUERY_SECONDS.map(|s| format!("{s} s")).join(" | "),
        "---|".repeat(QUERY_SECONDS.len()),
    );
    let mut conditions: Vec<&str> = r.cells.iter().map(|c| c.condition.as_str()).collect();
    conditions.dedup();
    for condition in conditions {
        let cells: Vec<String> = r
            .cells
            .iter()
            .filter(|c| c.condition == condition)
            .map(|c| {
                format!(
                    "{:.1}% ({:.1}%)",
                    100.0 * c.segment_rate(),
                    100.0 * c.file_rate()
                )
            })
            .collect();
        s.push_str(&format!("| {condition} | {} |\n", cells.join(" | ")));
    }
    s.push_str(
        "\nEach cell: segment hits (right file, start within 50 ms), then file hits in brackets.\n",
    );
    s
}
