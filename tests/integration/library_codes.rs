//! Codes a library learns for an encoder that gives embeddings only (a backbone): without
//! labels when it is indexed, from its labels with `earshot learn`; and every similar moment of
//! a long file. The backbone here is a stand-in that needs no model file: each segment's mean
//! and spread of log-mel energy per band.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use earshot::index::format;
use earshot::index::library_code::{CodeSource, MIN_SEGMENTS_TO_LEARN};
use earshot::learn::LabelSource;
use earshot::library::marks::{Mark, Marks};
use earshot::model::{EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput, Mode};
use earshot::session::ingest::{self, BuildOptions};
use earshot::session::{Clip, Encoders, OpenLibrary, SearchOptions};

use crate::support::{Sample, TAU, write_wav};

const RATE: u32 = 16_000;
const BANDS: usize = 64;
/// The classes' fundamental frequencies, Hz: each class is a harmonic sound at its own pitch.
const CLASS_HZ: [f64; 5] = [220.0, 470.0, 900.0, 1700.0, 3100.0];
const FILES_PER_CLASS: usize = 24;
const FILE_S: f64 = 3.0;

/// A backbone stand-in: per segment, each band's mean and standard deviation.
struct BandStatistics {
    info: EncoderInfo,
}

impl BandStatistics {
    fn new() -> Self {
        Self {
            info: EncoderInfo {
                name: "band-statistics".into(),
                weights_hash: "none".into(),
                bits: 0,
                embedding_dim: 2 * BANDS,
            },
        }
    }
}

impl Encoder for BandStatistics {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        EncoderInput::log_mel(Mode::Events)
    }

    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError> {
        for s in segments {
            let frames = (s.len() / BANDS).max(1) as f32;
            let mut mean = [0f32; BANDS];
            let mut square = [0f32; BANDS];
            for frame in s.chunks_exact(BANDS) {
                for (b, &v) in frame.iter().enumerate() {
                    mean[b] += v / frames;
                    square[b] += v * v / frames;
                }
            }
            out.embeddings.extend(mean);
            out.embeddings
                .extend((0..BANDS).map(|b| (square[b] - mean[b] * mean[b]).max(0.0).sqrt()));
        }
        Ok(())
    }
}

fn encoders() -> Encoders {
    Encoders::from([(
        Mode::Events,
        Box::new(BandStatistics::new()) as Box<dyn Encoder>,
    )])
}

/// A harmonic sound at `hz` (jittered by `variant`) with a little noise.
fn sound(hz: f64, variant: usize, seconds: f64) -> Vec<f32> {
    let hz = hz * (1.0 + 0.02 * ((variant % 7) as f64 - 3.0) / 3.0);
    let mut state = 0x9E37_79B9_u64.wrapping_mul(variant as u64 + 1);
    (0..(seconds * f64::from(RATE)) as usize)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let tone: f64 = (1..=4)
                .map(|h| (TAU * hz * h as f64 * t).sin() / h as f64)
                .sum();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            (0.25 * tone + 0.05 * noise) as f32
        })
        .collect()
}

/// Five classes of files, one folder per class (its label).
fn write_library(root: &Path) {
    for (c, &hz) in CLASS_HZ.iter().enumerate() {
        let folder = root.join(format!("class{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        for k in 0..FILES_PER_CLASS {
            let path = folder.join(format!("{k:02}.wav"));
            write_wav(&path, RATE, 1, Sample::Float, &sound(hz, k, FILE_S));
        }
    }
}

/// A query clip at `dir/query.wav`: a new sound of class `class`, not in the library.
fn write_query(dir: &Path, class: usize, variant: usize, seconds: f64) -> PathBuf {
    let path = dir.join("query.wav");
    let samples = sound(CLASS_HZ[class], variant, seconds);
    write_wav(&path, RATE, 1, Sample::Float, &samples);
    path
}

/// The library's folder and index folder under `dir`, the library written.
fn library_in(dir: &Path) -> (PathBuf, PathBuf) {
    let (lib, db) = (dir.join("lib"), dir.join("db"));
    write_library(&lib);
    (lib, db)
}

/// The code saved with the index in `db`, checked to have coded every segment.
fn saved_code(db: &Path) -> earshot::index::library_code::LibraryCode {
    let index = format::load(db).unwrap();
    let events = &index.modes[&Mode::Events];
    let code = events.library_code.clone().expect("saved with the index");
    assert_eq!(events.codes.len(), events.segments.len() * code.words());
    code
}

fn build(db: &Path, paths: &[PathBuf]) -> ingest::BuildReport {
    let options = BuildOptions {
        labels: None,
        rebuild: false,
        only_given_roots: false,
        checkpoint_every: Duration::from_secs(3600),
        cancel: None,
    };
    ingest::build(db, paths, &encoders(), &options, &|_| {}).unwrap()
}

fn search(db: &Path, clip: &Path, options: &SearchOptions) -> Vec<earshot::search::Hit> {
    let library = OpenLibrary::open(db, Arc::new(encoders())).unwrap();
    let query = Clip::read(clip, None).unwrap();
    library
        .search(&query, None, Mode::Events, options)
        .unwrap()
        .hits
}

fn class_of(hit: &earshot::search::Hit) -> String {
    hit.path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_library_learns_its_own_code_when_indexed_and_search_reranks_its_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, db) = library_in(dir.path());
    let report = build(&db, std::slice::from_ref(&lib));
    let learned = report.codes_learned.first().expect("a code was learned");
    assert!(learned.segments >= MIN_SEGMENTS_TO_LEARN, "{learned:?}");
    let code = saved_code(&db);
    assert_eq!(code.source, CodeSource::Embeddings);

    // A new sound of class 3, not in the library.
    let query = write_query(dir.path(), 3, 100, 2.0);
    let hits = search(&db, &query, &SearchOptions::top(10));
    assert_eq!(hits.len(), 10);
    for hit in &hits {
        assert_eq!(class_of(hit), "class3", "{hits:#?}");
    }
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "scores fall down the list: {:?}",
        hits.iter().map(|h| h.score).collect::<Vec<_>>()
    );

    // Indexing again without growth keeps the code; no file is read again.
    let again = build(&db, &[]);
    assert!(again.codes_learned.is_empty());
    assert_eq!(saved_code(&db), code);
}

#[test]
fn every_similar_moment_of_a_long_file_is_a_hit_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, db) = library_in(dir.path());
    // 12 s: class 1 at 0-3 s and again at 8-11 s, class 4 between and after.
    let mut long = sound(CLASS_HZ[1], 200, 3.0);
    long.extend(sound(CLASS_HZ[4], 201, 5.0));
    long.extend(sound(CLASS_HZ[1], 202, 3.0));
    long.extend(sound(CLASS_HZ[4], 203, 1.0));
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    write_wav(&recordings.join("long.wav"), RATE, 1, Sample::Float, &long);
    build(&db, &[lib, recordings]);

    let query = write_query(dir.path(), 1, 300, 1.5);
    let options = SearchOptions {
        per_file: 3,
        ..SearchOptions::top(200)
    };
    let hits = search(&db, &query, &options);
    let in_long: Vec<(f64, f64)> = hits
        .iter()
        .filter(|h| h.path.ends_with("long.wav"))
        .map(|h| (h.start_s, h.end_s))
        .collect();
    assert!(in_long.len() >= 2, "{in_long:?}");
    let near = |t: f64, from: f64, to: f64| t >= from - 0.01 && t <= to;
    assert!(
        in_long.iter().any(|&(s, e)| near(s, 0.0, 2.0) && e <= 3.01),
        "{in_long:?}"
    );
    assert!(
        in_long
            .iter()
            .any(|&(s, e)| near(s, 8.0, 10.0) && e <= 11.01),
        "{in_long:?}"
    );
    for (i, a) in in_long.iter().enumerate() {
        for b in &in_long[i + 1..] {
            assert!(a.1 <= b.0 || b.1 <= a.0, "moments overlap: {in_long:?}");
        }
    }
    // One per file by default.
    let hits = search(&db, &query, &SearchOptions::top(200));
    assert_eq!(
        hits.iter().filter(|h| h.path.ends_with("long.wav")).count(),
        1
    );
}

#[test]
fn codes_learned_from_folder_labels_search_the_library_and_refuse_too_few_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, db) = library_in(dir.path());
    build(&db, std::slice::from_ref(&lib));
    let report = earshot::learn::learn(&db, LabelSource::Files, &|_| {}).unwrap();
    assert_eq!((report.labels, report.files), (5, 5 * FILES_PER_CLASS));
    assert!(report.describes_library);
    assert_eq!(report.held_out, FILES_PER_CLASS / 5 * 5);
    assert!(report.after.map_all >= 0.9, "{:?}", report.after);

    assert_eq!(
        saved_code(&db).source,
        CodeSource::Labels {
            classes: 5,
            files: 5 * FILES_PER_CLASS
        }
    );
    let query = write_query(dir.path(), 2, 400, 2.0);
    let hits = search(&db, &query, &SearchOptions::top(5));
    assert!(hits.iter().all(|h| class_of(h) == "class2"), "{hits:#?}");
    // Indexing on keeps the learned code (it is not outgrown).
    assert!(build(&db, &[]).codes_learned.is_empty());

    // A CSV that labels three files of one class only: refused, naming the label.
    let csv = dir.path().join("labels.csv");
    let rows: String = (0..3)
        .map(|k| format!("lib/class0/{k:02}.wav,dog\n"))
        .collect();
    std::fs::write(&csv, format!("path,label\n{rows}")).unwrap();
    let labels = earshot::library::LabelMap::from_csv(&csv).unwrap();
    let error = earshot::learn::learn(&db, LabelSource::Csv(&labels), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("too few labels") && error.contains("\"dog\" has 3"),
        "{error}"
    );
}

/// Marks as the app keeps them: files `0..n` of `class` judged for the query `query`.
fn mark_files(marks: &mut Marks, lib: &Path, query: &str, class: usize, n: usize, relevant: bool) {
    for k in 0..n {
        marks.set(Mark {
            query: query.into(),
            path: lib.join(format!("class{class}/{k:02}.wav")),
            start_s: 0.0,
            end_s: FILE_S,
            relevant,
        });
    }
}

#[test]
fn codes_learned_from_marks_label_each_query_and_what_was_ruled_out() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, db) = library_in(dir.path());
    build(&db, std::slice::from_ref(&lib));
    // One query's results judged: class 3 relevant, classes 0 and 2 not.
    let mut marks = Marks::default();
    mark_files(&mut marks, &lib, "whistle", 3, 10, true);
    mark_files(&mut marks, &lib, "whistle", 0, 5, false);
    mark_files(&mut marks, &lib, "whistle", 2, 5, false);
    marks.save(&db).unwrap();
    let marks = Marks::load(&db).unwrap();

    let report = earshot::learn::learn(&db, LabelSource::Marks(&marks), &|_| {}).unwrap();
    assert_eq!((report.labels, report.files), (2, 20));
    // 20 of 120 files: the codes are weighed beside cosine, not alone.
    assert!(!report.describes_library);
    assert_eq!(report.held_out, 4);
    assert!(report.after.map_all >= 0.9, "{:?}", report.after);
    let source = saved_code(&db).source;
    assert_eq!(
        source,
        CodeSource::Labels {
            classes: 2,
            files: 20
        }
    );
    let query = write_query(dir.path(), 3, 500, 2.0);
    let hits = search(&db, &query, &SearchOptions::top(5));
    assert!(hits.iter().all(|h| class_of(h) == "class3"), "{hits:#?}");
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "{hits:#?}"
    );

    // A query with three relevant marks is left out, and named; the others still teach.
    let mut more = marks.clone();
    mark_files(&mut more, &lib, "hum", 1, 3, true);
    let report = earshot::learn::learn(&db, LabelSource::Marks(&more), &|_| {}).unwrap();
    assert_eq!(report.labels, 2);
    assert_eq!(report.left_out, ["\"hum\" (3 file(s))"]);

    // Too few left: refused, naming the label and the count.
    let mut few = Marks::default();
    mark_files(&mut few, &lib, "whistle", 3, 3, true);
    mark_files(&mut few, &lib, "whistle", 0, 6, false);
    let error = earshot::learn::learn(&db, LabelSource::Marks(&few), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("1 label(s)") && error.contains("--marks"),
        "{error}"
    );
    assert!(
        error.contains("\"whistle\" (3 file(s)) left out"),
        "{error}"
    );
}
