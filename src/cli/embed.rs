//! `earshot embed`: every window's embedding of audio files, with its times, for people who
//! feed them to their own classifiers (as Perch Hoplite's users do). The windows are the ones
//! the index keeps: the model's window every library hop, silence left out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::model::{Mode, encoder_for};
use crate::session::Encoders;
use crate::session::ingest::encode_path;

/// One file's windows: start and end (seconds) and embedding each.
struct Embedded {
    path: PathBuf,
    times: Vec<(f64, f64)>,
    embeddings: Vec<f32>,
}

pub fn run(
    model: Option<&Path>,
    json: bool,
    npy: Option<&Path>,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let encoder = encoder_for(Mode::Events, model)?;
    let (name, dim) = (encoder.info().name.clone(), encoder.info().embedding_dim);
    let frame_s = encoder.input().frame_s();
    let encoders = Encoders::from([(Mode::Events, encoder)]);
    let mut status = ExitCode::SUCCESS;
    let mut all = Vec::new();
    for path in files {
        match embed_file(path, &encoders, frame_s) {
            Ok(e) => all.push(e),
            Err(reason) => {
                eprintln!("{}: {reason}; skipped", path.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    match npy {
        Some(out) => write_npy(out, &all, dim)?,
        None => write_lines(&all, &name, dim, json)?,
    }
    Ok(status)
}

fn embed_file(path: &Path, encoders: &Encoders, frame_s: f64) -> Result<Embedded, String> {
    let encoded = encode_path(path, encoders).map_err(|p| p.reason)?;
    let Some(events) = encoded.modes.into_iter().next() else {
        return Err("nothing encoded".into());
    };
    let times = events
        .segments
        .iter()
        .map(|&(start, frames)| {
            let start_s = f64::from(start) * frame_s;
            (start_s, start_s + f64::from(frames) * frame_s)
        })
        .collect();
    Ok(Embedded {
        path: path.to_owned(),
        times,
        embeddings: events.encoded.embeddings,
    })
}

/// One JSON object per file (`--json`), or a tab-separated line per window.
fn write_lines(all: &[Embedded], model: &str, dim: usize, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for e in all {
        let rows = e.embeddings.chunks_exact(dim.max(1));
        if json {
            let windows: Vec<serde_json::Value> = e
                .times
                .iter()
                .zip(rows)
                .map(|(&(start_s, end_s), v)| json!({"start_s": start_s, "end_s": end_s, "embedding": v}))
                .collect();
            let line = json!({"file": e.path.to_string_lossy(), "model": model, "dim": dim, "windows": windows});
            writeln!(out, "{line}")?;
        } else {
            for (&(start_s, end_s), v) in e.times.iter().zip(rows) {
                let values: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
                writeln!(
                    out,
                    "{}\t{start_s:.3}\t{end_s:.3}\t{}",
                    e.path.display(),
                    values.join(" ")
                )?;
            }
        }
    }
    Ok(())
}

/// `out`: a float32 `.npy` array of every window (rows in file order); beside it, `out` with
/// `.csv` for extension: each row's file, start and end.
fn write_npy(out: &Path, all: &[Embedded], dim: usize) -> anyhow::Result<()> {
    let rows: usize = all.iter().map(|e| e.times.len()).sum();
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // The header is padded with spaces to a multiple of 64 bytes, newline included (NPY 1.0).
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for e in all {
        bytes.extend(e.embeddings.iter().flat_map(|x| x.to_le_bytes()));
    }
    crate::fsutil::write_atomic(out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    let mut csv = String::from("file,start_s,end_s\n");
    for e in all {
        for (start_s, end_s) in &e.times {
            csv.push_str(&format!(
                "\"{}\",{start_s:.3},{end_s:.3}\n",
                e.path.display().to_string().replace('"', "\"\"")
            ));
        }
    }
    let times = out.with_extension("csv");
    crate::fsutil::write_atomic(&times, csv.as_bytes())
        .with_context(|| format!("writing {}", times.display()))?;
    eprintln!(
        "{rows} windows of {dim} values: {} (times: {})",
        out.display(),
        times.display()
    );
    Ok(())
}
