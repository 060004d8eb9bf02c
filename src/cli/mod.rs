//! The command line. `earshot` alone opens the desktop app; subcommands run the engine.

mod eval_fingerprint;
mod models;
mod train_fingerprint;

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::audio::{AudioSource, TARGET_SAMPLE_RATE};
use crate::features::{
    FrameFeature, LogMel, LogMelConfig, MFCC_COEFFS, MULTI_WINDOW_HOP, MULTI_WINDOW_LENGTHS, Mfcc,
    MultiWindowMfcc,
};
use crate::index::build::{BuildEvent, BuildOptions, Encoders};
use crate::index::{Index, IndexError, format};
use crate::library::{self, LabelMap, ScanReport};
use crate::model::{Encoder, Mode, encoder_for};
use crate::search::{Engine, Hit, Searcher};

#[derive(Debug, Parser)]
#[command(
    name = "earshot",
    version,
    about = "Explore audio collections by example.\n\nWith no command, opens the desktop app.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Open the app with these: the first audio file becomes the query, folders are added to the
    /// library
    #[arg(value_name = "FILE")]
    pub open: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the audio files under folders, with label and duration, and the files that cannot be read
    Scan {
        /// Folders or files
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// CSV of `path,label` rows (paths relative to the CSV); default label: the parent folder's name
        #[arg(long)]
        labels: Option<PathBuf>,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Create or update an index of the audio under folders (unchanged files are skipped)
    Index {
        /// Index folder (default: Earshot's folder in the platform data directory)
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = IndexModes::Both)]
        mode: IndexModes,
        /// CSV of `path,label` rows; default label: the parent folder's name
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Start again from an empty index (after an encoder or format change)
        #[arg(long)]
        rebuild: bool,
        /// Longest time between checkpoints saved while indexing
        #[arg(long, default_value_t = 30.0, hide = true)]
        checkpoint_secs: f64,
        /// Model folder for the indexed mode (default: the installed events-64 and fingerprint
        /// models, else the ones built into earshot)
        #[arg(long)]
        model: Option<PathBuf>,
        /// Folders or files to add; the folders indexed before are re-scanned too
        paths: Vec<PathBuf>,
    },
    /// Search an index with audio clips; one result list (or JSON line) per clip
    Query {
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Mode::Events)]
        mode: Mode,
        /// Results per clip
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// One JSON object per clip, per line
        #[arg(long)]
        json: bool,
        /// How segments are found (default: scan for events, buckets for fingerprint)
        #[arg(long, value_enum)]
        engine: Option<Engine>,
        /// Model folder of the mode; must be the one the index was built with
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(required = true)]
        clips: Vec<PathBuf>,
    },
    /// Show what an index holds: files, segments, hours of audio, size on disk
    Info {
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Train an encoder and write its model folder with a model card
    #[command(subcommand)]
    Train(models::TrainCommand),
    /// Run a benchmark protocol of ../shared/data/README.md and print its metrics
    #[command(subcommand)]
    Eval(models::EvalCommand),
    /// Decode files and print format, duration, rates and feature shapes (a debugging aid)
    Inspect {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

/// Which search modes `index` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexModes {
    Events,
    Fingerprint,
    Both,
}

impl IndexModes {
    fn modes(self) -> Vec<Mode> {
        match self {
            IndexModes::Events => vec![Mode::Events],
            IndexModes::Fingerprint => vec![Mode::Fingerprint],
            IndexModes::Both => Mode::ALL.to_vec(),
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Scan {
            paths,
            labels,
            json,
        } => scan(&paths, labels.as_deref(), json),
        Command::Index {
            db,
            mode,
            labels,
            rebuild,
            checkpoint_secs,
            model,
            paths,
        } => index(
            &db_or_default(db)?,
            mode,
            labels.as_deref(),
            rebuild,
            checkpoint_secs,
            model.as_deref(),
            &paths,
        ),
        Command::Query {
            db,
            mode,
            top,
            json,
            engine,
            model,
            clips,
        } => query(
            &db_or_default(db)?,
            mode,
            top,
            json,
            engine.unwrap_or(Engine::default_for(mode)),
            model.as_deref(),
            &clips,
        ),
        Command::Info { db, json } => info(&db_or_default(db)?, json),
        Command::Inspect { files, json } => inspect(&files, json),
        Command::Train(command) => models::train(command),
        Command::Eval(command) => models::eval(command),
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn scan(paths: &[PathBuf], labels: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let labels = labels.map(LabelMap::from_csv).transpose()?;
    let bar = progress_bar(0, "scanning {bar:30} {pos}/{len} files [{elapsed}]");
    let report = library::scan(paths, labels.as_ref(), &|p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    });
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if json {
        print_scan_json(&mut out, &report)?;
    } else {
        print_scan_table(&mut out, &report)?;
    }
    let failed = report.files.is_empty() && !report.problems.is_empty();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_scan_table(out: &mut impl Write, report: &ScanReport) -> std::io::Result<()> {
    let label_width = report
        .files
        .iter()
        .map(|f| f.label.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 30);
    if !report.files.is_empty() {
        writeln!(out, "{:>10}  {:<label_width$}  path", "duration", "label")?;
    }
    for f in &report.files {
        writeln!(
            out,
            "{:>10}  {:<label_width$}  {}",
            clock(f.duration_s),
            f.label,
            f.path.display()
        )?;
    }
    if !report.problems.is_empty() {
        writeln!(out, "\ncannot read ({}):", report.problems.len())?;
        for p in &report.problems {
            writeln!(out, "  {}: {}", p.path.display(), p.reason)?;
        }
    }
    for w in &report.warnings {
        writeln!(out, "warning: {}: {}", w.path.display(), w.reason)?;
    }
    writeln!(
        out,
        "\n{} audio files, {} of audio; {} cannot be read; {} other files skipped",
        report.files.len(),
        clock(report.total_duration_s()),
        report.problems.len(),
        report.other_files
    )
}

fn print_scan_json(out: &mut impl Write, report: &ScanReport) -> anyhow::Result<()> {
    for f in &report.files {
        let line = json!({
            "path": f.path.to_string_lossy(), "label": f.label, "duration_s": f.duration_s, "size": f.size,
        });
        writeln!(out, "{line}")?;
    }
    for p in &report.problems {
        writeln!(
            out,
            "{}",
            json!({"path": p.path.to_string_lossy(), "error": p.reason})
        )?;
    }
    Ok(())
}

/// `H:MM:SS.ss`, or `M:SS.ss` under an hour; negative times (a query that starts before the
/// file it matches) keep their sign.
pub fn clock(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "-" } else { "" };
    let total = seconds.abs();
    let hours = (total / 3600.0).floor();
    let minutes = ((total - hours * 3600.0) / 60.0).floor();
    let secs = total - hours * 3600.0 - minutes * 60.0;
    if hours > 0.0 {
        format!("{sign}{hours}:{minutes:02}:{secs:05.2}")
    } else {
        format!("{sign}{minutes}:{secs:05.2}")
    }
}

/// Everything `inspect` learns about one file.
struct Inspection {
    source: crate::audio::SourceInfo,
    stats: crate::audio::DecodeStats,
    log_mel_frames: usize,
    log_mel_range_db: (f32, f32),
    mfcc_frames: usize,
    multi_window_frames: [usize; 3],
    elapsed: Duration,
}

fn inspect(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let mut status = ExitCode::SUCCESS;
    let mut out = std::io::stdout().lock();
    for path in files {
        match inspect_file(path) {
            Ok(found) if json => writeln!(out, "{}", inspection_json(path, &found))?,
            Ok(found) => print_inspection(&mut out, path, &found)?,
            Err(err) => {
                eprintln!("error: {err:#}");
                status = ExitCode::FAILURE;
            }
        }
    }
    Ok(status)
}

fn inspect_file(path: &Path) -> anyhow::Result<Inspection> {
    let started = Instant::now();
    let source = AudioSource::open(path)?;
    let info = source.info().clone();
    let config = LogMelConfig::default();
    let (mut log_mel, mut mfcc, mut multi) = (
        LogMel::new(&config),
        Mfcc::new(&config, MFCC_COEFFS),
        MultiWindowMfcc::default(),
    );
    let (mut log_mel_frames, mut mfcc_frames, mut multi_frames) = (0usize, 0usize, [0usize; 3]);
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    let expected_ms = info.header_duration_s.map_or(0, |s| (s * 1000.0) as u64);
    let bar = if expected_ms > 60_000 {
        progress_bar(
            expected_ms,
            "decoding {bar:30} {percent}% [{elapsed}<{eta}]",
        )
    } else {
        ProgressBar::hidden()
    };
    let mut decoded_ms = 0.0;

    let mut on_log_mel = |f: &[f32]| {
        log_mel_frames += 1;
        for &x in f {
            range = (range.0.min(x), range.1.max(x));
        }
    };
    let stats = source.stream(|chunk| {
        log_mel.push(chunk, &mut on_log_mel);
        mfcc.push(chunk, &mut |_| mfcc_frames += 1);
        multi.push(chunk, &mut |c, _| multi_frames[c] += 1);
        decoded_ms += chunk.len() as f64 * 1000.0 / f64::from(TARGET_SAMPLE_RATE);
        bar.set_position(decoded_ms as u64);
        ControlFlow::Continue(())
    })?;
    log_mel.finish(&mut on_log_mel);
    mfcc.finish(&mut |_| mfcc_frames += 1);
    multi.finish(&mut |c, _| multi_frames[c] += 1);
    bar.finish_and_clear();
    Ok(Inspection {
        source: info,
        stats,
        log_mel_frames,
        log_mel_range_db: range,
        mfcc_frames,
        multi_window_frames: multi_frames,
        elapsed: started.elapsed(),
    })
}

fn print_inspection(out: &mut impl Write, path: &Path, found: &Inspection) -> std::io::Result<()> {
    let (s, st) = (&found.source, &found.stats);
    let channels = match st.source_channels {
        1 => "mono".to_string(),
        2 => "stereo".to_string(),
        n => format!("{n} channels"),
    };
    let bits = s
        .bits_per_sample
        .map(|b| format!(", {b} bits"))
        .unwrap_or_default();
    let header = s
        .header_duration_s
        .map_or_else(|| "none".to_string(), |d| format!("{d:.3} s"));
    writeln!(out, "{}", path.display())?;
    writeln!(
        out,
        "  format      {} / {}, {} Hz, {channels}{bits}",
        s.format, s.codec, st.source_rate
    )?;
    writeln!(
        out,
        "  duration    {:.3} s decoded (header: {header})",
        st.duration_s()
    )?;
    writeln!(
        out,
        "  decoded     {} samples at {} Hz; {} packets skipped; {} non-finite samples{}",
        st.output_samples,
        TARGET_SAMPLE_RATE,
        st.skipped_packets,
        st.non_finite_samples,
        if st.truncated { "; TRUNCATED" } else { "" }
    )?;
    if st.gaps > 0 || st.missing_s > 0.0 {
        writeln!(
            out,
            "  damage      {} holes ({:.3} s, filled with silence); {:.3} s missing against the header",
            st.gaps, st.gap_s, st.missing_s
        )?;
    }
    let config = LogMelConfig::default();
    writeln!(
        out,
        "  log-mel     {} bands x {} frames ({} ms window, {} ms hop), {:.1} to {:.1} dB",
        config.n_mels,
        found.log_mel_frames,
        config.win_length * 1000 / TARGET_SAMPLE_RATE as usize,
        config.hop_length * 1000 / TARGET_SAMPLE_RATE as usize,
        found.log_mel_range_db.0,
        found.log_mel_range_db.1
    )?;
    writeln!(
        out,
        "  mfcc        {MFCC_COEFFS} coefficients x {} frames",
        found.mfcc_frames
    )?;
    let ms = |n: usize| n * 1000 / TARGET_SAMPLE_RATE as usize;
    writeln!(
        out,
        "  multi-mfcc  3 channels x 40 coefficients x {:?} frames (windows {}/{}/{} ms, hop {} ms)",
        found.multi_window_frames,
        ms(MULTI_WINDOW_LENGTHS[0]),
        ms(MULTI_WINDOW_LENGTHS[1]),
        ms(MULTI_WINDOW_LENGTHS[2]),
        ms(MULTI_WINDOW_HOP)
    )?;
    let secs = found.elapsed.as_secs_f64();
    writeln!(
        out,
        "  time        {secs:.3} s ({:.0}x real time, all features)",
        st.duration_s() / secs.max(1e-9)
    )?;
    Ok(())
}

fn inspection_json(path: &Path, found: &Inspection) -> serde_json::Value {
    json!({
        "path": path.to_string_lossy(),
        "source": found.source,
        "decode": found.stats,
        "duration_s": found.stats.duration_s(),
        "log_mel_shape": [LogMelConfig::default().n_mels, found.log_mel_frames],
        "mfcc_shape": [MFCC_COEFFS, found.mfcc_frames],
        "multi_window_mfcc_shape": [3, 40, found.multi_window_frames[0]],
        "elapsed_s": found.elapsed.as_secs_f64(),
    })
}

/// `--db`, or the index folder in the platform's data directory.
fn db_or_default(db: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(db) = db {
        return Ok(db);
    }
    directories::ProjectDirs::from("", "", "earshot")
        .map(|dirs| dirs.data_dir().join("index"))
        .ok_or_else(|| anyhow::anyhow!("no home directory to keep the index in; pass --db DIR"))
}

fn index(
    db: &Path,
    modes: IndexModes,
    labels: Option<&Path>,
    rebuild: bool,
    checkpoint_secs: f64,
    model: Option<&Path>,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    if paths.is_empty() && !format::exists(db) {
        anyhow::bail!(
            "nothing to index: give the folders to add, e.g. `earshot index --db {} ~/Music`",
            db.display()
        );
    }
    let labels = labels.map(LabelMap::from_csv).transpose()?;
    let encoders: Encoders = modes
        .modes()
        .into_iter()
        .map(|m| Ok((m, encoder_for(m, model)?)))
        .collect::<anyhow::Result<_>>()?;
    let options = BuildOptions {
        labels: labels.as_ref(),
        rebuild,
        checkpoint_every: Duration::from_secs_f64(checkpoint_secs.max(0.0)),
        cancel: None,
    };
    let bar = progress_bar(
        0,
        "indexing {bar:30} {pos}/{len} files [{elapsed}<{eta}] {wide_msg}",
    );
    let on_event = |event: BuildEvent| match event {
        BuildEvent::Planned { files, .. } => bar.set_length(files as u64),
        BuildEvent::FileDone { path, .. } => {
            bar.inc(1);
            bar.set_message(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        BuildEvent::Checkpoint => {}
    };
    let report = crate::index::build::build(db, paths, &encoders, &options, &on_event)?;
    bar.finish_and_clear();
    if !report.failed.is_empty() {
        eprintln!("cannot read ({}), skipped:", report.failed.len());
        for p in &report.failed {
            eprintln!("  {}: {}", p.path.display(), p.reason);
        }
    }
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "{} added, {} updated, {} removed, {} relabelled, {} unchanged; {} of audio encoded in {seconds:.1} s ({:.0}x real time); {} cannot be read",
        report.added,
        report.updated,
        report.removed,
        report.relabelled,
        report.unchanged,
        clock(report.encoded_audio_s),
        report.encoded_audio_s / seconds.max(1e-9),
        report.failed.len()
    );
    println!("index: {}", Index::index_path(db).display());
    let indexed = report.added + report.updated + report.relabelled + report.unchanged;
    if indexed == 0 && !report.failed.is_empty() {
        eprintln!("error: none of the audio files could be indexed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn query(
    db: &Path,
    mode: Mode,
    top: usize,
    json: bool,
    engine: Engine,
    model: Option<&Path>,
    clips: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let index = format::load(db)?;
    let data = index.mode(mode, db)?;
    let encoder: Box<dyn Encoder> = encoder_for(mode, model)?;
    if encoder.info() != &data.encoder {
        return Err(IndexError::encoder_mismatch(db, mode, &data.encoder, encoder.info()).into());
    }
    let searcher = Searcher::new(&index, mode, data, encoder.as_ref(), engine)?;
    let mut out = std::io::stdout().lock();
    let mut status = ExitCode::SUCCESS;
    for clip in clips {
        let started = Instant::now();
        let result = crate::search::read_query(clip)
            .map_err(anyhow::Error::from)
            .and_then(|(samples, cut)| {
                if cut {
                    eprintln!(
                        "note: {}: longer than {}; searching with its first {} minutes",
                        clip.display(),
                        clock(crate::search::MAX_QUERY_S),
                        crate::search::MAX_QUERY_S / 60.0
                    );
                }
                Ok(searcher.search(&samples, top)?)
            });
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match (result, json) {
            (Ok(hits), true) => {
                let line = json!({"query": clip.to_string_lossy(), "mode": mode.name(), "elapsed_ms": elapsed_ms, "hits": hits_json(&hits)});
                writeln!(out, "{line}")?;
            }
            (Ok(hits), false) => print_hits(&mut out, clip, mode, elapsed_ms, &hits)?,
            (Err(err), true) => {
                status = ExitCode::FAILURE;
                writeln!(
                    out,
                    "{}",
                    json!({"query": clip.to_string_lossy(), "mode": mode.name(), "error": format!("{err:#}")})
                )?;
            }
            (Err(err), false) => {
                status = ExitCode::FAILURE;
                eprintln!("error: {err:#}");
            }
        }
    }
    Ok(status)
}

fn hits_json(hits: &[Hit]) -> Vec<serde_json::Value> {
    hits.iter()
        .map(|h| {
            json!({"rank": h.rank, "path": h.path.to_string_lossy(), "label": h.label, "start_s": round3(h.start_s),
                   "end_s": round3(h.end_s), "hamming": h.hamming, "score": round3(f64::from(h.score)),
                   "correlation": h.correlation.map(|c| round3(f64::from(c)))})
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_hits(
    out: &mut impl Write,
    clip: &Path,
    mode: Mode,
    elapsed_ms: f64,
    hits: &[Hit],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({} search, {elapsed_ms:.1} ms)",
        clip.display(),
        mode.name()
    )?;
    if hits.is_empty() {
        return writeln!(out, "  no match");
    }
    let label_width = hits
        .iter()
        .map(|h| h.label.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 24);
    // Fingerprint hits the library's audio confirms: their correlation with the query.
    let audio = |h: Option<&Hit>| match (mode, h) {
        (Mode::Events, _) => String::new(),
        (Mode::Fingerprint, None) => "  audio".into(),
        (Mode::Fingerprint, Some(h)) => h
            .correlation
            .map_or("      -".into(), |c| format!("  {c:>5.3}")),
    };
    writeln!(
        out,
        "  {:>4}  {:>7}  {:>5}{}  {:<21}  {:<label_width$}  path",
        "rank",
        "hamming",
        "score",
        audio(None),
        "time",
        "label"
    )?;
    for h in hits {
        let time = format!("{}-{}", clock(h.start_s), clock(h.end_s));
        writeln!(
            out,
            "  {:>4}  {:>7}  {:>5.3}{}  {:<21}  {:<label_width$}  {}",
            h.rank,
            h.hamming,
            h.score,
            audio(Some(h)),
            time,
            h.label,
            h.path.display()
        )?;
    }
    Ok(())
}

fn info(db: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let index = format::load(db)?;
    let path = Index::index_path(db);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let hours = index.total_duration_s() / 3600.0;
    let mb_per_hour = if hours > 0.0 {
        bytes as f64 / 1e6 / hours
    } else {
        0.0
    };
    if json {
        let modes: Vec<serde_json::Value> = index
            .modes
            .iter()
            .map(|(m, d)| json!({"mode": m.name(), "segments": d.segments.len(), "encoder": d.encoder}))
            .collect();
        let line = json!({"index": path.to_string_lossy(), "files": index.files.len(), "hours": hours, "bytes": bytes,
                          "mb_per_hour": mb_per_hour, "modes": modes});
        println!("{line}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("index        {}", path.display());
    println!(
        "files        {} ({} of audio, {hours:.2} hours)",
        index.files.len(),
        clock(index.total_duration_s())
    );
    for (mode, d) in &index.modes {
        println!(
            "{:<12} {} segments; encoder {} ({} bits, {}-d embeddings)",
            mode.name(),
            d.segments.len(),
            d.encoder.name,
            d.encoder.bits,
            d.encoder.embedding_dim
        );
        let b = crate::index::buckets::BucketIndex::build(&d.codes, d.words()).stats();
        println!(
            "{:<12} buckets: {} tables of {}, {} in use, largest {} codes, mean {:.1} per bucket in use",
            "",
            b.tables,
            b.buckets_per_table,
            b.non_empty_buckets,
            b.max_bucket,
            b.mean_non_empty_bucket
        );
    }
    println!(
        "size         {:.2} MB on disk, {mb_per_hour:.2} MB per hour of audio",
        bytes as f64 / 1e6
    );
    for root in &index.roots {
        println!("root         {}", root.display());
    }
    Ok(ExitCode::SUCCESS)
}
