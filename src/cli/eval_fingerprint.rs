//! `earshot eval fingerprint`: the exact-match benchmark, for the installed fingerprint encoder
//! and the LSH baseline side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::eval::fingerprint::{
    self, BankPart, FingerprintOptions, FingerprintReport, MusicSet, QUERY_SECONDS,
};
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
    /// Leave out the LSH baseline (by default it is measured first, for comparison)
    #[arg(long)]
    no_baseline: bool,
    /// One JSON object instead of tables
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalFingerprint) -> anyhow::Result<ExitCode> {
    let options = FingerprintOptions {
        per_length: args.queries_per_length,
        seed: args.seed,
        verify_audio: !args.codes_only,
    };
    let reports = evaluate(
        &args.data,
        args.model.as_deref(),
        !args.no_baseline,
        &options,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        for report in &reports {
            print_report(report);
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let (bank, failed) = fingerprint::noise_bank(data, BankPart::Evaluation);
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

pub(super) fn print_report(r: &FingerprintReport) {
    println!(
        "\n{}: {} tracks, {:.2} h; index {:.2} MB per hour, built at {:.0}x real time",
        r.encoder, r.tracks, r.indexed_hours, r.index_mb_per_hour, r.index_x_realtime
    );
    println!(
        "query latency p50 {:.1} ms, p95 {:.1} ms; buckets max {} / mean {:.1}; {:.4}% of the index compared per query segment",
        r.latency_ms_p50,
        r.latency_ms_p95,
        r.bucket_max,
        r.bucket_mean,
        100.0 * r.scanned_fraction
    );
    print!("{:<22}", "segment (file) hits");
    for s in QUERY_SECONDS {
        print!("{:>16}", format!("{s} s"));
    }
    println!();
    let mut conditions: Vec<&str> = r.cells.iter().map(|c| c.condition.as_str()).collect();
    conditions.dedup();
    for condition in conditions {
        print!("{condition:<22}");
        for cell in r.cells.iter().filter(|c| c.condition == condition) {
            print!(
                "{:>16}",
                format!(
                    "{:.1}% ({:.1}%)",
                    100.0 * cell.segment_rate(),
                    100.0 * cell.file_rate()
                )
            );
        }
        println!();
    }
}

/// The report as markdown: the summary figures, then segment (file) hit rates per condition
/// and query length.
pub(super) fn markdown(r: &FingerprintReport) -> String {
    let mut s = format!(
        "{} tracks ({:.2} h) indexed at {:.0}x real time into {:.2} MB per hour; query latency p50 {:.1} ms, p95 {:.1} ms; buckets max {} / mean {:.1}; {:.4}% of the index compared per query segment.\n\n| condition | {} |\n|---|{}\n",
        r.tracks,
        r.indexed_hours,
        r.index_x_realtime,
        r.index_mb_per_hour,
        r.latency_ms_p50,
        r.latency_ms_p95,
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
