//! `earshot inspect`: what decoding a file gives (format, duration, rates, feature shapes).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::ProgressBar;
use serde_json::json;

use std::time::{Duration, Instant};

use super::text::progress_bar;
use crate::audio::{AudioSource, TARGET_SAMPLE_RATE};
use crate::features::{
    FrameFeature, LogMel, LogMelConfig, MFCC_COEFFS, MULTI_WINDOW_HOP, MULTI_WINDOW_LENGTHS, Mfcc,
    MultiWindowMfcc,
};

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

pub fn inspect(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
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
