//! Scanning real folder trees, with the traps users' disks hold.

use std::path::{Path, PathBuf};

use earshot::library::{self, LabelMap, ScanReport};
use tempfile::TempDir;

use crate::support::*;

fn wav(path: &Path, seconds: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_wav(
        path,
        16_000,
        1,
        Sample::Int(16),
        &tone(16_000, 1, seconds, 440.0, 0.5),
    );
}

fn scan(roots: &[PathBuf], labels: Option<&LabelMap>) -> ScanReport {
    library::scan(roots, labels, &|_| {})
}

fn names(report: &ScanReport) -> Vec<String> {
    report
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn scan_finds_audio_labels_it_and_reports_the_rest() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    wav(&root.join("dog/bark.wav"), 1.0);
    wav(&root.join("birds/wren/song.wav"), 2.5);
    wav(&root.join(".cache/hidden.wav"), 1.0);
    std::fs::write(root.join("dog/notes.txt"), "not audio").unwrap();
    std::fs::write(root.join("dog/fake.wav"), "not audio either").unwrap();
    std::fs::write(root.join("empty.flac"), b"").unwrap();

    let report = scan(&[root.to_owned(), root.join("missing")], None);
    assert_eq!(names(&report), vec!["song.wav", "bark.wav"]);
    let labels: Vec<&str> = report.files.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(labels, vec!["wren", "dog"]);
    assert!((report.files[0].duration_s - 2.5).abs() < 1e-6);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.path.is_absolute() && f.size > 44)
    );
    assert_eq!(report.other_files, 1);

    let problems: Vec<(String, &str)> = report
        .problems
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.reason.as_str(),
            )
        })
        .collect();
    assert!(
        problems.contains(&("fake.wav".into(), "not a recognised audio format")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&("empty.flac".into(), "empty file (0 bytes)")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&("missing".into(), "does not exist")),
        "{problems:?}"
    );
}

#[test]
fn labels_come_from_a_csv_when_given() {
    let dir = TempDir::new().unwrap();
    wav(&dir.path().join("a/one.wav"), 0.5);
    wav(&dir.path().join("a/two.wav"), 0.5);
    let csv = dir.path().join("labels.csv");
    std::fs::write(
        &csv,
        "path,label\na/one.wav,frog\n\"a/two.wav\",\"rain, light\"\n",
    )
    .unwrap();
    let labels = LabelMap::from_csv(&csv).unwrap();
    let report = scan(&[dir.path().to_owned()], Some(&labels));
    let got: Vec<&str> = report.files.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(got, vec!["frog", "rain, light"]);
}

#[test]
fn a_bad_label_csv_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let csv = dir.path().join("labels.csv");
    std::fs::write(&csv, "just-a-path\n").unwrap();
    let err = LabelMap::from_csv(&csv).unwrap_err().to_string();
    assert!(
        err.contains("labels.csv") && err.contains("line 1"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn symlink_loops_and_odd_names_do_not_stop_a_scan() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = TempDir::new().unwrap();
    let root = dir.path();
    wav(&root.join("field/a.wav"), 0.5);
    std::os::unix::fs::symlink(root, root.join("field/loop")).unwrap();
    let odd = root.join("field").join(OsStr::from_bytes(b"caf\xe9.wav"));
    wav(&odd, 0.5);

    let report = scan(&[root.to_owned()], None);
    assert_eq!(report.files.len(), 2, "{:?}", report.files);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("symbolic link loop")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.path == odd && w.reason.contains("UTF-8")),
        "{:?}",
        report.warnings
    );
}

#[cfg(unix)]
#[test]
fn an_unreadable_folder_is_reported() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new().unwrap();
    wav(&dir.path().join("open/a.wav"), 0.5);
    let locked = dir.path().join("locked");
    wav(&locked.join("b.wav"), 0.5);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable_anyway = std::fs::read_dir(&locked).is_ok(); // root ignores permissions
    let report = scan(&[dir.path().to_owned()], None);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    if readable_anyway {
        eprintln!(
            "running as root: permissions are not enforced, checking only that the scan completes"
        );
        assert_eq!(report.files.len(), 2);
    } else {
        assert_eq!(names(&report), vec!["a.wav"]);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path == locked && p.reason.contains("permission denied"))
        );
    }
}

#[test]
fn rescans_report_new_changed_and_removed_files() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    wav(&root.join("x/keep.wav"), 0.5);
    wav(&root.join("x/edit.wav"), 0.5);
    wav(&root.join("x/gone.wav"), 0.5);
    let before = scan(&[root.to_owned()], None);

    wav(&root.join("x/edit.wav"), 0.75);
    std::fs::remove_file(root.join("x/gone.wav")).unwrap();
    wav(&root.join("x/new.wav"), 0.5);
    let after = scan(&[root.to_owned()], None);

    let changes = library::diff(&before.files, &after.files);
    let file = |r: &earshot::library::FileRecord| {
        r.path.file_name().unwrap().to_string_lossy().into_owned()
    };
    assert_eq!(
        changes.added.iter().map(file).collect::<Vec<_>>(),
        vec!["new.wav"]
    );
    assert_eq!(
        changes.changed.iter().map(file).collect::<Vec<_>>(),
        vec!["edit.wav"]
    );
    assert_eq!(changes.removed, vec![root.join("x/gone.wav")]);
    assert_eq!(changes.unchanged, 1);
    assert!(library::diff(&after.files, &after.files).is_empty());
}

/// An Ogg file cut short (mid-page, or after a page that does not end the stream) is named by
/// `scan` from its last page, without decoding; a whole one is not.
#[test]
fn scan_says_an_ogg_file_is_cut_off() {
    if !ffmpeg_available() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let source = dir.path().join("work/tone.wav");
    wav(&source, 20.0);
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let whole = ffmpeg_encode(&source, &lib.join("whole.ogg"), &["-c:a", "libvorbis"]);
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(lib.join("cut-in-a-page.ogg"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    // Cut where a page begins: whole pages, the last of which does not end the stream.
    let last_page = (4..bytes.len() - 4)
        .rev()
        .find(|&i| &bytes[i..i + 4] == b"OggS")
        .unwrap();
    std::fs::write(lib.join("cut-between-pages.ogg"), &bytes[..last_page]).unwrap();
    let report = scan(&[lib], None);
    assert_eq!(report.files.len(), 3, "{:?}", report.problems);
    let mut warned: Vec<String> = report
        .warnings
        .iter()
        .map(|w| {
            assert!(w.reason.starts_with("cut off: "), "{}", w.reason);
            w.path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    warned.sort();
    assert_eq!(warned, ["cut-between-pages.ogg", "cut-in-a-page.ogg"]);
}
