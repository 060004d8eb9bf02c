//! `earshot learn`: codes learned from the library's own labels.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::eval::metrics::RetrievalScores;
use crate::library::LabelMap;

pub fn run(db: &Path, labels: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let labels = labels.map(LabelMap::from_csv).transpose()?;
    let report = crate::learn::learn(db, labels.as_ref(), &|step| eprintln!("{step}..."))?;
    let scores = |s: &RetrievalScores| json!({"map_all": s.map_all, "map_100": s.map_100, "p_at_10": s.p_at_10});
    if json {
        let line = json!({"db": db.to_string_lossy(), "labels": report.labels, "files": report.files,
            "held_out": report.held_out, "before": scores(&report.before), "after": scores(&report.after),
            "segments": report.segments, "seconds": report.elapsed.as_secs_f64()});
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
