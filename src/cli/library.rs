//! `earshot scan`, `earshot index` and `earshot info`: what a library holds, and its index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::args::IndexModes;
use super::text::progress_bar;
use crate::index::Index;
use crate::index::library_code::CodeSource;
use crate::library::{self, LabelMap, ScanReport};
use crate::model::encoder_for;
use crate::session::Encoders;
use crate::session::ingest::{BuildEvent, BuildOptions};
use crate::text::clock;

pub fn scan(paths: &[PathBuf], labels: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
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
        let mut line = json!({
            "path": f.path.to_string_lossy(), "label": f.label, "duration_s": f.duration_s, "size": f.size,
        });
        // A file that can be read, with what is wrong with it (cut off, a name that is not UTF-8).
        let warnings: Vec<&str> = (report.warnings.iter())
            .filter(|w| w.path == f.path)
            .map(|w| w.reason.as_str())
            .collect();
        if let (false, Some(fields)) = (warnings.is_empty(), line.as_object_mut()) {
            fields.insert("warning".into(), warnings.join("; ").into());
        }
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

pub fn index(
    db: &Path,
    modes: IndexModes,
    labels: Option<&Path>,
    rebuild: bool,
    checkpoint_secs: f64,
    model: Option<&Path>,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let exists = crate::index::open_store(db)?.exists()?;
    if paths.is_empty() && !exists {
        anyhow::bail!(
            "nothing to index: give the folders to add, e.g. `earshot index --db {} ~/Music`",
            db.display()
        );
    }
    if !paths.is_empty() && !exists && paths.iter().all(|p| !p.exists()) {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!(
            "nothing to index: {} does not exist; no index was written",
            names.join(", ")
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
        only_given_roots: false,
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
            bar.set_message(file_name(&path));
        }
        // A long recording says how far it has got.
        BuildEvent::Decoding { path, audio_s } => {
            bar.set_message(format!("{} {}", file_name(&path), clock(audio_s)));
        }
        BuildEvent::Checkpoint => {}
    };
    let report = crate::session::ingest::build(db, paths, &encoders, &options, &on_event)?;
    bar.finish_and_clear();
    if !report.failed.is_empty() {
        eprintln!("cannot read ({}), skipped:", report.failed.len());
        for p in &report.failed {
            eprintln!("  {}: {}", p.path.display(), p.reason);
        }
    }
    if !report.damaged.is_empty() {
        eprintln!("indexed with problems ({}):", report.damaged.len());
        for p in &report.damaged {
            eprintln!("  {}: {}", p.path.display(), p.reason);
        }
    }
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "{} added, {} updated, {} removed, {} relabelled, {} unchanged; {} of audio encoded in {seconds:.1} s ({:.0}x real time); {} cannot be read; {} indexed with problems",
        report.added,
        report.updated,
        report.removed,
        report.relabelled,
        report.unchanged,
        clock(report.encoded_audio_s),
        report.encoded_audio_s / seconds.max(1e-9),
        report.failed.len(),
        report.damaged.len()
    );
    for learned in &report.codes_learned {
        println!(
            "{}: learned a {}-bit code on this library's {} segments",
            learned.mode.name(),
            learned.bits,
            learned.segments
        );
    }
    if crate::index::is_remote(db) {
        println!("index: {}", db.display());
    } else {
        println!("index: {}", Index::index_path(db).display());
    }
    let indexed = report.added + report.updated + report.relabelled + report.unchanged;
    if indexed == 0 && !report.failed.is_empty() {
        eprintln!("error: none of the audio files could be indexed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn info(db: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::index::open_store(db)?;
    let index = store.load()?;
    let remote = crate::index::is_remote(db);
    let path = if remote {
        db.to_owned()
    } else {
        Index::index_path(db)
    };
    let segments: Vec<usize> = (index.modes.keys())
        .map(|&m| store.segment_count(&index, m))
        .collect::<Result<_, _>>()?;
    let mut out = std::io::stdout().lock();
    // A server's storage is its own; only a local index's bytes are Earshot's to report.
    let bytes = (!remote).then(|| std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
    let hours = index.total_duration_s() / 3600.0;
    let mb_per_hour = bytes.map(|b| {
        if hours > 0.0 {
            b as f64 / 1e6 / hours
        } else {
            0.0
        }
    });
    if json {
        let modes: Vec<serde_json::Value> = index
            .modes
            .iter()
            .zip(&segments)
            .map(|((m, d), segments)| {
                let code = d.library_code.as_ref().map(crate::index::LibraryCodeManifest::of);
                json!({"mode": m.name(), "segments": segments, "encoder": d.encoder, "input": d.input,
                       "library_code": code})
            })
            .collect();
        let damaged: Vec<serde_json::Value> = (index.files.iter())
            .filter_map(|f| {
                Some(json!({"path": f.path.to_string_lossy(), "reason": f.damage.as_ref()?}))
            })
            .collect();
        let line = json!({"index": path.to_string_lossy(), "files": index.files.len(), "hours": hours, "bytes": bytes,
                          "mb_per_hour": mb_per_hour, "modes": modes, "damaged": damaged});
        writeln!(out, "{line}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "index        {}", path.display())?;
    writeln!(
        out,
        "files        {} ({} of audio, {hours:.2} hours)",
        index.files.len(),
        clock(index.total_duration_s())
    )?;
    for ((mode, d), segments) in index.modes.iter().zip(&segments) {
        writeln!(
            out,
            "{:<12} {} segments; encoder {} ({} bits, {}-d embeddings) reading {} frames at {} Hz",
            mode.name(),
            segments,
            d.encoder.name,
            d.encoder.bits,
            d.encoder.embedding_dim,
            d.input.front_end.name(),
            d.input.sample_rate()
        )?;
        if let Some(code) = &d.library_code {
            let from = match code.source {
                CodeSource::Embeddings => "this library's own embeddings".to_string(),
                CodeSource::Labels { classes, files } => {
                    format!("this library's labels ({classes} labels on {files} files)")
                }
            };
            writeln!(
                out,
                "{:<12} codes: {} bits learned on {from}, {} segments then",
                "",
                code.bits(),
                code.learned_on
            )?;
        }
        if d.bits() == 0 || remote {
            continue;
        }
        let b = crate::index::buckets::BucketIndex::build(&d.codes, d.words()).stats();
        writeln!(
            out,
            "{:<12} buckets: {} tables of {}, {} in use, largest {} codes, mean {:.1} per bucket in use",
            "",
            b.tables,
            b.buckets_per_table,
            b.non_empty_buckets,
            b.max_bucket,
            b.mean_non_empty_bucket
        )?;
    }
    match (bytes, mb_per_hour) {
        (Some(bytes), Some(per_hour)) => writeln!(
            out,
            "size         {:.2} MB on disk, {per_hour:.2} MB per hour of audio",
            bytes as f64 / 1e6
        )?,
        _ => writeln!(out, "size         kept by the Milvus server")?,
    }
    for root in &index.roots {
        writeln!(out, "root         {}", root.display())?;
    }
    for f in &index.files {
        if let Some(damage) = &f.damage {
            writeln!(out, "damaged      {}: {damage}", f.path.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A path's last part, as the progress line names the file under way.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
