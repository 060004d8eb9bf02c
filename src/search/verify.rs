//! Fingerprint verification against the library's audio.
//!
//! The index keeps 128 bits every 70 ms; that tells which file a query comes from, but not
//! always where: a loop or a chorus that repeats gives codes as close as the query's own
//! passage. The file's audio tells them apart. The candidate offsets of a file are decoded
//! again, and checked in two ways:
//! - by the samples ([`Verifier::correlate`]): a query cut from the file holds the file's
//!   samples, found to the sample by correlation even under loud noise;
//! - by the projections ([`Verifier::check`]): for a query that is not the file's samples (a
//!   recording of it), the codes' projections before their signs are taken, compared at every
//!   frame; the closest frame wins.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use rayon::prelude::*;

use crate::audio::Stretch;
use crate::features::segment::{Segment, segments_of};
use crate::library::FileRecord;
use crate::model::{Encoded, Encoder, EncoderInput};

use super::correlate::{LagCorrelations, WhitenedQuery};

/// Frames decoded before a candidate region: the first frames of a decoded excerpt see the
/// STFT's zero padding, not the audio before it.
const LEAD_FRAMES: i64 = 3;
/// The query's samples are compared this long (seconds) past the last candidate offset: in a
/// room the codes place a match early (their reflections repeat earlier audio), and the direct
/// sound, where the query starts, can lie up to 100 ms after the strongest reflection (see
/// [`correlate`](super::correlate)). On the calibration split (`earshot eval fingerprint
/// --calibrate`, training rooms), 0.3 s placed 65.0% of reverberant queries within 50 ms
/// against 61.9% for 0.1 s (and 66.2% against 60.6% with noise at 10 dB); searching 200 ms
/// after the peak for the direct sound instead of 100 ms added nothing there.
const ROOM_DELAY_S: f64 = 0.3;

/// [`ROOM_DELAY_S`] in whole frames of `frame_s`.
fn room_delay_frames(frame_s: f64) -> i64 {
    (ROOM_DELAY_S / frame_s).ceil() as i64
}

/// Reads the audio of indexed files again, for verification.
pub trait LibraryAudio: Sync {
    /// Mono samples at `rate` of each of `stretches` of `file` (each about as long as asked,
    /// shorter near the file's end), in their order; `None` if the file cannot be read or has
    /// changed since it was indexed (its matches then keep the offsets their codes gave).
    fn excerpts(
        &self,
        file: &FileRecord,
        stretches: &[Stretch],
        rate: u32,
    ) -> Option<Vec<Vec<f32>>>;
}

/// The indexed files where they are on disk, if unchanged since indexing.
pub struct FilesOnDisk;

impl LibraryAudio for FilesOnDisk {
    fn excerpts(
        &self,
        file: &FileRecord,
        stretches: &[Stretch],
        rate: u32,
    ) -> Option<Vec<Vec<f32>>> {
        let now = std::fs::metadata(&file.path).ok()?;
        if now.len() != file.size || now.modified().ok() != file.modified {
            return None;
        }
        crate::audio::decode_excerpts(&file.path, stretches, rate).ok()
    }
}

/// The query as verification needs it: each segment's start frame and projections.
pub(super) struct QueryProjections<'q> {
    pub starts: &'q [usize],
    /// The query's length in samples.
    pub samples: usize,
    pub margins: &'q [f32],
    pub bits: usize,
}

/// A candidate offset, checked: the best frame offset near it and the mean squared distance
/// between the query's projections and the library's there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verified {
    pub offset: i64,
    pub distance: f32,
}

pub(super) struct Verifier<'a> {
    pub audio: &'a dyn LibraryAudio,
    pub encoder: &'a dyn Encoder,
    /// What the encoder reads (the rate, front end and window).
    pub input: &'a EncoderInput,
}

/// Where a file holds the query's samples: the query's first sample in the file (seconds) and
/// the whitened correlation there.
#[derive(Debug, Clone, Copy)]
pub(super) struct SampleMatch {
    pub start_s: f64,
    pub correlation: f32,
    /// How far the correlation's peak stands above the other lags (see
    /// [`Peak::prominence`](super::correlate::Peak)).
    pub prominence: f32,
    /// How well the onsets line up, for a room's match (see
    /// [`Peak::onsets`](super::correlate::Peak)).
    pub onsets: Option<f32>,
}

/// The query's samples compared with a region of an excerpt, at every lag.
pub(super) struct Compared<'e> {
    /// The region's first sample in the file.
    from_sample: f64,
    region: Cow<'e, [f32]>,
    pub lags: LagCorrelations,
}

/// A candidate's stretch of a file, decoded: from frame `from` on.
pub(super) struct Excerpt {
    from: i64,
    samples: Vec<f32>,
}

impl Verifier<'_> {
    /// Decodes what checking each range of frame offsets in `groups` needs of `file`: every
    /// frame a query segment can land on, and every sample the query can cover; one excerpt per
    /// range, in order. `None` if its audio cannot be read.
    pub fn excerpts(
        &self,
        q: &QueryProjections,
        file: &FileRecord,
        groups: &[&RangeInclusive<i64>],
    ) -> Option<Vec<Excerpt>> {
        let planned: Vec<(i64, Stretch)> = (groups.iter())
            .map(|g| self.stretch(q, g))
            .collect::<Option<_>>()?;
        let stretches: Vec<Stretch> = planned.iter().map(|&(_, s)| s).collect();
        let decoded = self.decode(file, &stretches)?;
        let excerpts = planned
            .into_iter()
            .zip(decoded)
            .map(|((from, _), samples)| Excerpt { from, samples });
        Some(excerpts.collect())
    }

    /// `stretches` of `file`, decoded on every core: each core opens the file for its share.
    /// Decoding is most of a check's time, and a query waits for it.
    fn decode(&self, file: &FileRecord, stretches: &[Stretch]) -> Option<Vec<Vec<f32>>> {
        let share = stretches
            .len()
            .div_ceil(rayon::current_num_threads())
            .max(1);
        let rate = self.input.sample_rate();
        let shares: Vec<Option<Vec<Vec<f32>>>> = (stretches.par_chunks(share))
            .map(|part| self.audio.excerpts(file, part, rate))
            .collect();
        let shares: Vec<Vec<Vec<f32>>> = shares.into_iter().collect::<Option<_>>()?;
        Some(shares.into_iter().flatten().collect())
    }

    /// The stretch of a file that checking the frame offsets `offsets` needs (see
    /// [`Self::excerpts`]), and its first frame.
    fn stretch(
        &self,
        q: &QueryProjections,
        offsets: &RangeInclusive<i64>,
    ) -> Option<(i64, Stretch)> {
        let window = self.input.segmentation.window as i64;
        let (first, last) = (*q.starts.first()? as i64, *q.starts.last()? as i64);
        let query_frames = (q.samples as f64 / self.samples_per_frame()).ceil() as i64;
        // Segments need LEAD_FRAMES before their first frame; the samples, only the earliest lag.
        let earliest = (*offsets.start()).max(-first);
        let from = (earliest + first - LEAD_FRAMES).min(earliest).max(0);
        let frame_s = self.input.frame_s();
        let to = offsets.end() + (last + window).max(query_frames + room_delay_frames(frame_s));
        let stretch = Stretch {
            start_s: from as f64 * frame_s,
            duration_s: (to - from) as f64 * frame_s,
        };
        Some((from, stretch))
    }

    /// How the query's samples correlate with the excerpt's from the frame offsets `offsets`
    /// on, at every lag (see [`correlate`](super::correlate)); `None` if less than half the
    /// query's length of the file is left after them.
    pub fn correlate<'e>(
        &self,
        query: &WhitenedQuery,
        q: &QueryProjections,
        excerpt: &'e Excerpt,
        offsets: &RangeInclusive<i64>,
    ) -> Option<Compared<'e>> {
        let per_frame = self.samples_per_frame();
        let first = ((*offsets.start()).max(0) - excerpt.from) as f64 * per_frame;
        let last = (offsets.end() - excerpt.from) as f64 * per_frame
            + ROOM_DELAY_S * f64::from(self.input.sample_rate());
        let (first, last) = (first.round() as usize, last.round() as usize);
        let file_samples = excerpt.samples.len().checked_sub(first)?;
        if file_samples < q.samples / 2 {
            return None;
        }
        // A query can run past the file's end (a recording that goes on after the track ends):
        // the file is followed by silence, so that such lags are compared on the part that
        // overlaps, and correlate at most the root of that share. Only lags that leave at least
        // half the query in the file are looked at.
        let last_lag = (last - first).min(file_samples - q.samples / 2);
        let wanted = last_lag + q.samples;
        let in_file = &excerpt.samples[first..];
        let region: Cow<[f32]> = match in_file.get(..wanted) {
            Some(region) => region.into(),
            None => {
                let mut padded = in_file.to_vec();
                padded.resize(wanted, 0.0);
                padded.into()
            }
        };
        let lags = query.correlations(&region)?;
        Some(Compared {
            from_sample: excerpt.from as f64 * per_frame + first as f64,
            region,
            lags,
        })
    }

    /// Where a comparison places the query's first sample in the file (seconds), and how
    /// well the samples agree there; with `direct_sound`, a room's match placed as
    /// [`WhitenedQuery::placed`] says.
    pub fn sample_match(
        &self,
        query: &WhitenedQuery,
        compared: &Compared,
        direct_sound: bool,
    ) -> SampleMatch {
        let peak = query.placed(&compared.region, &compared.lags, direct_sound);
        let sample = compared.from_sample + peak.lag as f64;
        SampleMatch {
            start_s: sample / f64::from(self.input.sample_rate()),
            correlation: peak.correlation,
            prominence: peak.prominence,
            onsets: peak.onsets,
        }
    }

    /// The frame offset among `offsets` at which the query's projections are closest to the
    /// excerpt's; `None` if the file ends too soon after them.
    pub fn check(
        &self,
        q: &QueryProjections,
        excerpt: &Excerpt,
        offsets: &RangeInclusive<i64>,
    ) -> Option<Verified> {
        let first = *q.starts.first()? as i64;
        let lowest = (*offsets.start()).max(-first);
        let library = self.projections(&excerpt.samples)?;
        let segments = library.len() / q.bits;
        let mut best: Option<Verified> = None;
        for offset in lowest..=*offsets.end() {
            let mut sum = 0.0;
            for (j, &start) in q.starts.iter().enumerate() {
                let r = start as i64 + offset - excerpt.from;
                if r < 0 || r as usize >= segments {
                    sum = f32::INFINITY;
                    break;
                }
                let a = &q.margins[j * q.bits..][..q.bits];
                let b = &library[r as usize * q.bits..][..q.bits];
                sum += a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
            }
            let distance = sum / (q.starts.len() * q.bits) as f32;
            if distance.is_finite() && best.is_none_or(|b| distance < b.distance) {
                best = Some(Verified { offset, distance });
            }
        }
        best
    }

    fn samples_per_frame(&self) -> f64 {
        self.input.front_end.frame_samples() as f64
    }

    /// Projections of every window of `samples`, one frame apart (segment `r` starts at frame `r`).
    fn projections(&self, samples: &[f32]) -> Option<Vec<f32>> {
        let window = self.input.segmentation.window;
        let frames = self.input.front_end.compute(samples);
        let mut segments = segments_of(&frames, window, 1);
        // A short clip's single segment, or the end-aligned tail, would break "segment r is
        // the full window from frame r".
        segments.truncate(full_windows_from_frame_zero(&segments, window));
        let values: Vec<&[f32]> = segments.iter().map(|s| s.values.as_slice()).collect();
        let mut encoded = Encoded::default();
        self.encoder.encode(&values, &mut encoded).ok()?;
        Some(encoded.margins)
    }
}

/// How many of `segments` are full windows starting one frame after another from frame 0.
fn full_windows_from_frame_zero(segments: &[Segment], window: usize) -> usize {
    segments
        .iter()
        .enumerate()
        .take_while(|(r, s)| s.start_frame == *r && s.n_frames == window)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, SeededRng, baseline_encoder};

    const RATE: f64 = 16_000.0;

    /// Audio held in memory for one file.
    struct Memory(Vec<f32>);

    impl LibraryAudio for Memory {
        fn excerpts(&self, _: &FileRecord, stretches: &[Stretch], _: u32) -> Option<Vec<Vec<f32>>> {
            let at = |s: f64| ((s * RATE).round() as usize).min(self.0.len());
            let cut = |s: &Stretch| self.0[at(s.start_s)..at(s.start_s + s.duration_s)].to_vec();
            Some(stretches.iter().map(cut).collect())
        }
    }

    /// Noise shaped into a melody of random notes: every stretch differs.
    fn music(seconds: f64, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        let n = (seconds * RATE) as usize;
        let mut out = Vec::with_capacity(n);
        let mut freq = 440.0;
        for i in 0..n {
            if i % 2400 == 0 {
                freq = 200.0 + 1800.0 * rng.uniform();
            }
            let t = i as f64 / RATE;
            out.push((0.5 * (std::f64::consts::TAU * freq * t).sin() + 0.05 * rng.normal()) as f32);
        }
        out
    }

    fn record() -> FileRecord {
        FileRecord {
            path: "memory.wav".into(),
            size: 0,
            modified: None,
            duration_s: 0.0,
            label: String::new(),
            damage: None,
        }
    }

    /// The query's segment starts (every 2 frames) and projections, as the searcher encodes them.
    fn query_projections(encoder: &dyn Encoder, samples: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let input = encoder.input();
        let verifier = Verifier {
            audio: &Memory(Vec::new()),
            encoder,
            input: &input,
        };
        let every_frame = verifier.projections(samples).unwrap_or_default();
        let bits = encoder.info().bits;
        let starts: Vec<usize> = (0..every_frame.len() / bits).step_by(2).collect();
        let margins = starts
            .iter()
            .flat_map(|&s| every_frame[s * bits..][..bits].to_vec())
            .collect();
        (starts, margins)
    }

    /// Checks `candidate` of `library` for `query`: by projections, and by samples (start in
    /// seconds, correlation).
    fn check(
        library: Vec<f32>,
        query: &[f32],
        candidate: i64,
    ) -> (Option<Verified>, Option<SampleMatch>) {
        let encoder = baseline_encoder(Mode::Fingerprint);
        let input = encoder.input();
        let (starts, margins) = query_projections(encoder.as_ref(), query);
        let q = QueryProjections {
            starts: &starts,
            margins: &margins,
            bits: encoder.info().bits,
            samples: query.len(),
        };
        let audio = Memory(library);
        let verifier = Verifier {
            audio: &audio,
            encoder: encoder.as_ref(),
            input: &input,
        };
        let offsets = candidate - 7..=candidate + 7;
        let Some(excerpt) =
            (verifier.excerpts(&q, &record(), &[&offsets])).and_then(|mut e| e.pop())
        else {
            return (None, None);
        };
        let whitened = WhitenedQuery::new(query);
        (
            verifier.check(&q, &excerpt, &offsets),
            (verifier.correlate(&whitened, &q, &excerpt, &offsets))
                .map(|c| verifier.sample_match(&whitened, &c, true)),
        )
    }

    #[test]
    fn a_candidate_a_few_frames_off_is_moved_to_the_query_s_frame() {
        let library = music(12.0, 1);
        let start_frame = 413;
        let query = &library[start_frame * 160..][..2 * 16_000];
        for candidate in [
            start_frame as i64 - 6,
            start_frame as i64,
            start_frame as i64 + 5,
        ] {
            let (v, by_samples) = check(library.clone(), query, candidate);
            assert_eq!(
                v.unwrap().offset,
                start_frame as i64,
                "from candidate {candidate}"
            );
            let SampleMatch {
                start_s,
                correlation,
                ..
            } = by_samples.unwrap();
            assert!(
                (start_s - start_frame as f64 / 100.0).abs() < 1e-9,
                "{start_s}"
            );
            assert!(correlation > 0.99, "{correlation}");
        }
    }

    #[test]
    fn a_repeat_with_a_change_is_farther_than_the_query_s_own_passage() {
        // The passage at 2 s comes back at 8 s with a new part laid over it; the query is the
        // changed repeat.
        let mut library = music(12.0, 2);
        let overlay = music(2.0, 3);
        let passage: Vec<f32> = library[32_000..64_000].to_vec();
        for (i, (x, o)) in passage.iter().zip(&overlay).enumerate() {
            library[128_000 + i] = x + 0.3 * o;
        }
        let query = library[128_000..160_000].to_vec();
        let at_repeat = check(library.clone(), &query, 800).0.unwrap();
        let at_original = check(library, &query, 200).0.unwrap();
        assert_eq!(at_repeat.offset, 800);
        assert!(
            at_repeat.distance < 0.5 * at_original.distance,
            "repeat {} against original {}",
            at_repeat.distance,
            at_original.distance
        );
    }

    #[test]
    fn a_query_a_few_samples_off_the_frames_is_placed_to_the_sample() {
        let library = music(12.0, 5);
        let start = 413 * 160 + 57;
        let query = &library[start..][..16_000];
        let (_, by_samples) = check(library.clone(), query, 413);
        let start_s = by_samples.unwrap().start_s;
        assert!((start_s * RATE - start as f64).abs() < 1e-6, "{start_s}");
    }

    #[test]
    fn a_candidate_whose_audio_ends_too_soon_is_not_verified() {
        let library = music(3.0, 4);
        let query = library[16_000..48_000].to_vec();
        // The query would run 1.5 s past the file's end at this offset and every one near it.
        let (by_projections, by_samples) = check(library, &query, 250);
        assert!(by_projections.is_none() && by_samples.is_none());
    }

    #[test]
    fn a_query_that_runs_past_the_file_s_end_is_placed_by_the_part_that_overlaps() {
        // The file's last 1.5 s, then half a second of other audio.
        let library = music(6.0, 6);
        let mut query = library[72_000..].to_vec();
        query.extend(music(0.5, 7));
        let (_, by_samples) = check(library, &query, 450);
        let found = by_samples.unwrap();
        assert!((found.start_s - 4.5).abs() < 1e-3, "{found:?}");
        assert!(found.correlation > 0.5, "{found:?}");
    }
}
