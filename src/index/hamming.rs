//! Exact Hamming search: popcount over packed codes, in parallel over the cores.

use std::collections::BinaryHeap;

use rayon::prelude::*;

/// Codes per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK_CODES: usize = 1 << 16;

/// Bits that differ between two codes of the same length.
#[inline]
pub fn distance(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The `k` codes nearest to `query`, as `(distance, index)` sorted by distance then index.
pub fn top_k(codes: &[u64], words: usize, query: &[u64], k: usize) -> Vec<(u32, usize)> {
    if k == 0 || words == 0 {
        return Vec::new();
    }
    let heaps = codes
        .par_chunks(words * CHUNK_CODES)
        .enumerate()
        .map(|(chunk, part)| {
            let base = chunk * CHUNK_CODES;
            if words == 1 {
                nearest_in(part.iter().map(|c| (c ^ query[0]).count_ones()), base, k)
            } else {
                nearest_in(
                    part.chunks_exact(words).map(|c| distance(c, query)),
                    base,
                    k,
                )
            }
        });
    let merged = heaps.reduce(BinaryHeap::new, |mut a, b| {
        for item in b {
            push_bounded(&mut a, item, k);
        }
        a
    });
    let mut out = merged.into_vec();
    out.sort_unstable();
    out
}

/// The `k` smallest of `distances`, numbered from `base`, as a max-heap.
fn nearest_in(
    distances: impl Iterator<Item = u32>,
    base: usize,
    k: usize,
) -> BinaryHeap<(u32, usize)> {
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for (i, d) in distances.enumerate() {
        if heap.len() < k || heap.peek().is_some_and(|&(worst, _)| d < worst) {
            push_bounded(&mut heap, (d, base + i), k);
        }
    }
    heap
}

fn push_bounded(heap: &mut BinaryHeap<(u32, usize)>, item: (u32, usize), k: usize) {
    if heap.len() < k {
        heap.push(item);
    } else if heap.peek().is_some_and(|&worst| item < worst) {
        heap.pop();
        heap.push(item);
    }
}

/// Distance from `query` to every code (for per-file aggregation), in parallel.
pub fn all_distances(codes: &[u64], words: usize, query: &[u64]) -> Vec<u32> {
    codes
        .par_chunks(words)
        .map(|c| distance(c, query))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeededRng;

    #[test]
    fn top_k_equals_a_sort_of_all_distances() {
        let mut rng = SeededRng::new(3);
        for words in [1, 2] {
            let codes: Vec<u64> = (0..200_000 * words).map(|_| rng.next_u64()).collect();
            let query: Vec<u64> = (0..words).map(|_| rng.next_u64()).collect();
            let mut all: Vec<(u32, usize)> = all_distances(&codes, words, &query)
                .into_iter()
                .enumerate()
                .map(|(i, d)| (d, i))
                .collect();
            all.sort_unstable();
            assert_eq!(top_k(&codes, words, &query, 25), all[..25].to_vec());
        }
    }
}
