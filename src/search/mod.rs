//! The query pipeline: a clip's samples become segments and codes, the index is searched, and
//! segment matches become ranked hits: per file in `events` mode, per file and time offset in
//! `fingerprint` mode (offset-consistent voting, as in the attention-fingerprint paper).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::features::segment::{Segment, SegmentStream, is_silent};
use crate::features::{FrameFeature, LOG_MEL_BANDS, LogMel, LogMelConfig};
use crate::index::buckets::BucketIndex;
use crate::index::hamming;
use crate::index::hnsw::EmbeddingIndex;
use crate::index::{Index, ModeIndex};
use crate::model::{EncodeError, Encoded, Encoder, Mode};

mod correlate;
mod verify;
use correlate::WhitenedQuery;
use verify::{Excerpt, QueryProjections, Verifier};
pub use verify::{FilesOnDisk, LibraryAudio};

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
/// buckets reached by flipping any of the query segment's least sure bits in each 16-bit
/// substring, or, for an encoder without margins, every code within this substring radius (all
/// codes within 7 bits of a 64-bit code, and more).
const FINGERPRINT_NEIGHBOURS: usize = 8;
const FINGERPRINT_SUBSTRING_RADIUS: u32 = 1;
/// Bucket probes per table for a whole query, shared among its segments: a short query has
/// few segments, and each needs many probes to be found under noise (1 s at 0 dB: the right
/// file 60.0% of the time with 64 probes a segment, 54.0% with 16); a long one has many, and
/// 64 probes for each of them made a 3 s query against 100 hours take 0.5 s. Unsure bits per
/// segment: between 1 and 6, `log2(budget / segments)` (a budget of 512 lost 5 s queries at 0 dB
/// with reverb: 58.0% in place against 70.7% with 64 probes a segment).
const FINGERPRINT_PROBE_BUDGET: usize = 2048;
const FINGERPRINT_MAX_UNSURE_BITS: usize = 6;
/// A neighbour farther than this fraction of the bits is noise, not a vote. At 0 dB a true
/// neighbour often differs in 30-40% of its bits; chance is 50% (plus or minus 4.4% at 128 bits).
const FINGERPRINT_MAX_VOTE_DISTANCE: f64 = 0.4;
/// Fingerprint verification: this many of the heaviest (file, offset) votes are scored against
/// the whole query, at every offset within a hop of the vote.
const VERIFY_CANDIDATES: usize = 32;
/// With the library's audio: the first this many files of a fingerprint search, and this many
/// of each one's candidate offsets, are checked against it (each check decodes about the
/// query's length plus 1.2 s of the file). On 150 queries of 2 s at 0 dB, 16 offsets placed
/// none more and 6 files one more, at 1.2x and 1.8x the latency.
const VERIFIED_FILES: usize = 3;
const VERIFIED_OFFSETS: usize = 8;
/// A verified file whose samples correlate with the query's at least this much (whitened, see
/// [`correlate`]) holds the query's own audio there: it is placed by the samples, and ranked
/// before the files that are not. In a numpy prototype, unrelated audio stayed below 0.14 (1 s
/// reverberated queries against a minute of other tracks); on the exact-match protocol the
/// query's own samples under noise as loud as the music mostly reach 0.4-0.9.
const CONFIRMED_CORRELATION: f32 = 0.15;
/// Candidates of one file whose stretches lie this close (frames) are checked on one excerpt.
const MERGED_GAP_FRAMES: i64 = 100;

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
    /// `events`: the matched segment. `fingerprint`: where the query's first sample falls in the
    /// file (or the file's start, for a query aligned to begin before it) to where its last does.
    pub start_s: f64,
    pub end_s: f64,
    pub hamming: u32,
    /// `events`: cosine of the embeddings. `fingerprint`: how well the whole query agrees with
    /// the file at that offset, 1 - mean Hamming distance / (bits / 2): 1 for identical codes,
    /// 0 for no better than chance.
    pub score: f32,
    /// `fingerprint`: the correlation of the query's samples with the file's audio at
    /// `start_s` (whitened; 1 for the same samples, about 0.7 for the same samples under noise as
    /// loud as them) when the audio was checked and holds the query's own samples there. Such
    /// hits come first.
    pub correlation: Option<f32>,
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
    /// `fingerprint`: each file's segments, to verify a match at any offset.
    file_segments: Vec<std::ops::Range<usize>>,
    /// `fingerprint`: each file's rank by path. Files are numbered in the order indexing finished them, which
    /// varies from run to run, so equal scores are ordered by path instead: the same files give
    /// the same results however they were indexed.
    path_rank: Vec<u32>,
    /// `fingerprint`: the library's audio, to verify where in a file a match is.
    audio: Option<&'a dyn LibraryAudio>,
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
    /// Per segment and bit, how much a differing bit counts when verifying a fingerprint match:
    /// the bit's margin over the segment's mean margin (empty without margins).
    bit_weights: Vec<f32>,
}

impl QuerySegments {
    /// Bits by which `code` differs from query segment `j`: each weighted by how sure the query
    /// is of it (weights average 1 over a segment, so this is on the scale of a Hamming distance),
    /// and plainly counted.
    fn distances(&self, j: usize, code: &[u64]) -> (f32, u32) {
        let words = code.len();
        let query = &self.encoded.codes[j * words..][..words];
        let plain = hamming::distance(query, code);
        if self.bit_weights.is_empty() {
            return (plain as f32, plain);
        }
        let bits = self.bit_weights.len() / self.starts.len();
        let weights = &self.bit_weights[j * bits..][..bits];
        let mut sum = 0.0;
        for (w, (a, b)) in query.iter().zip(code).enumerate() {
            let mut differ = a ^ b;
            while differ != 0 {
                sum += weights
                    .get(w * 64 + differ.trailing_zeros() as usize)
                    .copied()
                    .unwrap_or(1.0);
                differ &= differ - 1;
            }
        }
        (sum, plain)
    }
}

/// A clip's log-mel cut into segments of `window` frames every `hop` frames, ending with the
/// stream's end-aligned tail segment if one is due.
fn log_mel_segments(
    samples: &[f32],
    features: &LogMelConfig,
    window: usize,
    hop: usize,
) -> Vec<Segment> {
    let mut stream = SegmentStream::new(window, hop, LOG_MEL_BANDS);
    let mut segments = Vec::new();
    let mut log_mel = LogMel::new(features);
    let mut on_frame = |f: &[f32]| stream.push(f, &mut |s| segments.push(s));
    log_mel.push(samples, &mut on_frame);
    log_mel.finish(&mut on_frame);
    stream.finish(&mut |s| segments.push(s));
    segments
}

/// Each file's rank when the index's files are sorted by path.
fn path_ranks(index: &Index) -> Vec<u32> {
    let mut by_path: Vec<usize> = (0..index.files.len()).collect();
    by_path.sort_by(|&a, &b| index.files[a].path.cmp(&index.files[b].path));
    let mut rank = vec![0; by_path.len()];
    for (r, &file) in by_path.iter().enumerate() {
        rank[file] = r as u32;
    }
    rank
}

/// How many of each query segment's least sure bits the bucket probes flip (see
/// [`FINGERPRINT_PROBE_BUDGET`]).
fn unsure_bits(segments: usize) -> usize {
    let per_segment = FINGERPRINT_PROBE_BUDGET / segments.max(1);
    (per_segment.max(1).ilog2() as usize).clamp(1, FINGERPRINT_MAX_UNSURE_BITS)
}

/// Per-segment weights from margins: `|margin|` over the segment's mean `|margin|`.
fn bit_weights(margins: &[f32], bits: usize) -> Vec<f32> {
    let mut weights: Vec<f32> = margins.iter().map(|m| m.abs()).collect();
    for segment in weights.chunks_mut(bits.max(1)) {
        let mean = segment.iter().sum::<f32>() / segment.len() as f32;
        segment
            .iter_mut()
            .for_each(|w| *w = if mean > 0.0 { *w / mean } else { 1.0 });
    }
    weights
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
        let (file_segments, path_rank) = match mode {
            Mode::Fingerprint => (data.file_segments(index.files.len()), path_ranks(index)),
            Mode::Events => (Vec::new(), Vec::new()),
        };
        Ok(Self {
            path_rank,
            index,
            mode,
            data,
            encoder,
            buckets,
            hnsw,
            file_segments,
            audio: Some(&FilesOnDisk),
        })
    }

    /// Where fingerprint matches are verified against the files' audio (see [`verify`]): by
    /// default the files on disk; `None` to rank by the index's codes alone.
    pub fn with_audio(mut self, audio: Option<&'a dyn LibraryAudio>) -> Self {
        self.audio = audio;
        self
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
                let (hits, compared) = self.vote(&query, samples, top);
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
        let mut segments =
            log_mel_segments(samples, &self.index.features, seg.window, seg.query_hop);
        segments.retain(|s| !is_silent(&s.values));
        if segments.is_empty() {
            return Err(SearchError::SilentQuery);
        }
        let values: Vec<&[f32]> = segments.iter().map(|s| s.values.as_slice()).collect();
        let mut encoded = Encoded::default();
        self.encoder.encode(&values, &mut encoded)?;
        let bits = self.encoder.info().bits;
        let bit_weights = if encoded.margins.len() == segments.len() * bits {
            bit_weights(&encoded.margins, bits)
        } else {
            Vec::new()
        };
        Ok(QuerySegments {
            starts: segments.iter().map(|s| s.start_frame).collect(),
            encoded,
            bit_weights,
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
    /// offsets are then verified against the whole query (every query segment that lands on a
    /// library segment at that offset), and files ranked by how well their best offset agrees.
    /// The first files' offsets are then checked against their audio (see [`verify`]).
    /// Also returns the number of library codes compared.
    fn vote(&self, q: &QuerySegments, samples: &[f32], top: usize) -> (Vec<Hit>, usize) {
        let (votes, compared) = self.collect_votes(q);
        let hop = self.data.segmentation.hop as i64;
        let candidates =
            strongest_offsets(votes, hop, VERIFY_CANDIDATES.max(2 * top), &self.path_rank);
        let mut per_file: HashMap<u32, Vec<Alignment>> = HashMap::new();
        for (file, offset) in candidates {
            let Some(range) = self.file_segments.get(file as usize) else {
                continue;
            };
            if let Some(a) = self.best_alignment(q, range, offset - hop..=offset + hop) {
                per_file.entry(file).or_default().push(a);
            }
        }
        let mut ranked: Vec<(u32, Vec<Alignment>)> = per_file.into_iter().collect();
        for (_, alignments) in &mut ranked {
            alignments.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        let rank = |file: u32| self.path_rank.get(file as usize).copied();
        ranked.sort_by(|a, b| {
            b.1[0]
                .score
                .total_cmp(&a.1[0].score)
                .then_with(|| rank(a.0).cmp(&rank(b.0)))
        });
        // The files verified do not depend on how many hits are wanted: nor does the first.
        ranked.truncate(top.max(VERIFIED_FILES));
        let query_s = samples.len() as f64 / f64::from(self.index.features.sample_rate);
        let whitened = self.audio.map(|_| WhitenedQuery::new(samples));
        let mut hits: Vec<Hit> = ranked
            .into_iter()
            .enumerate()
            .map(|(rank, (file, mut alignments))| {
                let (a, confirmed) = match &whitened {
                    Some(w) if rank < VERIFIED_FILES => self.verified(q, w, file, alignments),
                    _ => (alignments.swap_remove(0), None),
                };
                let start_s = confirmed.map_or(a.offset as f64 * self.frame_s(), |c| c.0);
                // A query aligned to begin before the file matches from the file's start.
                let (start_s, end_s) = (start_s.max(0.0), start_s + query_s);
                let mut hit = self.hit(file, start_s, end_s, a.closest.0, a.score);
                hit.correlation = confirmed.map(|c| c.1);
                hit.codes = Some(self.matched_codes(q, a.closest.1, a.closest.2));
                hit
            })
            .collect();
        // Stable: files the audio confirms first, by correlation; the rest keep their order.
        let confirmed = |h: &Hit| h.correlation.unwrap_or(f32::NEG_INFINITY);
        hits.sort_by(|a, b| confirmed(b).total_cmp(&confirmed(a)));
        hits.truncate(top);
        (hits, compared)
    }

    /// The alignment of `file` to report, checked against its audio: where the query's samples
    /// are if the file holds them (with their start in seconds and correlation, see
    /// [`CONFIRMED_CORRELATION`]); otherwise the candidate whose projections agree best with the
    /// query's (a recording of the file rather than its samples); the best by codes if the
    /// audio cannot be read.
    fn verified(
        &self,
        q: &QuerySegments,
        whitened: &WhitenedQuery,
        file: u32,
        mut alignments: Vec<Alignment>,
    ) -> (Alignment, Option<(f64, f32)>) {
        let best_by_codes = alignments.remove(0);
        let (Some(audio), Some(f)) = (self.audio, self.index.files.get(file as usize)) else {
            return (best_by_codes, None);
        };
        let bits = self.data.encoder.bits;
        let verifier = Verifier {
            audio,
            encoder: self.encoder,
            features: &self.index.features,
        };
        let query = QueryProjections {
            starts: &q.starts,
            margins: &q.encoded.margins,
            bits,
            samples: whitened.len(),
        };
        let hop = self.data.segmentation.hop as i64;
        let candidates = std::iter::once(&best_by_codes).chain(&alignments);
        let groups = nearby_offsets(candidates.take(VERIFIED_OFFSETS), hop);
        let excerpts: Vec<(&OffsetGroup, Excerpt)> = groups
            .iter()
            .filter_map(|g| Some((g, verifier.excerpt(&query, f, &g.offsets)?)))
            .collect();
        let by_samples = excerpts
            .iter()
            .filter_map(|(g, e)| Some((*g, verifier.correlate(whitened, &query, e, &g.offsets)?)))
            .max_by(|x, y| x.1.1.total_cmp(&y.1.1));
        if let Some((g, (start_s, correlation))) = by_samples
            && correlation >= CONFIRMED_CORRELATION
        {
            let offset = (start_s * self.index.features.frames_per_second()).round() as i64;
            return (g.nearest(offset).at(offset), Some((start_s, correlation)));
        }
        if q.encoded.margins.len() != q.starts.len() * bits {
            return (best_by_codes, None);
        }
        // None: a stretch the file ends too soon after.
        let by_projections = excerpts
            .iter()
            .filter_map(|(g, e)| Some((*g, verifier.check(&query, e, &g.offsets)?)))
            .min_by(|x, y| x.1.distance.total_cmp(&y.1.distance));
        match by_projections {
            Some((g, v)) => (g.nearest(v.offset).at(v.offset), None),
            None => (best_by_codes, None),
        }
    }

    /// Vote weight per (file, offset in frames), and the number of library codes compared.
    fn collect_votes(&self, q: &QuerySegments) -> (HashMap<(u32, i64), f32>, usize) {
        let words = self.data.words();
        let max_distance = (FINGERPRINT_MAX_VOTE_DISTANCE * self.data.encoder.bits as f64) as u32;
        let mut votes: HashMap<(u32, i64), f32> = HashMap::new();
        let mut compared = 0;
        let unsure = unsure_bits(q.starts.len());
        for (j, qcode) in q.encoded.codes.chunks_exact(words).enumerate() {
            let (neighbours, scanned) = self.fingerprint_neighbours(q, j, qcode, unsure);
            compared += scanned;
            for (d, i) in neighbours.into_iter().filter(|&(d, _)| d <= max_distance) {
                let s = self.data.segments[i];
                let offset = i64::from(s.start_frame) - q.starts[j] as i64;
                *votes.entry((s.file, offset)).or_default() +=
                    1.0 - d as f32 / max_distance.max(1) as f32;
            }
        }
        (votes, compared)
    }

    /// The offset among `offsets` at which the query agrees best with the file whose segments
    /// are `range`; `None` if no query segment lands on a library segment at any of them.
    fn best_alignment(
        &self,
        q: &QuerySegments,
        range: &std::ops::Range<usize>,
        offsets: std::ops::RangeInclusive<i64>,
    ) -> Option<Alignment> {
        let chance = self.data.encoder.bits as f32 / 2.0;
        let mut best: Option<Alignment> = None;
        for offset in offsets {
            let mut sum = 0.0;
            let mut aligned = 0u32;
            let mut closest = (u32::MAX, 0, 0);
            for (j, &start) in q.starts.iter().enumerate() {
                let Some(i) = self.data.segment_at(range, start as i64 + offset) else {
                    continue;
                };
                let (weighted, d) = q.distances(j, self.data.code(i));
                sum += weighted;
                aligned += 1;
                if d < closest.0 {
                    closest = (d, j, i);
                }
            }
            if aligned == 0 {
                continue;
            }
            // One unaligned segment at chance distance: a single lucky alignment at a file's
            // edge does not outrank many aligned segments.
            let mean = (sum + chance) / (aligned + 1) as f32;
            let score = (1.0 - mean / chance).max(0.0);
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Alignment {
                    offset,
                    score,
                    closest,
                });
            }
        }
        best
    }

    /// A query code's voting neighbours, and how many library codes were compared.
    fn fingerprint_neighbours(
        &self,
        q: &QuerySegments,
        j: usize,
        code: &[u64],
        unsure: usize,
    ) -> (Vec<(u32, usize)>, usize) {
        match &self.buckets {
            Some(b) => {
                let bits = self.data.encoder.bits;
                let certainty = q.bit_weights.get(j * bits..(j + 1) * bits);
                let found = match certainty {
                    Some(c) => b.probe_unsure(&self.data.codes, code, c, unsure),
                    None => b.probe(&self.data.codes, code, FINGERPRINT_SUBSTRING_RADIUS),
                };
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
            correlation: None,
            codes: None,
        }
    }
}

/// A file's best offset after verification.
#[derive(Clone, Copy)]
struct Alignment {
    /// Frames from the file's start to the query's first frame.
    offset: i64,
    /// 1 - mean distance / chance distance over the aligned segments (1 = identical codes,
    /// 0 = no better than chance).
    score: f32,
    /// The closest aligned pair: (distance, query segment, library segment).
    closest: (u32, usize, usize),
}

/// Candidate offsets of a file close enough to be checked on one excerpt of its audio, and
/// every frame offset within a hop of them.
struct OffsetGroup {
    offsets: std::ops::RangeInclusive<i64>,
    candidates: Vec<Alignment>,
}

impl OffsetGroup {
    /// The candidate closest to `offset` (whose codes the hit shows).
    fn nearest(&self, offset: i64) -> &Alignment {
        let mut nearest = &self.candidates[0];
        for a in &self.candidates {
            if (a.offset - offset).abs() < (nearest.offset - offset).abs() {
                nearest = a;
            }
        }
        nearest
    }
}

/// Groups candidate offsets whose stretches of audio (a hop either side) lie less than
/// [`MERGED_GAP_FRAMES`] apart: decoding one excerpt costs more than decoding a second more.
fn nearby_offsets<'a>(
    candidates: impl Iterator<Item = &'a Alignment>,
    hop: i64,
) -> Vec<OffsetGroup> {
    let mut sorted: Vec<Alignment> = candidates.copied().collect();
    sorted.sort_by_key(|a| a.offset);
    let mut groups: Vec<OffsetGroup> = Vec::new();
    for a in sorted {
        let (lowest, highest) = (a.offset - hop, a.offset + hop);
        match groups.last_mut() {
            Some(g) if lowest <= g.offsets.end() + MERGED_GAP_FRAMES => {
                g.offsets = *g.offsets.start()..=highest;
                g.candidates.push(a);
            }
            _ => groups.push(OffsetGroup {
                offsets: lowest..=highest,
                candidates: vec![a],
            }),
        }
    }
    groups
}

impl Alignment {
    /// The same match placed at `offset` instead.
    fn at(&self, offset: i64) -> Self {
        Self { offset, ..*self }
    }
}

/// Up to `n` (file, offset) pairs in order of vote weight, at most one per `hop` frames of a
/// file: the neighbours of a strong offset are covered by its verification.
fn strongest_offsets(
    votes: HashMap<(u32, i64), f32>,
    hop: i64,
    n: usize,
    path_rank: &[u32],
) -> Vec<(u32, i64)> {
    let key = |&(file, offset): &(u32, i64)| (path_rank.get(file as usize).copied(), offset);
    let mut ranked: Vec<((u32, i64), f32)> = votes.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| key(&a.0).cmp(&key(&b.0))));
    let mut picked: Vec<(u32, i64)> = Vec::new();
    for ((file, offset), _) in ranked {
        if picked.len() == n {
            break;
        }
        if !picked
            .iter()
            .any(|&(f, o)| f == file && (o - offset).abs() <= hop)
        {
            picked.push((file, offset));
        }
    }
    picked
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
    fn short_queries_probe_more_unsure_bits_per_segment_than_long_ones() {
        // 1 s of query is 3 segments, 2 s 53, 3 s 103, 5 s 203 (0.96 s windows every 20 ms).
        let bits: Vec<usize> = [1, 3, 53, 103, 203, 10_000]
            .into_iter()
            .map(unsure_bits)
            .collect();
        assert_eq!(bits, vec![6, 6, 5, 4, 3, 1]);
    }

    #[test]
    fn unsure_query_bits_count_less_when_they_differ() {
        // One 4-bit segment, code 0b0011; margins say bits 0 and 2 are sure, 1 and 3 are not.
        let margins = [3.0, 1.0, -3.0, -1.0];
        let q = QuerySegments {
            starts: vec![0],
            encoded: Encoded {
                codes: vec![0b0011],
                ..Encoded::default()
            },
            bit_weights: bit_weights(&margins, 4),
        };
        assert_eq!(q.bit_weights, vec![1.5, 0.5, 1.5, 0.5]);
        assert_eq!(q.distances(0, &[0b0011]), (0.0, 0));
        assert_eq!(q.distances(0, &[0b0001]), (0.5, 1)); // an unsure bit differs
        assert_eq!(q.distances(0, &[0b0111]), (1.5, 1)); // a sure bit differs
        assert_eq!(q.distances(0, &[0b1100]), (4.0, 4)); // all differ: the plain count
        let plain = QuerySegments {
            bit_weights: Vec::new(),
            ..q
        };
        assert_eq!(plain.distances(0, &[0b0111]), (1.0, 1));
    }

    #[test]
    fn candidates_less_than_a_second_apart_share_an_excerpt() {
        let at = |offset| Alignment {
            offset,
            score: 0.5,
            closest: (0, 0, 0),
        };
        let candidates = [at(400), at(100), at(110), at(560)];
        let groups = nearby_offsets(candidates.iter(), 7);
        let spans: Vec<_> = groups.iter().map(|g| g.offsets.clone()).collect();
        // 117 to 393 is more than 100 frames; 407 to 553 is too.
        assert_eq!(spans, [93..=117, 393..=407, 553..=567]);
        assert_eq!(groups[0].nearest(108).offset, 110);
        assert_eq!(groups[0].nearest(95).offset, 100);
        let merged = nearby_offsets([at(100), at(200)].iter(), 7);
        assert_eq!(merged.len(), 1, "107 to 193 is within 100 frames");
        assert_eq!(merged[0].offsets, 93..=207);
    }

    #[test]
    fn the_strongest_offsets_come_first_and_cover_their_neighbours() {
        let votes = HashMap::from([
            ((0, 100), 1.0),
            ((0, 102), 3.0),
            ((0, 104), 1.0),
            ((1, 104), 2.0),
            ((0, 400), 2.5),
            ((2, 900), 0.5),
        ]);
        assert_eq!(
            strongest_offsets(votes.clone(), 10, 10, &[0, 1]),
            vec![(0, 102), (0, 400), (1, 104), (2, 900)]
        );
        assert_eq!(
            strongest_offsets(votes, 10, 2, &[0, 1]),
            vec![(0, 102), (0, 400)]
        );
    }
}
