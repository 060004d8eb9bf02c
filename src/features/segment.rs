//! Cutting a stream of frames (log-mel, or an encoder's own) into overlapping segments, keeping only the frames that
//! some future segment still needs (memory is one window, whatever the file length).
//!
//! Segments start every `hop` frames and span `window` frames. A signal shorter than a window
//! gives one segment of all its frames; otherwise a last segment is aligned to the end when the
//! regular ones leave a tail uncovered, so every frame is in some segment.

/// A segment whose loudest value stays under this is silence (digital zero padding, dead air):
/// it carries nothing to match, and every silent segment would match every other.
pub const SILENCE_DB: f32 = -80.0;

/// Whether a log-mel segment is silence (see [`SILENCE_DB`]).
pub fn is_silent(values: &[f32]) -> bool {
    values.iter().all(|&x| x < SILENCE_DB)
}

/// A segment: where it starts (in frames) and its frame-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_frame: usize,
    pub n_frames: usize,
    pub values: Vec<f32>,
}

/// Every segment of a whole clip's frames, `window` frames every `hop`, ending with the
/// end-aligned tail segment if one is due (as [`SegmentStream`] cuts a stream).
pub fn segments_of(frames: &super::FeatureMatrix, window: usize, hop: usize) -> Vec<Segment> {
    let mut stream = SegmentStream::new(window, hop, frames.dims.max(1));
    let mut segments = Vec::new();
    for frame in frames.frames() {
        stream.push(frame, &mut |s| segments.push(s));
    }
    stream.finish(&mut |s| segments.push(s));
    segments
}

pub struct SegmentStream {
    window: usize,
    hop: usize,
    dims: usize,
    /// Frames kept, frame-major; `kept[0]` is frame number `first_kept`.
    kept: Vec<f32>,
    first_kept: usize,
    seen: usize,
    next_start: usize,
    /// End frame of the last segment emitted (0 when none yet).
    covered_to: usize,
    emitted: usize,
}

impl SegmentStream {
    pub fn new(window: usize, hop: usize, dims: usize) -> Self {
        assert!(
            window > 0 && hop > 0 && dims > 0,
            "segment window, hop and dims must be positive"
        );
        Self {
            window,
            hop,
            dims,
            kept: Vec::new(),
            first_kept: 0,
            seen: 0,
            next_start: 0,
            covered_to: 0,
            emitted: 0,
        }
    }

    /// Adds one frame; calls `on_segment` for each segment it completes.
    pub fn push(&mut self, frame: &[f32], on_segment: &mut impl FnMut(Segment)) {
        debug_assert_eq!(frame.len(), self.dims);
        self.kept.extend_from_slice(frame);
        self.seen += 1;
        while self.next_start + self.window <= self.seen {
            on_segment(self.segment(self.next_start, self.window));
            self.covered_to = self.next_start + self.window;
            self.next_start += self.hop;
        }
        self.forget_before(self.next_start.min(self.seen.saturating_sub(self.window)));
    }

    /// Ends the stream, emitting the short-signal or tail segment if one is due.
    pub fn finish(&mut self, on_segment: &mut impl FnMut(Segment)) {
        if self.seen == 0 {
            return;
        }
        if self.emitted == 0 {
            on_segment(self.segment(0, self.seen));
        } else if self.seen - self.covered_to >= self.hop.div_ceil(2) {
            // A tail of at least half a hop gets its own end-aligned segment.
            on_segment(self.segment(self.seen - self.window, self.window));
        }
    }

    fn segment(&mut self, start: usize, n_frames: usize) -> Segment {
        self.emitted += 1;
        let from = (start - self.first_kept) * self.dims;
        Segment {
            start_frame: start,
            n_frames,
            values: self.kept[from..from + n_frames * self.dims].to_vec(),
        }
    }

    /// Drops frames before `frame` (never those a tail segment may need).
    fn forget_before(&mut self, frame: usize) {
        if frame > self.first_kept {
            self.kept.drain(..(frame - self.first_kept) * self.dims);
            self.first_kept = frame;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(n: usize, window: usize, hop: usize) -> Vec<(usize, usize, f32)> {
        let mut s = SegmentStream::new(window, hop, 1);
        let mut out = Vec::new();
        let mut keep = |seg: Segment| out.push((seg.start_frame, seg.n_frames, seg.values[0]));
        for i in 0..n {
            s.push(&[i as f32], &mut keep);
        }
        s.finish(&mut keep);
        out
    }

    #[test]
    fn regular_segments_then_an_end_aligned_tail() {
        assert_eq!(
            cut(25, 10, 5),
            vec![(0, 10, 0.0), (5, 10, 5.0), (10, 10, 10.0), (15, 10, 15.0)]
        );
        let with_tail = vec![
            (0, 10, 0.0),
            (5, 10, 5.0),
            (10, 10, 10.0),
            (15, 10, 15.0),
            (18, 10, 18.0),
        ];
        assert_eq!(cut(28, 10, 5), with_tail);
        assert_eq!(
            cut(26, 10, 5).len(),
            4,
            "a one-frame tail is not worth a segment"
        );
    }

    #[test]
    fn a_short_signal_is_one_segment() {
        assert_eq!(cut(4, 10, 5), vec![(0, 4, 0.0)]);
        assert!(cut(0, 10, 5).is_empty());
    }

    #[test]
    fn memory_stays_within_a_window() {
        let mut s = SegmentStream::new(96, 10, 64);
        for _ in 0..100_000 {
            s.push(&[0.0; 64], &mut |_| {});
        }
        assert!(s.kept.len() <= 96 * 64 + 64);
    }
}
