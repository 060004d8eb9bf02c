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
use std::sync::Mutex;

use rayon::prelude::*;

use crate::audio::{ExcerptReader, Stretch};
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
    /// `file` opened for reading its mono samples at `rate`; `None` if it cannot be read or
    /// has changed since it was indexed (its matches then keep the offsets their codes gave).
    fn open(&self, file: &FileRecord, rate: u32) -> Option<Box<dyn StretchReader>>;
}

/// An indexed file, open for reading stretches of it.
pub trait StretchReader: Send {
    /// About `stretch.duration_s` seconds of samples from `stretch.start_s` on (shorter near
    /// the file's end); `None` if the file cannot be read there.
    fn read(&mut self, stretch: Stretch) -> Option<Vec<f32>>;
}

/// The indexed files where they are on disk, if unchanged since indexing.
pub struct FilesOnDisk;

impl LibraryAudio for FilesOnDisk {
    fn open(&self, file: &FileRecord, rate: u32) -> Option<Box<dyn StretchReader>> {
        let now = std::fs::metadata(&file.path).ok()?;
        if now.len() != file.size || now.modified().ok() != file.modified {
            return None;
        }
        let reader = ExcerptReader::open(&file.path, rate).ok()?;
        Some(Box::new(reader))
    }
}

impl StretchReader for ExcerptReader {
    fn read(&mut self, stretch: Stretch) -> Option<Vec<f32>> {
        self.excerpt(stretch).ok()
    }
}

/// One file's readers, kept open from one stretch to the next (opening costs about as much as
/// decoding a few seconds), at most one per core.
pub(super) struct FileReaders<'a> {
    audio: &'a dyn LibraryAudio,
    file: &'a FileRecord,
    rate: u32,
    idle: Mutex<Vec<Box<dyn StretchReader>>>,
}

impl FileReaders<'_> {
    /// `stretch` of the file, read by an idle reader, or a new one if none is idle.
    fn read(&self, stretch: Stretch) -> Option<Vec<f32>> {
        // A reader that panicked is not put back: the list itself stays whole.
        let idle = || self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let taken = idle().pop();
        let mut reader = match taken {
            Some(reader) => reader,
            None => self.audio.open(self.file, self.rate)?,
        };
        let samples = reader.read(stretch);
        idle().push(reader);
        samples
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
    /// For a room's match, the share of the query's blocks that peak with it (see
    /// [`Peak::agreement`](super::correlate::Peak)).
    pub agreement: Option<f32>,
    /// The best correlation at another place of the file that was checked (half the query's
    /// length away or more): a passage that recurs there correlates about as well.
    pub elsewhere: Option<f32>,
}

/// The part of an excerpt the query's samples are compared with at every lag.
struct Region<'e> {
    /// The region's first sample in the file.
    from_sample: f64,
    samples: Cow<'e, [f32]>,
}

/// A candidate's stretch of a file, decoded: from frame `from` on, for checking the frame
/// offsets `offsets`.
pub(super) struct Excerpt {
    from: i64,
    offsets: RangeInclusive<i64>,
    samples: Vec<f32>,
}

impl<'a> Verifier<'a> {
    /// `file`'s readers, for [`Self::excerpts`].
    fn readers(&self, file: &'a FileRecord) -> FileReaders<'a> {
        FileReaders {
            audio: self.audio,
            file,
            rate: self.input.sample_rate(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Decodes what checking each range of frame offsets in `groups` needs of a file: every
    /// frame a query segment can land on, and every sample the query can cover; one excerpt per
    /// range, in order, decoded on every core (decoding is most of a check's time, and a query
    /// waits for it). `None` if its audio cannot be read.
    fn excerpts(
        &self,
        q: &QueryProjections,
        readers: &FileReaders,
        groups: &[&RangeInclusive<i64>],
    ) -> Option<Vec<Excerpt>> {
        (groups.par_iter())
            .map(|&offsets| {
                let (from, stretch) = self.stretch(q, offsets)?;
                Some(Excerpt {
                    from,
                    offsets: offsets.clone(),
                    samples: readers.read(stretch)?,
                })
            })
            .collect()
    }

    /// The stretches of `file` around each range of frame offsets in `groups` (strongest
    /// first), decoded and correlated with the query in that order, as many at once as there
    /// are cores, until one holds the query's passage (`holds_passage` says so of its
    /// correlations): decoding the others would take longer than the rest of the search. All
    /// of them when none does; as far as could be read when the file cannot.
    pub fn checked_stretches(
        &self,
        query: &WhitenedQuery,
        q: &QueryProjections,
        file: &FileRecord,
        groups: &[&RangeInclusive<i64>],
        holds_passage: impl Fn(&LagCorrelations) -> bool,
    ) -> Vec<(Excerpt, Option<LagCorrelations>)> {
        let readers = self.readers(file);
        let mut checked: Vec<(Excerpt, Option<LagCorrelations>)> = Vec::new();
        for batch in groups.chunks(rayon::current_num_threads().max(1)) {
            let Some(excerpts) = self.excerpts(q, &readers, batch) else {
                break;
            };
            let lags: Vec<Option<LagCorrelations>> = (excerpts.par_iter())
                .map(|e| self.correlate(query, q, e))
                .collect();
            checked.extend(excerpts.into_iter().zip(lags));
            if checked
                .iter()
                .any(|(_, l)| l.as_ref().is_some_and(&holds_passage))
            {
                break;
            }
        }
        checked
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

    /// How the query's samples correlate with the excerpt's from its first frame offset on, at
    /// every lag (see [`correlate`](super::correlate)); `None` if less than half the query's
    /// length of the file is left after it.
    pub fn correlate(
        &self,
        query: &WhitenedQuery,
        q: &QueryProjections,
        excerpt: &Excerpt,
    ) -> Option<LagCorrelations> {
        query.correlations(&self.region(q, excerpt)?.samples)
    }

    /// The part of `excerpt` the query's samples are compared with (see [`Self::correlate`]).
    fn region<'e>(&self, q: &QueryProjections, excerpt: &'e Excerpt) -> Option<Region<'e>> {
        let offsets = &excerpt.offsets;
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
        let samples: Cow<[f32]> = match in_file.get(..wanted) {
            Some(region) => region.into(),
            None => {
                let mut padded = in_file.to_vec();
                padded.resize(wanted, 0.0);
                padded.into()
            }
        };
        Some(Region {
            from_sample: excerpt.from as f64 * per_frame + first as f64,
            samples,
        })
    }

    /// Where `lags` (the excerpt's correlations, from [`Self::correlate`]) place the query's
    /// first sample in the file (seconds), and how well the samples agree there; with
    /// `direct_sound`, a room's match placed as [`WhitenedQuery::placed`] says.
    pub fn sample_match(
        &self,
        query: &WhitenedQuery,
        q: &QueryProjections,
        excerpt: &Excerpt,
        lags: &LagCorrelations,
        direct_sound: bool,
    ) -> Option<SampleMatch> {
        let region = self.region(q, excerpt)?;
        let peak = query.placed(&region.samples, lags, direct_sound);
        let sample = region.from_sample + peak.lag as f64;
        Some(SampleMatch {
            start_s: sample / f64::from(self.input.sample_rate()),
            correlation: peak.correlation,
            prominence: peak.prominence,
            onsets: peak.onsets,
            agreement: peak.agreement,
            elsewhere: None,
        })
    }

    /// The frame offset among the excerpt's offsets at which the query's projections are
    /// closest to the excerpt's; `None` if the file ends too soon after them.
    pub fn check(&self, q: &QueryProjections, excerpt: &Excerpt) -> Option<Verified> {
        let offsets = &excerpt.offsets;
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::model::{Mode, SeededRng, baseline_encoder};

    const RATE: f64 = 16_000.0;

    /// Audio held in memory for one file.
    /// A file's samples in memory, with how many stretches of them were read.
    #[derive(Clone)]
    struct Memory {
        samples: Arc<Vec<f32>>,
        reads: Arc<AtomicUsize>,
    }

    impl Memory {
        fn new(samples: Vec<f32>) -> Self {
            Self {
                samples: Arc::new(samples),
                reads: Arc::default(),
            }
        }
    }

    impl LibraryAudio for Memory {
        fn open(&self, _: &FileRecord, _: u32) -> Option<Box<dyn StretchReader>> {
            Some(Box::new(self.clone()))
        }
    }

    impl StretchReader for Memory {
        fn read(&mut self, s: Stretch) -> Option<Vec<f32>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let at = |s: f64| ((s * RATE).round() as usize).min(self.samples.len());
            Some(self.samples[at(s.start_s)..at(s.start_s + s.duration_s)].to_vec())
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
            audio: &Memory::new(Vec::new()),
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
        let fixture = Fixture::new(library, query);
        let (verifier, q) = (fixture.verifier(), fixture.query());
        let offsets = candidate - 7..=candidate + 7;
        let file = record();
        let readers = verifier.readers(&file);
        let Some(excerpt) =
            (verifier.excerpts(&q, &readers, &[&offsets])).and_then(|mut e| e.pop())
        else {
            return (None, None);
        };
        let whitened = WhitenedQuery::new(query);
        let lags = verifier.correlate(&whitened, &q, &excerpt);
        (
            verifier.check(&q, &excerpt),
            lags.and_then(|l| verifier.sample_match(&whitened, &q, &excerpt, &l, true)),
        )
    }

    /// What checking a query against a library's audio needs.
    struct Fixture {
        encoder: Box<dyn Encoder>,
        input: EncoderInput,
        starts: Vec<usize>,
        margins: Vec<f32>,
        samples: usize,
        audio: Memory,
    }

    impl Fixture {
        fn new(library: Vec<f32>, query: &[f32]) -> Self {
            let encoder = baseline_encoder(Mode::Fingerprint);
            let (starts, margins) = query_projections(encoder.as_ref(), query);
            Self {
                input: encoder.input(),
                encoder,
                starts,
                margins,
                samples: query.len(),
                audio: Memory::new(library),
            }
        }

        fn verifier(&self) -> Verifier<'_> {
            Verifier {
                audio: &self.audio,
                encoder: self.encoder.as_ref(),
                input: &self.input,
            }
        }

        fn query(&self) -> QueryProjections<'_> {
            QueryProjections {
                starts: &self.starts,
                margins: &self.margins,
                bits: self.encoder.info().bits,
                samples: self.samples,
            }
        }
    }

    /// Checks `library`'s stretches around each of `candidates` (frames, strongest first) for
    /// `query` until one correlates at 0.5: how many were checked, and how many read.
    fn stretches_checked(library: Vec<f32>, query: &[f32], candidates: &[i64]) -> (usize, usize) {
        let fixture = Fixture::new(library, query);
        let (verifier, q) = (fixture.verifier(), fixture.query());
        let ranges: Vec<RangeInclusive<i64>> = candidates.iter().map(|c| c - 7..=c + 7).collect();
        let groups: Vec<&RangeInclusive<i64>> = ranges.iter().collect();
        let whitened = WhitenedQuery::new(query);
        let checked = verifier.checked_stretches(&whitened, &q, &record(), &groups, |lags| {
            lags.correlation >= 0.5
        });
        (checked.len(), fixture.audio.reads.load(Ordering::Relaxed))
    }

    #[test]
    fn the_check_ends_at_the_stretch_that_holds_the_passage() {
        let library = music(30.0, 8);
        let query = &library[1200 * 160..][..2 * 16_000].to_vec();
        let others = [200, 600, 1800, 2400];
        let all = others.len() + 1;
        let at_once = rayon::current_num_threads().clamp(1, all);
        let passage_first = [&[1200][..], &others].concat();
        assert_eq!(
            stretches_checked(library.clone(), query, &passage_first),
            (at_once, at_once),
            "the strongest stretches, as many as there are cores, hold the passage"
        );
        let passage_last = [&others[..], &[1200]].concat();
        assert_eq!(
            stretches_checked(library.clone(), query, &passage_last),
            (all, all)
        );
        assert_eq!(
            stretches_checked(library, query, &others),
            (others.len(), others.len()),
            "with no stretch holding the passage, every one is checked"
        );
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
