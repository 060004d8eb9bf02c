//! `fingerprint` search: neighbours of each query segment vote for (file, offset); the
//! heaviest offsets are scored against the whole query, and the first files are checked
//! against their audio where the caller gave it ([`super::verify`]).

use std::collections::HashMap;

use super::correlate::WhitenedQuery;
use super::query::QuerySegments;
use super::verify::{Excerpt, QueryProjections, SampleMatch, Verifier};
use super::{Hit, Searcher};
use crate::index::hamming;

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

/// How many of each query segment's least sure bits the bucket probes flip (see
/// [`FINGERPRINT_PROBE_BUDGET`]).
fn unsure_bits(segments: usize) -> usize {
    let per_segment = FINGERPRINT_PROBE_BUDGET / segments.max(1);
    (per_segment.max(1).ilog2() as usize).clamp(1, FINGERPRINT_MAX_UNSURE_BITS)
}

impl Searcher<'_> {
    /// `fingerprint`: neighbours of each query segment vote for (file, offset); the heaviest
    /// offsets are then verified against the whole query (every query segment that lands on a
    /// library segment at that offset), and files ranked by how well their best offset agrees.
    /// The first files' offsets are then checked against their audio (see [`verify`]).
    /// Also returns the number of library codes compared.
    pub(super) fn vote(&self, q: &QuerySegments, samples: &[f32], top: usize) -> (Vec<Hit>, usize) {
        let (votes, compared) = self.collect_votes(q);
        let hop = self.data.segmentation().hop as i64;
        let candidates = strongest_offsets(
            votes,
            hop,
            VERIFY_CANDIDATES.max(2 * top),
            &self.tables.path_rank,
        );
        let mut per_file: HashMap<u32, Vec<Alignment>> = HashMap::new();
        for (file, offset) in candidates {
            let Some(range) = self.tables.file_segments.get(file as usize) else {
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
        let rank = |file: u32| self.tables.path_rank.get(file as usize).copied();
        ranked.sort_by(|a, b| {
            b.1[0]
                .score
                .total_cmp(&a.1[0].score)
                .then_with(|| rank(a.0).cmp(&rank(b.0)))
        });
        // The files verified do not depend on how many hits are wanted: nor does the first.
        ranked.truncate(top.max(VERIFIED_FILES));
        let query_s = samples.len() as f64 / f64::from(self.data.input.sample_rate());
        let whitened = self.audio.map(|_| WhitenedQuery::new(samples));
        let mut hits: Vec<Hit> = ranked
            .into_iter()
            .enumerate()
            .map(|(rank, (file, mut alignments))| {
                let (a, confirmed) = match &whitened {
                    Some(w) if rank < VERIFIED_FILES => self.verified(q, w, file, alignments),
                    _ => (alignments.swap_remove(0), None),
                };
                let start_s = confirmed.map_or(a.offset as f64 * self.frame_s(), |c| c.start_s);
                // A query aligned to begin before the file matches from the file's start.
                let (start_s, end_s) = (start_s.max(0.0), start_s + query_s);
                let mut hit = self.hit(file, start_s, end_s, a.closest.distance, a.score);
                hit.correlation = confirmed.map(|c| c.correlation);
                hit.codes = Some(self.matched_codes(q, a.closest.query_segment, a.closest.segment));
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
    ) -> (Alignment, Option<SampleMatch>) {
        let best_by_codes = alignments.remove(0);
        let (Some(audio), Some(f)) = (self.audio, self.index.files.get(file as usize)) else {
            return (best_by_codes, None);
        };
        let bits = self.data.encoder.bits;
        let verifier = Verifier {
            audio,
            encoder: self.encoder,
            input: &self.data.input,
        };
        let query = QueryProjections {
            starts: &q.starts,
            margins: &q.encoded.margins,
            bits,
            samples: whitened.len(),
        };
        let hop = self.data.segmentation().hop as i64;
        let candidates = std::iter::once(&best_by_codes).chain(&alignments);
        let groups = nearby_offsets(candidates.take(VERIFIED_OFFSETS), hop);
        let excerpts: Vec<(&OffsetGroup, Excerpt)> = groups
            .iter()
            .filter_map(|g| Some((g, verifier.excerpt(&query, f, &g.offsets)?)))
            .collect();
        let by_samples = excerpts
            .iter()
            .filter_map(|(g, e)| Some((*g, verifier.correlate(whitened, &query, e, &g.offsets)?)))
            .max_by(|x, y| x.1.correlation.total_cmp(&y.1.correlation));
        if let Some((g, found)) = by_samples
            && found.correlation >= CONFIRMED_CORRELATION
        {
            let offset = (found.start_s / self.frame_s()).round() as i64;
            return (g.nearest(offset).at(offset), Some(found));
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
            let mut closest = ClosestPair {
                distance: u32::MAX,
                query_segment: 0,
                segment: 0,
            };
            for (j, &start) in q.starts.iter().enumerate() {
                let Some(i) = self.data.segment_at(range, start as i64 + offset) else {
                    continue;
                };
                let (weighted, d) = q.distances(j, self.data.code(i));
                sum += weighted;
                aligned += 1;
                if d < closest.distance {
                    closest = ClosestPair {
                        distance: d,
                        query_segment: j,
                        segment: i,
                    };
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
        match &self.tables.buckets {
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
}

/// A file's best offset after verification.
#[derive(Clone, Copy)]
struct Alignment {
    /// Frames from the file's start to the query's first frame.
    offset: i64,
    /// 1 - mean distance / chance distance over the aligned segments (1 = identical codes,
    /// 0 = no better than chance).
    score: f32,
    /// The closest aligned pair (whose codes the hit shows).
    closest: ClosestPair,
}

/// A query segment and the library segment it lands on at an alignment, and their distance.
#[derive(Clone, Copy)]
struct ClosestPair {
    distance: u32,
    query_segment: usize,
    segment: usize,
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
    fn candidates_less_than_a_second_apart_share_an_excerpt() {
        let at = |offset| Alignment {
            offset,
            score: 0.5,
            closest: ClosestPair {
                distance: 0,
                query_segment: 0,
                segment: 0,
            },
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
