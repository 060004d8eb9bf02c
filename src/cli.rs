//! The command line. `earshot` alone opens the desktop app; subcommands run the engine.

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
use crate::library::{self, LabelMap, ScanReport};

#[derive(Debug, Parser)]
#[command(
    name = "earshot",
    version,
    about = "Explore audio collections by example.\n\nWith no command, opens the desktop app."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Decode files and print format, duration, rates and feature shapes (a debugging aid)
    Inspect {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Scan {
            paths,
            labels,
            json,
        } => scan(&paths, labels.as_deref(), json),
        Command::Inspect { files, json } => inspect(&files, json),
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(len: u64, template: &str) -> ProgressBar {
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

/// `H:MM:SS.ss`, or `M:SS.ss` under an hour.
pub fn clock(seconds: f64) -> String {
    let total = seconds.max(0.0);
    let hours = (total / 3600.0).floor();
    let minutes = ((total - hours * 3600.0) / 60.0).floor();
    let secs = total - hours * 3600.0 - minutes * 60.0;
    if hours > 0.0 {
        format!("{hours}:{minutes:02}:{secs:05.2}")
    } else {
        format!("{minutes}:{secs:05.2}")
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
