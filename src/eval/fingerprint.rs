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
use crate::model::found::FoundThresholds;
use crate::model::{Mode, SeededRng};
use crate::search::fingerprint::{AudioBacking, NegativeMatch, calibrate_found, is_found};
use crate::search::{AudioCheck, Engine, FilesOnDisk, SearchTables, Searcher};
use crate::session::Encoders;
use crate::session::ingest::{self, BuildOptions};
use crate::train::augment::{Distortion, NoiseBank};

/// Query lengths of the protocol, in seconds.
pub const QUERY_SECONDS: [f64; 4] = [1.0, 2.0, 3.0, 5.0];
/// Negative queries per length and kind: 30 x 4 lengths x 9 conditions = 1,080 of each kind.
pub const DEFAULT_NEGATIVES_PER_LENGTH: usize = 30;
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
    /// Per track, its `related_group` (versions of one piece share one; empty for none).
    pub groups: Vec<String>,
}

impl MusicSet {
    pub fn load(root: &Path) -> Result<Self, DataError> {
        let manifest = root.join("manifest.csv");
        let mut reader = csv::Reader::from_path(&manifest).map_err(|e| DataError::Missing {
            path: manifest.clone(),
            reason: e.to_string(),
        })?;
        let (mut tracks, mut groups) = (Vec::new(), Vec::new());
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| DataError::Metadata {
                path: manifest.clone(),
                line: i + 2,
                reason: e.to_string(),
            })?;
            if let Some(file) = row.get(0).filter(|f| !f.is_empty()) {
                tracks.push(root.join(file));
                groups.push(row.get(3).unwrap_or_default().to_string());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            tracks,
            groups,
        })
    }

    /// Which tracks a split indexes, cuts positive queries from, and cuts negative queries
    /// from (tracks not indexed, and with no other version of their piece indexed either).
    /// - the protocol: every track indexed, queries from the odd positions; negatives from
    ///   every fourth track (positions 3, 7, ...), searched in a second index without them;
    /// - calibration: the even positions only (which the fingerprint model may train on), every
    ///   fourth (0, 4, ...) indexed and queried, negatives from positions 2, 6, ...
    pub fn split(&self, split: FingerprintSplit) -> TrackSplit {
        let at = |keep: &dyn Fn(usize) -> bool| -> Vec<PathBuf> {
            (0..self.tracks.len())
                .filter(|&i| keep(i))
                .map(|i| self.tracks[i].clone())
                .collect()
        };
        let alone = |i: usize| self.groups.get(i).is_none_or(String::is_empty);
        match split {
            FingerprintSplit::Protocol => TrackSplit {
                indexed: self.tracks.clone(),
                queried: self.query_tracks().cloned().collect(),
                negatives: at(&|i| i % 4 == 3 && alone(i)),
                negatives_indexed: false,
            },
            FingerprintSplit::Calibration => TrackSplit {
                indexed: at(&|i| i % 4 == 0),
                queried: at(&|i| i % 4 == 0),
                negatives: at(&|i| i % 4 == 2 && alone(i)),
                negatives_indexed: false,
            },
        }
        .check_negatives()
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

/// The data a fingerprint benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FingerprintSplit {
    /// The exact-match protocol of `../shared/data/README.md`: for reporting.
    Protocol,
    /// Held out from the protocol (training tracks, noises and rooms; ESC-50 folds 1-4): for
    /// choosing thresholds.
    Calibration,
}

/// Tracks by their role in a benchmark (see [`MusicSet::split`]).
#[derive(Debug, Clone)]
pub struct TrackSplit {
    pub indexed: Vec<PathBuf>,
    pub queried: Vec<PathBuf>,
    pub negatives: Vec<PathBuf>,
    /// Whether a negative track is among `indexed` (then negatives need an index of their own).
    pub negatives_indexed: bool,
}

impl TrackSplit {
    fn check_negatives(mut self) -> Self {
        self.negatives_indexed = self.negatives.iter().any(|n| self.indexed.contains(n));
        self
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
    /// Queries whose first hit is found ([`crate::search::fingerprint::is_found`]) and right:
    /// the right file, its start within [`TOLERANCE_S`].
    pub found_right: usize,
    /// Queries whose first hit is found but wrong (another file, or another place).
    pub found_wrong: usize,
    /// ... of which in another file.
    pub found_wrong_file: usize,
    /// ... of which at a repeat of the query's passage elsewhere in its track (see
    /// [`QueryRecord::repeat`]).
    pub found_at_repeat: usize,
}

/// What a query's first hit was, for calibrating the found / not found decision.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord {
    /// `positive`, `negative track` or `negative clip`.
    pub kind: &'static str,
    pub condition: String,
    pub seconds: f64,
    /// Where the query was cut from: its track (a negative's: the track or clip not indexed)
    /// and start (seconds), so that a single query can be looked at again.
    pub track: Option<PathBuf>,
    pub start_s: Option<f64>,
    /// Where the first hit places the query: its file and start (seconds).
    pub hit_track: Option<PathBuf>,
    pub hit_start_s: Option<f64>,
    /// Query segments the search encoded.
    pub segments: usize,
    /// The first hit's score and correlation (none for a query without hits).
    pub score: Option<f32>,
    /// The score as the found decision weighs it: times the share of the query within the
    /// file).
    pub evidence: Option<f32>,
    pub correlation: Option<f32>,
    /// What checking the first hit's audio showed, confirmed or not.
    pub audio_check: Option<AudioCheck>,
    pub found: bool,
    pub right_file: bool,
    pub right_place: bool,
    /// In the right file: where the hit starts less where the query does (seconds).
    pub error_s: Option<f64>,
    /// Found in the right file at another place that holds the query's audio too: the track
    /// repeats the passage there (its clean samples correlate at least [`REPEAT_CORRELATION`]
    /// with the query's). The answer is a place the clip occurs, but not the one it was cut
    /// from, and it counts as wrong.
    pub repeat: bool,
    /// How long the search took, encoding and checking included.
    pub latency_ms: f64,
}

impl QueryRecord {
    /// What the first hit's audio check says of it, for the found decision.
    fn backing(&self) -> AudioBacking {
        (self.audio_check.as_ref()).map_or(AudioBacking::default(), |c| {
            AudioBacking::from_check(c, self.seconds)
        })
    }
}

/// Queries' first hits decided found or not (see [`FingerprintReport::decided_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Decided {
    pub positives: usize,
    pub found_right: usize,
    pub found_wrong: usize,
    pub negatives: usize,
    pub negatives_found: usize,
}

impl std::fmt::Display for Decided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        write!(
            f,
            "{:.1}% of the queries found at the right place, {:.2}% at a wrong one; {} of {} negatives found ({:.2}%)",
            share(self.found_right, self.positives),
            share(self.found_wrong, self.positives),
            self.negatives_found,
            self.negatives,
            share(self.negatives_found, self.negatives)
        )
    }
}

/// Query latency at one query length (milliseconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LengthLatency {
    pub seconds: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// Negative queries of one kind: how many, and how many were found anyway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NegativeCell {
    pub kind: String,
    pub queries: usize,
    pub found: usize,
}

impl Cell {
    pub fn file_rate(&self) -> f64 {
        self.file_hits as f64 / self.queries.max(1) as f64
    }

    pub fn segment_rate(&self) -> f64 {
        self.segment_hits as f64 / self.queries.max(1) as f64
    }

    pub fn found_right_rate(&self) -> f64 {
        self.found_right as f64 / self.queries.max(1) as f64
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
    /// The same, per query length.
    pub latency_by_length: Vec<LengthLatency>,
    pub bucket_max: usize,
    pub bucket_mean: f64,
    /// Mean share of the index's codes compared per query segment.
    pub scanned_fraction: f64,
    pub split: FingerprintSplit,
    pub negatives: Vec<NegativeCell>,
    /// Every query's first hit (positives, then negatives).
    #[serde(skip)]
    pub records: Vec<QueryRecord>,
}

impl FingerprintReport {
    /// Share of all positive queries answered found and right.
    pub fn found_right_rate(&self) -> f64 {
        self.share_of_queries(|c| c.found_right)
    }

    /// Share of all positive queries answered found but wrong.
    pub fn found_wrong_rate(&self) -> f64 {
        self.share_of_queries(|c| c.found_wrong)
    }

    /// Queries found in a file that does not hold them.
    pub fn found_wrong_file_rate(&self) -> f64 {
        self.share_of_queries(|c| c.found_wrong_file)
    }

    /// Queries found at a repeat of their passage in their own track.
    pub fn found_at_repeat_rate(&self) -> f64 {
        self.share_of_queries(|c| c.found_at_repeat)
    }

    /// The found thresholds this run's negatives calibrate (see [`calibrate_found`]): on the
    /// calibration split only, since thresholds chosen on the protocol would be tuned to it;
    /// `None` without negatives of every query length.
    pub fn calibrated_thresholds(&self) -> Option<FoundThresholds> {
        if self.split != FingerprintSplit::Calibration {
            return None;
        }
        let negatives: Vec<NegativeMatch> = (self.records.iter())
            .filter(|r| r.kind != POSITIVE)
            .filter_map(|r| {
                Some(NegativeMatch {
                    query_seconds: r.seconds,
                    evidence: r.evidence?,
                    backing: r.backing(),
                })
            })
            .collect();
        calibrate_found(&negatives)
    }

    /// What this run's first hits would have been with `thresholds` deciding them.
    pub fn decided_with(&self, thresholds: &FoundThresholds) -> Decided {
        let mut d = Decided::default();
        for r in &self.records {
            let found = r
                .evidence
                .is_some_and(|e| is_found(e, r.backing(), r.seconds, thresholds));
            if r.kind == POSITIVE {
                d.positives += 1;
                d.found_right += usize::from(found && r.right_place);
                d.found_wrong += usize::from(found && !r.right_place);
            } else {
                d.negatives += 1;
                d.negatives_found += usize::from(found);
            }
        }
        d
    }

    fn share_of_queries(&self, count: impl Fn(&Cell) -> usize) -> f64 {
        let (n, all) = (self.cells.iter()).fold((0, 0), |(n, a), c| (n + count(c), a + c.queries));
        n as f64 / all.max(1) as f64
    }
}

pub struct FingerprintOptions {
    pub per_length: usize,
    /// Negative queries per length and kind (tracks not indexed, ESC-50 clips).
    pub negatives_per_length: usize,
    pub seed: u64,
    pub split: FingerprintSplit,
    /// Verify matches against the tracks' audio as `earshot search` does (the model card's
    /// figures); without it, the index's codes alone rank files and place the match.
    pub verify_audio: bool,
}

/// Indexes the split's tracks into `db` with `encoders`' fingerprint encoder, then runs every
/// query under every condition of [`Distortion::EVALUATION`], and the negative queries (audio
/// that is not in the index) under each too.
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
    let tracks = music.split(options.split);
    on_progress("indexing the music tracks");
    let report = build_index(db, &tracks.indexed, encoders)?;
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
    let sources = decode_all(&tracks.queried, rate);
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
    let mut run = Run::over(&searcher, rate, data.segments.len());
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for (c, condition) in Distortion::EVALUATION.iter().enumerate() {
        on_progress(&format!("queries: {}", condition.name()));
        for (q, plan) in plans.iter().enumerate() {
            let (path, samples) = &sources[plan.track];
            let excerpt = &samples[plan.start..plan.start + plan.len];
            let mut rng = SeededRng::new(options.seed ^ ((q as u64) << 8) ^ c as u64);
            let query = condition.apply(excerpt, bank, &mut rng);
            let asked = Asked {
                kind: POSITIVE,
                condition,
                seconds: plan.seconds,
                source: Source {
                    path,
                    track: samples,
                    start_s: plan.start as f64 / f64::from(rate),
                },
            };
            let record = run.search(&query, &asked);
            let li = QUERY_SECONDS
                .iter()
                .position(|&s| s == plan.seconds)
                .unwrap_or(0);
            let cell = cells.entry((c, li)).or_insert_with(|| Cell {
                condition: condition.name(),
                seconds: plan.seconds,
                ..Cell::default()
            });
            cell.count(&record);
        }
    }
    let (mut latencies, scanned) = (std::mem::take(&mut run.latencies), run.scanned.clone());
    let mut records = std::mem::take(&mut run.records);
    on_progress("negative queries");
    let negatives = negative_queries(music, &tracks, options, rate);
    let negative_records = if tracks.negatives_indexed {
        let without: Vec<PathBuf> = (tracks.indexed.iter())
            .filter(|t| !tracks.negatives.contains(t))
            .cloned()
            .collect();
        let db = db.join("without-negatives");
        build_index(&db, &without, encoders)?;
        let index = format::load(&db)?;
        let data = index.section_for(&db, Mode::Fingerprint, encoder.as_ref())?;
        let tables = SearchTables::build(&index, Mode::Fingerprint, data, Engine::Buckets)?;
        let searcher = Searcher::new(&index, Mode::Fingerprint, data, encoder.as_ref(), &tables)
            .with_audio(options.verify_audio.then_some(&files as _));
        Run::over(&searcher, rate, data.segments.len()).negatives(&negatives, bank, options.seed)
    } else {
        run.negatives(&negatives, bank, options.seed)
    };
    records.extend(negative_records);
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
        latency_by_length: latency_by_length(&records),
        bucket_max: buckets.map_or(0, |b| b.max_bucket),
        bucket_mean: buckets.map_or(0.0, |b| b.mean_non_empty_bucket),
        scanned_fraction: scanned.iter().sum::<f64>() / scanned.len().max(1) as f64,
        split: options.split,
        negatives: negative_cells(&records),
        records,
    })
}

/// The positive queries' latency per query length.
fn latency_by_length(records: &[QueryRecord]) -> Vec<LengthLatency> {
    QUERY_SECONDS
        .iter()
        .map(|&seconds| {
            let mut ms: Vec<f64> = (records.iter())
                .filter(|r| r.kind == POSITIVE && r.seconds == seconds)
                .map(|r| r.latency_ms)
                .collect();
            LengthLatency {
                seconds,
                p50_ms: percentile(&mut ms, 0.5),
                p95_ms: percentile(&mut ms, 0.95),
            }
        })
        .collect()
}

impl Cell {
    fn count(&mut self, record: &QueryRecord) {
        self.queries += 1;
        self.file_hits += usize::from(record.right_file);
        self.segment_hits += usize::from(record.right_place);
        self.found_right += usize::from(record.found && record.right_place);
        self.found_wrong += usize::from(record.found && !record.right_place);
        self.found_wrong_file += usize::from(record.found && !record.right_file);
        self.found_at_repeat += usize::from(record.found && record.repeat);
    }
}

/// Indexes `tracks` into `db` afresh.
fn build_index(
    db: &Path,
    tracks: &[PathBuf],
    encoders: &Encoders,
) -> Result<ingest::BuildReport, FingerprintEvalError> {
    let build_options = BuildOptions {
        labels: None,
        rebuild: true,
        only_given_roots: false,
        checkpoint_every: std::time::Duration::from_secs(3600),
        cancel: None,
    };
    Ok(ingest::build(
        db,
        tracks,
        encoders,
        &build_options,
        &|_| {},
    )?)
}

/// Each readable file's canonical path and samples at `rate`.
fn decode_all(paths: &[PathBuf], rate: u32) -> Vec<(PathBuf, Vec<f32>)> {
    paths
        .iter()
        .filter_map(|p| Some((canonical(p), decode_file(p, rate).ok()?.samples)))
        .collect()
}

/// Audio that is not in the index, by kind: excerpts of the split's negative tracks, and of
/// ESC-50 clips (fold 5 for the protocol, folds 1-4 for calibration; not the classes used as
/// noise).
struct Negatives {
    kind: &'static str,
    sources: Vec<(PathBuf, Vec<f32>)>,
    plans: Vec<QueryPlan>,
}

fn negative_queries(
    music: &MusicSet,
    tracks: &TrackSplit,
    options: &FingerprintOptions,
    rate: u32,
) -> Vec<Negatives> {
    let n = options.negatives_per_length;
    let plan = |kind, sources: Vec<(PathBuf, Vec<f32>)>, seed| {
        let lengths: Vec<usize> = sources.iter().map(|(_, s)| s.len()).collect();
        let plans = plan_queries(&lengths, n, rate, seed);
        Negatives {
            kind,
            sources,
            plans,
        }
    };
    let mut out = vec![plan(
        "negative track",
        decode_all(&tracks.negatives, rate),
        options.seed ^ 0x7e6,
    )];
    let esc50_root = music.root.parent().map(|d| d.join("esc50"));
    if let Some(esc50) = esc50_root.and_then(|r| super::esc50::Esc50::load(&r).ok()) {
        let in_split = |fold: u8| (fold == 5) == (options.split == FingerprintSplit::Protocol);
        let clips: Vec<PathBuf> = (esc50.clips.iter())
            .filter(|c| in_split(c.fold))
            .filter(|c| !NOISY_ESC50_CLASSES.contains(&esc50.labels[c.target].as_str()))
            .map(|c| c.path.clone())
            .collect();
        let mut rng = SeededRng::new(options.seed ^ 0xe5c);
        let chosen: Vec<PathBuf> = (0..(n * QUERY_SECONDS.len()).min(clips.len()))
            .map(|_| clips[rng.below(clips.len())].clone())
            .collect();
        out.push(plan(
            "negative clip",
            decode_all(&chosen, rate),
            options.seed ^ 0xc11,
        ));
    }
    out
}

/// Negatives found anyway, by kind.
fn negative_cells(records: &[QueryRecord]) -> Vec<NegativeCell> {
    let mut cells: BTreeMap<&str, NegativeCell> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind != POSITIVE) {
        let cell = cells.entry(r.kind).or_insert_with(|| NegativeCell {
            kind: r.kind.to_string(),
            ..NegativeCell::default()
        });
        cell.queries += 1;
        cell.found += usize::from(r.found);
    }
    cells.into_values().collect()
}

const POSITIVE: &str = "positive";

/// Queries searched one by one, with what each found and how long it took.
struct Run<'s, 'a> {
    searcher: &'s Searcher<'a>,
    /// The queries' sample rate.
    rate: u32,
    /// Segments in the index (for the share of it each query compared).
    n_segments: f64,
    records: Vec<QueryRecord>,
    latencies: Vec<f64>,
    scanned: Vec<f64>,
}

/// What a query is: its kind, distortion and length, and where it was cut from.
struct Asked<'q> {
    kind: &'static str,
    condition: &'q Distortion,
    seconds: f64,
    source: Source<'q>,
}

/// Where a query was cut from: its track or clip (path and samples) and start (seconds); for a
/// positive, the truth its hits are judged by.
struct Source<'q> {
    path: &'q Path,
    track: &'q [f32],
    start_s: f64,
}

/// The least correlation of a track's clean samples at two places for the second to hold the
/// first's audio again (a loop or a repeated bar, copied, as music made on a computer repeats).
const REPEAT_CORRELATION: f64 = 0.9;

impl Source<'_> {
    /// Whether the track's samples from `at_s` on, within [`TOLERANCE_S`], are those of the
    /// query's passage again (`len` samples at `rate`), half the query's length or more away.
    fn repeats_at(&self, at_s: f64, len: usize, rate: u32) -> bool {
        let to_sample = |s: f64| (s * f64::from(rate)).round() as i64;
        let (start, at) = (to_sample(self.start_s), to_sample(at_s));
        let Some(passage) = self
            .track
            .get(start.max(0) as usize..)
            .and_then(|t| t.get(..len))
        else {
            return false;
        };
        let tolerance = to_sample(TOLERANCE_S);
        (at - tolerance..=at + tolerance)
            .filter(|&lag| (lag - start).unsigned_abs() as usize >= len / 2 && lag >= 0)
            .filter_map(|lag| self.track.get(lag as usize..)?.get(..len))
            .any(|there| pearson(passage, there) >= REPEAT_CORRELATION)
    }
}

/// The correlation of two equally long stretches (0 where either is constant).
fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().max(1) as f64;
    let mean = |x: &[f32]| x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
    }
    if aa > 0.0 && bb > 0.0 {
        ab / (aa * bb).sqrt()
    } else {
        0.0
    }
}

impl<'s, 'a> Run<'s, 'a> {
    fn over(searcher: &'s Searcher<'a>, rate: u32, segments: usize) -> Self {
        Self {
            searcher,
            rate,
            n_segments: segments.max(1) as f64,
            records: Vec::new(),
            latencies: Vec::new(),
            scanned: Vec::new(),
        }
    }

    /// Searches `query` and records its first hit. A silent or unreadable query finds
    /// nothing, as it would for a user.
    fn search(&mut self, query: &[f32], asked: &Asked) -> QueryRecord {
        let started = Instant::now();
        let result = self.searcher.search_query(&self.searcher.query(query), 1);
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.latencies.push(latency_ms);
        let mut record = QueryRecord {
            kind: asked.kind,
            condition: asked.condition.name(),
            seconds: asked.seconds,
            track: Some(asked.source.path.to_path_buf()),
            start_s: Some(asked.source.start_s),
            hit_track: None,
            hit_start_s: None,
            segments: 0,
            score: None,
            evidence: None,
            correlation: None,
            audio_check: None,
            found: false,
            right_file: false,
            right_place: false,
            error_s: None,
            repeat: false,
            latency_ms,
        };
        if let Ok((hits, cost)) = result {
            let per_segment = cost.query_segments.max(1) as f64 * self.n_segments;
            self.scanned.push(cost.compared as f64 / per_segment);
            record.segments = cost.query_segments;
            if let Some(hit) = hits.first() {
                record.score = Some(hit.score);
                record.hit_track = Some(hit.path.clone());
                record.hit_start_s = Some(hit.start_s);
                let query_s = query.len() as f64 / f64::from(self.rate);
                // A hit spans the part of the query that lies within the file.
                let coverage = ((hit.end_s - hit.start_s) / query_s).clamp(0.0, 1.0) as f32;
                record.evidence = Some(hit.score * coverage);
                record.correlation = hit.correlation;
                record.audio_check = hit.audio_check;
                record.found = hit.found == Some(true);
                if asked.kind == POSITIVE {
                    let truth = &asked.source;
                    record.right_file = canonical(&hit.path) == truth.path;
                    let error_s = hit.start_s - truth.start_s;
                    record.error_s = record.right_file.then_some(error_s);
                    record.right_place = record.right_file && error_s.abs() <= TOLERANCE_S;
                    record.repeat = record.right_file
                        && !record.right_place
                        && truth.repeats_at(hit.start_s, query.len(), self.rate);
                }
            }
        }
        self.records.push(record.clone());
        record
    }

    /// Every negative query under every condition.
    fn negatives(
        mut self,
        negatives: &[Negatives],
        bank: &NoiseBank,
        seed: u64,
    ) -> Vec<QueryRecord> {
        for set in negatives {
            for (c, condition) in Distortion::EVALUATION.iter().enumerate() {
                for (q, plan) in set.plans.iter().enumerate() {
                    let (path, samples) = &set.sources[plan.track];
                    let excerpt = &samples[plan.start..plan.start + plan.len];
                    let mut rng = SeededRng::new(seed ^ 0xbad ^ ((q as u64) << 8) ^ c as u64);
                    let query = condition.apply(excerpt, bank, &mut rng);
                    let asked = Asked {
                        kind: set.kind,
                        condition,
                        seconds: plan.seconds,
                        source: Source {
                            path,
                            track: samples,
                            start_s: plan.start as f64 / f64::from(self.rate),
                        },
                    };
                    self.search(&query, &asked);
                }
            }
        }
        self.records
    }
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

    /// A passage copied elsewhere in its track is a repeat there; other music, or the
    /// passage's own place a little off, is not.
    #[test]
    fn a_copied_passage_is_a_repeat_and_other_audio_is_not() {
        let rate = 1_000;
        let mut rng = SeededRng::new(5);
        let mut track: Vec<f32> = (0..20 * rate).map(|_| rng.normal() as f32).collect();
        let (start, copy, len) = (2 * rate, 12 * rate, 3 * rate as usize);
        track.copy_within(start as usize..start as usize + len, copy as usize);
        let truth = Source {
            path: Path::new("track.ogg"),
            track: &track,
            start_s: 2.0,
        };
        assert!(truth.repeats_at(12.0, len, rate as u32));
        assert!(
            truth.repeats_at(12.03, len, rate as u32),
            "within the tolerance"
        );
        assert!(!truth.repeats_at(7.0, len, rate as u32), "other audio");
        assert!(
            !truth.repeats_at(2.2, len, rate as u32),
            "its own place, misplaced"
        );
    }

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
