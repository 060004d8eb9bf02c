//! A recording's outline, for drawing it whole or zoomed in: the lowest and highest sample of
//! every short stretch, kept at several resolutions (as a map keeps zoom levels), so that any
//! view of it is drawn from about as many stretches as it has pixels, however long the file.

use std::ops::ControlFlow;
use std::path::Path;

use super::{AudioError, AudioSource};

/// Stretches per second at the finest level: 10 ms each, finer than a pixel of any view wider
/// than a few seconds; 10 hours take 29 MB.
pub const FINEST_PER_S: f64 = 100.0;
/// Each coarser level's stretches cover this many of the level below.
const LEVEL_FACTOR: usize = 4;
/// Levels stop when the coarsest has no more stretches than this.
const COARSEST_STRETCHES: usize = 2_048;
/// A view's columns each take at least this many stretches: a column takes every stretch that
/// overlaps it, and so reaches past its edges by at most a fraction of itself.
const STRETCHES_PER_COLUMN: f64 = 4.0;

/// One resolution: `low[i]..=high[i]` is the range of the samples in stretch `i`.
#[derive(Debug, Clone, Default)]
struct Level {
    per_s: f64,
    low: Vec<f32>,
    high: Vec<f32>,
}

/// The outline of a whole recording, read once.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub duration_s: f64,
    /// Finest first.
    levels: Vec<Level>,
}

/// The range of the samples under one column of a view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Column {
    pub low: f32,
    pub high: f32,
}

impl Envelope {
    /// Decodes `path` at its own rate; `on_decoded` hears the seconds read so far and may stop
    /// the work (`ControlFlow::Break`, for a window that closed), which is then an empty outline.
    pub fn read(
        path: &Path,
        mut on_decoded: impl FnMut(f64) -> ControlFlow<()>,
    ) -> Result<Self, AudioError> {
        let source = AudioSource::open(path)?;
        let rate = f64::from(source.output_rate());
        let per_stretch = (rate / FINEST_PER_S).round().max(1.0) as usize;
        let mut finest = Level {
            per_s: rate / per_stretch as f64,
            ..Level::default()
        };
        let (mut low, mut high, mut filled, mut samples) = (f32::MAX, f32::MIN, 0usize, 0usize);
        source.stream(|chunk| {
            // The stream's samples are numbers (it silences those that are not).
            for &x in chunk {
                (low, high) = (low.min(x), high.max(x));
                filled += 1;
                if filled == per_stretch {
                    finest.push(low, high);
                    (low, high, filled) = (f32::MAX, f32::MIN, 0);
                }
            }
            samples += chunk.len();
            on_decoded(samples as f64 / rate)
        })?;
        if filled > 0 {
            finest.push(low, high);
        }
        Ok(Self::from_finest(finest, samples as f64 / rate))
    }

    fn from_finest(finest: Level, duration_s: f64) -> Self {
        let mut levels = vec![finest];
        while let Some(last) = levels.last().filter(|l| l.low.len() > COARSEST_STRETCHES) {
            levels.push(last.coarser());
        }
        Self { duration_s, levels }
    }

    /// `columns` equal columns from `from_s` to `to_s`, each the range of the samples under it,
    /// taken from the coarsest level that still gives every column [`STRETCHES_PER_COLUMN`]
    /// (or from the finest, when zoomed in further). `None`
    /// for a column outside the recording.
    pub fn columns(&self, from_s: f64, to_s: f64, columns: usize) -> Vec<Option<Column>> {
        let span = to_s - from_s;
        if columns == 0 || span <= 0.0 {
            return Vec::new();
        }
        let wanted_per_s = STRETCHES_PER_COLUMN * columns as f64 / span;
        let Some(level) = (self.levels.iter().rev())
            .find(|l| l.per_s >= wanted_per_s)
            .or(self.levels.first())
        else {
            return vec![None; columns];
        };
        let stretch_at = |t: f64| (t * level.per_s).max(0.0);
        (0..columns)
            .map(|c| {
                let start = from_s + span * c as f64 / columns as f64;
                let end = from_s + span * (c + 1) as f64 / columns as f64;
                let first = (stretch_at(start).floor() as usize).min(level.low.len());
                let last = (stretch_at(end).ceil() as usize)
                    .max(first + 1)
                    .min(level.low.len());
                level.range(first..last)
            })
            .collect()
    }
}

impl Level {
    fn push(&mut self, low: f32, high: f32) {
        self.low.push(low);
        self.high.push(high);
    }

    fn coarser(&self) -> Level {
        let mut out = Level {
            per_s: self.per_s / LEVEL_FACTOR as f64,
            ..Level::default()
        };
        for start in (0..self.low.len()).step_by(LEVEL_FACTOR) {
            let end = (start + LEVEL_FACTOR).min(self.low.len());
            let (low, high) = self.fold(start..end);
            out.push(low, high);
        }
        out
    }

    fn fold(&self, stretches: std::ops::Range<usize>) -> (f32, f32) {
        let low = self.low[stretches.clone()]
            .iter()
            .fold(f32::MAX, |a, &b| a.min(b));
        let high = self.high[stretches].iter().fold(f32::MIN, |a, &b| a.max(b));
        (low, high)
    }

    fn range(&self, stretches: std::ops::Range<usize>) -> Option<Column> {
        if stretches.is_empty() {
            return None;
        }
        let (low, high) = self.fold(stretches);
        Some(Column { low, high })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outline of `seconds` of a signal that is silent but for a click of height `at.1` at
    /// `at.0` seconds, at the finest level's rate.
    fn outline_with_click(seconds: f64, at: (f64, f32)) -> Envelope {
        let n = (seconds * FINEST_PER_S) as usize;
        let mut finest = Level {
            per_s: FINEST_PER_S,
            low: vec![-0.01; n],
            high: vec![0.01; n],
        };
        let i = (at.0 * FINEST_PER_S) as usize;
        finest.high[i] = at.1;
        Envelope::from_finest(finest, seconds)
    }

    #[test]
    fn a_click_shows_in_the_whole_view_of_an_hour_and_in_a_zoomed_view() {
        let outline = outline_with_click(3600.0, (1234.5, 0.9));
        assert!(outline.levels.len() > 3, "{}", outline.levels.len());
        assert!(outline.levels.last().unwrap().low.len() <= COARSEST_STRETCHES);
        let whole = outline.columns(0.0, 3600.0, 600);
        assert_eq!(whole.len(), 600);
        let loud: Vec<usize> = (whole.iter().enumerate())
            .filter(|(_, c)| c.is_some_and(|c| c.high > 0.5))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            loud,
            [205],
            "one column of 6 s holds 1234.5 s, and only one"
        );
        let zoomed = outline.columns(1234.0, 1235.0, 100);
        let loud: Vec<usize> = (zoomed.iter().enumerate())
            .filter(|(_, c)| c.is_some_and(|c| c.high > 0.5))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(loud, [50]);
        assert!(zoomed.iter().all(|c| c.is_some_and(|c| c.low < 0.0)));
    }

    #[test]
    fn columns_past_the_end_are_empty() {
        let outline = outline_with_click(10.0, (1.0, 0.5));
        let view = outline.columns(5.0, 15.0, 10);
        assert!(view[..5].iter().all(Option::is_some));
        assert!(view[5..].iter().all(Option::is_none));
    }
}
