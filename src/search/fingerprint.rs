//! `fingerprint` search: neighbours of each query segment vote for (file, offset); the
//! heaviest offsets are scored against the whole query, and the first files are checked
//! against their audio where the caller gave it ([`super::verify`]).

use std::collections::HashMap;

use rayon::prelude::*;

use super::correlate::{LagCorrelations, ROOM_CORRELATION_FLOOR, WhitenedQuery};
use super::query::QuerySegments;
use super::verify::{QueryProjections, SampleMatch, Verifier};
use super::{AudioCheck, Hit, Searcher};
use crate::index::hamming;
use crate::index::store::VotePlan;
use crate::model::found::{FOUND_AT_SECONDS, FoundThresholds};

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
/// A file found with its samples confirmed at this correlation or more is the answer, and the
/// files after it are not checked against their audio: the query's samples are mostly that
/// file's (the same samples under noise as loud as the music correlate at about 0.7). Below
/// it, another version of the piece can be the one checked first: on the protocol, a remix
/// sharing the query's parts confirmed at 0.32 ahead of its source (0.79). On the calibration
/// split (`earshot eval fingerprint --calibrate`), stopping at 0.5 changed no answer, against
/// checking every file.
const ANSWER_CORRELATION: f32 = 0.5;
/// A verified file whose samples correlate with the query's at least this much (whitened, see
/// [`correlate`]) holds the query's own audio there: it is ranked before the files that are
/// not, and found on a modest score ([`FoundThresholds::confirmed`]). In a numpy prototype,
/// unrelated audio stayed below 0.14 (1 s reverberated queries against a minute of other
/// tracks); on the exact-match protocol the
/// query's own samples under noise as loud as the music mostly reach 0.4-0.9.
const CONFIRMED_CORRELATION: f32 = 0.15;
/// ... and whose correlation's peak stands at least this many times above the other lags'
/// (their root mean square): a hum, a tone or a steady beat correlates with much audio at many
/// lags alike (an ESC-50 clip not in the index reached 0.70 at 2.9 times the rest, on the
/// calibration split), the query's own samples at one lag (95% of them stood 7.4 times above
/// the rest or more; through a room, 2.9 times or more).
const CONFIRMED_PROMINENCE: f32 = 3.0;
/// Samples that correlate this much and stand this many times above the other lags are the
/// query's own, whatever the codes say: on the calibration split (`earshot eval fingerprint
/// --calibrate --no-baseline --queries-per-length 40 --negatives-per-length 100`), no query of
/// audio not in the index reached both (at 0.3 or more, 5.7 times at most; below it, up to 18
/// times), while 1 s queries under noise as loud as the music, whose codes score too little,
/// mostly did (0.3-0.9, 8-90 times). Found so, 3.0 points more of all queries were found at
/// the right place (74.6%), with no more found at a wrong one.
const CERTAIN_CORRELATION: f32 = 0.3;
const CERTAIN_PROMINENCE: f32 = 8.0;
/// Through a room the samples correlate by a few hundredths only, but the notes still start
/// where the file's do: a match that correlates at least [`ROOM_CORRELATION_FLOOR`], without
/// confirming, and whose onsets line up with the file's at least [`ROOM_ONSETS`] (normalised
/// correlation of onset envelopes, see [`correlate`]) is found on the score
/// [`FoundThresholds::room`]. On the
/// calibration split, beside the certain tier, that found 4.5 points more queries at the
/// right place (79.1% of all) and 0.28 more at a wrong one (2.92%). Unrelated music lines up
/// its onsets as well as 0.5 for one query in twenty (its beat), so onsets alone confirm
/// nothing.
const ROOM_ONSETS: f32 = 0.25;
/// A file's stretch whose samples correlate with the query's this much (by query length, at
/// [`FOUND_AT_SECONDS`]), standing out as [`CONFIRMED_PROMINENCE`] asks, holds the query's
/// passage: the file's other candidate stretches are not decoded (see
/// [`Verifier::checked_stretches`]).
/// A short passage recurs in a track more often, and its recurrence can correlate more than
/// [`ANSWER_CORRELATION`] while coming before it by the codes: on the calibration split,
/// stopping at 0.5 moved 6 of 1,440 queries of 1 s to such a stretch (correlating at 0.51-0.84
/// where their own did at 0.78-0.97), 1 of 2 s (0.51 against 0.55), none of 3 or 5 s; on the
/// protocol (150 queries per length), stopping at 0.6 moved 2 queries of 2 s to a recurrence
/// 131 s earlier (0.66 and 0.75 against 0.73 and 0.87), none of 3 or 5 s. With these
/// thresholds, none moved on either.
const PASSAGE_CORRELATION: [f32; 4] = [0.9, 0.9, 0.5, 0.5];
/// With every occurrence asked for: this many of the heaviest (file, offset) votes are
/// verified, instead of [`VERIFY_CANDIDATES`].
const EVERY_OCCURRENCE_CANDIDATES: usize = 128;
/// Candidates of one file whose stretches lie this close (frames) are checked on one excerpt.
const MERGED_GAP_FRAMES: i64 = 100;

/// A room's match whose blocks peak with it, this share of them or more per length of
/// [`FOUND_AT_SECONDS`] (see [`correlate`]'s `AGREEMENT_BLOCK`: the query's own audio shows
/// in each of its blocks), is found on the score [`FoundThresholds::agreed`], whatever its onsets
/// say. On the calibration split, 69, 15, 7 and none of the 1,800, 1,800, 1,800 and 900
/// negative queries of 1, 2, 3 and 5 s had half their blocks agree; of the positives found at
/// the right place, 36 more (2.5 points) were found, and 4 more at a wrong place (most at a
/// recurrence of the passage, which [`RECURRENCE_SHARE`] then answers). A 1 s query's four
/// quarter-second blocks must all agree: none of the 1,800 negatives of 1 s did, 6 had three
/// of them agree, scoring up to 0.38, which the room's own threshold asks already.
const AGREED_SHARE: [f32; 4] = [1.0, 0.5, 0.5, 0.5];
/// A match that is not certain ([`CERTAIN_CORRELATION`]), and whose file correlates with the
/// query at another checked place (half the query's length away or more) this share of the
/// match's own correlation or more, is a passage that recurs there: which of the two the
/// query holds is a guess, so neither is found (with every occurrence asked for, both are
/// listed). On the calibration split, with [`AGREED_SHARE`], this took 8 right answers back
/// for 9 wrong ones (from 82.7% found and right and 2.08% wrong to 82.2% and 1.46%); 0.9
/// would take 24 more right ones for 6 more wrong ones.
const RECURRENCE_SHARE: f32 = 0.97;

/// How far a file's audio backs a match, weakest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum AudioSupport {
    /// Not checked, or nothing like the query there.
    #[default]
    None,
    /// A room's match: faint samples, onsets that line up ([`ROOM_ONSETS`]).
    Room,
    /// The query's samples ([`CONFIRMED_CORRELATION`]).
    Confirmed,
    /// Beyond doubt ([`CERTAIN_CORRELATION`]).
    Certain,
}

/// Whether a match is sure enough to be an answer, not a candidate, for a query of
/// `query_seconds`: by its codes' agreement with the file (`score`), or by how far the file's
/// audio backs it (`backing`) together with a score that falls as the backing grows
/// (`thresholds`, the model's, see [`calibrate_found`]); never, short of certain, at a passage
/// that recurs in the file.
pub fn is_found(
    score: f32,
    backing: AudioBacking,
    query_seconds: f64,
    thresholds: &FoundThresholds,
) -> bool {
    let at = |table: &[f32; 4]| interpolate(&FOUND_AT_SECONDS, table, query_seconds);
    let enough = match backing.support {
        AudioSupport::Certain => return true,
        _ if backing.recurs => return false,
        AudioSupport::Confirmed => at(&thresholds.confirmed),
        AudioSupport::Room => at(&thresholds.room),
        AudioSupport::None => at(&thresholds.codes),
    };
    let agreed = match backing.blocks_agree {
        true => at(&thresholds.agreed),
        false => f32::INFINITY,
    };
    score >= enough.min(agreed).min(at(&thresholds.codes))
}

/// The least score a match its samples back needs to be found (see [`is_found`]): confirming
/// samples or a room's, for a query of `query_seconds`. Blocks that all agree can find a 1 s
/// query's match on less (0.2), but checking every occurrence scoring that little made
/// `earshot query --all` take twice as long (40 clips of 1 and 3 s against the protocol's 56
/// tracks: 5.2-5.7 s against 2.6-3.0 s) and listed a looping track's passages that share only
/// their accompaniment with the query (a clean 1 s query: 10 more places, correlating
/// 0.26-0.43 where its own did at 0.83).
fn least_found_score(thresholds: &FoundThresholds, query_seconds: f64) -> f32 {
    let at = |table: &[f32; 4]| interpolate(&FOUND_AT_SECONDS, table, query_seconds);
    at(&thresholds.confirmed).min(at(&thresholds.room))
}

/// How far above the highest score a query of audio not in the index reached, with a kind of
/// backing, a calibrated threshold is set.
const CALIBRATION_MARGIN: f32 = 0.02;
/// The least codes score a match backed so needs, per kind of backing ([`confirms`], a
/// room's onsets, agreeing blocks), however few calibration negatives had that backing: the
/// threshold where none did. Low, as the backing itself is rare by chance.
const CONFIRMED_FLOOR: f32 = 0.15;
const ROOM_FLOOR: f32 = 0.10;
const AGREED_FLOOR: f32 = 0.20;

/// A query of audio that is not in the index, as the found decision sees its first hit.
#[derive(Debug, Clone, Copy)]
pub struct NegativeMatch {
    pub query_seconds: f64,
    /// The hit's score times the share of the query within the file.
    pub evidence: f32,
    pub backing: AudioBacking,
}

/// A model's found thresholds, from the first hits of queries of audio that is not in the
/// index (`negatives`, of every length of [`FOUND_AT_SECONDS`], none of them tuned on): per
/// length and kind of backing, the highest score a negative with that backing reached, plus
/// [`CALIBRATION_MARGIN`], so that none of them would be found but those certain by their
/// samples (and never less than the kind's floor). `None` without negatives of every length.
///
/// Calibrated so (`earshot eval fingerprint --calibrate --negatives-per-length 100`), on the
/// calibration split: a quarter of the training-half music tracks indexed, their excerpts
/// under the training noises and rooms as positives, and excerpts of other training-half
/// tracks and of ESC-50 clips (folds 1-4) that were not indexed as negatives.
pub fn calibrate_found(negatives: &[NegativeMatch]) -> Option<FoundThresholds> {
    let mut found = FoundThresholds::default();
    for (k, &seconds) in FOUND_AT_SECONDS.iter().enumerate() {
        let at_length = negatives
            .iter()
            .filter(|n| (n.query_seconds - seconds).abs() < 1e-6)
            .filter(|n| n.backing.support != AudioSupport::Certain && !n.backing.recurs);
        let highest = |backed: &dyn Fn(&AudioBacking) -> bool| {
            (at_length.clone())
                .filter(|n| backed(&n.backing))
                .map(|n| n.evidence + CALIBRATION_MARGIN)
                .max_by(f32::total_cmp)
        };
        let codes = highest(&|_| true)?.min(1.0);
        let or_floor = |t: Option<f32>, floor: f32| t.map_or(floor, |t| t.max(floor)).min(codes);
        found.codes[k] = codes;
        found.confirmed[k] = or_floor(
            highest(&|b| b.support == AudioSupport::Confirmed),
            CONFIRMED_FLOOR,
        );
        found.room[k] = or_floor(highest(&|b| b.support == AudioSupport::Room), ROOM_FLOOR);
        found.agreed[k] = or_floor(highest(&|b| b.blocks_agree), AGREED_FLOOR);
    }
    Some(found)
}

/// What a file's audio says of a match (see [`is_found`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AudioBacking {
    pub support: AudioSupport,
    /// Enough of the query's blocks peak with a room's match ([`AGREED_SHARE`]).
    pub blocks_agree: bool,
    /// The file correlates with the query about as well at another place
    /// ([`RECURRENCE_SHARE`]).
    pub recurs: bool,
}

impl AudioBacking {
    /// The backing of a match whose audio showed `check`, for a query of `query_seconds`.
    pub fn from_check(check: &AudioCheck, query_seconds: f64) -> Self {
        let share = interpolate(&FOUND_AT_SECONDS, &AGREED_SHARE, query_seconds);
        Self {
            support: audio_support(check),
            blocks_agree: check.agreement.is_some_and(|a| a >= share),
            recurs: check.recurs,
        }
    }
}

impl AudioCheck {
    /// What the best correlation `m` shows; whether the passage recurs counts only
    /// `against_recurrences` (see [`RECURRENCE_SHARE`]): not when every occurrence is asked
    /// for, since a recurrence is then one of them.
    fn of(m: &SampleMatch, against_recurrences: bool) -> Self {
        Self {
            correlation: m.correlation,
            prominence: m.prominence,
            onsets: m.onsets,
            agreement: m.agreement,
            elsewhere: m.elsewhere,
            recurs: against_recurrences
                && m.elsewhere
                    .is_some_and(|e| e >= RECURRENCE_SHARE * m.correlation),
        }
    }
}

/// How far the file's audio backs a match whose check showed `c`.
fn audio_support(c: &AudioCheck) -> AudioSupport {
    let stands_out =
        |correlation, prominence| c.correlation >= correlation && c.prominence >= prominence;
    if stands_out(CERTAIN_CORRELATION, CERTAIN_PROMINENCE) {
        AudioSupport::Certain
    } else if confirms(c.correlation, c.prominence) {
        AudioSupport::Confirmed
    } else if c.correlation >= ROOM_CORRELATION_FLOOR && c.onsets.is_some_and(|o| o >= ROOM_ONSETS)
    {
        AudioSupport::Room
    } else {
        AudioSupport::None
    }
}

/// Whether the file's audio holds the query's own samples at the match (see
/// [`CONFIRMED_CORRELATION`] and [`CONFIRMED_PROMINENCE`]).
fn confirms(correlation: f32, prominence: f32) -> bool {
    correlation >= CONFIRMED_CORRELATION && prominence >= CONFIRMED_PROMINENCE
}

/// Share of a query of `query_s` seconds, placed from `start_s` (negative: before the file's
/// start), that lies within a file of `duration_s`.
pub fn coverage(start_s: f64, query_s: f64, duration_s: f64) -> f32 {
    let overlap_s = (start_s + query_s).min(duration_s) - start_s.max(0.0);
    (overlap_s / query_s.max(1e-9)).clamp(0.0, 1.0) as f32
}

/// `values` at `x`, linear between the `knots` and held beyond them.
fn interpolate(knots: &[f64; 4], values: &[f32; 4], x: f64) -> f32 {
    let i = knots
        .iter()
        .position(|&k| k >= x)
        .unwrap_or(knots.len() - 1);
    if i == 0 || knots[i] <= x {
        return values[i];
    }
    let t = ((x - knots[i - 1]) / (knots[i] - knots[i - 1])) as f32;
    values[i - 1] + t * (values[i] - values[i - 1])
}

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
        let wanted = self.verified_candidates(top);
        let candidates = strongest_offsets(votes, hop, wanted, &self.tables.path_rank);
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
        let query = QueryClip {
            whitened: self.audio.map(|_| WhitenedQuery::new(samples)),
            seconds: samples.len() as f64 / f64::from(self.data.input.sample_rate()),
        };
        // With every occurrence asked for and none found, the occurrences checked already
        // stand for their files among the closest candidates: each file's first is its best.
        let mut checked_already = Vec::new();
        if self.every_occurrence {
            let occurrences = self.every_occurrence_hits(q, &query, ranked.clone());
            if occurrences.iter().any(|h| h.found == Some(true)) {
                let found = occurrences.into_iter().filter(|h| h.found == Some(true));
                return (confirmed_first(found.collect()), compared);
            }
            checked_already = occurrences;
        }
        // The files verified do not depend on how many hits are wanted: nor does the first.
        ranked.truncate(top.max(VERIFIED_FILES));
        let mut hits: Vec<Hit> = Vec::with_capacity(ranked.len());
        for (rank, (file, alignments)) in ranked.into_iter().enumerate() {
            let path = self.index.files.get(file as usize).map(|f| &f.path);
            if let Some(at) = checked_already.iter().position(|h| Some(&h.path) == path) {
                hits.push(checked_already.swap_remove(at));
                continue;
            }
            // Checking the next files would cost a decode each (see [`ANSWER_CORRELATION`]).
            let answered = (hits.iter())
                .any(|h| h.found == Some(true) && h.correlation >= Some(ANSWER_CORRELATION));
            let checked = rank < VERIFIED_FILES && !answered;
            hits.push(self.file_hit(q, &query, checked, file, alignments));
        }
        let mut hits = confirmed_first(hits);
        hits.truncate(top);
        (hits, compared)
    }

    /// Every place of every file where the query may occur: a file's candidate offsets less
    /// than half the query's length apart are one occurrence, each checked against the audio.
    /// Occurrences whose codes agree too little to be found by their samples are left out
    /// ([`least_found_score`]), and so are two placed at the same moment.
    fn every_occurrence_hits(
        &self,
        q: &QuerySegments,
        query: &QueryClip,
        ranked: Vec<(u32, Vec<Alignment>)>,
    ) -> Vec<Hit> {
        let apart = (query.seconds / 2.0 / self.frame_s()).ceil() as i64;
        let least = least_found_score(&self.found_thresholds(), query.seconds);
        let mut hits: Vec<Hit> = Vec::new();
        for (file, alignments) in ranked {
            for occurrence in occurrences(alignments, apart) {
                if occurrence[0].score < least {
                    continue;
                }
                let hit = self.file_hit(q, query, true, file, occurrence);
                let same_moment = |h: &Hit| {
                    h.path == hit.path && (h.start_s - hit.start_s).abs() < query.seconds / 2.0
                };
                if !hits.iter().any(same_moment) {
                    hits.push(hit);
                }
            }
        }
        hits
    }

    /// The hit of `file` at the best of `alignments` (best by codes first), checked against
    /// its audio when `checked` and the search has it, and decided found or not.
    fn file_hit(
        &self,
        q: &QuerySegments,
        query: &QueryClip,
        checked: bool,
        file: u32,
        mut alignments: Vec<Alignment>,
    ) -> Hit {
        let (a, by_samples) = match &query.whitened {
            Some(w) if checked => self.verified(q, w, file, alignments),
            _ => (alignments.swap_remove(0), None),
        };
        let confirmed = by_samples.filter(|m| confirms(m.correlation, m.prominence));
        let start_s = by_samples.map_or(a.offset as f64 * self.frame_s(), |m| m.start_s);
        let duration_s = self
            .index
            .files
            .get(file as usize)
            .map_or(0.0, |f| f.duration_s);
        let coverage = coverage(start_s, query.seconds, duration_s);
        // A query aligned to begin before the file matches from the file's start, and one
        // that runs past its end, to its end.
        let end_s = match duration_s > 0.0 {
            true => (start_s + query.seconds).min(duration_s),
            false => start_s + query.seconds,
        };
        let start_s = start_s.max(0.0);
        let mut hit = self.hit(file, start_s, end_s, a.closest.distance, a.score);
        hit.correlation = confirmed.map(|c| c.correlation);
        hit.audio_check = by_samples.map(|m| AudioCheck::of(&m, !self.every_occurrence));
        let backing = (hit.audio_check.as_ref()).map_or(AudioBacking::default(), |c| {
            AudioBacking::from_check(c, query.seconds)
        });
        // Segments that fall off the file count as chance: a long query that barely
        // overlaps a file's end must not be found on the few codes it shares.
        let evidence = a.score * coverage;
        hit.found = Some(is_found(
            evidence,
            backing,
            query.seconds,
            &self.found_thresholds(),
        ));
        hit.codes = Some(self.matched_codes(q, a.closest.query_segment, a.closest.segment));
        hit
    }

    /// The alignment of `file` to report, checked against its audio, and the best match of the
    /// query's samples there, whether it [`confirms`] the file or not: the match is placed where
    /// the samples correlate best even when they do so too little to confirm it, since through
    /// a room they still peak at the direct sound (placed by the projections instead, reverberant
    /// queries landed 30-60 ms early at the median on the calibration split). The projections
    /// place it when the samples cannot be compared (a stretch too short), and the codes when
    /// the audio cannot be read.
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
        let mut groups = nearby_offsets(candidates.take(VERIFIED_OFFSETS), hop);
        groups.sort_by(|a, b| b.strength().total_cmp(&a.strength()));
        let seconds = whitened.len() as f64 / f64::from(self.data.input.sample_rate());
        let passage = interpolate(&FOUND_AT_SECONDS, &PASSAGE_CORRELATION, seconds);
        let holds_passage = |lags: &LagCorrelations| {
            lags.correlation >= passage && lags.prominence() >= CONFIRMED_PROMINENCE
        };
        let ranges: Vec<&std::ops::RangeInclusive<i64>> =
            groups.iter().map(|g| &g.offsets).collect();
        let checked = verifier.checked_stretches(whitened, &query, f, &ranges, holds_passage);
        let excerpts = groups.iter().zip(&checked);
        // A room's direct sound and blocks cost a few transforms and an onset envelope: they
        // are looked for in the best stretch only.
        let correlated = (excerpts.clone())
            .enumerate()
            .filter_map(|(i, (g, (e, lags)))| Some((i, g, e, lags.as_ref()?)));
        let by_samples = (correlated.clone())
            .max_by(|x, y| x.3.correlation.total_cmp(&y.3.correlation))
            .and_then(|(best, g, e, lags)| {
                let found = verifier.sample_match(whitened, &query, e, lags, true)?;
                Some((best, g, found))
            });
        if let Some((best, g, mut found)) = by_samples {
            // Elsewhere: where the file's other stretches place the query, half its length
            // away or more (a stretch overlapping the best one peaks at the same moment).
            let others = correlated.filter(|&(i, ..)| i != best);
            found.elsewhere = others
                .filter_map(|(_, _, e, lags)| {
                    verifier.sample_match(whitened, &query, e, lags, false)
                })
                .filter(|m| (m.start_s - found.start_s).abs() >= seconds / 2.0)
                .map(|m| m.correlation)
                .max_by(f32::total_cmp);
            let offset = (found.start_s / self.frame_s()).round() as i64;
            return (g.nearest(offset).at(offset), Some(found));
        }
        if q.encoded.margins.len() != q.starts.len() * bits {
            return (best_by_codes, None);
        }
        // None: a stretch the file ends too soon after.
        let by_projections = excerpts
            .filter_map(|(g, (e, _))| Some((g, verifier.check(&query, e)?)))
            .min_by(|x, y| x.1.distance.total_cmp(&y.1.distance));
        match by_projections {
            Some((g, v)) => (g.nearest(v.offset).at(v.offset), None),
            None => (best_by_codes, None),
        }
    }

    /// The codes scores a match needs to be found: the model's own, or, for a model not
    /// calibrated, the defaults.
    fn found_thresholds(&self) -> FoundThresholds {
        self.encoder.found_thresholds().unwrap_or_default()
    }

    /// How many of the heaviest (file, offset) votes are verified.
    fn verified_candidates(&self, top: usize) -> usize {
        match self.every_occurrence {
            true => EVERY_OCCURRENCE_CANDIDATES,
            false => VERIFY_CANDIDATES.max(2 * top),
        }
    }

    /// How this search votes, for a store that finds the neighbours itself.
    pub(super) fn vote_plan<'q>(&self, q: &'q QuerySegments, top: usize) -> VotePlan<'q> {
        VotePlan {
            certainty: &q.bit_weights,
            unsure_bits: unsure_bits(q.starts.len()),
            substring_radius: FINGERPRINT_SUBSTRING_RADIUS,
            max_distance: self.max_vote_distance(),
            candidates: self.verified_candidates(top),
            hop: self.data.segmentation().hop as i64,
        }
    }

    /// A neighbour farther than this many bits is noise, not a vote.
    fn max_vote_distance(&self) -> u32 {
        (FINGERPRINT_MAX_VOTE_DISTANCE * self.data.encoder.bits as f64) as u32
    }

    /// Vote weight per (file, offset in frames), and the number of library codes compared.
    fn collect_votes(&self, q: &QuerySegments) -> (HashMap<(u32, i64), f32>, usize) {
        let words = self.data.words();
        let max_distance = self.max_vote_distance();
        let mut votes: HashMap<(u32, i64), f32> = HashMap::new();
        let mut compared = 0;
        let unsure = unsure_bits(q.starts.len());
        // Each segment's neighbours on every core; their votes counted in the segments' order,
        // so that every weight sums the same way.
        let found: Vec<(Vec<(u32, usize)>, usize)> = (q.encoded.codes.par_chunks_exact(words))
            .enumerate()
            .map(|(j, qcode)| self.fingerprint_neighbours(q, j, qcode, unsure))
            .collect();
        for (j, (neighbours, scanned)) in found.into_iter().enumerate() {
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

/// `hits` with the files the audio confirms first, by correlation; the rest keep their order.
fn confirmed_first(mut hits: Vec<Hit>) -> Vec<Hit> {
    let confirmed = |h: &Hit| h.correlation.unwrap_or(f32::NEG_INFINITY);
    hits.sort_by(|a, b| confirmed(b).total_cmp(&confirmed(a)));
    hits
}

/// The query as the hits of a file need it: its whitened samples (when the library's audio is
/// checked) and its length.
struct QueryClip {
    whitened: Option<WhitenedQuery>,
    seconds: f64,
}

/// `alignments` of one file (best first) grouped into occurrences: each alignment joins the
/// first occurrence whose best lies less than `apart` frames from it. Each occurrence's
/// alignments stay best first.
fn occurrences(alignments: Vec<Alignment>, apart: i64) -> Vec<Vec<Alignment>> {
    let mut out: Vec<Vec<Alignment>> = Vec::new();
    for a in alignments {
        match out
            .iter_mut()
            .find(|o| (o[0].offset - a.offset).abs() < apart)
        {
            Some(o) => o.push(a),
            None => out.push(vec![a]),
        }
    }
    out
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
    /// How well the codes agree at the group's best candidate.
    fn strength(&self) -> f32 {
        self.candidates
            .iter()
            .map(|a| a.score)
            .fold(f32::MIN, f32::max)
    }

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

    /// The backing of a match whose best correlation is `m`.
    fn backing_of(m: &SampleMatch, query_seconds: f64, against_recurrences: bool) -> AudioBacking {
        AudioBacking::from_check(&AudioCheck::of(m, against_recurrences), query_seconds)
    }

    /// Whether a match is found with the default thresholds.
    fn found(score: f32, backing: AudioBacking, query_seconds: f64) -> bool {
        is_found(score, backing, query_seconds, &FoundThresholds::default())
    }

    #[test]
    fn found_thresholds_follow_the_query_length() {
        let codes = FoundThresholds::default().codes;
        assert_eq!(interpolate(&FOUND_AT_SECONDS, &codes, 0.5), codes[0]);
        assert_eq!(interpolate(&FOUND_AT_SECONDS, &codes, 2.0), codes[1]);
        let mid = interpolate(&FOUND_AT_SECONDS, &codes, 4.0);
        assert!((mid - (codes[2] + codes[3]) / 2.0).abs() < 1e-6);
        assert_eq!(interpolate(&FOUND_AT_SECONDS, &codes, 30.0), codes[3]);
        // By codes alone; by samples with a modest score; by samples alone only beyond doubt;
        // a room's onsets need more score than samples do.
        let by = |support| AudioBacking {
            support,
            ..AudioBacking::default()
        };
        assert!(found(0.7, by(AudioSupport::None), 2.0));
        assert!(!found(0.5, by(AudioSupport::None), 2.0));
        assert!(found(0.35, by(AudioSupport::Confirmed), 2.0));
        assert!(!found(0.1, by(AudioSupport::Confirmed), 2.0));
        assert!(found(0.1, by(AudioSupport::Certain), 2.0));
        assert!(!found(0.35, by(AudioSupport::Room), 2.0));
        assert!(found(0.38, by(AudioSupport::Room), 2.0));
        // Blocks that peak together back a match the codes alone could not find ...
        let agreed = AudioBacking {
            blocks_agree: true,
            ..by(AudioSupport::None)
        };
        assert!(found(0.45, agreed, 2.0));
        assert!(!found(0.45, by(AudioSupport::None), 2.0));
        // ... and a passage that recurs elsewhere in the file is a guess, unless certain.
        let recurs = |support| AudioBacking {
            recurs: true,
            ..by(support)
        };
        assert!(!found(0.9, recurs(AudioSupport::Confirmed), 2.0));
        assert!(found(0.1, recurs(AudioSupport::Certain), 2.0));
    }

    #[test]
    fn a_room_s_match_as_good_at_another_place_is_a_recurrence_unless_all_are_asked_for() {
        let faint = SampleMatch {
            start_s: 12.0,
            correlation: 0.12,
            prominence: 5.0,
            onsets: Some(0.1),
            agreement: Some(0.75),
            elsewhere: Some(0.119),
        };
        let single = backing_of(&faint, 2.0, true);
        assert!(single.recurs && single.blocks_agree);
        assert!(!found(0.9, single, 2.0));
        // Listed with every occurrence, the same match is found on its blocks.
        let listed = backing_of(&faint, 2.0, false);
        assert!(!listed.recurs && found(0.45, listed, 2.0));
        assert!(!found(
            0.45,
            backing_of(
                &SampleMatch {
                    agreement: Some(0.25),
                    ..faint
                },
                2.0,
                false
            ),
            2.0
        ));
        // A place that correlates clearly less is no recurrence.
        let alone = SampleMatch {
            elsewhere: Some(0.08),
            ..faint
        };
        assert!(!backing_of(&alone, 2.0, true).recurs);
    }

    #[test]
    fn every_occurrence_checks_what_samples_could_find_and_no_less() {
        let t = FoundThresholds::default();
        for seconds in [1.0, 2.0, 3.0, 5.0] {
            let least = least_found_score(&t, seconds);
            let backed = |support| AudioBacking {
                support,
                ..AudioBacking::default()
            };
            let by_samples = [AudioSupport::Confirmed, AudioSupport::Room];
            assert!(by_samples.iter().any(|&s| found(least, backed(s), seconds)));
            let below = least - 0.01;
            assert!(!by_samples.iter().any(|&s| found(below, backed(s), seconds)));
        }
    }

    #[test]
    fn calibrated_thresholds_find_no_negative_short_of_certain() {
        let negative = |query_seconds, evidence, support, blocks_agree| NegativeMatch {
            query_seconds,
            evidence,
            backing: AudioBacking {
                support,
                blocks_agree,
                recurs: false,
            },
        };
        let mut negatives: Vec<NegativeMatch> = FOUND_AT_SECONDS
            .iter()
            .map(|&s| negative(s, 0.30, AudioSupport::None, false))
            .collect();
        negatives.extend([
            negative(5.0, 0.03, AudioSupport::Room, false),
            negative(2.0, 0.50, AudioSupport::None, false),
            negative(2.0, 0.25, AudioSupport::Confirmed, false),
            negative(2.0, 0.20, AudioSupport::Room, true),
            // Certain is found whatever the codes say: it calibrates nothing.
            negative(2.0, 0.90, AudioSupport::Certain, false),
        ]);
        let t = calibrate_found(&negatives).unwrap();
        let near = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(near(t.codes[1], 0.52) && near(t.confirmed[1], 0.27));
        assert!(near(t.room[1], 0.22) && near(t.agreed[1], 0.22));
        // A kind of backing no negative had gets its floor, never above the codes' own.
        assert!(near(t.codes[0], 0.32) && near(t.confirmed[0], CONFIRMED_FLOOR));
        assert!(near(t.room[0], ROOM_FLOOR) && near(t.agreed[0], AGREED_FLOOR));
        // ... nor one that a negative scored little with.
        assert!(near(t.room[3], ROOM_FLOOR));
        for n in &negatives {
            let found = is_found(n.evidence, n.backing, n.query_seconds, &t);
            assert_eq!(found, n.backing.support == AudioSupport::Certain, "{n:?}");
        }
        // Without negatives of every length there is nothing to calibrate on.
        assert!(calibrate_found(&negatives[1..4]).is_none());
    }

    #[test]
    fn a_second_long_room_match_needs_all_its_blocks_to_agree_and_then_little_score() {
        let faint = SampleMatch {
            start_s: 3.0,
            correlation: 0.12,
            prominence: 4.0,
            onsets: Some(0.1),
            agreement: Some(0.75),
            elsewhere: None,
        };
        // Three of a 1 s query's four quarter-seconds agree by chance now and then; three of a
        // 2 s query's four half-seconds are enough.
        assert!(!backing_of(&faint, 1.0, true).blocks_agree);
        assert!(backing_of(&faint, 2.0, true).blocks_agree);
        let all = backing_of(
            &SampleMatch {
                agreement: Some(1.0),
                ..faint
            },
            1.0,
            true,
        );
        assert!(all.blocks_agree && found(0.25, all, 1.0));
        assert!(!found(0.15, all, 1.0));
        assert!(!found(0.25, AudioBacking::default(), 1.0));
    }

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
