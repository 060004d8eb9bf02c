//! The exact-match benchmark of `../shared/data/README.md`: index all music tracks, cut queries
//! of 1, 2, 3 and 5 s from the odd-position tracks (fixed seed), distort them (noise, reverb,
//! both) and score the top hit: right file, and right file with its start within 50 ms.
//!
//! Noise and impulse responses are split so that evaluation never uses a recording the
//! fingerprint model trains with: every third file (sorted by name) is held out for evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::esc50::DataError;
use super::metrics::percentile;
use crate::audio::{TARGET_SAMPLE_RATE, decode_file};
use crate::index::format;
use crate::model::{Mode, SeededRng};
use crate::search::{Engine, FilesOnDisk, SearchTables, Searcher};
use crate::session::Encoders;
use crate::session::ingest::{self, BuildOptions};
use crate::train::augment::{Distortion, NoiseBank};

/// Query lengths of the protocol, in seconds.
pub const QUERY_SECONDS: [f64; 4] = [1.0, 2.0, 3.0, 5.0];
/// The seed of the protocol's queries and distortions.
pub const DEFAULT_SEED: u64 = 2026;
/// A hit's start must be this close to the truth to count as a segment hit.
pub const TOLERANCE_S: f64 = 0.05;
/// ESC-50 classes that make good background noise.
pub const NOISY_ESC50_CLASSES: [&str; 8] = [
    "rain",
    "wind",
    "engine",
    "vacuum_cleaner",
    "washing_machine",
    "crackling_fire",
    "sea_waves",
    "airplane",
];

#[derive(Debug, thiserror::Error)]
pub enum FingerprintEvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error("no fingerprint encoder given")]
    NoEncoder,
    #[error("{}: no query track is long enough for {seconds} s queries", root.display())]
    NoQueryTrack { root: PathBuf, seconds: f64 },
}

/// The music tracks in manifest order.
pub struct MusicSet {
    pub root: PathBuf,
    pub tracks: Vec<PathBuf>,
}

impl MusicSet {
    pub fn load(root: &Path) -> Result<Self, DataError> {
        let manifest = root.join("manifest.csv");
        let mut reader = csv::Reader::from_path(&manifest).map_err(|e| DataError::Missing {
            path: manifest.clone(),
            reason: e.to_string(),
        })?;
        let mut tracks = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| DataError::Metadata {
                path: manifest.clone(),
                line: i + 2,
                reason: e.to_string(),
            })?;
            if let Some(file) = row.get(0).filter(|f| !f.is_empty()) {
                tracks.push(root.join(file));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            tracks,
        })
    }

    /// Tracks at even positions (0, 2, ...): the fingerprint model may train on these.
    pub fn training_tracks(&self) -> impl Iterator<Item = &PathBuf> {
        self.tracks.iter().step_by(2)
    }

    /// Tracks at odd positions: queries are cut only from these.
    pub fn query_tracks(&self) -> impl Iterator<Item = &PathBuf> {
        self.tracks.iter().skip(1).step_by(2)
    }
}

/// Which share of the noise recordings and impulse responses to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankPart {
    Training,
    Evaluation,
}

impl BankPart {
    fn holds(self, position: usize) -> bool {
        (position % 3 == 2) == (self == BankPart::Evaluation)
    }
}

/// Noises (`noise/`, and the noisy ESC-50 classes: folds 1-4 for training, fold 5 for
/// evaluation) and impulse responses (`rir/`) under `data`. Files that cannot be read are
/// returned with the reason and left out.
pub fn noise_bank(data: &Path, part: BankPart) -> (NoiseBank, Vec<(PathBuf, String)>) {
    let mut bank = NoiseBank::default();
    let mut failed = Vec::new();
    let mut load =
        |path: &Path, into: &mut Vec<Vec<f32>>| match decode_file(path, TARGET_SAMPLE_RATE) {
            Ok(audio) => into.push(audio.samples),
            Err(e) => failed.push((path.to_path_buf(), e.to_string())),
        };
    for (i, path) in audio_files(&data.join("noise")).iter().enumerate() {
        if part.holds(i) {
            load(path, &mut bank.noises);
        }
    }
    if let Ok(esc50) = super::esc50::Esc50::load(&data.join("esc50")) {
        for clip in &esc50.clips {
            let noisy = NOISY_ESC50_CLASSES.contains(&esc50.labels[clip.target].as_str());
            if noisy && (clip.fold == 5) == (part == BankPart::Evaluation) {
                load(&clip.path, &mut bank.noises);
            }
        }
    }
    for (i, path) in audio_files(&data.join("rir")).iter().enumerate() {
        if part.holds(i) {
            load(path, &mut bank.rirs);
        }
    }
    (bank, failed)
}

/// The audio files directly in `dir`, sorted by name.
fn audio_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| crate::library::is_audio_path(p))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// One query: an excerpt of a query track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryPlan {
    /// Position among the decoded query tracks.
    pub track: usize,
    pub start: usize,
    pub len: usize,
    pub seconds: f64,
}

/// `per_length` queries of each protocol length, from random tracks long enough to hold them.
pub fn plan_queries(
    track_samples: &[usize],
    per_length: usize,
    sample_rate: u32,
    seed: u64,
) -> Vec<QueryPlan> {
    let mut rng = SeededRng::new(seed);
    let mut plans = Vec::new();
    for seconds in QUERY_SECONDS {
        let len = (seconds * f64::from(sample_rate)) as usize;
        let fits: Vec<usize> = (0..track_samples.len())
            .filter(|&t| track_samples[t] > len)
            .collect();
        if fits.is_empty() {
            continue;
        }
        for _ in 0..per_length {
            let track = fits[rng.below(fits.len())];
            let start = rng.below(track_samples[track] - len);
            plans.push(QueryPlan {
                track,
                start,
                len,
                seconds,
            });
        }
    }
    plans
}

/// Hits of one condition at one query length.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub condition: String,
    pub seconds: f64,
    pub queries: usize,
    pub file_hits: usize,
    pub segment_hits: usize,
}

impl Cell {
    pub fn file_rate(&self) -> f64 {
        self.file_hits as f64 / self.queries.max(1) as f64
    }

    pub fn segment_rate(&self) -> f64 {
        self.segment_hits as f64 / self.queries.max(1) as f64
    }
}

/// Everything the benchmark measures for one encoder.
#[derive(Debug, Clone, Serialize)]
pub struct FingerprintReport {
    pub encoder: String,
    pub tracks: usize,
    pub indexed_hours: f64,
    pub index_bytes: u64,
    pub index_mb_per_hour: f64,
    pub index_x_realtime: f64,
    pub cells: Vec<Cell>,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub bucket_max: usize,
    pub bucket_mean: f64,
    /// Mean share of the index's codes compared per query segment.
    pub scanned_fraction: f64,
}

pub struct FingerprintOptions {
    pub per_length: usize,
    pub seed: u64,
    /// Verify matches against the tracks' audio as `earshot search` does (the model card's
    /// figures); without it, the index's codes alone rank files and place the match.
    pub verify_audio: bool,
}

/// Indexes `music` into `db` with `encoders`' fingerprint encoder, then runs every query under
/// every condition of [`Distortion::EVALUATION`].
pub fn evaluate(
    music: &MusicSet,
    bank: &NoiseBank,
    encoders: &Encoders,
    db: &Path,
    options: &FingerprintOptions,
    on_progress: &(dyn Fn(&str) + Sync),
) -> Result<FingerprintReport, FingerprintEvalError> {
    let encoder = encoders
        .get(&Mode::Fingerprint)
        .ok_or(FingerprintEvalError::NoEncoder)?;
    let build_options = BuildOptions {
        labels: None,
        rebuild: true,
        checkpoint_every: std::time::Duration::from_secs(3600),
        cancel: None,
    };
    on_progress("indexing the music tracks");
    let report = ingest::build(
        db,
        std::slice::from_ref(&music.root),
        encoders,
        &build_options,
        &|_| {},
    )?;
    let index_x_realtime = report.encoded_audio_s / report.elapsed.as_secs_f64().max(1e-9);
    let index = format::load(db)?;
    let data = index.section_for(db, Mode::Fingerprint, encoder.as_ref())?;
    let tables = SearchTables::build(&index, Mode::Fingerprint, data, Engine::Buckets)?;
    let files = FilesOnDisk;
    let searcher = Searcher::new(&index, Mode::Fingerprint, data, encoder.as_ref(), &tables)
        .with_audio(options.verify_audio.then_some(&files as _));
    let index_bytes = folder_bytes(db);
    let indexed_hours = index.total_duration_s() / 3600.0;

    on_progress("decoding the query tracks");
    let rate = data.input.sample_rate();
    let sources: Vec<(PathBuf, Vec<f32>)> = music
        .query_tracks()
        .filter_map(|p| Some((canonical(p), decode_file(p, rate).ok()?.samples)))
        .collect();
    let lengths: Vec<usize> = sources.iter().map(|(_, s)| s.len()).collect();
    let plans = plan_queries(&lengths, options.per_length, rate, options.seed);
    for seconds in QUERY_SECONDS {
        if !plans.iter().any(|p| p.seconds == seconds) {
            return Err(FingerprintEvalError::NoQueryTrack {
                root: music.root.clone(),
                seconds,
            });
        }
    }

    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut scanned = Vec::new();
    let n_segments = data.segments.len().max(1) as f64;
    for (c, condition) in Distortion::EVALUATION.iter().enumerate() {
        on_progress(&format!("queries: {}", condition.name()));
        for (q, plan) in plans.iter().enumerate() {
            let (truth, samples) = &sources[plan.track];
            let excerpt = &samples[plan.start..plan.start + plan.len];
            let mut rng = SeededRng::new(options.seed ^ ((q as u64) << 8) ^ c as u64);
            let query = condition.apply(excerpt, bank, &mut rng);
            let started = Instant::now();
            let result = searcher.search_query(&searcher.query(&query), 1);
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            let li = QUERY_SECONDS
                .iter()
                .position(|&s| s == plan.seconds)
                .unwrap_or(0);
            let cell = cells.entry((c, li)).or_insert_with(|| Cell {
                condition: condition.name(),
                seconds: plan.seconds,
                ..Cell::default()
            });
            cell.queries += 1;
            // A silent or unreadable query is a miss, as it would be for a user.
            let Ok((hits, cost)) = result else { continue };
            scanned.push(cost.compared as f64 / (cost.query_segments.max(1) as f64 * n_segments));
            if let Some(hit) = hits.first().filter(|h| canonical(&h.path) == *truth) {
                cell.file_hits += 1;
                let true_start = plan.start as f64 / f64::from(rate);
                if (hit.start_s - true_start).abs() <= TOLERANCE_S {
                    cell.segment_hits += 1;
                }
            }
        }
    }
    let buckets = tables.bucket_stats();
    Ok(FingerprintReport {
        encoder: data.encoder.name.clone(),
        tracks: index.files.len(),
        indexed_hours,
        index_bytes,
        index_mb_per_hour: index_bytes as f64 / 1e6 / indexed_hours.max(1e-9),
        index_x_realtime,
        cells: cells.into_values().collect(),
        latency_ms_p50: percentile(&mut latencies, 0.5),
        latency_ms_p95: percentile(&mut latencies, 0.95),
        bucket_max: buckets.map_or(0, |b| b.max_bucket),
        bucket_mean: buckets.map_or(0.0, |b| b.mean_non_empty_bucket),
        scanned_fraction: scanned.iter().sum::<f64>() / scanned.len().max(1) as f64,
    })
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Bytes of every file directly in `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_fit_their_tracks_and_repeat_with_the_seed() {
        let tracks = [50_000, 200_000, 10_000];
        let a = plan_queries(&tracks, 20, 16_000, 7);
        assert_eq!(a, plan_queries(&tracks, 20, 16_000, 7));
        assert_eq!(a.len(), 80);
        for p in &a {
            assert!(p.start + p.len <= tracks[p.track], "{p:?}");
        }
        // 5 s = 80 000 samples fit only the second track.
        assert!(a.iter().filter(|p| p.seconds == 5.0).all(|p| p.track == 1));
    }
}
