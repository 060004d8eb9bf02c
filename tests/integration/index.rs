//! The index and search engine from a folder of audio to ranked results, and its crash safety.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use earshot::index::{Index, IndexError, format};
use earshot::model::lsh::LshEncoder;
use earshot::model::{Mode, SeededRng, baseline_encoder};
use earshot::search::{Engine, Hit, SearchTables, Searcher};
use earshot::session::clip::Clip;
use earshot::session::ingest::{self as build, BuildOptions, BuildReport};
use earshot::session::{Encoders, OpenLibrary, SearchOptions};
use tempfile::TempDir;

use crate::milvus::LiteServer;
use crate::support::*;

const RATE: u32 = 16_000;

/// A sequence of 150 ms notes at random pitches: distinct per seed, and different at every moment.
pub fn melody(seed: u64, seconds: f64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let note = (0.15 * f64::from(RATE)) as usize;
    let n = (seconds * f64::from(RATE)) as usize;
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64;
    while out.len() < n {
        let freq = 200.0 * (20.0f64).powf(rng.uniform());
        for _ in 0..note.min(n - out.len()) {
            phase += TAU * freq / f64::from(RATE);
            out.push((0.3 * phase.sin() + 0.02 * (rng.uniform() - 0.5)) as f32);
        }
    }
    out
}

/// `count` melody files of 6 s in two labelled folders.
pub fn make_library(root: &Path, count: u64) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let folder = root.join(if i % 2 == 0 { "birds" } else { "frogs" });
            std::fs::create_dir_all(&folder).unwrap();
            let path = folder.join(format!("take{i:02}.wav"));
            write_wav(&path, RATE, 1, Sample::Int(16), &melody(i, 6.0));
            path
        })
        .collect()
}

/// Runs `test` with the `--db` of an index in a folder under `dir`, then with one kept on a
/// milvus-lite server (when one can be started, see [`LiteServer::start`]): the engine's index
/// tests hold on both backends, searched as `earshot query` searches them.
fn on_each_backend(dir: &Path, mut test: impl FnMut(&Path)) {
    eprintln!("backend: a folder");
    test(&dir.join("db"));
    if let Some(server) = LiteServer::start() {
        eprintln!("backend: a milvus-lite server");
        test(&server.db("test"));
    }
}

/// `count` melody files under `dir/lib`, indexed into `db` and opened for search.
fn indexed_library(dir: &Path, db: &Path, count: u64) -> (Vec<PathBuf>, OpenLibrary) {
    let files = make_library(&dir.join("lib"), count);
    build(db, &[dir.join("lib")]);
    (files, open(db, encoders()))
}

/// The index `db` names (a folder or a server), opened as `earshot query` opens it.
fn open(db: &Path, encoders: Encoders) -> OpenLibrary {
    OpenLibrary::open(db, Arc::new(encoders)).unwrap_or_else(|e| panic!("{e}"))
}

/// The best `options.top` hits for `samples` (at [`RATE`]).
fn search_with(
    library: &OpenLibrary,
    mode: Mode,
    samples: &[f32],
    options: SearchOptions,
) -> Vec<Hit> {
    let clip = Clip::from_samples("query".into(), None, samples.to_vec(), 0.0);
    (library.search(&clip, None, mode, &options))
        .unwrap_or_else(|e| panic!("{e}"))
        .hits
}

/// The best 5 hits, checked against the files' audio (as `earshot query` does by default).
fn search(library: &OpenLibrary, mode: Mode, samples: &[f32]) -> Vec<Hit> {
    search_with(library, mode, samples, SearchOptions::top(5))
}

/// Uniform white noise `snr_db` below the clip's power.
fn add_white_noise(clip: &mut [f32], snr_db: f32, rng: &mut SeededRng) {
    let power = clip.iter().map(|x| x * x).sum::<f32>() / clip.len() as f32;
    // A uniform variable on (-0.5, 0.5) has power 1/12.
    let scale = (power / 10f32.powf(snr_db / 10.0) * 12.0).sqrt();
    clip.iter_mut()
        .for_each(|x| *x += scale * (rng.uniform() as f32 - 0.5));
}

fn encoders() -> Encoders {
    Mode::ALL
        .iter()
        .map(|&m| (m, baseline_encoder(m)))
        .collect()
}

fn options() -> BuildOptions<'static> {
    BuildOptions {
        labels: None,
        rebuild: false,
        only_given_roots: false,
        checkpoint_every: Duration::from_secs(30),
        cancel: None,
    }
}

fn build(db: &Path, paths: &[PathBuf]) -> BuildReport {
    build::build(db, paths, &encoders(), &options(), &|_| {}).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_file_finds_itself_first_and_excerpts_find_their_offset() {
    let dir = TempDir::new().unwrap();
    let files = make_library(&dir.path().join("lib"), 12);
    on_each_backend(dir.path(), |db| {
        let report = build(db, &[dir.path().join("lib")]);
        assert_eq!((report.added, report.failed.len()), (12, 0));
        let library = open(db, encoders());
        each_file_finds_itself(&library, &files);
    });
}

fn each_file_finds_itself(library: &OpenLibrary, files: &[PathBuf]) {
    for (i, path) in files.iter().enumerate() {
        let clip = melody(i as u64, 6.0);
        let hits = search(library, Mode::Events, &clip);
        assert_eq!(&hits[0].path, path, "events: {} not first", path.display());
        assert_eq!(
            (hits[0].hamming, hits[0].label.as_str()),
            (0, if i % 2 == 0 { "birds" } else { "frogs" })
        );
        // Ranked by their codes: scored by them too, so the scores fall down the list and
        // stay in 0..=1.
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score)
                && hits.iter().all(|h| (0.0..=1.0).contains(&h.score)),
            "{:?}",
            hits.iter()
                .map(|h| (h.hamming, h.score))
                .collect::<Vec<_>>()
        );

        // A 3 s excerpt starting at an offset off the 100 ms grid.
        let offset_s = 1.0 + 0.37 * (i % 5) as f64;
        let start = (offset_s * f64::from(RATE)) as usize;
        let hits = search(
            library,
            Mode::Fingerprint,
            &clip[start..start + 3 * RATE as usize],
        );
        assert_eq!(
            &hits[0].path,
            path,
            "fingerprint: {} not first",
            path.display()
        );
        assert!(
            (hits[0].start_s - offset_s).abs() <= 0.05,
            "offset {} for {offset_s}",
            hits[0].start_s
        );
        assert!((hits[0].end_s - hits[0].start_s - 3.0).abs() < 0.01);
    }
}

#[test]
fn noisy_excerpts_are_found_at_their_place_and_score_well_above_other_files() {
    let dir = TempDir::new().unwrap();
    on_each_backend(dir.path(), |db| {
        let (files, library) = indexed_library(dir.path(), db, 8);
        noisy_excerpts_are_found(&library, &files);
    });
}

fn noisy_excerpts_are_found(library: &OpenLibrary, files: &[PathBuf]) {
    let mut rng = SeededRng::new(7);
    for (i, path) in files.iter().enumerate() {
        let offset_s = 0.83 + 0.41 * i as f64;
        let start = (offset_s * f64::from(RATE)) as usize;
        let mut clip = melody(i as u64, 6.0)[start..start + 2 * RATE as usize].to_vec();
        add_white_noise(&mut clip, 10.0, &mut rng);
        let hits = search(library, Mode::Fingerprint, &clip);
        assert_eq!(&hits[0].path, path);
        assert!(
            (hits[0].start_s - offset_s).abs() <= 0.05,
            "offset {} for {offset_s}",
            hits[0].start_s
        );
        // The score is the whole query's agreement: 1 for identical codes, 0 for chance.
        assert!(hits[0].score > 0.7, "{}", hits[0].score);
        for other in &hits[1..] {
            assert!(other.score < hits[0].score - 0.3, "{other:?}");
        }
    }
}

#[test]
fn the_file_s_audio_confirms_a_noisy_excerpt_to_the_sample_and_no_other_file() {
    let dir = TempDir::new().unwrap();
    on_each_backend(dir.path(), |db| {
        let (files, library) = indexed_library(dir.path(), db, 8);
        the_audio_confirms_noisy_excerpts(&library, &files);
    });
}

fn the_audio_confirms_noisy_excerpts(library: &OpenLibrary, files: &[PathBuf]) {
    let mut rng = SeededRng::new(11);
    for (i, path) in files.iter().enumerate().step_by(3) {
        // Off the 10 ms frame grid, under white noise 3 dB below the excerpt.
        let start = 17_123 + 2_711 * i;
        let mut clip = melody(i as u64, 6.0)[start..start + 2 * RATE as usize].to_vec();
        add_white_noise(&mut clip, 3.0, &mut rng);
        let hits = search(library, Mode::Fingerprint, &clip);
        assert_eq!(&hits[0].path, path);
        let correlation = hits[0].correlation.unwrap_or(0.0);
        // Confirmed (0.15), by far: unrelated audio stays near 0.05. Whitening counts the
        // high bands where only the noise is, so this is below the 0.7 of an even mixture.
        assert!(correlation > 0.3, "{:?}", hits[0]);
        assert!(
            (hits[0].start_s * f64::from(RATE) - start as f64).abs() < 0.01,
            "start {} s for sample {start}",
            hits[0].start_s
        );
        assert!(
            hits[1..].iter().all(|h| h.correlation.is_none()),
            "{hits:?}"
        );
    }
}

/// The found / not found thresholds are calibrated for the shipped fingerprint model: this
/// searches with it, as `earshot query` does.
#[test]
fn a_clip_from_the_library_is_found_and_a_clip_from_elsewhere_is_not() {
    let dir = TempDir::new().unwrap();
    let files = make_library(&dir.path().join("lib"), 8);
    on_each_backend(dir.path(), |db| {
        let library = fingerprint_library(&dir.path().join("lib"), db);
        found_or_not(&library, &files);
    });
}

fn found_or_not(library: &OpenLibrary, files: &[PathBuf]) {
    let mut rng = SeededRng::new(5);
    let start = 20_000;
    let mut clip = melody(2, 6.0)[start..start + 3 * RATE as usize].to_vec();
    add_white_noise(&mut clip, 10.0, &mut rng);
    let hits = search(library, Mode::Fingerprint, &clip);
    assert_eq!(&hits[0].path, &files[2]);
    assert_eq!(hits[0].found, Some(true), "{:?}", hits[0]);
    // Audio that is in no file: every hit is a candidate only, never found.
    for (seed, seconds) in [(99, 1.0), (98, 2.0), (97, 3.0), (96, 5.0)] {
        let hits = search(library, Mode::Fingerprint, &melody(seed, seconds));
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.found == Some(false)), "{hits:?}");
    }
}

/// A long recording reports how much of it is decoded as it goes (every 10 s of its audio), each
/// report further than the last and all before the file is done: progress does not sit at 0%
/// through a long file.
#[test]
fn a_long_file_reports_its_progress_while_it_is_encoded() {
    use earshot::session::ingest::BuildEvent;
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    write_wav(
        &lib.join("long.wav"),
        RATE,
        1,
        Sample::Int(16),
        &melody(80, 45.0),
    );
    let encoders: Encoders = [(Mode::Fingerprint, baseline_encoder(Mode::Fingerprint))]
        .into_iter()
        .collect();
    let events = std::sync::Mutex::new(Vec::new());
    let on_event = |event: BuildEvent| match event {
        BuildEvent::Decoding { audio_s, .. } => events.lock().unwrap().push(Some(audio_s)),
        BuildEvent::FileDone { .. } => events.lock().unwrap().push(None),
        _ => {}
    };
    build::build(
        &dir.path().join("db"),
        &[lib],
        &encoders,
        &options(),
        &on_event,
    )
    .unwrap();
    let events = events.into_inner().unwrap();
    let decoded: Vec<f64> = events.iter().map_while(|e| *e).collect();
    assert_eq!(
        events.len(),
        decoded.len() + 1,
        "reports after the file was done: {events:?}"
    );
    assert!(decoded.len() >= 4, "{decoded:?}");
    assert!(decoded.windows(2).all(|w| w[1] > w[0]), "{decoded:?}");
    assert!(
        decoded.iter().all(|&s| (10.0..=45.0).contains(&s)),
        "{decoded:?}"
    );
}

/// Indexes `lib` into `db` for exact match with the shipped model (the found / not found
/// thresholds are calibrated for it), and opens it for search.
fn fingerprint_library(lib: &Path, db: &Path) -> OpenLibrary {
    let shipped = || earshot::model::encoder_for(Mode::Fingerprint, None).unwrap();
    let encoders = || -> Encoders { [(Mode::Fingerprint, shipped())].into_iter().collect() };
    build::build(db, &[lib.to_owned()], &encoders(), &options(), &|_| {}).unwrap();
    open(db, encoders())
}

/// Every place the clip is found in every file, as `--all` asks.
fn every_occurrence() -> SearchOptions {
    SearchOptions {
        every_occurrence: true,
        ..SearchOptions::top(1)
    }
}

/// A query that runs past the end of the file it comes from (the file's last 3.5 s, then a
/// second and a half of silence, as a recording that goes on after a track) is found where it
/// starts, and reported to the file's end, not beyond it.
#[test]
fn a_query_that_runs_past_the_file_s_end_is_found_and_ends_there() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let file = melody(70, 8.0);
    write_wav(&lib.join("short.wav"), RATE, 1, Sample::Int(16), &file);
    write_wav(
        &lib.join("other.wav"),
        RATE,
        1,
        Sample::Int(16),
        &melody(71, 20.0),
    );
    let mut query = file[RATE as usize * 9 / 2..].to_vec();
    query.extend(vec![0.0; RATE as usize * 3 / 2]);
    on_each_backend(dir.path(), |db| {
        let library = fingerprint_library(&lib, db);
        let hits = search_with(&library, Mode::Fingerprint, &query, SearchOptions::top(1));
        let hit = &hits[0];
        assert!(hit.path.ends_with("short.wav"), "{hits:?}");
        assert_eq!(hit.found, Some(true), "{hit:?}");
        assert!((hit.start_s - 4.5).abs() <= 0.05, "{hit:?}");
        assert!((hit.end_s - 8.0).abs() <= 1e-3, "{hit:?}");
    });
}

/// A clip planted twice in one file and once in another: asked for every occurrence, the
/// search finds the three places within 50 ms, and no other.
#[test]
fn every_occurrence_of_a_clip_is_found_in_one_file_and_in_two() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let clip = melody(50, 3.0);
    let twice = lib.join("twice.wav");
    let once = lib.join("once.wav");
    write_wav(
        &twice,
        RATE,
        1,
        Sample::Int(16),
        &planted(&clip, 1, &[4.0, 13.0]),
    );
    write_wav(&once, RATE, 1, Sample::Int(16), &planted(&clip, 2, &[7.5]));
    write_other_tracks(&lib);
    let mut query = clip.clone();
    add_white_noise(&mut query, 10.0, &mut SeededRng::new(7));
    on_each_backend(dir.path(), |db| {
        let library = fingerprint_library(&lib, db);
        let hits = search_with(&library, Mode::Fingerprint, &query, every_occurrence());
        // Each file's best alone, as without asking for every occurrence.
        let firsts = search_with(&library, Mode::Fingerprint, &query, SearchOptions::top(10));
        three_places_found(&hits, &firsts);
    });
    the_command_line_says_every_place(dir.path(), &query);
}

/// A passage that comes back in a file, heard through a room: its faint samples correlate as
/// well at both places, so a single answer would be a guess. It is not found, and says why;
/// asked for every occurrence, both places are listed.
#[test]
fn a_recording_through_a_room_of_a_passage_that_recurs_is_not_answered_by_a_guess() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    // A 6 s passage at 3 s and at 12 s; the query is its middle 3 s (at 4.5 s and 13.5 s).
    let passage = melody(50, 6.0);
    let audio = planted(&passage, 1, &[3.0, 12.0]);
    write_wav(&lib.join("twice.wav"), RATE, 1, Sample::Int(16), &audio);
    let clip = &passage[(1.5 * f64::from(RATE)) as usize..][..3 * RATE as usize];
    write_other_tracks(&lib);
    let query = through_faint_room(clip, &mut SeededRng::new(12));
    let library = fingerprint_library(&lib, &dir.path().join("db"));
    let hits = search_with(&library, Mode::Fingerprint, &query, SearchOptions::top(1));
    let hit = &hits[0];
    assert!(hit.path.ends_with("twice.wav"), "{hits:?}");
    assert!(hit.audio_check.is_some_and(|a| a.recurs), "{hit:?}");
    assert_eq!(hit.found, Some(false), "{hit:?}");
    let all = search_with(&library, Mode::Fingerprint, &query, every_occurrence());
    for planted_s in [4.5, 13.5] {
        assert!(
            all.iter().any(|h| h.path.ends_with("twice.wav")
                && (h.start_s - planted_s).abs() <= 0.05
                && h.audio_check.is_some_and(|a| !a.recurs)),
            "{planted_s}: {all:?}"
        );
    }
    // The command line says why there is no answer.
    let clip_path = dir.path().join("clip.wav");
    write_wav(&clip_path, RATE, 1, Sample::Int(16), &query);
    let cli_db = dir.path().join("cli-db");
    index_with_binary(&cli_db, &lib);
    let out = earshot(&[
        "query".as_ref(),
        "--db".as_ref(),
        cli_db.as_os_str(),
        "--mode".as_ref(),
        "fingerprint".as_ref(),
        clip_path.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Not found: the passage recurs in"), "{text}");
}

/// 20 s of melody `seed` with `clip` in place at each of `at_s` (seconds).
fn planted(clip: &[f32], seed: u64, at_s: &[f64]) -> Vec<f32> {
    let mut audio = melody(seed, 20.0);
    for &s in at_s {
        let from = (s * f64::from(RATE)) as usize;
        audio[from..from + clip.len()].copy_from_slice(clip);
    }
    audio
}

/// Three 20 s tracks of other melodies in `lib`, for a clip to be told apart from.
fn write_other_tracks(lib: &Path) {
    for i in 3..6 {
        let other = melody(i, 20.0);
        write_wav(
            &lib.join(format!("other{i}.wav")),
            RATE,
            1,
            Sample::Int(16),
            &other,
        );
    }
}

/// `clip` heard through a room with a weak direct sound and a long diffuse tail (375 ms).
fn through_faint_room(clip: &[f32], rng: &mut SeededRng) -> Vec<f32> {
    let response: Vec<f32> = (0..6_000)
        .map(|i| match i {
            0 => 0.3,
            _ => (-(i as f32) / 2_000.0).exp() * rng.normal() as f32,
        })
        .collect();
    let heard: Vec<f32> = (0..clip.len())
        .map(|i| {
            let taps = response.iter().take(i + 1);
            taps.enumerate().map(|(k, r)| r * clip[i - k]).sum()
        })
        .collect();
    // As loud as the clip was.
    let peak = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let gain = peak(clip) / peak(&heard).max(f32::MIN_POSITIVE);
    heard.iter().map(|x| x * gain).collect()
}

/// `hits`: the clip's every occurrence (planted once in once.wav, twice in twice.wav); `firsts`:
/// each file's best.
fn three_places_found(hits: &[Hit], firsts: &[Hit]) {
    let mut found: Vec<(String, f64)> = hits
        .iter()
        .filter(|h| h.found == Some(true))
        .map(|h| {
            (
                h.path.file_name().unwrap().to_string_lossy().into_owned(),
                h.start_s,
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let expected = [("once.wav", 7.5), ("twice.wav", 4.0), ("twice.wav", 13.0)];
    assert_eq!(found.len(), expected.len(), "{hits:?}");
    for ((name, start_s), (want_name, want_s)) in found.iter().zip(expected) {
        assert_eq!(name, want_name);
        assert!(
            (start_s - want_s).abs() <= 0.05,
            "{name} at {start_s}, planted at {want_s}"
        );
    }
    assert_eq!(
        firsts
            .iter()
            .filter(|h| h.path.ends_with("twice.wav"))
            .count(),
        1
    );
}

/// The command line says every place `query` is found in `dir/lib` in words and in the JSON,
/// and exports them.
fn the_command_line_says_every_place(dir: &Path, query: &[f32]) {
    let clip_path = dir.join("clip.wav");
    write_wav(&clip_path, RATE, 1, Sample::Int(16), query);
    let elsewhere = dir.join("elsewhere.wav");
    write_wav(&elsewhere, RATE, 1, Sample::Int(16), &melody(60, 3.0));
    let cli_db = dir.join("cli-db");
    index_with_binary(&cli_db, &dir.join("lib"));
    let query_cli = |clip: &Path, json: bool| {
        let mut args: Vec<&OsStr> = vec!["query".as_ref(), "--db".as_ref(), cli_db.as_os_str()];
        args.extend(["--mode", "fingerprint", "--all"].map(OsStr::new));
        if json {
            args.push("--json".as_ref());
        }
        args.push(clip.as_os_str());
        let out = earshot(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = query_cli(&clip_path, false);
    assert!(text.contains("Found 3 times"), "{text}");
    let json: serde_json::Value = serde_json::from_str(query_cli(&clip_path, true).trim()).unwrap();
    let hits = json["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3, "{json}");
    assert!(hits.iter().all(|h| h["found"] == true), "{json}");
    let text = query_cli(&elsewhere, false);
    assert!(
        text.contains("Not found; the closest candidates:"),
        "{text}"
    );

    // Both clips' results exported as one Raven table, and as Audacity label tracks.
    let export = |format: &str, out: &Path| {
        let mut args: Vec<&OsStr> = vec!["query".as_ref(), "--db".as_ref(), cli_db.as_os_str()];
        args.extend(
            [
                "--mode",
                "fingerprint",
                "--all",
                "--export",
                format,
                "--out",
            ]
            .map(OsStr::new),
        );
        args.extend([
            out.as_os_str(),
            clip_path.as_os_str(),
            elsewhere.as_os_str(),
        ]);
        let run = earshot(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let raven = dir.join("table.txt");
    export("raven", &raven);
    let table = std::fs::read_to_string(&raven).unwrap();
    let queries: std::collections::BTreeSet<&str> = (table.lines().skip(1))
        .filter_map(|l| l.split('\t').nth(9))
        .collect();
    let names = [&clip_path, &elsewhere].map(|p| p.to_str().unwrap());
    assert_eq!(queries.into_iter().collect::<Vec<_>>(), names);
    let labels = dir.join("labels");
    export("audacity", &labels);
    let twice_labels = std::fs::read_to_string(labels.join("twice_wav-1.txt")).unwrap();
    for planted_s in [4.0, 13.0] {
        assert!(
            twice_labels.lines().any(|l| {
                let start: f64 = l.split('\t').next().unwrap().parse().unwrap();
                (start - planted_s).abs() <= 0.05 && l.contains("clip.wav")
            }),
            "{twice_labels}"
        );
    }
}

#[test]
fn a_query_that_begins_before_a_file_matches_from_the_file_s_start() {
    let dir = TempDir::new().unwrap();
    // Half a second of a melody from outside the library, then the first 2 s of a file.
    let mut clip = melody(99, 0.5);
    clip.extend_from_slice(&melody(2, 6.0)[..2 * RATE as usize]);
    on_each_backend(dir.path(), |db| {
        let (files, library) = indexed_library(dir.path(), db, 4);
        // By the codes alone: the check against the audio needs the whole query inside the
        // file.
        let by_codes = SearchOptions {
            check_audio: false,
            ..SearchOptions::top(5)
        };
        let hits = search_with(&library, Mode::Fingerprint, &clip, by_codes);
        assert_eq!(hits[0].path, files[2]);
        assert_eq!(hits[0].start_s, 0.0, "{:?}", hits[0]);
        assert!((hits[0].end_s - 2.0).abs() <= 0.05, "{:?}", hits[0]);
        assert!(
            hits.iter().all(|h| h.start_s >= 0.0 && h.end_s > h.start_s),
            "{hits:?}"
        );
    });
}

#[test]
fn every_hit_carries_the_two_codes_behind_its_hamming_distance() {
    let dir = TempDir::new().unwrap();
    on_each_backend(dir.path(), |db| {
        let (_, library) = indexed_library(dir.path(), db, 4);
        for mode in Mode::ALL {
            let hits = search(&library, mode, &melody(1, 4.0));
            assert!(!hits.is_empty());
            for hit in &hits {
                let codes = hit.codes.as_ref().expect("codes");
                let differing: u32 = codes
                    .query
                    .iter()
                    .zip(&codes.library)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum();
                let bits = library.index().modes[&mode].encoder.bits;
                assert_eq!((differing, codes.bits), (hit.hamming, bits), "{mode:?}");
            }
        }
    });
}

#[test]
fn every_engine_agrees_on_the_best_match() {
    let dir = TempDir::new().unwrap();
    let files = make_library(&dir.path().join("lib"), 6);
    let db = dir.path().join("db");
    build(&db, &[dir.path().join("lib")]);
    let index = format::load(&db).unwrap();
    let encoder = baseline_encoder(Mode::Events);
    let data = index.modes.get(&Mode::Events).unwrap();
    for engine in [Engine::Scan, Engine::Buckets, Engine::Hnsw] {
        let tables = SearchTables::build(&index, Mode::Events, data, engine).unwrap();
        let searcher = Searcher::new(&index, Mode::Events, data, encoder.as_ref(), &tables);
        let hits = searcher.search(&melody(3, 6.0), 3).unwrap();
        assert_eq!(hits[0].path, files[3], "{engine:?}");
    }
    let fingerprint = index.modes.get(&Mode::Fingerprint).unwrap();
    let err = SearchTables::build(&index, Mode::Fingerprint, fingerprint, Engine::Hnsw).err();
    assert!(err.is_some_and(|e| e.to_string().contains("keeps none")));
}

#[test]
fn reindexing_skips_unchanged_updates_changed_and_drops_removed() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    let mut segments = Vec::new();
    on_each_backend(dir.path(), |db| {
        // Each backend starts from the same library (the run before changed it).
        let _ = std::fs::remove_dir_all(&lib);
        let files = make_library(&lib, 6);
        build(db, std::slice::from_ref(&lib));
        let again = build(db, &[]);
        assert_eq!(
            (again.added, again.updated, again.removed, again.unchanged),
            (0, 0, 0, 6)
        );

        write_wav(&files[0], RATE, 1, Sample::Int(16), &melody(100, 4.0));
        std::fs::remove_file(&files[1]).unwrap();
        let extra = lib.join("birds/new.wav");
        write_wav(&extra, RATE, 1, Sample::Int(16), &melody(200, 5.0));
        let update = build(db, &[]);
        assert_eq!(
            (
                update.added,
                update.updated,
                update.removed,
                update.unchanged
            ),
            (1, 1, 1, 4)
        );

        let library = open(db, encoders());
        let index = library.index();
        assert_eq!(index.files.len(), 6);
        assert!(index.files.iter().all(|f| f.path != files[1]));
        let first = |clip: &[f32]| search(&library, Mode::Events, clip)[0].path.clone();
        assert_eq!(first(&melody(100, 4.0)), files[0]);
        assert_eq!(first(&melody(200, 5.0)), extra);
        assert!(
            search(&library, Mode::Events, &melody(1, 6.0))
                .iter()
                .all(|h| h.path != files[1])
        );
        let store = earshot::index::open_store(db).unwrap();
        segments.push(Mode::ALL.map(|m| store.segment_count(index, m).unwrap()));
        if !earshot::index::is_remote(db) {
            // Segments stay consistent with the file table.
            for (mode, data) in &index.modes {
                assert!(
                    (data.segments.iter()).all(|s| (s.file as usize) < index.files.len()),
                    "{mode:?}"
                );
                assert_eq!(data.codes.len(), data.segments.len() * data.words());
            }
        }
    });
    // A server keeps the segments a folder keeps.
    assert!(segments.windows(2).all(|w| w[0] == w[1]), "{segments:?}");
}

#[test]
fn an_unreadable_file_is_reported_and_skipped() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    make_library(&lib, 3);
    std::fs::write(lib.join("birds/broken.wav"), "RIFF, but only in name").unwrap();
    on_each_backend(dir.path(), |db| {
        let report = build(db, std::slice::from_ref(&lib));
        assert_eq!(report.added, 3);
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].path.ends_with("broken.wav"));
    });
}

#[test]
fn an_index_from_another_encoder_is_refused_with_the_fix() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    make_library(&lib, 2);
    let other: Encoders = [(
        Mode::Events,
        Box::new(LshEncoder::new(Mode::Events, 64, 1)) as _,
    )]
    .into_iter()
    .collect();
    let libs = std::slice::from_ref(&lib);
    on_each_backend(dir.path(), |db| {
        build::build(db, libs, &other, &options(), &|_| {}).unwrap();
        let err = build::build(db, libs, &encoders(), &options(), &|_| {}).unwrap_err();
        assert!(matches!(err, IndexError::EncoderMismatch { .. }), "{err}");
        assert!(err.to_string().contains("--rebuild"), "{err}");
        let rebuilt = BuildOptions {
            rebuild: true,
            ..options()
        };
        let report = build::build(db, libs, &encoders(), &rebuilt, &|_| {}).unwrap();
        assert_eq!(report.added, 2);
    });
}

#[test]
fn the_command_line_indexes_queries_and_describes() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    let files = make_library(&lib, 4);
    let db = dir.path().join("db");
    let out = index_with_binary(&db, &lib);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 added"));

    let out = earshot(&[
        "query".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--json".as_ref(),
        "--top".as_ref(),
        "2".as_ref(),
        files[2].as_os_str(),
        files[3].as_os_str(),
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, file) in lines.iter().zip(&files[2..]) {
        assert_eq!(line["mode"], "events");
        assert!(line["elapsed_ms"].as_f64().unwrap() > 0.0);
        let hit = &line["hits"][0];
        let keys = [
            "rank", "path", "label", "start_s", "end_s", "hamming", "score",
        ];
        assert!(keys.iter().all(|k| !hit[k].is_null()), "{hit}");
        assert_eq!(hit["path"], file.to_string_lossy().as_ref());
        assert_eq!(hit["rank"], 1);
    }

    let out = earshot(&[
        "info".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--json".as_ref(),
    ]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["files"], 4);
    assert!(info["mb_per_hour"].as_f64().unwrap() > 0.0);
}

/// `earshot info --db DB | head -1`: the reader closing the pipe early is its choice, not an
/// error, and never a panic.
#[test]
fn info_into_a_closed_pipe_ends_quietly() {
    let dir = TempDir::new().unwrap();
    make_library(&dir.path().join("lib"), 2);
    let db = dir.path().join("db");
    build(&db, &[dir.path().join("lib")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["info".as_ref(), "--db".as_ref(), db.as_os_str()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the index is even loaded: every line goes into a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn damaged_index_files_give_a_clear_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    make_library(&lib, 2);
    let db = dir.path().join("db");
    build(&db, &[lib]);
    let path = Index::index_path(&db);
    let good = std::fs::read(&path).unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "garbled",
            good.iter()
                .enumerate()
                .map(|(i, b)| if i % 97 == 50 { !b } else { *b })
                .collect(),
        ),
        ("not an index", b"hello".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, bytes).unwrap();
        let out = earshot(&["info".as_ref(), "--db".as_ref(), db.as_os_str()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: loaded");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains("index.earshot"), "{what}: {stderr}");
    }
}

/// Runs `earshot index --db DB LIB` (the default encoders) and checks that it succeeded.
fn index_with_binary(db: &Path, lib: &Path) -> std::process::Output {
    let out = earshot(&[
        "index".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        lib.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Segment count per path: what a consistent index holds for each file it lists.
fn segments_per_file(index: &Index, mode: Mode) -> HashMap<PathBuf, usize> {
    let mut counts: HashMap<PathBuf, usize> =
        index.files.iter().map(|f| (f.path.clone(), 0)).collect();
    for s in &index.modes[&mode].segments {
        *counts.get_mut(&index.files[s.file as usize].path).unwrap() += 1;
    }
    counts
}

/// Kills `earshot index` at random moments; every time, the index on disk loads and holds only
/// whole files, exactly as a complete run encodes them.
#[cfg(unix)]
#[test]
fn killing_an_index_run_at_any_moment_leaves_the_last_checkpoint() {
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    make_library(&lib, 30);
    // The reference comes from the binary too, so it uses the same (default) encoders.
    let reference_db = dir.path().join("reference");
    index_with_binary(&reference_db, &lib);
    let reference = format::load(&reference_db).unwrap();
    let expected: Vec<HashMap<PathBuf, usize>> = Mode::ALL
        .iter()
        .map(|&m| segments_per_file(&reference, m))
        .collect();

    let db = dir.path().join("db");
    let mut rng = SeededRng::new(42);
    let mut seen_partial = false;
    for round in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(["index", "--checkpoint-secs", "0", "--db"])
            .arg(&db)
            .arg(&lib)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + (rng.uniform() * 150.0) as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        match format::load(&db) {
            Err(IndexError::Missing { .. }) => continue, // killed before its first save
            Err(e) => panic!("round {round}: the index does not load after a kill: {e}"),
            Ok(index) => {
                seen_partial |= index.files.len() < 30;
                for (mode, want) in Mode::ALL.iter().zip(&expected) {
                    for (path, count) in segments_per_file(&index, *mode) {
                        assert_eq!(
                            Some(&count),
                            want.get(&path),
                            "round {round}: {} in {mode:?}",
                            path.display()
                        );
                    }
                }
            }
        }
        // Removing the index's files again makes the next run start partway through, too.
        if round % 3 == 2 {
            let _ = std::fs::remove_dir_all(&db);
        }
    }
    assert!(
        seen_partial,
        "no kill landed mid-run; the test did not test anything"
    );
    index_with_binary(&db, &lib);
    let complete = format::load(&db).unwrap();
    assert_eq!(segments_per_file(&complete, Mode::Events), expected[0]);
    assert_eq!(segments_per_file(&complete, Mode::Fingerprint), expected[1]);
    let leftovers: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "index.earshot")
        .collect();
    assert!(leftovers.is_empty(), "stale files: {leftovers:?}");
}

/// A clip that repeats itself (a warble) planted twice, the second time at the file's end:
/// each place is found once, and no match leaves less than half the query in the file (a lag
/// one period on, mostly past the end, correlated 0.5 and was taken for a third place).
#[test]
fn a_repeating_clip_at_a_file_s_end_is_found_there_once() {
    use earshot::demo::{DEMO_CLASSES, synthesise, write_wav as write_demo};
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    // The demo library's sounds (its seed, its order), where the fault was seen: warble-1, then
    // hum-2 three times, then warble-1 again.
    let mut rng = SeededRng::new(0xDE30);
    let demo: HashMap<String, Vec<f32>> = (DEMO_CLASSES.iter())
        .flat_map(|class| (0..6).map(move |i| format!("{class}-{i}")))
        .map(|name| {
            let class = name.rsplit_once('-').unwrap().0.to_owned();
            let samples = synthesise(&class, &mut rng);
            (name, samples)
        })
        .collect();
    let warble = demo["warble-1"].clone();
    let mut tape = warble.clone();
    for _ in 0..3 {
        tape.extend(&demo["hum-2"]);
    }
    let second_s = tape.len() as f64 / f64::from(earshot::demo::DEMO_SAMPLE_RATE);
    tape.extend(&warble);
    write_demo(&lib.join("tape.wav"), &tape).unwrap();
    for name in ["chirp-up-1", "clicks-2"] {
        write_demo(&lib.join(format!("{name}.wav")), &demo[name]).unwrap();
    }
    on_each_backend(dir.path(), |db| {
        let library = fingerprint_library(&lib, db);
        let hits = search_with(&library, Mode::Fingerprint, &warble, every_occurrence());
        let mut found: Vec<f64> = (hits.iter())
            .filter(|h| h.found == Some(true))
            .map(|h| h.start_s)
            .collect();
        found.sort_by(f64::total_cmp);
        assert_eq!(found.len(), 2, "{hits:?}");
        assert!(
            found[0].abs() <= 0.05 && (found[1] - second_s).abs() <= 0.05,
            "{found:?}"
        );
    });
}
