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

/// Defines `$name` with body `$body` compiled twice: with the POPCNT instruction, used when the
/// CPU has it, and portable (the portable x86-64 target counts bits with a dozen instructions).
macro_rules! with_popcnt {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn kernel($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "popcnt")]
                fn fast($($arg: $ty),*) -> $ret {
                    kernel($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("popcnt") {
                    // SAFETY: the CPU supports POPCNT, checked just above.
                    return unsafe { fast($($arg),*) };
                }
            }
            kernel($($arg),*)
        }
    };
}

/// The `k` codes nearest to `query`, as `(distance, index)` sorted by distance then index.
pub fn top_k(codes: &[u64], words: usize, query: &[u64], k: usize) -> Vec<(u32, usize)> {
    if k == 0 || words == 0 {
        return Vec::new();
    }
    let heaps = codes
        .par_chunks(words * CHUNK_CODES)
        .enumerate()
        .map(|(chunk, part)| nearest_in(part, words, query, chunk * CHUNK_CODES, k));
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
        .for_each(|(out, part)| min_over_queries(part, words, queries, out));
    out
}

with_popcnt! {
    /// For each code of `part`, the smallest distance to any of `queries`, and which query.
    fn min_over_queries(part: &[u64], words: usize, queries: &[u64], out: &mut [(u32, u32)]) -> () {
        for (code, best) in part.chunks_exact(words).zip(out) {
            for (j, q) in queries.chunks_exact(words).enumerate() {
                let d = distance(code, q);
                if d < best.0 {
                    *best = (d, j as u32);
                }
            }
        }
    }
}

with_popcnt! {
    /// The `k` smallest distances in `part`, numbered from `base`, as a max-heap.
    fn nearest_in(part: &[u64], words: usize, query: &[u64], base: usize, k: usize) -> BinaryHeap<(u32, usize)> {
        let mut top = Bounded::new(k);
        if words == 1 {
            // Blocks of independent popcounts keep the pipeline full; the heap is touched only
            // when a block holds a candidate.
            let q = query[0];
            let mut blocks = part.chunks_exact(BLOCK);
            for (b, block) in (&mut blocks).enumerate() {
                let mut d = [0u32; BLOCK];
                for (d, c) in d.iter_mut().zip(block) {
                    *d = (c ^ q).count_ones();
                }
                if d.iter().any(|&x| x < top.worst) {
                    d.iter().enumerate().for_each(|(i, &x)| top.offer(x, base + b * BLOCK + i));
                }
            }
            let done = part.len() - blocks.remainder().len();
            blocks.remainder().iter().enumerate().for_each(|(i, c)| top.offer((c ^ q).count_ones(), base + done + i));
        } else {
            part.chunks_exact(words).enumerate().for_each(|(i, c)| top.offer(distance(c, query), base + i));
        }
        top.heap
    }
}

/// Codes per block in the 64-bit kernel.
const BLOCK: usize = 8;

/// A max-heap of the `k` best `(distance, index)` seen, with the admission threshold cached.
struct Bounded {
    heap: BinaryHeap<(u32, usize)>,
    k: usize,
    /// Distances below this may enter (everything while the heap is not full).
    worst: u32,
}

impl Bounded {
    fn new(k: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(k + 1),
            k,
            worst: u32::MAX,
        }
    }

    #[inline(always)]
    fn offer(&mut self, d: u32, i: usize) {
        if d < self.worst || self.heap.len() < self.k {
            push_bounded(&mut self.heap, (d, i), self.k);
            if self.heap.len() == self.k {
                self.worst = self.heap.peek().map_or(u32::MAX, |w| w.0 + 1);
            }
        }
    }
}

with_popcnt! {
    /// Distances from `query` to the codes numbered `ids`, as `(distance, id)`.
    pub fn distances_to(codes: &[u64], words: usize, query: &[u64], ids: &[u32]) -> Vec<(u32, usize)> {
        ids.iter().map(|&id| (distance(&codes[id as usize * words..(id as usize + 1) * words], query), id as usize)).collect()
    }
}

fn push_bounded(heap: &mut BinaryHeap<(u32, usize)>, item: (u32, usize), k: usize) {
    if heap.len() < k {
        heap.push(item);
    } else if heap.peek().is_some_and(|&worst| item < worst) {
        heap.pop();
        heap.push(item);
    }
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
            let mut all: Vec<(u32, usize)> = codes
                .chunks_exact(words)
                .map(|c| distance(c, &query))
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
