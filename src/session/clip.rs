//! A clip decoded once: the query, or a stretch of a library file to inspect or play. Its
//! samples at other rates and its front ends' frames are computed on first use and kept, so a
//! query searched again (another mode, another region, another library) costs no decoding and
//! no second spectrogram.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::audio::resample::StreamResampler;
use crate::audio::{AudioError, TARGET_SAMPLE_RATE};
use crate::features::{FeatureMatrix, FrontEnd, LogMelConfig};
use crate::model::EncoderInput;
use crate::search::QueryAudio;

/// Longest query searched with (seconds); longer clips are cut to their start and the user told.
pub const MAX_QUERY_S: f64 = 600.0;

#[derive(Clone)]
pub struct Clip {
    pub name: String,
    /// The file it came from (none for a recording).
    pub path: Option<PathBuf>,
    /// Where the clip starts in its file (seconds).
    pub offset_s: f64,
    /// The clip was longer than [`MAX_QUERY_S`] and was cut to it.
    pub cut: bool,
    /// Mono at [`TARGET_SAMPLE_RATE`]: what views draw and speakers play.
    samples: Arc<Vec<f32>>,
    derived: Arc<Mutex<Derived>>,
}

/// What was computed from a clip's audio, kept for the next use.
#[derive(Default)]
struct Derived {
    /// Samples at rates other than [`TARGET_SAMPLE_RATE`].
    resampled: Vec<(u32, Arc<Vec<f32>>)>,
    /// Frames of the whole clip, per front end.
    frames: Vec<(FrontEnd, Arc<FeatureMatrix>)>,
}

/// The part of a clip a search reads, as its encoder reads it.
pub struct QueryPart {
    pub samples: Vec<f32>,
    pub frames: FeatureMatrix,
}

impl QueryPart {
    pub fn as_query(&self) -> QueryAudio<'_> {
        QueryAudio {
            samples: &self.samples,
            frames: std::borrow::Cow::Borrowed(&self.frames),
        }
    }
}

impl Clip {
    /// Decodes `path`, keeping `window` (seconds in the file) when given. Past the longest query
    /// (and a second, to tell it was longer) nothing is decoded: a ten-hour file dropped on the
    /// window costs ten minutes of samples.
    pub fn read(path: &Path, window: Option<(f64, f64)>) -> Result<Self, AudioError> {
        let until = window.map_or(MAX_QUERY_S + 1.0, |(_, to)| to);
        let audio = crate::audio::decode_prefix(path, until, TARGET_SAMPLE_RATE)?;
        let (start_s, samples) = match window {
            Some(span) => {
                let (from, to) = sample_range(span, audio.samples.len(), TARGET_SAMPLE_RATE);
                (
                    seconds(from, TARGET_SAMPLE_RATE),
                    audio.samples[from..to].to_vec(),
                )
            }
            None => (0.0, audio.samples),
        };
        Ok(Self::from_samples(
            file_name(path),
            Some(path.to_owned()),
            samples,
            start_s,
        ))
    }

    /// A clip of samples at [`TARGET_SAMPLE_RATE`] (a recording, or audio decoded elsewhere).
    pub fn from_samples(
        name: String,
        path: Option<PathBuf>,
        mut samples: Vec<f32>,
        offset_s: f64,
    ) -> Self {
        let max = (MAX_QUERY_S * f64::from(TARGET_SAMPLE_RATE)) as usize;
        let cut = samples.len() > max;
        samples.truncate(max);
        Self {
            name,
            path,
            offset_s,
            cut,
            samples: Arc::new(samples),
            derived: Arc::default(),
        }
    }

    /// Mono samples at [`TARGET_SAMPLE_RATE`].
    pub fn samples(&self) -> &Arc<Vec<f32>> {
        &self.samples
    }

    pub fn duration_s(&self) -> f64 {
        seconds(self.samples.len(), TARGET_SAMPLE_RATE)
    }

    /// The samples between two times (seconds from the clip's start), clamped to the clip.
    pub fn between(&self, span: (f64, f64)) -> &[f32] {
        let (from, to) = sample_range(span, self.samples.len(), TARGET_SAMPLE_RATE);
        &self.samples[from..to]
    }

    /// Something the user should know about the clip.
    pub fn note(&self) -> Option<String> {
        self.cut
            .then(|| format!("only the first {} minutes are used", MAX_QUERY_S / 60.0))
    }

    /// The log-mel spectrogram of the whole clip, as views draw it.
    pub fn log_mel(&self) -> Arc<FeatureMatrix> {
        // At the clip's own rate nothing needs decoding: this cannot fail.
        self.frames(&FrontEnd::LogMel(LogMelConfig::default()))
            .unwrap_or_else(|_| Arc::new(FeatureMatrix::default()))
    }

    /// The samples at `rate`: decoded again from the file at that rate (a resampled 16 kHz
    /// signal would have lost everything above 8 kHz), or, for a recording, resampled.
    pub fn samples_at(&self, rate: u32) -> Result<Arc<Vec<f32>>, AudioError> {
        if rate == TARGET_SAMPLE_RATE {
            return Ok(self.samples.clone());
        }
        if let Some(kept) = self.lock().resampled.iter().find(|(r, _)| *r == rate) {
            return Ok(kept.1.clone());
        }
        let samples = Arc::new(match &self.path {
            Some(path) => {
                let mut s =
                    crate::audio::decode_excerpt(path, self.offset_s, self.duration_s(), rate)?;
                s.truncate((self.duration_s() * f64::from(rate)).round() as usize);
                s
            }
            None => resample(&self.samples, rate).map_err(|e| AudioError::Unsupported {
                path: PathBuf::from(&self.name),
                detail: e.to_string(),
            })?,
        });
        self.lock().resampled.push((rate, samples.clone()));
        Ok(samples)
    }

    /// The frames of the whole clip through `front_end`.
    pub fn frames(&self, front_end: &FrontEnd) -> Result<Arc<FeatureMatrix>, AudioError> {
        if let Some(kept) = self.lock().frames.iter().find(|(f, _)| f == front_end) {
            return Ok(kept.1.clone());
        }
        let samples = self.samples_at(front_end.sample_rate())?;
        let frames = Arc::new(front_end.compute(&samples));
        self.lock().frames.push((*front_end, frames.clone()));
        Ok(frames)
    }

    /// The region `span` (seconds from the clip's start) as an encoder with `input` reads it:
    /// the samples from the frame nearest its start to its end, and as many of the whole
    /// clip's frames from that one on as the front end makes of them (all of them for the
    /// whole clip: the same frames as of the samples alone).
    pub fn query_part(
        &self,
        input: &EncoderInput,
        span: (f64, f64),
    ) -> Result<QueryPart, AudioError> {
        let front_end = &input.front_end;
        let all = self.frames(front_end)?;
        let samples = self.samples_at(front_end.sample_rate())?;
        let rate = f64::from(front_end.sample_rate());
        let per_frame = front_end.frame_samples();
        let from = ((span.0.max(0.0) * rate / per_frame as f64).round() as usize).min(all.n_frames);
        let first = (from * per_frame).min(samples.len());
        let last = ((span.1 * rate).round().max(0.0) as usize).clamp(first, samples.len());
        let to = (from + front_end.frame_count(last - first)).min(all.n_frames);
        Ok(QueryPart {
            samples: samples[first..last.max(first)].to_vec(),
            frames: FeatureMatrix {
                n_frames: to - from,
                dims: all.dims,
                data: all.data[from * all.dims..to * all.dims].to_vec(),
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Derived> {
        // What is kept is only ever added to whole: a panic elsewhere leaves it usable.
        self.derived.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The file name of `path` as a clip's name.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn seconds(samples: usize, rate: u32) -> f64 {
    samples as f64 / f64::from(rate)
}

/// Sample numbers of a span in seconds, clamped to `len`.
fn sample_range((from_s, to_s): (f64, f64), len: usize, rate: u32) -> (usize, usize) {
    let rate = f64::from(rate);
    let from = ((from_s.max(0.0) * rate) as usize).min(len);
    let to = ((to_s.max(0.0) * rate) as usize).clamp(from, len);
    (from, to)
}

fn resample(samples: &[f32], rate: u32) -> Result<Vec<f32>, crate::audio::resample::ResampleError> {
    let mut r = StreamResampler::new(TARGET_SAMPLE_RATE, rate)?;
    let mut out = r.push(samples).to_vec();
    out.extend_from_slice(r.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(TARGET_SAMPLE_RATE)) as usize;
        (0..n).map(|i| (i as f32 * 0.07).sin() * 0.5).collect()
    }

    #[test]
    fn the_whole_clip_s_query_is_its_own_frames_computed_once() {
        let clip = Clip::from_samples("tone".into(), None, tone(2.0), 0.0);
        let input = EncoderInput::log_mel(crate::model::Mode::Events);
        let part = clip.query_part(&input, (0.0, clip.duration_s())).unwrap();
        assert_eq!(part.frames, input.front_end.compute(clip.samples()));
        assert_eq!(&part.samples, clip.samples().as_ref());
        assert!(
            Arc::ptr_eq(&clip.log_mel(), &clip.log_mel()),
            "kept, not recomputed"
        );
    }

    #[test]
    fn a_region_is_cut_on_frames_with_its_samples_from_the_first_frame() {
        let clip = Clip::from_samples("tone".into(), None, tone(3.0), 0.0);
        let input = EncoderInput::log_mel(crate::model::Mode::Events);
        let part = clip.query_part(&input, (1.0, 2.0)).unwrap();
        assert_eq!(part.frames.n_frames, 101);
        assert_eq!(part.samples.len(), 16_000);
        assert_eq!(part.samples[0], clip.samples()[16_000]);
        assert_eq!(part.frames.frame(0), clip.log_mel().frame(100));
    }

    #[test]
    fn a_recording_is_resampled_for_an_encoder_at_another_rate() {
        let clip = Clip::from_samples("rec".into(), None, tone(1.0), 0.0);
        let at_48k = clip.samples_at(48_000).unwrap();
        assert!(
            (at_48k.len() as i64 - 48_000).abs() <= 48,
            "{}",
            at_48k.len()
        );
        assert!(Arc::ptr_eq(&at_48k, &clip.samples_at(48_000).unwrap()));
    }

    #[test]
    fn a_clip_longer_than_the_limit_is_cut_and_says_so() {
        let clip = Clip::from_samples("long".into(), None, vec![0.0; 16_000 * 601], 0.0);
        assert!(clip.cut && clip.note().is_some());
        assert_eq!(clip.duration_s(), MAX_QUERY_S);
    }
}
