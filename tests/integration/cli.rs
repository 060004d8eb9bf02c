//! The `earshot` binary as users and scripts call it.

use tempfile::TempDir;

use crate::support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn scan_lists_files_and_what_it_cannot_read() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("rain")).unwrap();
    write_wav(
        &dir.path().join("rain/drops.wav"),
        22_050,
        2,
        Sample::Int(16),
        &tone(22_050, 2, 3.0, 200.0, 0.3),
    );
    std::fs::write(dir.path().join("rain/broken.wav"), "RIFF....garbage").unwrap();

    let out = earshot(&["scan".as_ref(), dir.path().as_os_str()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("0:03.00") && stdout.contains("rain") && stdout.contains("drops.wav"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cannot read (1):") && stdout.contains("broken.wav"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 audio files, 0:03.00 of audio; 1 cannot be read"),
        "{stdout}"
    );

    let json = earshot(&["scan".as_ref(), "--json".as_ref(), dir.path().as_os_str()]);
    let lines: Vec<serde_json::Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "rain");
    assert!((lines[0]["duration_s"].as_f64().unwrap() - 3.0).abs() < 1e-9);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("truncated")
            || lines[1]["error"]
                .as_str()
                .unwrap()
                .contains("not a recognised")
    );
}

#[test]
fn scan_of_nothing_readable_fails() {
    let out = earshot(&["scan".as_ref(), "/definitely/not/here".as_ref()]);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("/definitely/not/here: does not exist"));
}

/// A mistyped folder writes no index, and says which path is missing.
#[test]
fn index_of_a_missing_folder_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let out = earshot(&[
        "index".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "/definitely/not/here".as_ref(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/definitely/not/here does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(!db.exists(), "an index was written");
}

#[test]
fn inspect_prints_duration_rates_and_feature_shapes() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tone.wav");
    write_wav(
        &path,
        44_100,
        2,
        Sample::Int(24),
        &tone(44_100, 2, 1.0, 440.0, 0.5),
    );
    let out = earshot(&["inspect".as_ref(), path.as_os_str()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("44100 Hz, stereo, 24 bits"), "{stdout}");
    assert!(stdout.contains("1.000 s decoded"), "{stdout}");
    assert!(stdout.contains("64 bands x 101 frames"), "{stdout}");
    assert!(stdout.contains("20 coefficients x 101 frames"), "{stdout}");
    assert!(stdout.contains("[44, 44, 44] frames"), "{stdout}");

    let json = earshot(&["inspect".as_ref(), "--json".as_ref(), path.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(text(&json.stdout).trim()).unwrap();
    assert_eq!(v["log_mel_shape"], serde_json::json!([64, 101]));
    assert_eq!(v["decode"]["source_rate"], 44_100);
}

#[test]
fn inspect_names_a_bad_file_and_goes_on() {
    let dir = TempDir::new().unwrap();
    let bad = dir.path().join("bad.mp3");
    std::fs::write(&bad, "no audio here").unwrap();
    let good = dir.path().join("good.wav");
    write_wav(
        &good,
        8_000,
        1,
        Sample::Int(16),
        &tone(8_000, 1, 0.5, 440.0, 0.5),
    );
    let out = earshot(&["inspect".as_ref(), bad.as_os_str(), good.as_os_str()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.mp3") && stderr.contains("not a recognised audio format"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("good.wav"));
}

#[test]
fn help_lists_the_commands() {
    let out = earshot(&["--help".as_ref()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("scan") && stdout.contains("inspect") && stdout.contains("desktop app"),
        "{stdout}"
    );
}
