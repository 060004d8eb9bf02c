//! The ESC-50 protocol through the engine, as a user meets it: the database's clips indexed by
//! ingest (which learns a library code where the encoder gives none), each query clip searched
//! as `earshot query` searches it, and the time a 3 s query takes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::esc50::{Esc50, Split, split_ids};
use super::metrics::{RetrievalScores, percentile, scores_of_rankings};
use crate::library::LabelMap;
use crate::model::{Encoded, Mode};
use crate::session::ingest::{self, BuildOptions};
use crate::session::{Clip, Encoders, OpenLibrary, SearchOptions, SessionError};

/// The query length whose latency is reported (the and the design's unit of a query).
pub const LATENCY_QUERY_S: f64 = 3.0;
/// Hits asked for when timing a query (`earshot query`'s default).
const LATENCY_TOP: usize = 10;

/// Percentiles of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        Self {
            p50_ms: percentile(&mut ms, 0.5),
            p95_ms: percentile(&mut ms, 0.95),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexedEvaluation {
    pub scores: RetrievalScores,
    /// Bits of the codes the index searched (the library's own where the encoder has none).
    pub bits: usize,
    /// Whether the index learned its code on the database.
    pub library_code: bool,
    pub index_x_realtime: f64,
    pub mb_per_hour: f64,
    /// A whole query clip (5 s), searched for every database clip.
    pub query_whole: Latency,
    /// The first 3 s of each query clip, searched for 10 hits: decoding, encoding and search.
    pub query_3s: Latency,
    /// Encoding those 3 s alone (the encoder's part of `query_3s`).
    pub encode_3s: Latency,
    /// Clips that could not be read or searched, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// The protocol's database indexed into a folder, ready to be searched.
pub struct IndexedDatabase {
    encoders: Arc<Encoders>,
    split: Split,
    /// The database clips that were indexed, by their ids in the protocol.
    database: Vec<usize>,
    index_x_realtime: f64,
    failed: Vec<(PathBuf, String)>,
}

impl IndexedDatabase {
    /// Every database clip's class, by the path the library knows it by.
    pub fn labels(&self, data: &Esc50) -> LabelMap {
        self.database
            .iter()
            .map(|&i| {
                let clip = &data.clips[i];
                let path = crate::library::canonical_root(&clip.path);
                (path, data.labels[clip.target].clone())
            })
            .collect()
    }
}

/// Indexes `split`'s database clips into `db` (emptied first) with the events encoder in
/// `encoders`.
pub fn index_database(
    encoders: Encoders,
    data: &Esc50,
    split: Split,
    db: &Path,
) -> Result<IndexedDatabase, SessionError> {
    let (database, _) = split_ids(data, split);
    let paths: Vec<PathBuf> = database
        .iter()
        .map(|&i| data.clips[i].path.clone())
        .collect();
    let options = BuildOptions {
        labels: None,
        rebuild: true,
        only_given_roots: false,
        checkpoint_every: Duration::from_secs(3600),
        cancel: None,
    };
    let report = ingest::build(db, &paths, &encoders, &options, &|_| {})?;
    Ok(IndexedDatabase {
        encoders: Arc::new(encoders),
        split,
        database,
        index_x_realtime: report.encoded_audio_s / report.elapsed.as_secs_f64().max(1e-9),
        failed: report
            .failed
            .iter()
            .map(|p| (p.path.clone(), p.reason.clone()))
            .collect(),
    })
}

/// Searches every query clip of the split in the index at `db`, as `earshot query` does.
pub fn search_queries(
    indexed: IndexedDatabase,
    data: &Esc50,
    db: &Path,
) -> Result<IndexedEvaluation, SessionError> {
    let IndexedDatabase {
        encoders,
        split,
        database,
        index_x_realtime,
        mut failed,
    } = indexed;
    let (_, queries) = split_ids(data, split);
    let library = OpenLibrary::open(db, encoders.clone())?;
    let index = library.index().clone();
    let section = index.mode(Mode::Events, db)?;
    // Library files are canonical paths; the protocol's may not be.
    let position: HashMap<PathBuf, usize> = database
        .iter()
        .enumerate()
        .map(|(k, &i)| (crate::library::canonical_root(&data.clips[i].path), k))
        .collect();
    let db_labels: Vec<usize> = database.iter().map(|&i| data.clips[i].target).collect();
    let all = SearchOptions {
        ..SearchOptions::top(index.files.len())
    };
    let mut rankings = Vec::new();
    let mut query_labels = Vec::new();
    let (mut whole_ms, mut short_ms, mut encode_ms) = (Vec::new(), Vec::new(), Vec::new());
    for &q in &queries {
        let path = &data.clips[q].path;
        let searched = search_clip(&library, path, None, &all).and_then(|(hits, ms)| {
            whole_ms.push(ms);
            let short = SearchOptions {
                top: LATENCY_TOP,
                ..all
            };
            let (_, ms) = search_clip(&library, path, Some((0.0, LATENCY_QUERY_S)), &short)?;
            short_ms.push(ms);
            encode_ms.push(encode_prefix_ms(&encoders, path)?);
            Ok(hits)
        });
        match searched {
            Ok(hits) => {
                rankings.push(
                    hits.iter()
                        .filter_map(|h| position.get(&h.path).copied())
                        .collect(),
                );
                query_labels.push(data.clips[q].target);
            }
            Err(e) => failed.push((path.clone(), e.to_string())),
        }
    }
    let mut scores = scores_of_rankings(&rankings, &db_labels, &query_labels, database.len());
    scores.database = index.files.len();
    let hours = index.total_duration_s() / 3600.0;
    Ok(IndexedEvaluation {
        scores,
        bits: section.bits(),
        library_code: section.library_code.is_some(),
        index_x_realtime,
        mb_per_hour: index_bytes(db) as f64 / 1e6 / hours.max(1e-9),
        query_whole: Latency::of(whole_ms),
        query_3s: Latency::of(short_ms),
        encode_3s: Latency::of(encode_ms),
        failed,
    })
}

/// A clip read (only `window`, seconds, when given) and searched: its hits, and the
/// milliseconds it took.
fn search_clip(
    library: &OpenLibrary,
    path: &Path,
    window: Option<(f64, f64)>,
    options: &SearchOptions,
) -> Result<(Vec<crate::search::Hit>, f64), SessionError> {
    let started = Instant::now();
    let clip = Clip::read(path, window)?;
    let hits = library.search(&clip, None, Mode::Events, options)?.hits;
    Ok((hits, started.elapsed().as_secs_f64() * 1e3))
}

/// Milliseconds the events encoder takes for the first [`LATENCY_QUERY_S`] of a clip, as one
/// window of its front end's frames (decoding not included).
fn encode_prefix_ms(encoders: &Encoders, path: &Path) -> Result<f64, SessionError> {
    let encoder = encoders
        .get(&Mode::Events)
        .ok_or(SessionError::NoEncoder(Mode::Events.name()))?;
    let input = encoder.input();
    let clip = Clip::read(path, Some((0.0, LATENCY_QUERY_S)))?;
    let frames = clip.frames(&input.front_end)?;
    let started = Instant::now();
    encoder.encode(&[&frames.data], &mut Encoded::default())?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn index_bytes(db: &Path) -> u64 {
    std::fs::metadata(crate::index::Index::index_path(db)).map_or(0, |m| m.len())
}
