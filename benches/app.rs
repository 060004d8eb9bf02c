//! The desktop app's responsiveness, measured by driving the real app headless (egui_kittest):
//!
//! - frame time (p50/p95) while a library indexes;
//! - time from dropping a clip on the window to the results table being filled;
//! - frame time of the map with MAP_POINTS files (a synthetic library of 64-bit codes in 50
//!   labelled clusters, held in memory: the map does not care where codes come from);
//! - frame time of the results table with 1,000 rows;
//! - t-SNE time for TSNE_CODES codes.
//!
//!     cargo bench --bench app -- FOLDER [COPIES] [MAP_POINTS] [TSNE_CODES]
//!
//! FOLDER (e.g. `../shared/data/esc50/audio`) is linked COPIES times (default 4) into a
//! temporary library, so 2,000 ESC-50 clips make an 8,000-file, 11.1-hour library indexed in both
//! modes. A frame is the egui pass plus tessellation (what the app costs the CPU per frame); the
//! GPU's part is not included.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::app::settings::{CentralView, LibrarySettings};
use earshot::app::{AppOptions, Command, EarshotApp};
use earshot::index::{Index, ModeIndex, SegmentRef};
use earshot::library::FileRecord;
use earshot::model::{EncoderInfo, EncoderInput, Mode};
use egui_kittest::Harness;

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// One frame: the egui pass and tessellation of what it drew.
fn frame(h: &mut Harness<'static, EarshotApp>) -> Duration {
    let started = Instant::now();
    h.step();
    let shapes = h.output().shapes.clone();
    let ppp = h.output().pixels_per_point;
    std::hint::black_box(h.ctx.tessellate(shapes, ppp));
    started.elapsed()
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p95 {:.1} ms over {} frames",
        at(0.5),
        at(0.95),
        times.len()
    )
}

fn linked_library(source: &Path, copies: usize, dir: &Path) -> PathBuf {
    let root = dir.join("library");
    for c in 0..copies {
        let copy = root.join(format!("copy-{c}"));
        std::fs::create_dir_all(&copy).expect("create library folder");
        for entry in std::fs::read_dir(source)
            .expect("read the source folder")
            .flatten()
        {
            std::os::unix::fs::symlink(entry.path(), copy.join(entry.file_name())).expect("link");
        }
    }
    root
}

/// Rows in the results table whose frame time is measured.
const RESULT_ROWS: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // Absolute, so the links made below point at it from anywhere.
    let Some(source) = args.first().and_then(|a| std::fs::canonicalize(a).ok()) else {
        eprintln!("usage: cargo bench --bench app -- FOLDER [COPIES] [MAP_POINTS] [TSNE_CODES]");
        return;
    };
    let number =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (copies, map_points, tsne_codes) = (number(1, 4), number(2, 20_000), number(3, 5000));
    let dir = tempfile::tempdir().expect("temporary folder");
    let library = linked_library(&source, copies, dir.path());
    let options = AppOptions {
        data_dir: dir.path().join("data"),
        probe_devices: false,
        open: Vec::new(),
    };
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |cc| EarshotApp::new(cc, options));

    // Indexing: frames while it runs.
    h.state_mut().push(Command::AddFolders(vec![library]));
    let started = Instant::now();
    let mut indexing = Vec::new();
    while h.state().is_busy() || indexing.is_empty() {
        indexing.push(frame(&mut h));
        std::thread::sleep(Duration::from_millis(16));
    }
    let (files, hours) = {
        let (_, index) = h.state().current().expect("a library");
        let index = index.expect("an index");
        (index.files.len(), index.total_duration_s() / 3600.0)
    };
    println!(
        "indexed {files} files, {hours:.1} h, in {:.0} s; frame during indexing: {}",
        started.elapsed().as_secs_f64(),
        percentiles(indexing)
    );

    // Drop a clip: time until the results table is filled, and until everything drawn about
    // them is (the inspector's first result, the attention maps, the whole file's outline).
    let clip = std::fs::read_dir(&source)
        .expect("read the source folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| earshot::library::is_audio_path(p))
        .expect("an audio file in the folder");
    for mode in Mode::ALL {
        h.state_mut().push(Command::SetMode(mode));
        let (mut to_results, mut to_idle) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            h.state_mut().results.clear();
            let started = Instant::now();
            h.input_mut()
                .dropped_files
                .push(Arc::new(Dropped(clip.clone())));
            let mut shown = None;
            while shown.is_none() || h.state().is_busy() {
                if let Some(error) = h.state().query.as_ref().and_then(|q| q.error.clone()) {
                    panic!("the query failed: {error}");
                }
                frame(&mut h);
                let searched = h.state().tasks.search.is_none() && h.state().tasks.query.is_none();
                if shown.is_none() && searched && !h.state().results.is_empty() {
                    shown = Some(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            to_results.extend(shown);
            to_idle.push(started.elapsed());
        }
        let median_ms = |times: &mut Vec<Duration>| {
            times.sort();
            times[times.len() / 2].as_secs_f64() * 1000.0
        };
        println!(
            "{} search: drop {} on {hours:.1} h: results shown after {:.0} ms, all drawn (inspector, attention, outline) after {:.0} ms (medians of 5)",
            mode.name(),
            clip.display(),
            median_ms(&mut to_results),
            median_ms(&mut to_idle),
        );
    }

    // The results table with RESULT_ROWS rows (the last search's first hit, repeated), the
    // pointer moving over it and the table scrolled. In similar sounds' view: exact match would
    // group the copies (one file) into one row.
    let first = h.state().results[0].clone();
    h.state_mut().settings.mode = Mode::Events;
    h.state_mut().results = (0..RESULT_ROWS)
        .map(|rank| {
            let mut row = first.clone();
            row.hit.rank = rank + 1;
            row
        })
        .collect();
    h.state_mut().settings.central_view = CentralView::Results;
    let mut table = Vec::new();
    for i in 0..200 {
        h.hover_at(egui::pos2(700.0, 500.0 + (i % 20) as f32 * 10.0));
        h.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Line,
            delta: egui::vec2(0.0, -3.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
            modifiers: egui::Modifiers::NONE,
        });
        table.push(frame(&mut h));
    }
    println!(
        "results table with {RESULT_ROWS} rows, scrolled: frame {}",
        percentiles(table)
    );

    // t-SNE alone for `tsne_codes` codes of this library.
    let (_, index) = h.state().current().expect("a library");
    let index = index.expect("an index").clone();
    let data = &index.modes[&Mode::Events];
    let n = tsne_codes.min(data.segments.len());
    let codes: Vec<&[u64]> = (0..n).map(|i| data.code(i)).collect();
    let rows = earshot::projection::signs(&codes, data.encoder.bits);
    let started = Instant::now();
    let points = earshot::projection::tsne_2d(&rows, |_| {});
    println!(
        "t-SNE of {} {}-bit codes: {:.1} s",
        points.len(),
        data.encoder.bits,
        started.elapsed().as_secs_f64()
    );

    // The map of a synthetic library: frames with the pointer moving over it.
    let db = dir.path().join("synthetic");
    h.state_mut().settings.libraries.push(LibrarySettings {
        name: "synthetic".into(),
        folders: Vec::new(),
        db: db.clone(),
        ..LibrarySettings::default()
    });
    h.state_mut().settings.selected_library = 1;
    h.state_mut().libraries.entry(db).or_default().index =
        Some(Arc::new(synthetic_index(map_points)));
    h.state_mut().results.clear();
    // The synthetic codes are events codes; the drops above left the app in the last mode.
    h.state_mut().push(Command::SetMode(Mode::Events));
    h.state_mut().settings.central_view = CentralView::Map;
    let started = Instant::now();
    while h.state().map.pca.is_none() {
        if let Some(error) = &h.state().map.error {
            panic!("the map failed: {error}");
        }
        frame(&mut h);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut map = Vec::new();
    for i in 0..200 {
        h.hover_at(egui::pos2(
            500.0 + (i % 50) as f32 * 10.0,
            300.0 + (i / 50) as f32 * 60.0,
        ));
        map.push(frame(&mut h));
    }
    let drawn = h.state().map.screen_points.len();
    println!(
        "map with {drawn} points (PCA shown after {:.1} s, t-SNE running): frame {}",
        started.elapsed().as_secs_f64(),
        percentiles(map)
    );
}

/// `files` files of 64-bit codes in 50 labelled clusters (each file its cluster's centre with
/// 10% of the bits flipped), one segment each.
fn synthetic_index(files: usize) -> Index {
    let mut rng = earshot::model::SeededRng::new(5);
    let centres: Vec<u64> = (0..50).map(|_| rng.next_u64()).collect();
    let info = EncoderInfo {
        name: "synthetic".into(),
        weights_hash: String::new(),
        bits: 64,
        embedding_dim: 0,
    };
    let mut index = Index::new();
    let mut data = ModeIndex::new(Mode::Events, info, EncoderInput::log_mel(Mode::Events));
    for f in 0..files {
        let label = f % centres.len();
        let flips = (0..64)
            .filter(|_| rng.uniform() < 0.1)
            .fold(0u64, |m, b| m | 1 << b);
        data.codes.push(centres[label] ^ flips);
        data.segments.push(SegmentRef {
            file: f as u32,
            start_frame: 0,
            n_frames: 500,
        });
        index.files.push(FileRecord {
            path: PathBuf::from(format!("/synthetic/label-{label}/{f}.wav")),
            size: 0,
            modified: None,
            duration_s: 5.0,
            label: format!("label-{label}"),
            damage: None,
        });
    }
    index.modes.insert(Mode::Events, data);
    index
}
