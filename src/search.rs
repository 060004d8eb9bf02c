//! The query pipeline: a clip's samples become segments and codes, the index is searched, and
//! segment matches become ranked hits: per file in `events` mode, per file and time offset in
//! `fingerprint` mode (offset-consistent voting, as in the attention-fingerprint paper).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::features::segment::{SegmentStream, is_silent};
use crate::features::{FrameFeature, LOG_MEL_BANDS, LogMel};
use crate::index::buckets::BucketIndex;
use crate::index::hamming;
use crate::index::hnsw::EmbeddingIndex;
use crate::index::{Index, ModeIndex};
use crate::model::{EncodeError, Encoded, Encoder, Mode};

/// Longest query searched with (seconds); longer clips are cut to their start and the user told.
pub const MAX_QUERY_S: f64 = 600.0;
/// Reads at most [`MAX_QUERY_S`] of the clip at `path` (and a little more, to tell whether it was
/// longer); returns its samples cut to the limit and whether they were cut.
pub fn read_query(path: &std::path::Path) -> Result<(Vec<f32>, bool), crate::audio::AudioError> {
    let mut audio = crate::audio::decode_prefix(path, MAX_QUERY_S + 1.0)?;
    let max = (MAX_QUERY_S * f64::from(crate::audio::TARGET_SAMPLE_RATE)) as usize;
    let cut = audio.samples.len() > max;
    audio.samples.truncate(max);
    Ok((audio.samples, cut))
}

/// Library segments fetched per query segment when searching by buckets or HNSW, per hit wanted.
const CANDIDATES_PER_HIT: usize = 20;
/// Fingerprint voting: neighbours per query segment by full scan; by buckets, every code in the
/// buckets within this substring radius (all codes within 7 bits of a 64-bit code, and more).
const FINGERPRINT_NEIGHBOURS: usize = 8;
const FINGERPRINT_SUBSTRING_RADIUS: u32 = 1;
/// A neighbour farther than this fraction of the bits is noise, not a vote.
const FINGERPRINT_MAX_VOTE_DISTANCE: f64 = 0.3;

/// How library segments are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Exact: Hamming distance to every segment.
    Scan,
    /// Multi-index hashing over the codes (exact within the radius it probes).
    Buckets,
    /// HNSW over the float embeddings (approximate).
    Hnsw,
}

impl Engine {
    pub fn default_for(mode: Mode) -> Self {
        match mode {
            Mode::Events => Engine::Scan,
            Mode::Fingerprint => Engine::Buckets,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub path: PathBuf,
    pub label: String,
    /// `events`: the matched segment. `fingerprint`: where the query's first sample falls in the file.
    pub start_s: f64,
    pub end_s: f64,
    pub hamming: u32,
    /// `events`: cosine of the embeddings. `fingerprint`: share of query segments that voted.
    pub score: f32,
    /// The codes of the best-matching query segment and library segment (for inspection; not
    /// part of the command line's output).
    #[serde(skip)]
    pub codes: Option<MatchedCodes>,
}

/// The two codes behind a hit's Hamming distance.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedCodes {
    pub bits: usize,
    pub query: Vec<u64>,
    pub library: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the query is empty")]
    EmptyQuery,
    #[error("the query is silent: nothing in it to match")]
    SilentQuery,
    #[error(
        "HNSW search needs float embeddings, and the {0} index keeps none; use --engine scan or buckets"
    )]
    NoEmbeddings(&'static str),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// An index opened for searching one mode.
pub struct Searcher<'a> {
    index: &'a Index,
    mode: Mode,
    data: &'a ModeIndex,
    encoder: &'a dyn Encoder,
    buckets: Option<BucketIndex>,
    hnsw: Option<EmbeddingIndex>,
}

/// What a search cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchCost {
    pub query_segments: usize,
    /// Library codes compared in full, summed over the query's segments. Exact for fingerprint
    /// search; events search counts a full scan whatever the engine.
    pub compared: usize,
}

/// A query cut into segments and encoded.
struct QuerySegments {
    starts: Vec<usize>,
    encoded: Encoded,
}

impl<'a> Searcher<'a> {
    /// `data` must be `index`'s section for `mode`, built by `encoder` (the caller checks).
    pub fn new(
        index: &'a Index,
        mode: Mode,
        data: &'a ModeIndex,
        encoder: &'a dyn Encoder,
        engine: Engine,
    ) -> Result<Self, SearchError> {
        if engine == Engine::Hnsw && data.embedding_dim == 0 {
            return Err(SearchError::NoEmbeddings(mode.name()));
        }
        let buckets =
            (engine == Engine::Buckets).then(|| BucketIndex::build(&data.codes, data.words()));
        let hnsw = (engine == Engine::Hnsw)
            .then(|| EmbeddingIndex::build(&data.embeddings, data.embedding_dim));
        Ok(Self {
            index,
            mode,
            data,
            encoder,
            buckets,
            hnsw,
        })
    }

    /// How the codes spread over the buckets (bucket engine only).
    pub fn bucket_stats(&self) -> Option<crate::index::buckets::BucketStats> {
        self.buckets.as_ref().map(BucketIndex::stats)
    }

    /// Ranked hits for a 16 kHz mono clip.
    pub fn search(&self, samples: &[f32], top: usize) -> Result<Vec<Hit>, SearchError> {
        Ok(self.search_with_cost(samples, top)?.0)
    }

    /// Ranked hits, and how much of the index the search compared in full.
    pub fn search_with_cost(
        &self,
        samples: &[f32],
        top: usize,
    ) -> Result<(Vec<Hit>, SearchCost), SearchError> {
        let query = self.encode_query(samples)?;
        let n_query = query.starts.len();
        let (mut hits, compared) = match self.mode {
            Mode::Events => (self.rank_files(&query, top), None),
            Mode::Fingerprint => {
                let query_s = samples.len() as f64 / f64::from(self.index.features.sample_rate);
                let (hits, compared) = self.vote(&query, query_s, top);
                (hits, Some(compared))
            }
        };
        for (rank, hit) in hits.iter_mut().enumerate() {
            hit.rank = rank + 1;
        }
        let scanned = self.data.segments.len() * n_query;
        let cost = SearchCost {
            query_segments: n_query,
            compared: compared.unwrap_or(scanned),
        };
        Ok((hits, cost))
    }

    fn encode_query(&self, samples: &[f32]) -> Result<QuerySegments, SearchError> {
        if samples.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        let seg = self.data.segmentation;
        let mut stream = SegmentStream::new(seg.window, seg.query_hop, LOG_MEL_BANDS);
        let mut segments = Vec::new();
        let mut log_mel = LogMel::new(&self.index.features);
        let mut on_frame = |f: &[f32]| stream.push(f, &mut |s| segments.push(s));
        log_mel.push(samples, &mut on_frame);
        log_mel.finish(&mut on_frame);
        stream.finish(&mut |s| segments.push(s));
        segments.retain(|s| !is_silent(&s.values));
        if segments.is_empty() {
            return Err(SearchError::SilentQuery);
        }
        let values: Vec<&[f32]> = segments.iter().map(|s| s.values.as_slice()).collect();
        let mut encoded = Encoded::default();
        self.encoder.encode(&values, &mut encoded)?;
        Ok(QuerySegments {
            starts: segments.iter().map(|s| s.start_frame).collect(),
            encoded,
        })
    }

    /// `events`: each file's best segment (fewest differing bits, then highest cosine).
    fn rank_files(&self, q: &QuerySegments, top: usize) -> Vec<Hit> {
        let dim = self.data.embedding_dim;
        let query_embedding = |j: usize| &q.encoded.embeddings[j * dim..(j + 1) * dim];
        // Per library segment: the smallest distance to any query segment, and which one.
        let best = self.segment_distances(q, top);
        // Per file: its smallest distance.
        let mut file_best = vec![u32::MAX; self.index.files.len()];
        for (i, &(d, _)) in best.iter().enumerate() {
            let f = &mut file_best[self.data.segments[i].file as usize];
            *f = (*f).min(d);
        }
        // Only files that can still make the top `top` need cosines (for ties).
        let mut cut: Vec<u32> = file_best
            .iter()
            .copied()
            .filter(|&d| d != u32::MAX)
            .collect();
        if cut.is_empty() || top == 0 {
            return Vec::new();
        }
        let nth = (top - 1).min(cut.len() - 1);
        let cutoff = *cut.select_nth_unstable(nth).1;
        let mut per_file: HashMap<u32, (u32, f32, usize, u32)> = HashMap::new();
        for (i, &(d, j)) in best.iter().enumerate() {
            let file = self.data.segments[i].file;
            if d > cutoff || d != file_best[file as usize] {
                continue;
            }
            let cos = if dim > 0 {
                cosine(self.data.embedding(i), query_embedding(j as usize))
            } else {
                0.0
            };
            let e = per_file.entry(file).or_insert((d, cos, i, j));
            if cos > e.1 {
                *e = (d, cos, i, j);
            }
        }
        let mut ranked: Vec<(u32, (u32, f32, usize, u32))> = per_file.into_iter().collect();
        ranked.sort_by(|a, b| {
            a.1.0
                .cmp(&b.1.0)
                .then(b.1.1.total_cmp(&a.1.1))
                .then(a.0.cmp(&b.0))
        });
        ranked.truncate(top);
        ranked
            .into_iter()
            .map(|(file, (d, cos, i, j))| {
                let s = self.data.segments[i];
                let start_s = f64::from(s.start_frame) * self.frame_s();
                let mut hit = self.hit(
                    file,
                    start_s,
                    start_s + f64::from(s.n_frames) * self.frame_s(),
                    d,
                    cos,
                );
                hit.codes = Some(self.matched_codes(q, j as usize, i));
                hit
            })
            .collect()
    }

    /// For every library segment, the smallest distance to a query segment and which one
    /// (`u32::MAX` where the engine did not look at the segment).
    fn segment_distances(&self, q: &QuerySegments, top: usize) -> Vec<(u32, u32)> {
        let (codes, words, dim) = (
            &self.data.codes,
            self.data.words(),
            self.encoder.info().embedding_dim,
        );
        if self.buckets.is_none() && self.hnsw.is_none() {
            return hamming::min_distances(codes, words, &q.encoded.codes);
        }
        let mut best = vec![(u32::MAX, 0u32); self.data.segments.len()];
        for (j, qcode) in q.encoded.codes.chunks_exact(words).enumerate() {
            let candidates = match (&self.buckets, &self.hnsw) {
                (Some(b), _) => b.nearest(codes, qcode, top * CANDIDATES_PER_HIT, 3).hits,
                (_, Some(h)) => h
                    .nearest(
                        &q.encoded.embeddings[j * dim..(j + 1) * dim],
                        top * CANDIDATES_PER_HIT,
                    )
                    .into_iter()
                    .map(|(_, i)| (hamming::distance(self.data.code(i), qcode), i))
                    .collect(),
                _ => Vec::new(),
            };
            for (d, i) in candidates {
                if d < best[i].0 {
                    best[i] = (d, j as u32);
                }
            }
        }
        best
    }

    /// `fingerprint`: neighbours of each query segment vote for (file, offset); the heaviest
    /// offset cluster per file wins.
    /// Also returns the number of library codes compared.
    fn vote(&self, q: &QuerySegments, query_s: f64, top: usize) -> (Vec<Hit>, usize) {
        let words = self.data.words();
        let max_distance = (FINGERPRINT_MAX_VOTE_DISTANCE * self.data.encoder.bits as f64) as u32;
        // (file, offset in frames) -> (weight, best distance, its library and query segments)
        let mut votes: HashMap<(u32, i64), (f32, u32, usize, usize)> = HashMap::new();
        let mut compared = 0;
        for (j, qcode) in q.encoded.codes.chunks_exact(words).enumerate() {
            let (neighbours, scanned) = self.fingerprint_neighbours(qcode);
            compared += scanned;
            for (d, i) in neighbours {
                if d > max_distance {
                    continue;
                }
                let s = self.data.segments[i];
                let offset = i64::from(s.start_frame) - q.starts[j] as i64;
                let e = votes
                    .entry((s.file, offset))
                    .or_insert((0.0, u32::MAX, i, j));
                e.0 += 1.0 - d as f32 / max_distance.max(1) as f32;
                if d < e.1 {
                    (e.1, e.2, e.3) = (d, i, j);
                }
            }
        }
        let window = (self.data.segmentation.hop / 2) as i64;
        let mut per_file: HashMap<u32, Vec<Vote>> = HashMap::new();
        for ((file, offset), (weight, distance, segment, query_segment)) in votes {
            per_file.entry(file).or_default().push(Vote {
                offset,
                weight,
                distance,
                segments: (query_segment, segment),
            });
        }
        let mut ranked: Vec<(u32, OffsetCluster)> = per_file
            .into_iter()
            .map(|(file, mut v)| (file, heaviest_cluster(&mut v, window)))
            .collect();
        ranked.sort_by(|a, b| b.1.weight.total_cmp(&a.1.weight).then(a.0.cmp(&b.0)));
        ranked.truncate(top);
        let n_query = q.starts.len().max(1) as f32;
        let hits = ranked
            .into_iter()
            .map(|(file, c)| {
                let start_s = c.offset as f64 * self.frame_s();
                let mut hit = self.hit(
                    file,
                    start_s,
                    start_s + query_s,
                    c.distance,
                    (c.weight / n_query).min(1.0),
                );
                hit.codes = Some(self.matched_codes(q, c.segments.0, c.segments.1));
                hit
            })
            .collect();
        (hits, compared)
    }

    /// A query code's voting neighbours, and how many library codes were compared.
    fn fingerprint_neighbours(&self, code: &[u64]) -> (Vec<(u32, usize)>, usize) {
        match &self.buckets {
            Some(b) => {
                let found = b.probe(&self.data.codes, code, FINGERPRINT_SUBSTRING_RADIUS);
                (found.hits, found.scanned)
            }
            None => (
                hamming::top_k(
                    &self.data.codes,
                    self.data.words(),
                    code,
                    FINGERPRINT_NEIGHBOURS,
                ),
                self.data.segments.len(),
            ),
        }
    }

    fn matched_codes(
        &self,
        q: &QuerySegments,
        query_segment: usize,
        segment: usize,
    ) -> MatchedCodes {
        let w = self.data.words();
        MatchedCodes {
            bits: self.data.encoder.bits,
            query: q.encoded.codes[query_segment * w..(query_segment + 1) * w].to_vec(),
            library: self.data.code(segment).to_vec(),
        }
    }

    /// Seconds per log-mel frame of the index.
    fn frame_s(&self) -> f64 {
        1.0 / self.index.features.frames_per_second()
    }

    fn hit(&self, file: u32, start_s: f64, end_s: f64, hamming: u32, score: f32) -> Hit {
        let f = &self.index.files[file as usize];
        Hit {
            rank: 0,
            path: f.path.clone(),
            label: f.label.clone(),
            start_s,
            end_s,
            hamming,
            score,
            codes: None,
        }
    }
}

/// Votes for one (file, offset).
struct Vote {
    offset: i64,
    weight: f32,
    /// The smallest distance among them, and its (query, library) segments.
    distance: u32,
    segments: (usize, usize),
}

struct OffsetCluster {
    offset: i64,
    weight: f32,
    distance: u32,
    segments: (usize, usize),
}

/// The window of `±window` frames holding the most vote weight; its offset is that of its
/// heaviest single vote (an exactly aligned query segment).
fn heaviest_cluster(votes: &mut [Vote], window: i64) -> OffsetCluster {
    votes.sort_by_key(|v| v.offset);
    let mut best = OffsetCluster {
        offset: 0,
        weight: f32::MIN,
        distance: u32::MAX,
        segments: (0, 0),
    };
    let mut lo = 0;
    let mut sum = 0.0;
    for hi in 0..votes.len() {
        sum += votes[hi].weight;
        while votes[hi].offset - votes[lo].offset > 2 * window {
            sum -= votes[lo].weight;
            lo += 1;
        }
        if sum > best.weight {
            let members = &votes[lo..=hi];
            let peak = members
                .iter()
                .max_by(|a, b| a.weight.total_cmp(&b.weight))
                .map_or(votes[hi].offset, |p| p.offset);
            let closest = members
                .iter()
                .min_by_key(|m| m.distance)
                .unwrap_or(&votes[hi]);
            best = OffsetCluster {
                offset: peak,
                weight: sum,
                distance: closest.distance,
                segments: closest.segments,
            };
        }
    }
    best
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { dot / norm } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heaviest_cluster_wins_and_keeps_its_peak_offset() {
        let vote = |offset, weight, distance| Vote {
            offset,
            weight,
            distance,
            segments: (0, distance as usize),
        };
        let mut votes = vec![
            vote(100, 1.0, 3),
            vote(102, 3.0, 1),
            vote(104, 1.0, 4),
            vote(400, 2.5, 2),
            vote(900, 0.5, 9),
        ];
        let c = heaviest_cluster(&mut votes, 5);
        assert_eq!((c.offset, c.distance, c.segments), (102, 1, (0, 1)));
        assert!((c.weight - 5.0).abs() < 1e-6);
    }
}
