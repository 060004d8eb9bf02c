//! `earshot query`: searching an index with clips, one result list (or JSON line) per clip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::model::{Mode, encoder_for};
use crate::search::Hit;
use crate::session::{Clip, Encoders, MAX_QUERY_S, OpenLibrary, SearchOptions};
use crate::text::clock;

/// Where `--export` writes every clip's results, and how.
pub struct Export {
    pub format: crate::export::Format,
    /// A file (a folder for Audacity's label files).
    pub out: PathBuf,
}

pub fn query(
    db: &Path,
    mode: Mode,
    options: &SearchOptions,
    json: bool,
    model: Option<&Path>,
    clips: &[PathBuf],
    export: Option<&Export>,
) -> anyhow::Result<ExitCode> {
    let encoder = encoder_for(mode, model)?;
    if mode == Mode::Fingerprint && encoder.found_thresholds().is_none() {
        eprintln!(
            "note: {} has no found thresholds of its own: found / not found is decided with \
             those of Earshot's earlier fingerprint model (a learned projection is calibrated \
             with `earshot eval fingerprint --calibrate --model DIR --write-thresholds`)",
            encoder.info().name
        );
    }
    let encoders = Encoders::from([(mode, encoder)]);
    let library = OpenLibrary::open(db, Arc::new(encoders))?;
    library.prepare(mode, options.engine)?;
    let mut out = std::io::stdout().lock();
    let mut status = ExitCode::SUCCESS;
    let mut exported: Vec<(String, Hit)> = Vec::new();
    for clip in clips {
        let started = Instant::now();
        let result = Clip::read(clip, None)
            .map_err(anyhow::Error::from)
            .and_then(|query| {
                if query.cut {
                    eprintln!(
                        "note: {}: longer than {}; searching with its first {} minutes",
                        clip.display(),
                        clock(MAX_QUERY_S),
                        MAX_QUERY_S / 60.0
                    );
                }
                Ok(library.search(&query, None, mode, options)?.hits)
            });
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match (result, json) {
            (Ok(hits), true) => {
                let line = json!({"query": clip.to_string_lossy(), "mode": mode.name(), "elapsed_ms": elapsed_ms, "hits": hits_json(&hits)});
                writeln!(out, "{line}")?;
                keep_for_export(export, &mut exported, clip, hits);
            }
            (Ok(hits), false) => {
                print_hits(&mut out, clip, mode, elapsed_ms, &hits)?;
                keep_for_export(export, &mut exported, clip, hits);
            }
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
    if let Some(export) = export {
        write_export(export, mode, &exported)?;
    }
    Ok(status)
}

fn keep_for_export(
    export: Option<&Export>,
    exported: &mut Vec<(String, Hit)>,
    clip: &Path,
    hits: Vec<Hit>,
) {
    if export.is_some() {
        let name = clip.to_string_lossy().into_owned();
        exported.extend(hits.into_iter().map(|h| (name.clone(), h)));
    }
}

/// Every clip's results in one table at `export.out`.
fn write_export(export: &Export, mode: Mode, hits: &[(String, Hit)]) -> anyhow::Result<()> {
    use crate::export::ExportRow;
    let rows: Vec<ExportRow> = (hits.iter())
        .map(|(query, hit)| ExportRow {
            query,
            hit,
            relevant: None,
        })
        .collect();
    let out = &export.out;
    crate::export::write(out, export.format, mode, &rows)?;
    eprintln!(
        "exported {} to {}",
        crate::text::count(rows.len(), "result"),
        out.display()
    );
    Ok(())
}

fn hits_json(hits: &[Hit]) -> Vec<serde_json::Value> {
    hits.iter()
        .map(|h| {
            json!({"rank": h.rank, "path": h.path.to_string_lossy(), "label": h.label, "start_s": round3(h.start_s),
                   "end_s": round3(h.end_s), "hamming": h.hamming, "score": round3(f64::from(h.score)),
                   "correlation": h.correlation.map(|c| round3(f64::from(c))), "found": h.found})
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
    if mode == Mode::Fingerprint {
        let found: Vec<&Hit> = hits.iter().filter(|h| h.found == Some(true)).collect();
        let recurs = hits
            .first()
            .filter(|h| h.audio_check.is_some_and(|a| a.recurs));
        match (found.as_slice(), recurs) {
            ([], Some(h)) => writeln!(
                out,
                "  Not found: the passage recurs in {}, at {} and elsewhere (--all lists every place); the closest candidates:",
                h.path.display(),
                clock(h.start_s)
            )?,
            ([], None) => writeln!(out, "  Not found; the closest candidates:")?,
            ([h], _) => writeln!(
                out,
                "  Found at {} in {}",
                clock(h.start_s),
                h.path.display()
            )?,
            (many, _) => writeln!(out, "  Found {} times", many.len())?,
        }
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
        (Mode::Fingerprint, None) => "  audio  found".into(),
        (Mode::Fingerprint, Some(h)) => {
            let found = if h.found == Some(true) { "yes" } else { "-" };
            let audio = h.correlation.map_or("-".into(), |c| format!("{c:.3}"));
            format!("  {audio:>5}  {found:>5}")
        }
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
