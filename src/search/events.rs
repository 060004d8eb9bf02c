//! `events` search: library segments ranked by Hamming distance to the query's codes, then
//! the nearest few hundred (the candidates):
//! - a code learned on the library's own embeddings ([`crate::index::library_code`]):
//!   re-ranked by cosine ([`super::rerank`]);
//! - a hash head trained elsewhere: re-ranked by cosine and the codes' agreement with the
//!   query's bit margins together (the library may hold kinds of sound the head never saw);
//! - codes learned from labels on most of the library's files: by their agreement with the
//!   query's bit margins ([`margin_agreement`]); from labels on a few of them (marks):
//!   re-ranked by cosine and that agreement together;
//! - other encoders' codes: by distance, ties broken by cosine.
//!
//! Then the best segments per file become hits.

use std::collections::HashMap;

use rayon::prelude::*;

use super::query::QuerySegments;
use super::rerank::{
    CODE_WEIGHT, PARTIAL_LABELS_CODE_WEIGHT, RERANK_CANDIDATES, fuse, margin_agreement, rerank,
};
use super::{Hit, Searcher};
use crate::index::hamming;
use crate::index::vector::{cosine, normalise};

/// Library segments fetched per query segment when searching by buckets or HNSW, per hit wanted.
const CANDIDATES_PER_HIT: usize = 20;

/// A library segment as ranked: its distance to the nearest query segment (which one), and
/// its score, which falls with the rank (the codes' agreement when they rank, the re-ranked
/// score after re-ranking).
#[derive(Debug, Clone, Copy)]
struct ScoredSegment {
    segment: usize,
    query_segment: u32,
    hamming: u32,
    score: f32,
}

impl Searcher<'_> {
    /// An encoder without codes (a backbone's embeddings alone, in a library too small to
    /// have learned its own code): every library segment is a candidate at distance 0, paired
    /// with the query segment whose embedding is closest, so that the cosine alone ranks them
    /// (an exact scan).
    fn closest_by_cosine(&self, q: &QuerySegments) -> Vec<(u32, u32)> {
        let dim = self.data.embedding_dim;
        let queries: Vec<&[f32]> = q.encoded.embeddings.chunks_exact(dim.max(1)).collect();
        (0..self.data.segments.len())
            .into_par_iter()
            .map(|i| {
                let segment = self.data.embedding(i);
                let best = queries
                    .iter()
                    .map(|e| cosine(segment, e))
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(j, _)| j);
                (0, best as u32)
            })
            .collect()
    }

    /// Hits: up to `self.per_file` distinct moments per file, `top` in all, best first.
    pub(super) fn rank_files(&self, q: &QuerySegments, top: usize) -> Vec<Hit> {
        let distances = self.segment_distances(q, top);
        let ranked = match &self.data.library_code {
            // Learned from labels on most of this library: they describe what it holds.
            Some(code) if code.describes_library(self.index.files.len()) => {
                self.by_margins(q, &distances, top)
            }
            Some(code) => {
                let comparable = |e: &[f32]| code.comparable(e);
                let weight = match code.is_from_labels() {
                    true => PARTIAL_LABELS_CODE_WEIGHT,
                    false => 0.0,
                };
                self.reranked(q, &distances, top, &comparable, weight)
            }
            // A head's embeddings are its backbone's, standardised by it.
            None if self.encoder.codes_from_labels_on_backbone() && self.data.embedding_dim > 0 => {
                let comparable = |e: &[f32]| {
                    let mut x = e.to_vec();
                    normalise(&mut x);
                    x
                };
                self.reranked(q, &distances, top, &comparable, CODE_WEIGHT)
            }
            None => self.by_distance(q, &distances, top),
        };
        self.moments_per_file(&ranked, top)
            .into_iter()
            .map(|s| {
                let segment = self.data.segments[s.segment];
                let start_s = f64::from(segment.start_frame) * self.frame_s();
                let end_s = start_s + f64::from(segment.n_frames) * self.frame_s();
                let mut hit = self.hit(segment.file, start_s, end_s, s.hamming, s.score);
                hit.codes = Some(self.matched_codes(q, s.query_segment as usize, s.segment));
                hit
            })
            .collect()
    }

    /// The largest distance a segment may have and still make the hits: the distance of the
    /// `top`-th file by its nearest segment. Those files' nearest segments are `top` hits
    /// already, and any segment further away ranks after them.
    fn cutoff(&self, distances: &[(u32, u32)], top: usize) -> Option<u32> {
        let mut file_best = vec![u32::MAX; self.index.files.len()];
        for (i, &(d, _)) in distances.iter().enumerate() {
            let f = &mut file_best[self.data.segments[i].file as usize];
            *f = (*f).min(d);
        }
        let mut seen: Vec<u32> = file_best.into_iter().filter(|&d| d != u32::MAX).collect();
        if seen.is_empty() || top == 0 {
            return None;
        }
        let nth = (top - 1).min(seen.len() - 1);
        Some(*seen.select_nth_unstable(nth).1)
    }

    /// Segments by distance, ties by the cosine with their nearest query segment, and scored
    /// in that order: 1 - (distance + (1 - cosine) / 2) / bits, the codes' agreement with the
    /// cosine placing a segment within its distance's step. The score falls down the list and
    /// stays in 0..=1 (the cosine alone can rise again, or go negative).
    fn by_distance(
        &self,
        q: &QuerySegments,
        distances: &[(u32, u32)],
        top: usize,
    ) -> Vec<ScoredSegment> {
        let Some(cutoff) = self.cutoff(distances, top) else {
            return Vec::new();
        };
        let dim = self.data.embedding_dim;
        let bits = self.data.bits().max(1) as f32;
        let mut ranked: Vec<(ScoredSegment, f32)> = distances
            .iter()
            .enumerate()
            .filter(|(_, (d, _))| *d <= cutoff)
            .map(|(i, &(d, j))| {
                let tie = match dim {
                    0 => 0.0,
                    _ => cosine(
                        self.data.embedding(i),
                        &q.encoded.embeddings[j as usize * dim..][..dim],
                    ),
                };
                let segment = ScoredSegment {
                    segment: i,
                    query_segment: j,
                    hamming: d,
                    score: 1.0 - (d as f32 + (1.0 - tie) / 2.0) / bits,
                };
                (segment, tie)
            })
            .collect();
        ranked.sort_by(|(a, a_tie), (b, b_tie)| {
            a.hamming
                .cmp(&b.hamming)
                .then(b_tie.total_cmp(a_tie))
                .then(a.segment.cmp(&b.segment))
        });
        ranked.into_iter().map(|(segment, _)| segment).collect()
    }

    /// The nearest segments by distance: at least [`RERANK_CANDIDATES`], and enough for the
    /// hits (none when the library is empty).
    fn candidates(&self, distances: &[(u32, u32)], top: usize) -> Vec<usize> {
        let Some(for_hits) = self.cutoff(distances, top) else {
            return Vec::new();
        };
        let mut sorted: Vec<u32> = distances.iter().map(|d| d.0).collect();
        let nth = RERANK_CANDIDATES.min(sorted.len()) - 1;
        let cutoff = for_hits.max(*sorted.select_nth_unstable(nth).1);
        (0..distances.len())
            .filter(|&i| distances[i].0 <= cutoff && distances[i].0 != u32::MAX)
            .collect()
    }

    /// The candidates by their codes' agreement with the query's mean bit margins, best first.
    fn by_margins(
        &self,
        q: &QuerySegments,
        distances: &[(u32, u32)],
        top: usize,
    ) -> Vec<ScoredSegment> {
        let margins = self.mean_margins(q);
        let mut scored: Vec<(usize, f32)> = self
            .candidates(distances, top)
            .into_iter()
            .map(|i| (i, margin_agreement(self.data.code(i), &margins)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.scored_segments(scored, distances)
    }

    /// The candidates re-ranked by the cosine of their `comparable` embeddings (standardised,
    /// unit length) with query expansion, plus `code_weight` times their codes' agreement with
    /// the query's bit margins (see [`fuse`]). The query is the mean of its segments.
    fn reranked(
        &self,
        q: &QuerySegments,
        distances: &[(u32, u32)],
        top: usize,
        comparable: &dyn Fn(&[f32]) -> Vec<f32>,
        code_weight: f32,
    ) -> Vec<ScoredSegment> {
        let candidates = self.candidates(distances, top);
        let vectors: HashMap<usize, Vec<f32>> = candidates
            .iter()
            .map(|&i| (i, comparable(self.data.embedding(i))))
            .collect();
        let query = self.mean_query(q, comparable);
        let mut scored = rerank(&query, &candidates, |i| &vectors[&i]);
        if code_weight > 0.0 {
            let margins = self.mean_margins(q);
            let agreement = |i| margin_agreement(self.data.code(i), &margins);
            fuse(&mut scored, agreement, code_weight);
        }
        self.scored_segments(scored, distances)
    }

    /// Ranked segments with their distance and nearest query segment.
    fn scored_segments(
        &self,
        scored: Vec<(usize, f32)>,
        distances: &[(u32, u32)],
    ) -> Vec<ScoredSegment> {
        scored
            .into_iter()
            .map(|(i, score)| ScoredSegment {
                segment: i,
                query_segment: distances[i].1,
                hamming: distances[i].0,
                score,
            })
            .collect()
    }

    /// The mean of the query segments' bit margins (`bits` values; zeros without margins).
    fn mean_margins(&self, q: &QuerySegments) -> Vec<f32> {
        let bits = self.data.bits().max(1);
        let mut mean = vec![0.0f32; bits];
        let segments = q.encoded.margins.chunks_exact(bits);
        let n = segments.len().max(1) as f32;
        for segment in segments {
            mean.iter_mut().zip(segment).for_each(|(m, v)| *m += v / n);
        }
        mean
    }

    /// The query's segments standardised, scaled to unit length and averaged (unit length).
    fn mean_query(&self, q: &QuerySegments, comparable: &dyn Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
        let dim = self.data.embedding_dim.max(1);
        let mut mean = vec![0.0f32; dim];
        for segment in q.encoded.embeddings.chunks_exact(dim) {
            let x = comparable(segment);
            mean.iter_mut().zip(&x).for_each(|(m, v)| *m += v);
        }
        normalise(&mut mean);
        mean
    }

    /// The first `top` of `ranked` (best first) keeping at most `self.per_file` per file, none
    /// overlapping another kept one in time (each a different moment of the file).
    fn moments_per_file(&self, ranked: &[ScoredSegment], top: usize) -> Vec<ScoredSegment> {
        let mut kept: Vec<ScoredSegment> = Vec::new();
        let mut per_file: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for s in ranked {
            if kept.len() >= top {
                break;
            }
            let segment = self.data.segments[s.segment];
            let span = (segment.start_frame, segment.start_frame + segment.n_frames);
            let spans = per_file.entry(segment.file).or_default();
            let overlaps = spans.iter().any(|&(a, b)| span.0 < b && a < span.1);
            if spans.len() < self.per_file && !overlaps {
                spans.push(span);
                kept.push(*s);
            }
        }
        kept
    }

    /// For every library segment, the smallest distance to a query segment and which one
    /// (`u32::MAX` where the engine did not look at the segment).
    pub(super) fn segment_distances(&self, q: &QuerySegments, top: usize) -> Vec<(u32, u32)> {
        let (codes, words, dim) = (
            &self.data.codes,
            self.data.words(),
            self.encoder.info().embedding_dim,
        );
        if words == 0 && self.tables.hnsw.is_none() {
            return self.closest_by_cosine(q);
        }
        if self.tables.buckets.is_none() && self.tables.hnsw.is_none() {
            return hamming::min_distances(codes, words, &q.encoded.codes);
        }
        let wanted = top * self.per_file * CANDIDATES_PER_HIT;
        let mut best = vec![(u32::MAX, 0u32); self.data.segments.len()];
        for j in 0..q.starts.len() {
            let qcode = &q.encoded.codes[j * words..(j + 1) * words];
            let candidates = match (&self.tables.buckets, &self.tables.hnsw) {
                (Some(b), _) => b.nearest(codes, qcode, wanted, 3).hits,
                (_, Some(h)) => h
                    .nearest(&q.encoded.embeddings[j * dim..(j + 1) * dim], wanted)
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
}
