//! Exact Hamming search: popcount over packed codes, in parallel over the cores.

use std::collections::BinaryHeap;

use rayon::prelude::*;

/// Codes per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK_CODES: usize = 1 << 16;

/// Bits that differ between two codes of the same length.
#[inline(always)]
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
            with_popcnt(|| nearest_in(part, words, query, chunk * CHUNK_CODES, k))
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

/// For every code, the smallest distance to any of `queries` (`words` u64 each) and which query
/// gives it: one pass over the database for a whole multi-segment query.
pub fn min_distances(codes: &[u64], words: usize, queries: &[u64]) -> Vec<(u32, u32)> {
    let mut out = vec![(u32::MAX, 0); codes.len().checked_div(words).unwrap_or(0)];
    if words == 0 || queries.is_empty() {
        return out;
    }
    out.par_chunks_mut(CHUNK_CODES)
        .zip(codes.par_chunks(words * CHUNK_CODES))
        .for_each(|(out, part)| with_popcnt(|| min_over_queries(part, words, queries, out)));
    out
}

#[inline(always)]
fn min_over_queries(part: &[u64], words: usize, queries: &[u64], out: &mut [(u32, u32)]) {
    for (code, best) in part.chunks_exact(words).zip(out) {
        for (j, q) in queries.chunks_exact(words).enumerate() {
            let d = distance(code, q);
            if d < best.0 {
                *best = (d, j as u32);
            }
        }
    }
}

/// The `k` smallest distances in `part`, numbered from `base`, as a max-heap.
#[inline(always)]
fn nearest_in(
    part: &[u64],
    words: usize,
    query: &[u64],
    base: usize,
    k: usize,
) -> BinaryHeap<(u32, usize)> {
    let mut heap = BinaryHeap::with_capacity(k + 1);
    let mut worst = u32::MAX;
    for (i, code) in part.chunks_exact(words).enumerate() {
        let d = distance(code, query);
        if d < worst || heap.len() < k {
            push_bounded(&mut heap, (d, base + i), k);
            if heap.len() == k {
                worst = heap.peek().map_or(u32::MAX, |w| w.0);
            }
        }
    }
    heap
}

/// Runs `f` in a function compiled for the POPCNT instruction when the CPU has it: the portable
/// x86-64 target counts bits with a dozen instructions instead of one.
#[inline(always)]
fn with_popcnt<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "popcnt")]
        fn popcnt<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports POPCNT, checked just above.
            return unsafe { popcnt(f) };
        }
    }
    f()
}

fn push_bounded(heap: &mut BinaryHeap<(u32, usize)>, item: (u32, usize), k: usize) {
    if heap.len() < k {
        heap.push(item);
    } else if heap.peek().is_some_and(|&worst| item < worst) {
        heap.pop();
        heap.push(item);
    }
}

/// Distance from `query` to every code, in parallel.
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
            let queries: Vec<u64> = (0..3 * words).map(|_| rng.next_u64()).collect();
            let mins = min_distances(&codes, words, &queries);
            for (i, code) in codes.chunks_exact(words).enumerate().step_by(997) {
                let want = queries
                    .chunks_exact(words)
                    .map(|q| distance(code, q))
                    .min()
                    .unwrap();
                assert_eq!(mins[i].0, want);
                assert_eq!(
                    distance(code, &queries[mins[i].1 as usize * words..][..words]),
                    want
                );
            }
        }
    }
}
