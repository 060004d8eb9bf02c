//! Ranking over what the index holds: a query's samples become segments and codes, the index
//! is searched, and segment matches become ranked hits: per file in `events` mode
//! ([`events`]), per file and time offset in `fingerprint` mode ([`fingerprint`]:
//! offset-consistent voting, as in the attention-fingerprint paper, checked against the files'
//! audio when the caller passes it in).
//!
//! [`SearchTables`] (bucket tables, HNSW graph, per-file segment ranges) are built once per
//! index and mode and kept between queries; a [`Searcher`] is the cheap view one query uses.

use std::path::PathBuf;

use serde::Serialize;

use crate::features::FeatureMatrix;
use crate::index::buckets::{BucketIndex, BucketStats};
use crate::index::hnsw::EmbeddingIndex;
use crate::index::store::QueryCodes;
use crate::index::{Index, ModeIndex};
use crate::model::{EncodeError, Encoder, Mode};

mod correlate;
mod events;
pub mod fingerprint;
mod query;
pub mod rerank;
mod verify;
use query::QuerySegments;
pub use verify::{FilesOnDisk, LibraryAudio};

/// How library segments are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
    /// file (or the file's start, for a query aligned to begin before it) to where its last does
    /// (or the file's end).
    pub start_s: f64,
    pub end_s: f64,
    pub hamming: u32,
    /// `events`: how similar, falling down the list: the codes' agreement (1 - Hamming distance
    /// / bits, less up to one step by the cosine) where codes rank, the re-ranked score (cosine of the embeddings, with the codes'
    /// agreement for a head) where embeddings re-rank, the cosine where there are no codes.
    /// `fingerprint`: how well the whole query agrees with
    /// the file at that offset, 1 - mean Hamming distance / (bits / 2): 1 for identical codes,
    /// 0 for no better than chance.
    pub score: f32,
    /// `fingerprint`: the correlation of the query's samples with the file's audio at
    /// `start_s` (whitened; 1 for the same samples, about 0.7 for the same samples under noise as
    /// loud as them) when the audio was checked and holds the query's own samples there. Such
    /// hits come first.
    pub correlation: Option<f32>,
    /// `fingerprint`: whether the query was found here (the match is sure enough to be an
    /// answer), or is a candidate only (see [`fingerprint::is_found`]). `None` for `events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// `fingerprint`: what checking the file's audio showed, confirmed or not (for inspection
    /// and calibration; `None` when the audio was not checked).
    #[serde(skip)]
    pub audio_check: Option<AudioCheck>,
    /// The codes of the best-matching query segment and library segment (for inspection; not
    /// part of the command line's output).
    #[serde(skip)]
    pub codes: Option<MatchedCodes>,
}

/// The best correlation of a query's samples with a file's audio near a match, and how far it
/// stood above the other lags (see [`fingerprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AudioCheck {
    pub correlation: f32,
    pub prominence: f32,
    /// For a match weak enough to be a room's: how well the query's onsets line up with the
    /// file's there (normalised correlation of onset envelopes).
    pub onsets: Option<f32>,
    /// For a match weak enough to be a room's: the share of the query's half-second blocks
    /// whose own correlation peaks with the whole query's.
    pub agreement: Option<f32>,
    /// The best correlation at another place of the same file that was checked.
    pub elsewhere: Option<f32>,
    /// Whether that is as good as here: the passage recurs in the file, and which place the
    /// query is, is a guess (the hit is then not found, unless certain).
    pub recurs: bool,
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

/// What a search keeps of an index between queries: the engine's tables, and for fingerprint
/// search each file's segments and its rank by path.
pub struct SearchTables {
    engine: Engine,
    buckets: Option<BucketIndex>,
    hnsw: Option<EmbeddingIndex>,
    /// `fingerprint`: each file's segments, to verify a match at any offset.
    file_segments: Vec<std::ops::Range<usize>>,
    /// `fingerprint`: each file's rank by path. Files are numbered in the order indexing
    /// finished them, which varies from run to run, so equal scores are ordered by path instead:
    /// the same files give the same results however they were indexed.
    path_rank: Vec<u32>,
}

impl SearchTables {
    /// The tables `engine` needs to search `data`, `index`'s section for `mode`.
    pub fn build(
        index: &Index,
        mode: Mode,
        data: &ModeIndex,
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
            engine,
            buckets,
            hnsw,
            file_segments,
            path_rank,
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// How the codes spread over the buckets (bucket engine only).
    pub fn bucket_stats(&self) -> Option<BucketStats> {
        self.buckets.as_ref().map(BucketIndex::stats)
    }
}

/// An index section, its tables and its encoder, searched by one or more queries.
pub struct Searcher<'a> {
    index: &'a Index,
    mode: Mode,
    data: &'a ModeIndex,
    encoder: &'a dyn Encoder,
    tables: &'a SearchTables,
    /// `fingerprint`: the library's audio, to verify where in a file a match is.
    audio: Option<&'a dyn LibraryAudio>,
    /// `events`: hits per file at most (distinct moments of it).
    per_file: usize,
    /// `fingerprint`: every place the query is found, in every file, rather than each file's
    /// best.
    every_occurrence: bool,
}

/// What a search cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchCost {
    pub query_segments: usize,
    /// Library codes compared in full, summed over the query's segments. Exact for fingerprint
    /// search; events search counts a full scan whatever the engine.
    pub compared: usize,
}

/// A query as its encoder reads it: mono samples at the encoder's rate, and its front end's
/// frames of them (computed once by whoever holds the clip, or here).
pub struct QueryAudio<'q> {
    pub samples: &'q [f32],
    pub frames: std::borrow::Cow<'q, FeatureMatrix>,
}

/// A query cut into segments and encoded, ready to search (see [`Searcher::encode`]).
pub struct EncodedQuery(QuerySegments);

/// Files a store that searches segments itself hands events search at least (see
/// [`crate::index::store::Store::shortlist`]): the ranking re-scores each file's segments, so
/// it is given more files than it will show.
const SHORTLIST_MIN_FILES: usize = 32;

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

impl<'a> Searcher<'a> {
    /// `data` must be `index`'s section for `mode`, built by `encoder` (the caller checks
    /// once, see [`crate::index::Index::section_for`]), and `tables` built from it. Matches are
    /// ranked by the index's codes alone unless [`Self::with_audio`] gives the files' audio.
    pub fn new(
        index: &'a Index,
        mode: Mode,
        data: &'a ModeIndex,
        encoder: &'a dyn Encoder,
        tables: &'a SearchTables,
    ) -> Self {
        Self {
            index,
            mode,
            data,
            encoder,
            tables,
            audio: None,
            per_file: 1,
            every_occurrence: false,
        }
    }

    /// `events`: how many distinct moments of one file may be hits (at least 1; 1 by default,
    /// each file's best).
    pub fn with_per_file(mut self, per_file: usize) -> Self {
        self.per_file = per_file.max(1);
        self
    }

    /// `fingerprint`: every place of every file where the query is found (all of them, however
    /// many hits were asked for), instead of each file's best; when none is found, the closest
    /// candidates as usual.
    pub fn with_every_occurrence(mut self, every_occurrence: bool) -> Self {
        self.every_occurrence = every_occurrence;
        self
    }

    /// Where fingerprint matches are verified against the files' audio (see [`verify`]), e.g.
    /// [`FilesOnDisk`]; `None` to rank by the index's codes alone.
    pub fn with_audio(mut self, audio: Option<&'a dyn LibraryAudio>) -> Self {
        self.audio = audio;
        self
    }

    /// The query's frames, computed by the encoder's front end.
    pub fn query<'q>(&self, samples: &'q [f32]) -> QueryAudio<'q> {
        QueryAudio {
            samples,
            frames: std::borrow::Cow::Owned(self.data.input.front_end.compute(samples)),
        }
    }

    /// Ranked hits for a mono clip at the encoder's rate.
    pub fn search(&self, samples: &[f32], top: usize) -> Result<Vec<Hit>, SearchError> {
        Ok(self.search_query(&self.query(samples), top)?.0)
    }

    /// Ranked hits, and how much of the index the search compared in full.
    pub fn search_query(
        &self,
        query: &QueryAudio<'_>,
        top: usize,
    ) -> Result<(Vec<Hit>, SearchCost), SearchError> {
        let encoded = self.encode(query)?;
        Ok(self.search_encoded(&encoded, query.samples, top))
    }

    /// The query cut into the section's query windows and encoded (the silent ones left out).
    pub fn encode(&self, query: &QueryAudio<'_>) -> Result<EncodedQuery, SearchError> {
        if query.samples.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        QuerySegments::encode(&query.frames, self.data, self.encoder).map(EncodedQuery)
    }

    /// `query` as a store sees it, for `top` hits searched as this searcher searches.
    pub fn store_query<'q>(&self, query: &'q EncodedQuery, top: usize) -> QueryCodes<'q> {
        let q = &query.0;
        let (files, votes) = match self.mode {
            Mode::Events => (top.saturating_mul(2).max(SHORTLIST_MIN_FILES), None),
            Mode::Fingerprint => {
                let plan = self.vote_plan(q, top);
                (plan.candidates, Some(plan))
            }
        };
        QueryCodes {
            starts: &q.starts,
            encoded: &q.encoded,
            files,
            votes,
        }
    }

    /// Ranked hits for a query [`Self::encode`]d by a searcher of the same encoder and code
    /// (`samples` are its samples, for checking fingerprint matches against the audio).
    pub fn search_encoded(
        &self,
        query: &EncodedQuery,
        samples: &[f32],
        top: usize,
    ) -> (Vec<Hit>, SearchCost) {
        let q = &query.0;
        let n_query = q.starts.len();
        let (mut hits, compared) = match self.mode {
            Mode::Events => (self.rank_files(q, top), None),
            Mode::Fingerprint => {
                let (hits, compared) = self.vote(q, samples, top);
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
        (hits, cost)
    }

    fn matched_codes(
        &self,
        q: &QuerySegments,
        query_segment: usize,
        segment: usize,
    ) -> MatchedCodes {
        let w = self.data.words();
        MatchedCodes {
            bits: self.data.bits(),
            query: q.encoded.codes[query_segment * w..(query_segment + 1) * w].to_vec(),
            library: self.data.code(segment).to_vec(),
        }
    }

    /// Seconds per front-end frame of the index section.
    fn frame_s(&self) -> f64 {
        self.data.input.frame_s()
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
            found: None,
            audio_check: None,
            codes: None,
        }
    }
}
