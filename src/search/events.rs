//! `events` search: each file's best segment by Hamming distance, ties broken by the cosine of
//! the embeddings.

use std::collections::HashMap;

use rayon::prelude::*;

use super::query::QuerySegments;
use super::{Hit, Searcher};
use crate::index::hamming;

/// Library segments fetched per query segment when searching by buckets or HNSW, per hit wanted.
const CANDIDATES_PER_HIT: usize = 20;

impl Searcher<'_> {
    /// An encoder without codes (a backbone's embeddings alone): every library segment is a
    /// candidate at distance 0, paired with the query segment whose embedding is closest, so
    /// that the cosine alone ranks them (an exact scan).
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

    pub(super) fn rank_files(&self, q: &QuerySegments, top: usize) -> Vec<Hit> {
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
        let mut best = vec![(u32::MAX, 0u32); self.data.segments.len()];
        for j in 0..q.starts.len() {
            let qcode = &q.encoded.codes[j * words..(j + 1) * words];
            let candidates = match (&self.tables.buckets, &self.tables.hnsw) {
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
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { dot / norm } else { 0.0 }
}
