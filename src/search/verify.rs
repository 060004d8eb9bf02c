//! Fingerprint verification against the library's audio.
//!
//! The index keeps 128 bits every 70 ms; that tells which file a query comes from, but not
//! always where: a loop or a chorus that repeats gives codes as close as the query's own
//! passage. The codes' projections, before their signs are taken, tell the passages apart.
//! So the candidate offsets of a file are checked against its audio, decoded again around
//! each: the query's projections are compared with the library's at every frame within a
//! library hop of the candidate, and the closest wins.

use crate::features::LogMelConfig;
use crate::features::segment::Segment;
use crate::library::FileRecord;
use crate::model::{Encoded, Encoder};

/// Frames decoded before a candidate region: the first frames of a decoded excerpt see the
/// STFT's zero padding, not the audio before it.
const LEAD_FRAMES: i64 = 3;

/// Reads the audio of indexed files again, for verification.
pub trait LibraryAudio: Sync {
    /// 16 kHz mono samples of `file` from `start_s`, about `duration_s` of them; `None` if the
    /// file cannot be read or has changed since it was indexed (the match then keeps the
    /// offset its codes gave).
    fn excerpt(&self, file: &FileRecord, start_s: f64, duration_s: f64) -> Option<Vec<f32>>;
}

/// The indexed files where they are on disk, if unchanged since indexing.
pub struct FilesOnDisk;

impl LibraryAudio for FilesOnDisk {
    fn excerpt(&self, file: &FileRecord, start_s: f64, duration_s: f64) -> Option<Vec<f32>> {
        let now = std::fs::metadata(&file.path).ok()?;
        if now.len() != file.size || now.modified().ok() != file.modified {
            return None;
        }
        crate::audio::decode_excerpt(&file.path, start_s, duration_s).ok()
    }
}

/// The query as verification needs it: each segment's start frame and projections.
pub(super) struct QueryProjections<'q> {
    pub starts: &'q [usize],
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
    pub features: &'a LogMelConfig,
}

impl Verifier<'_> {
    /// The frame offset within `spread` frames of `candidate` at which the query's projections
    /// are closest to `file`'s; `None` if its audio cannot be read.
    pub fn check(
        &self,
        q: &QueryProjections,
        file: &FileRecord,
        candidate: i64,
        spread: i64,
    ) -> Option<Verified> {
        let window = self.encoder.segmentation().window as i64;
        let (first, last) = (*q.starts.first()? as i64, *q.starts.last()? as i64);
        let lowest = (candidate - spread).max(-first);
        let from = (lowest + first - LEAD_FRAMES).max(0);
        let to = candidate + spread + last + window;
        let frame_s = 1.0 / self.features.frames_per_second();
        let samples =
            self.audio
                .excerpt(file, from as f64 * frame_s, (to - from) as f64 * frame_s)?;
        let library = self.projections(&samples)?;
        let segments = library.len() / q.bits;
        let mut best: Option<Verified> = None;
        for offset in lowest..=candidate + spread {
            let mut sum = 0.0;
            for (j, &start) in q.starts.iter().enumerate() {
                let r = start as i64 + offset - from;
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

    /// Projections of every window of `samples`, one frame apart (segment `r` starts at frame `r`).
    fn projections(&self, samples: &[f32]) -> Option<Vec<f32>> {
        let window = self.encoder.segmentation().window;
        let mut segments = super::log_mel_segments(samples, self.features, window, 1);
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
        fn excerpt(&self, _: &FileRecord, start_s: f64, duration_s: f64) -> Option<Vec<f32>> {
            let from = ((start_s * RATE).round() as usize).min(self.0.len());
            let to = (((start_s + duration_s) * RATE).round() as usize).min(self.0.len());
            Some(self.0[from..to].to_vec())
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
        }
    }

    /// The query's segment starts (every 2 frames) and projections, as the searcher encodes them.
    fn query_projections(encoder: &dyn Encoder, samples: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let features = LogMelConfig::default();
        let verifier = Verifier {
            audio: &Memory(Vec::new()),
            encoder,
            features: &features,
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

    fn check(library: Vec<f32>, query: &[f32], candidate: i64) -> Option<Verified> {
        let encoder = baseline_encoder(Mode::Fingerprint);
        let features = LogMelConfig::default();
        let (starts, margins) = query_projections(encoder.as_ref(), query);
        let q = QueryProjections {
            starts: &starts,
            margins: &margins,
            bits: encoder.info().bits,
        };
        let audio = Memory(library);
        let verifier = Verifier {
            audio: &audio,
            encoder: encoder.as_ref(),
            features: &features,
        };
        verifier.check(&q, &record(), candidate, 7)
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
            let v = check(library.clone(), query, candidate).unwrap();
            assert_eq!(v.offset, start_frame as i64, "from candidate {candidate}");
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
        let at_repeat = check(library.clone(), &query, 800).unwrap();
        let at_original = check(library, &query, 200).unwrap();
        assert_eq!(at_repeat.offset, 800);
        assert!(
            at_repeat.distance < 0.5 * at_original.distance,
            "repeat {} against original {}",
            at_repeat.distance,
            at_original.distance
        );
    }

    #[test]
    fn a_candidate_whose_audio_ends_too_soon_is_not_verified() {
        let library = music(3.0, 4);
        let query = library[16_000..48_000].to_vec();
        // The query would run 1 s past the file's end at this offset and every one near it.
        assert!(check(library, &query, 200).is_none());
    }
}
