//! Multi-index hashing (Norouzi et al.): the K-bit codes are cut into `m` substrings of 16 bits
//! and each substring indexes a table of buckets. By the pigeonhole principle a code within
//! Hamming distance `r` of the query agrees with it to within `r / m` bits on some substring, so
//! probing every table at a small substring radius finds all codes in a small full radius while
//! reading a small fraction of the database. Balanced codes keep the buckets even, which is
//! what makes this fast; [`BucketStats`] reports how even they are.

use super::hamming::distances_to;

/// Bits per substring: one table of 65,536 buckets per 16 bits of code.
pub const SUBSTRING_BITS: usize = 16;
const BUCKETS: usize = 1 << SUBSTRING_BITS;

/// One table in compressed sparse rows: bucket `b` holds `ids[offsets[b]..offsets[b + 1]]`.
struct Table {
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl Table {
    /// The ids in bucket `key`.
    fn bucket(&self, key: usize) -> &[u32] {
        &self.ids[self.offsets[key] as usize..self.offsets[key + 1] as usize]
    }
}

pub struct BucketIndex {
    words: usize,
    tables: Vec<Table>,
    n: usize,
}

/// How the codes spread over buckets.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BucketStats {
    pub tables: usize,
    pub buckets_per_table: usize,
    pub non_empty_buckets: usize,
    pub max_bucket: usize,
    pub mean_non_empty_bucket: f64,
}

/// Result of one search, with what it cost.
#[derive(Debug, Clone)]
pub struct BucketSearch {
    /// `(distance, index)`, nearest first.
    pub hits: Vec<(u32, usize)>,
    /// Codes compared in full.
    pub scanned: usize,
}

impl BucketIndex {
    /// Builds the tables over `codes` (`words` u64 per code).
    pub fn build(codes: &[u64], words: usize) -> Self {
        let n = codes.len().checked_div(words).unwrap_or(0);
        let m = words * 64 / SUBSTRING_BITS;
        let tables = (0..m)
            .map(|t| {
                let key = |i: usize| substring(&codes[i * words..(i + 1) * words], t);
                let mut counts = vec![0u32; BUCKETS + 1];
                (0..n).for_each(|i| counts[key(i) + 1] += 1);
                for b in 0..BUCKETS {
                    counts[b + 1] += counts[b];
                }
                let mut fill = counts.clone();
                let mut ids = vec![0u32; n];
                for i in 0..n {
                    let slot = &mut fill[key(i)];
                    ids[*slot as usize] = i as u32;
                    *slot += 1;
                }
                Table {
                    offsets: counts,
                    ids,
                }
            })
            .collect();
        Self { words, tables, n }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes the tables take (4 per code per table, plus offsets).
    pub fn memory_bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|t| 4 * (t.ids.len() + t.offsets.len()))
            .sum()
    }

    pub fn stats(&self) -> BucketStats {
        let sizes = self
            .tables
            .iter()
            .flat_map(|t| t.offsets.windows(2).map(|w| (w[1] - w[0]) as usize));
        let (mut non_empty, mut max, mut total) = (0, 0, 0);
        for s in sizes.filter(|&s| s > 0) {
            non_empty += 1;
            max = max.max(s);
            total += s;
        }
        BucketStats {
            tables: self.tables.len(),
            buckets_per_table: BUCKETS,
            non_empty_buckets: non_empty,
            max_bucket: max,
            mean_non_empty_bucket: total as f64 / non_empty.max(1) as f64,
        }
    }

    /// Every code in the buckets within substring radius `max_rho` of the query's substrings,
    /// nearest first. This holds all codes within `m * (max_rho + 1) - 1` bits, and others.
    pub fn probe(&self, codes: &[u64], query: &[u64], max_rho: u32) -> BucketSearch {
        let mut ids = Vec::new();
        for rho in 0..=max_rho.min(SUBSTRING_BITS as u32) {
            self.probe_level(query, rho, &mut ids);
        }
        self.rank(codes, query, ids)
    }

    /// Every code in the buckets of the query's substrings with any subset of their `unsure`
    /// least certain bits flipped (query-directed multi-probe): `certainty` has one value per
    /// bit, larger for bits the query is surer of. Distortion flips a query's unsure bits far
    /// more often than its sure ones, so each of these `2^unsure` probes per table is much more
    /// likely to reach a true neighbour than a flip of an arbitrary bit.
    pub fn probe_unsure(
        &self,
        codes: &[u64],
        query: &[u64],
        certainty: &[f32],
        unsure: usize,
    ) -> BucketSearch {
        let mut ids = Vec::new();
        let keys = unsure_keys(query, certainty, unsure, self.tables.len());
        for (table, keys) in self.tables.iter().zip(keys) {
            for key in keys {
                ids.extend_from_slice(table.bucket(key));
            }
        }
        self.rank(codes, query, ids)
    }

    /// All codes within `radius` bits of `query` (exact), nearest first.
    pub fn within(&self, codes: &[u64], query: &[u64], radius: u32) -> BucketSearch {
        let m = self.tables.len().max(1) as u32;
        // Substring radius r/m suffices for full radius r (pigeonhole).
        let mut found = self.probe(codes, query, radius / m);
        found.hits.retain(|&(d, _)| d <= radius);
        found
    }

    /// The `k` nearest codes (exact): widens the substring radius until the `k`-th best is
    /// certainly found, or until `max_substring_radius`, where it returns the best seen.
    pub fn nearest(
        &self,
        codes: &[u64],
        query: &[u64],
        k: usize,
        max_substring_radius: u32,
    ) -> BucketSearch {
        let m = self.tables.len().max(1) as u32;
        let mut ids = Vec::new();
        let mut found = BucketSearch {
            hits: Vec::new(),
            scanned: 0,
        };
        for rho in 0..=max_substring_radius.min(SUBSTRING_BITS as u32) {
            self.probe_level(query, rho, &mut ids);
            found = self.rank(codes, query, ids.clone());
            // After level rho every code within m * (rho + 1) - 1 bits has been seen.
            if found.hits.len() >= k && found.hits[k - 1].0 < m * (rho + 1) {
                break;
            }
        }
        found.hits.truncate(k);
        found
    }

    /// Collects the ids in every table's buckets at substring distance exactly `rho`.
    fn probe_level(&self, query: &[u64], rho: u32, ids: &mut Vec<u32>) {
        for (t, table) in self.tables.iter().enumerate() {
            for_each_at_distance(substring(query, t), rho, |key| {
                ids.extend_from_slice(table.bucket(key));
            });
        }
    }

    /// Distances of the distinct `ids`, nearest first.
    fn rank(&self, codes: &[u64], query: &[u64], mut ids: Vec<u32>) -> BucketSearch {
        ids.sort_unstable();
        ids.dedup();
        let mut hits = distances_to(codes, self.words, query, &ids);
        hits.sort_unstable();
        BucketSearch {
            scanned: hits.len(),
            hits,
        }
    }
}

/// The buckets [`BucketIndex::probe_unsure`] reads in each of `tables` tables: the query's
/// substring with every subset of its `unsure` least sure bits (by `certainty`, one value per
/// bit; in bit order without it) flipped. A store that keeps the substrings elsewhere (see
/// [`super::milvus`]) finds the same codes with these keys.
pub fn unsure_keys(
    query: &[u64],
    certainty: &[f32],
    unsure: usize,
    tables: usize,
) -> Vec<Vec<usize>> {
    let unsure = unsure.min(SUBSTRING_BITS);
    (0..tables)
        .map(|t| {
            let first = t * SUBSTRING_BITS;
            let mut order: Vec<usize> = (0..SUBSTRING_BITS).collect();
            if let Some(c) = certainty.get(first..first + SUBSTRING_BITS) {
                order.sort_by(|&a, &b| c[a].total_cmp(&c[b]));
            }
            let key = substring(query, t);
            (0..1usize << unsure)
                .map(|subset| {
                    let flips = (0..unsure)
                        .filter(|i| subset >> i & 1 == 1)
                        .fold(0, |m, i| m | 1 << order[i]);
                    key ^ flips
                })
                .collect()
        })
        .collect()
}

/// The buckets [`BucketIndex::probe`] reads in each of `tables` tables: every key within
/// `max_rho` bits of the query's substring.
pub fn keys_within(query: &[u64], max_rho: u32, tables: usize) -> Vec<Vec<usize>> {
    (0..tables)
        .map(|t| {
            let mut keys = Vec::new();
            for rho in 0..=max_rho.min(SUBSTRING_BITS as u32) {
                for_each_at_distance(substring(query, t), rho, |key| keys.push(key));
            }
            keys
        })
        .collect()
}

/// Tables a code of `bits` is cut into.
pub fn tables_for(bits: usize) -> usize {
    bits.div_ceil(64) * 64 / SUBSTRING_BITS
}

/// Substring `t` (16 bits) of a packed code.
pub fn substring(code: &[u64], t: usize) -> usize {
    let bit = t * SUBSTRING_BITS;
    ((code[bit / 64] >> (bit % 64)) & (BUCKETS as u64 - 1)) as usize
}

/// Calls `f` with every 16-bit value at Hamming distance exactly `rho` from `q`.
fn for_each_at_distance(q: usize, rho: u32, mut f: impl FnMut(usize)) {
    fn recurse(q: usize, from: usize, left: u32, f: &mut impl FnMut(usize)) {
        if left == 0 {
            f(q);
            return;
        }
        for bit in from..SUBSTRING_BITS {
            recurse(q ^ (1 << bit), bit + 1, left - 1, f);
        }
    }
    recurse(q, 0, rho, &mut f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hamming::top_k;
    use crate::model::SeededRng;

    fn random_codes(n: usize, words: usize, seed: u64) -> Vec<u64> {
        let mut rng = SeededRng::new(seed);
        (0..n * words).map(|_| rng.next_u64()).collect()
    }

    #[test]
    fn nearest_equals_a_full_scan() {
        for words in [1, 2] {
            let mut codes = random_codes(50_000, words, 9);
            let query: Vec<u64> = codes[..words].to_vec();
            // Plant near neighbours so small radii have answers.
            for (i, flips) in [(100, 1u64), (200, 3), (300, 0b1011)].iter().enumerate() {
                codes[flips.0 * words] = query[0] ^ (flips.1 << (i * 7));
            }
            let index = BucketIndex::build(&codes, words);
            let expected = top_k(&codes, words, &query, 10);
            let got = index.nearest(&codes, &query, 10, 16);
            assert_eq!(got.hits, expected);
            let within = index.within(&codes, &query, 4);
            let brute: Vec<(u32, usize)> =
                expected.iter().copied().filter(|&(d, _)| d <= 4).collect();
            assert_eq!(within.hits, brute);
            assert!(
                within.scanned < codes.len() / words / 10,
                "scanned {}",
                within.scanned
            );
        }
    }

    #[test]
    fn stats_count_every_code_once_per_table() {
        let codes = random_codes(10_000, 1, 4);
        let s = BucketIndex::build(&codes, 1).stats();
        assert_eq!(s.tables, 4);
        assert!((s.mean_non_empty_bucket * s.non_empty_buckets as f64 - 40_000.0).abs() < 1e-6);
    }

    #[test]
    fn unsure_probes_find_a_code_whose_differing_bits_the_query_was_unsure_of() {
        let mut codes = random_codes(20_000, 1, 5);
        let query = codes[0];
        // Code 7 differs from the query in 3 bits of every 16-bit substring.
        let flipped = [1usize, 6, 12];
        let mask = (0..4).fold(0u64, |m, t| {
            flipped.iter().fold(m, |m, &b| m | 1 << (t * 16 + b))
        });
        codes[7] = query ^ mask;
        let index = BucketIndex::build(&codes, 1);
        let ids = |found: BucketSearch| found.hits.iter().map(|&(_, i)| i).collect::<Vec<_>>();
        // No single flip reaches it, and a query sure of every bit only finds itself and chance.
        assert!(!ids(index.probe(&codes, &[query], 1)).contains(&7));
        let sure = vec![1.0f32; 64];
        assert!(!ids(index.probe_unsure(&codes, &[query], &sure, 3)).contains(&7));
        // Unsure of exactly the flipped bits (and one more), the query finds it.
        let mut certainty = sure.clone();
        for t in 0..4 {
            for &b in &flipped {
                certainty[t * 16 + b] = 0.1;
            }
            certainty[t * 16 + 9] = 0.2;
        }
        let found = index.probe_unsure(&codes, &[query], &certainty, 4);
        assert!(ids(found).contains(&7));
    }
}
