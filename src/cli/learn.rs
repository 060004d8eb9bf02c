//! `earshot learn`: codes learned from the library's own labels.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::eval::metrics::RetrievalScores;
use crate::learn::LabelSource;
use crate::library::LabelMap;
use crate::library::marks::Marks;

pub fn run(db: &Path, labels: Option<&Path>, marks: bool, json: bool) -> anyhow::Result<ExitCode> {
    let csv = labels.map(LabelMap::from_csv).transpose()?;
    let marks = marks.then(|| Marks::load(db)).transpose()?;
    let source = match (&csv, &marks) {
        (Some(csv), _) => LabelSource::Csv(csv),
        (None, Some(marks)) => LabelSource::Marks(marks),
        (None, None) => LabelSource::Files,
    };
    let report = crate::learn::learn(db, source, &|step| eprintln!("{step}..."))?;
    let scores = |s: &RetrievalScores| json!({"map_all": s.map_all, "map_100": s.map_100, "p_at_10": s.p_at_10});
    if json {
        let line = json!({"db": db.to_string_lossy(), "labels": report.labels, "files": report.files,
            "held_out": report.held_out, "library_files": report.library_files, "describes_library": report.describes_library, "before": scores(&report.before), "after": scores(&report.after),
            "segments": report.segments, "left_out": report.left_out, "seconds": report.elapsed.as_secs_f64()});
        println!("{line}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "learned {}-bit codes from {} labels on {} files in {:.1} s; {} segments coded again",
        crate::index::library_code::LIBRARY_CODE_BITS,
        report.labels,
        report.files,
        report.elapsed.as_secs_f64(),
        report.segments
    );
    if !report.describes_library {
        println!(
            "your labels cover {} of the library's {} files: search weighs these codes beside the embeddings' cosine, so the sounds nobody labelled are still found by it",
            report.files, report.library_files
        );
    }
    if !report.left_out.is_empty() {
        println!(
            "left out, with fewer than {} files: {}",
            crate::learn::MIN_FILES_PER_LABEL,
            report.left_out.join(", ")
        );
    }
    println!(
        "held out: {} files (a fifth of each label), searched among the rest:",
        report.held_out
    );
    for (how, s) in [
        ("before (codes without labels, re-ranked)", &report.before),
        ("after (codes from your labels)", &report.after),
    ] {
        println!(
            "  {how:<42} mAP@all {:.4}  mAP@100 {:.4}  P@10 {:.4}",
            s.map_all, s.map_100, s.p_at_10
        );
    }
    Ok(ExitCode::SUCCESS)
}
