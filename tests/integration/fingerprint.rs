//! `earshot eval fingerprint` on a small generated data folder.

use std::path::Path;

use crate::support::{Sample, earshot, write_wav};

const RATE: u32 = 16_000;

/// Seeded noise shaped by a moving pitch, distinct for every seed.
fn track(seconds: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = (seconds * f64::from(RATE)) as usize;
    let mut smooth = 0.0f32;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let white = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            smooth = 0.9 * smooth + 0.1 * white;
            let t = i as f32 / RATE as f32;
            let pitch = 300.0 + 200.0 * (t * (0.5 + seed as f32 * 0.1)).sin();
            0.3 * (std::f32::consts::TAU * pitch * t).sin() * (1.0 + smooth) + smooth
        })
        .collect()
}

fn write_data(root: &Path) {
    let music = root.join("music");
    for dir in ["music", "noise", "rir"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let mut manifest =
        String::from("file,collection,license,related_group,duration_s,source_repo\n");
    for i in 0..4 {
        let name = format!("track{i}.wav");
        write_wav(
            &music.join(&name),
            RATE,
            1,
            Sample::Int(16),
            &track(8.0, i + 1),
        );
        manifest.push_str(&format!("{name},test,CC0,,8.0,none\n"));
    }
    std::fs::write(music.join("manifest.csv"), manifest).unwrap();
    for i in 0..3 {
        let noise: Vec<f32> = track(3.0, 100 + i).iter().map(|x| x * 0.5).collect();
        write_wav(
            &root.join(format!("noise/n{i}.wav")),
            RATE,
            1,
            Sample::Float,
            &noise,
        );
        let rir: Vec<f32> = (0..800)
            .map(|k| (-(k as f32) / 150.0).exp() * if k % 7 == 0 { 1.0 } else { 0.2 })
            .collect();
        write_wav(
            &root.join(format!("rir/r{i}.wav")),
            RATE,
            1,
            Sample::Float,
            &rir,
        );
    }
}

#[test]
fn eval_fingerprint_scores_every_condition_and_length_and_finds_clean_queries() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let out = earshot(&[
        "eval".as_ref(),
        "fingerprint".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "--queries-per-length".as_ref(),
        "4".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["tracks"], 4);
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9 * 4, "9 conditions x 4 lengths");
    assert!(cells.iter().all(|c| c["queries"] == 4));
    // Clean 3 s and 5 s excerpts of a track in the index are found at the right time.
    for cell in cells
        .iter()
        .filter(|c| c["condition"] == "clean" && c["seconds"].as_f64() >= Some(3.0))
    {
        assert_eq!(cell["segment_hits"], 4, "{cell}");
    }
    assert!(report["index_mb_per_hour"].as_f64().unwrap() > 0.0);
    assert!(
        report["latency_ms_p95"].as_f64().unwrap() >= report["latency_ms_p50"].as_f64().unwrap()
    );
}
