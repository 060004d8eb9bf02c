//! Decoder contract: any file symphonia can read becomes **mono `f32` at the rate asked for**
//! (any rate in [`OUTPUT_RATE_RANGE`]; [`TARGET_SAMPLE_RATE`], Earshot's own models' rate, when
//! none is named).
//!
//! - Channels are averaged (down-mix); integer samples of any width are scaled to [-1, 1].
//! - Non-finite samples (NaN, ±inf in float files) are replaced by 0 and counted.
//! - Decoding streams: packets are decoded, down-mixed and resampled one by one and handed to a
//!   callback in chunks, so memory does not grow with the file's length.
//! - A packet that fails to decode is skipped and counted; a file that ends early is decoded up to
//!   where it ends and flagged `truncated`. Only a file from which nothing can be decoded is an
//!   error, and every error names the file and the reason.
//! - A file that stops making progress (no audio decoded for [`STALL_LIMIT`], e.g. a file on a
//!   hung network share, or a demuxer going round in circles) is given up with
//!   [`AudioError::Stalled`]: reads from it fail once the limit has passed, so a single file can
//!   never hang a batch.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::text::clock;

use serde::Serialize;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use super::resample::StreamResampler;

/// The rate Earshot's own models read, its views draw and a decode gives unless asked otherwise.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;
/// Output rates a decode can be asked for (Hz): an encoder's rate, from telephone to studio.
pub const OUTPUT_RATE_RANGE: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// Source rates accepted (Hz). Wider than the 8-192 kHz users meet, narrower than nonsense headers.
pub const SOURCE_RATE_RANGE: std::ops::RangeInclusive<u32> = 4_000..=384_000;
/// Longest hole in a damaged stream that is filled with silence (longer ones are only counted).
const MAX_GAP_FILL_S: f64 = 600.0;
/// Timestamp jumps shorter than this are rounding in the container, not lost audio.
const MIN_GAP_S: f64 = 0.002;
/// A file that yields no audio for this long is given up (see the module notes).
pub const STALL_LIMIT: Duration = Duration::from_secs(30);
/// After this many packets in a row fail, the rest of the stream is taken to be garbage.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 200;
/// Equal bins of |sample| over the full scale, counted over a whole stream (each channel's
/// samples as decoded, before mixing and resampling change their spread).
pub const LEVEL_BINS: usize = 4;
/// Random bytes read as PCM spread evenly over the full scale: each bin holds a quarter of the
/// samples, give or take this share. Sound never does: its quiet bins hold most of it (over
/// ESC-50's 2,000 clips and the music of `../shared/data`, see the README).
const RANDOM_DATA_BIN_TOLERANCE: f64 = 0.05;
/// Random bytes are also unrelated from one sample to the next (correlation near 0); a full-scale
/// triangle or sawtooth, which spreads as evenly, is not (near 1).
const RANDOM_DATA_MAX_CORRELATION: f64 = 0.2;
/// Samples (all channels) a stream needs before its spread is judged.
const RANDOM_DATA_MIN_SAMPLES: u64 = 8_000;

/// Why a file could not be decoded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: cannot open: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: empty file (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a recognised audio format", path.display())]
    NotAudio { path: PathBuf },
    #[error("{}: no audio track", path.display())]
    NoAudioTrack { path: PathBuf },
    #[error("{}: no decoder for the {codec} codec", path.display())]
    UnsupportedCodec { path: PathBuf, codec: String },
    #[error("{}: unsupported: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },
    #[error("{}: truncated: the file ends before {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{}: malformed: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error("{}: sample rate {rate} Hz is outside the supported {}..={} Hz", path.display(), SOURCE_RATE_RANGE.start(), SOURCE_RATE_RANGE.end())]
    SampleRate { path: PathBuf, rate: u32 },
    #[error("{}: contains no audio samples", path.display())]
    NoSamples { path: PathBuf },
    #[error("{}: read error: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: gave up: no audio could be decoded from it for {} s", path.display(), limit.as_secs_f64())]
    Stalled { path: PathBuf, limit: Duration },
}

impl AudioError {
    /// The reason alone, without the path (for tables that show the path in another column).
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let path = self.path().display().to_string();
        full.strip_prefix(&path)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(&full)
            .to_string()
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::Empty { path }
            | Self::NotAudio { path }
            | Self::NoAudioTrack { path }
            | Self::UnsupportedCodec { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Truncated { path, .. }
            | Self::Malformed { path, .. }
            | Self::SampleRate { path, .. }
            | Self::NoSamples { path }
            | Self::Io { path, .. }
            | Self::Stalled { path, .. } => path,
        }
    }
}

/// What the container and codec say about the stream, before decoding.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub format: String,
    pub codec: String,
    pub sample_rate: Option<u32>,
    pub channels: Option<usize>,
    pub bits_per_sample: Option<u32>,
    /// Duration from the header, when the container records it.
    pub header_duration_s: Option<f64>,
}

/// What happened while decoding.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecodeStats {
    /// Rate of the decoded audio before resampling (the last one, if it changed mid-stream).
    pub source_rate: u32,
    pub source_channels: usize,
    pub source_frames: u64,
    /// Rate of the samples delivered.
    pub output_rate: u32,
    /// Samples delivered at `output_rate`.
    pub output_samples: u64,
    pub skipped_packets: u64,
    /// Holes in the stream (damaged data the demuxer skipped), found from packet timestamps.
    pub gaps: u64,
    /// Total length of the holes; they are filled with silence so later timestamps stay right.
    pub gap_s: f64,
    /// Audio the header promised that the stream did not hold (damage without timestamps to
    /// locate it, or a cut-off file).
    pub missing_s: f64,
    pub non_finite_samples: u64,
    /// How many decoded samples fall in each of [`LEVEL_BINS`] equal bins of |sample|, quietest
    /// first (a full-scale sample counts in the last).
    pub levels: [u64; LEVEL_BINS],
    /// Sums over each channel of every sample times the one before it, and of every sample
    /// squared: their ratio is how alike neighbouring samples are.
    pub neighbour_products: f64,
    pub power: f64,
    /// Where the first audio delivered lies in the file (seconds), from its packet's timestamp:
    /// 0 when decoding from the start, later after a seek.
    pub first_audio_s: Option<f64>,
    /// The stream ended early (cut-off file, or garbage after some point).
    pub truncated: bool,
    /// The callback asked to stop before the end.
    pub stopped_early: bool,
    /// Where the first hole or sample that was not a number lay (seconds into the audio decoded).
    pub first_damage_s: Option<f64>,
}

impl DecodeStats {
    pub fn duration_s(&self) -> f64 {
        self.output_samples as f64 / f64::from(self.output_rate.max(1))
    }

    /// What was wrong with a stream that could still be decoded, in words, with where; `None`
    /// for a sound one.
    pub fn damage(&self) -> Option<String> {
        let mut found = Vec::new();
        if self.truncated || self.missing_s > 0.0 {
            let promised = match self.missing_s > 0.0 {
                true => format!(
                    " ({} of audio the header promised are missing)",
                    clock(self.missing_s)
                ),
                false => String::new(),
            };
            found.push(format!("cut off at {}{promised}", clock(self.duration_s())));
        }
        if self.gaps > 0 {
            found.push(format!(
                "{} holes of damaged data ({} in all) filled with silence",
                self.gaps,
                clock(self.gap_s)
            ));
        }
        if self.skipped_packets > 0 {
            found.push(format!("{} damaged packets skipped", self.skipped_packets));
        }
        if self.non_finite_samples > 0 {
            found.push(format!(
                "{} samples that are not numbers (NaN or infinite) silenced",
                self.non_finite_samples
            ));
        }
        if let (Some(at_s), false) = (self.first_damage_s, found.is_empty()) {
            found.push(format!("the first damage near {}", clock(at_s)));
        }
        if self.looks_like_random_data() {
            found.push("its samples spread evenly over the whole range, as random data does and sound does not: it probably holds junk in place of audio".into());
        }
        (!found.is_empty()).then(|| found.join("; "))
    }

    /// Whether the samples spread over the full scale as random bytes do (see
    /// [`RANDOM_DATA_BIN_TOLERANCE`]).
    pub fn looks_like_random_data(&self) -> bool {
        let total: u64 = self.levels.iter().sum();
        let even = 1.0 / LEVEL_BINS as f64;
        let correlation = self.neighbour_products / self.power.max(f64::MIN_POSITIVE);
        total >= RANDOM_DATA_MIN_SAMPLES
            && correlation.abs() <= RANDOM_DATA_MAX_CORRELATION
            && (self.levels.iter())
                .all(|&n| (n as f64 / total as f64 - even).abs() <= RANDOM_DATA_BIN_TOLERANCE)
    }
}

/// A whole file decoded into memory (for clips; use [`AudioSource::stream`] for long files).
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub info: SourceInfo,
    pub stats: DecodeStats,
}

/// An opened, probed audio stream, ready to decode.
pub struct AudioSource {
    path: PathBuf,
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Seconds per timestamp unit of the track, when known.
    seconds_per_tick: Option<f64>,
    info: SourceInfo,
    /// The rate samples are delivered at.
    output_rate: u32,
    watch: Arc<Watch>,
}

/// When the decoding of one file last made progress, shared with its byte source so that reads
/// fail once it has made none for the limit (symphonia then returns, wherever it was).
struct Watch {
    started: Instant,
    /// Nanoseconds after `started` of the last progress.
    last_progress_ns: AtomicU64,
    limit_ns: AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_progress_ns: AtomicU64::new(0),
            limit_ns: AtomicU64::new(STALL_LIMIT.as_nanos() as u64),
        }
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn touch(&self) {
        self.last_progress_ns
            .store(self.now_ns(), Ordering::Relaxed);
    }

    fn stalled(&self) -> bool {
        let idle = self.now_ns() - self.last_progress_ns.load(Ordering::Relaxed);
        idle > self.limit_ns.load(Ordering::Relaxed)
    }

    /// The error to report when a read failed because the file stalled.
    fn error(&self, path: &Path) -> Option<AudioError> {
        self.stalled().then(|| AudioError::Stalled {
            path: path.to_owned(),
            limit: Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed)),
        })
    }
}

/// A byte source whose reads fail once its [`Watch`] says the file has stalled.
struct Watched {
    inner: Box<dyn MediaSource>,
    watch: Arc<Watch>,
}

impl Watched {
    fn check(&self) -> io::Result<()> {
        if self.watch.stalled() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "decoding stalled"));
        }
        Ok(())
    }
}

impl io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl io::Seek for Watched {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.check()?;
        self.inner.seek(to)
    }
}

impl MediaSource for Watched {
    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        self.inner.byte_len()
    }
}

/// Decodes a whole file to mono f32 at `rate`.
pub fn decode_file(path: &Path, rate: u32) -> Result<DecodedAudio, AudioError> {
    decode_prefix(path, f64::INFINITY, rate)
}

/// Decodes the first `max_s` seconds of a file (the rest is not read, so memory stays bounded
/// whatever the file's length); `stats.stopped_early` says whether there was more.
pub fn decode_prefix(path: &Path, max_s: f64, rate: u32) -> Result<DecodedAudio, AudioError> {
    let source = AudioSource::open(path)?.resampled_to(rate)?;
    let info = source.info().clone();
    let max = (max_s * f64::from(rate)).min(usize::MAX as f64) as usize;
    let mut samples = Vec::new();
    let stats = source.stream(|chunk| {
        let room = max - samples.len();
        samples.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if samples.len() == max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(DecodedAudio {
        samples,
        info,
        stats,
    })
}

/// About `duration_s` seconds of a file from `start_s` on, as [`decode_file`] would give
/// them (to within a sample), without decoding what comes before where the format can seek.
/// Shorter near the file's end.
pub fn decode_excerpt(
    path: &Path,
    start_s: f64,
    duration_s: f64,
    rate: u32,
) -> Result<Vec<f32>, AudioError> {
    let stretch = Stretch {
        start_s,
        duration_s,
    };
    let mut excerpts = decode_excerpts(path, &[stretch], rate)?;
    Ok(excerpts.pop().unwrap_or_default())
}

/// A stretch of a file to decode: where it starts and about how long it is, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub start_s: f64,
    pub duration_s: f64,
}

/// Each of `stretches` of a file, as [`decode_excerpt`] gives it, in the same order, from one
/// [`ExcerptReader`].
pub fn decode_excerpts(
    path: &Path,
    stretches: &[Stretch],
    rate: u32,
) -> Result<Vec<Vec<f32>>, AudioError> {
    let mut reader = ExcerptReader::open(path, rate)?;
    stretches.iter().map(|s| reader.excerpt(*s)).collect()
}

/// A file opened for decoding stretches of it, in any order, as [`decode_excerpt`] gives them:
/// opened once (opening costs about as much as decoding a few seconds: Vorbis, for one, builds
/// its codebooks then), it seeks from one stretch to the next, or opens the file again where
/// it cannot seek.
pub struct ExcerptReader {
    source: AudioSource,
    /// Nothing decoded since the file was opened.
    fresh: bool,
}

impl ExcerptReader {
    pub fn open(path: &Path, rate: u32) -> Result<Self, AudioError> {
        let source = AudioSource::open(path)?.resampled_to(rate)?;
        Ok(Self {
            source,
            fresh: true,
        })
    }

    /// About `stretch.duration_s` seconds from `stretch.start_s` on; shorter near the end.
    pub fn excerpt(&mut self, stretch: Stretch) -> Result<Vec<f32>, AudioError> {
        // Seek a little early: some codecs give no audio for the first packet after a seek.
        let seeked =
            stretch.start_s > SEEK_LEAD_S && self.source.seek_before(stretch.start_s - SEEK_LEAD_S);
        if !seeked && !self.fresh {
            // Decoded from the start again, as a new opening does: a seek back to the very start
            // does not always give what that gives (MP3's encoder delay).
            let rate = self.source.output_rate;
            self.source = AudioSource::open(&self.source.path)?.resampled_to(rate)?;
        }
        self.fresh = false;
        self.source.excerpt(stretch, seeked)
    }
}

/// How far before an excerpt [`decode_excerpt`] seeks to.
const SEEK_LEAD_S: f64 = 0.5;

/// Source samples from `at_s` to the next time that is a whole number of samples at both
/// `rate` and `output_rate` (at 16 kHz output: every 441 samples at 44.1 kHz, every 3 at
/// 48 kHz); 0 for rates whose common grid is coarser than a quarter second, which keep a
/// fraction of a sample's offset.
fn samples_to_grid(at_s: f64, rate: u32, output_rate: u32) -> usize {
    let period = u64::from(rate / gcd(rate, output_rate));
    let at = (at_s * f64::from(rate)).round().max(0.0) as u64;
    if period == 0 || period > u64::from(rate / 4) {
        return 0;
    }
    ((period - at % period) % period) as usize
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl AudioSource {
    /// Seeks to at most `at_s` (the next packets start there or before); false if the format
    /// or stream cannot seek, and the position is then unchanged.
    fn seek_before(&mut self, at_s: f64) -> bool {
        use symphonia::core::formats::{SeekMode, SeekTo};
        let Some(time) = symphonia::core::units::Time::try_from_secs_f64(at_s) else {
            return false;
        };
        let to = SeekTo::Time {
            time,
            track_id: Some(self.track_id),
        };
        if self.seconds_per_tick.is_none() || self.reader.seek(SeekMode::Accurate, to).is_err() {
            return false;
        }
        self.decoder.reset();
        true
    }

    /// Opens and probes a file; fails early on empty, non-audio, truncated-header and unsupported files.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let open_error = |source| AudioError::Open {
            path: path.to_owned(),
            source,
        };
        // Opening a FIFO would wait for a writer forever: look before opening.
        let kind = std::fs::metadata(path).map_err(open_error)?.file_type();
        if !kind.is_file() {
            let what = if kind.is_dir() {
                "a folder"
            } else {
                "not a regular file (a pipe, socket or device)"
            };
            return Err(AudioError::Unsupported {
                path: path.to_owned(),
                detail: what.to_string(),
            });
        }
        let file = File::open(path).map_err(open_error)?;
        let len = file
            .metadata()
            .map_err(|source| AudioError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(AudioError::Empty {
                path: path.to_owned(),
            });
        }
        let ext = path.extension().and_then(|e| e.to_str());
        Self::from_media_source(path, Box::new(file), ext)
    }

    /// Opens any seekable byte source; `name` is used in messages, `extension` as a format hint.
    pub fn from_media_source(
        name: &Path,
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
    ) -> Result<Self, AudioError> {
        let path = name.to_owned();
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let watch = Arc::new(Watch::new());
        let source = Watched {
            inner: source,
            watch: watch.clone(),
        };
        let mss = MediaSourceStream::new(Box::new(source), Default::default());
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| {
                watch
                    .error(&path)
                    .unwrap_or_else(|| map_probe_error(&path, e))
            })?;
        let (decoder, track_id, mut info) = make_decoder(&path, reader.as_ref())?;
        info.format = reader.format_info().short_name.to_string();
        if let Some(rate) = info.sample_rate.filter(|r| !SOURCE_RATE_RANGE.contains(r)) {
            return Err(AudioError::SampleRate { path, rate });
        }
        let seconds_per_tick = reader
            .tracks()
            .iter()
            .find(|t| t.id == track_id)
            .and_then(|t| t.time_base)
            .map(|tb| f64::from(tb.numer.get()) / f64::from(tb.denom.get()));
        Ok(Self {
            path,
            reader,
            decoder,
            track_id,
            seconds_per_tick,
            info,
            output_rate: TARGET_SAMPLE_RATE,
            watch,
        })
    }

    /// Delivers the samples at `rate` instead of [`TARGET_SAMPLE_RATE`].
    pub fn resampled_to(mut self, rate: u32) -> Result<Self, AudioError> {
        if !OUTPUT_RATE_RANGE.contains(&rate) {
            return Err(AudioError::Unsupported {
                path: self.path,
                detail: format!(
                    "no decode to {rate} Hz: output rates are {}-{} Hz",
                    OUTPUT_RATE_RANGE.start(),
                    OUTPUT_RATE_RANGE.end()
                ),
            });
        }
        self.output_rate = rate;
        Ok(self)
    }

    /// The rate samples are delivered at.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Changes how long decoding may go without progress before the file is given up
    /// ([`STALL_LIMIT`] by default).
    pub fn set_stall_limit(&mut self, limit: Duration) {
        self.watch
            .limit_ns
            .store(limit.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Duration in seconds: from the header when it records one, else by adding up the packet
    /// durations (no decoding), e.g. for MP3 files without a Xing header.
    pub fn duration_s(mut self) -> Result<f64, AudioError> {
        if let Some(seconds) = self.info.header_duration_s {
            return Ok(seconds);
        }
        let time_base = self
            .reader
            .tracks()
            .iter()
            .find(|t| t.id == self.track_id)
            .and_then(|t| t.time_base);
        let mut units = 0u64;
        loop {
            match self.reader.next_packet() {
                Ok(Some(packet)) if packet.track_id == self.track_id => {
                    self.watch.touch();
                    units += packet.dur.get();
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => match self.watch.error(&self.path) {
                    Some(stalled) => return Err(stalled),
                    None if units > 0 => break, // a damaged tail: the duration up to it
                    None => return Err(map_probe_error(&self.path, e)),
                },
            }
        }
        let seconds = match (time_base, self.info.sample_rate) {
            (Some(tb), _) => units as f64 * f64::from(tb.numer.get()) / f64::from(tb.denom.get()),
            (None, Some(rate)) => units as f64 / f64::from(rate),
            (None, None) => {
                return self
                    .stream(|_| ControlFlow::Continue(()))
                    .map(|s| s.duration_s());
            }
        };
        if units == 0 {
            return Err(AudioError::NoSamples { path: self.path });
        }
        Ok(seconds)
    }

    /// Decodes to the end, calling `on_chunk` with consecutive pieces of the mono signal at
    /// [`Self::output_rate`].
    /// `on_chunk` may return `ControlFlow::Break(())` to stop early (cancellation).
    pub fn stream(
        mut self,
        mut on_chunk: impl FnMut(&[f32]) -> ControlFlow<()>,
    ) -> Result<DecodeStats, AudioError> {
        self.stream_timed(false, |chunk, _| on_chunk(chunk))
    }

    /// `stretch` from where the source stands (`seeked` to shortly before it, or at the file's
    /// start): what comes before it is decoded and dropped, and so is the excerpt's end once
    /// enough is there.
    fn excerpt(&mut self, stretch: Stretch, seeked: bool) -> Result<Vec<f32>, AudioError> {
        let rate = f64::from(self.output_rate);
        let wanted = (stretch.duration_s * rate).round() as usize;
        // Samples to drop before the excerpt: known once the first audio's time is.
        let mut skip: Option<usize> = None;
        let mut samples = Vec::new();
        self.stream_timed(seeked, |chunk, first_audio_s| {
            let skip = *skip.get_or_insert_with(|| {
                let at = first_audio_s.filter(|_| seeked).unwrap_or(0.0);
                ((stretch.start_s - at) * rate).round().max(0.0) as usize
            });
            samples.extend_from_slice(chunk);
            if samples.len() >= skip + wanted {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        samples.drain(..skip.unwrap_or(0).min(samples.len()));
        samples.truncate(wanted);
        Ok(samples)
    }

    /// As [`Self::stream`], also telling `on_chunk` where the first decoded audio lies in the
    /// file (see [`DecodeStats::first_audio_s`]). With `on_grid` (after a seek), source samples
    /// are dropped up to the first whose time is also an output sample's, so the output holds
    /// the very samples a decode from the file's start gives there, not ones between them.
    fn stream_timed(
        &mut self,
        on_grid: bool,
        mut on_chunk: impl FnMut(&[f32], Option<f64>) -> ControlFlow<()>,
    ) -> Result<DecodeStats, AudioError> {
        let mut stats = DecodeStats {
            output_rate: self.output_rate,
            ..DecodeStats::default()
        };
        let mut health = PacketHealth::default();
        let mut resampler: Option<(u32, StreamResampler)> = None;
        let (mut planes, mut mono) = (Vec::new(), Vec::new());
        let mut next_ts: Option<i64> = None;
        // Source samples still to drop to reach the output grid.
        let mut off_grid = 0;

        while let Some(packet) = self.next_packet(&mut health)? {
            let gap_s = self.gap_before(&packet, &mut next_ts);
            let Some((rate, counted)) =
                self.decode_packet(&packet, &mut health, &mut planes, &mut mono)?
            else {
                continue;
            };
            let non_finite = counted.non_finite;
            for (total, n) in stats.levels.iter_mut().zip(counted.levels) {
                *total += n;
            }
            stats.neighbour_products += counted.neighbour_products;
            stats.power += counted.power;
            if stats.first_audio_s.is_none() {
                let at = self.seconds_per_tick.map(|t| packet.pts.get() as f64 * t);
                if let Some(at_s) = at.filter(|_| on_grid) {
                    off_grid = samples_to_grid(at_s, rate, self.output_rate);
                }
                stats.first_audio_s = at.map(|s| s + off_grid as f64 / f64::from(rate));
            }
            if off_grid > 0 {
                let dropped = off_grid.min(mono.len());
                mono.drain(..dropped);
                off_grid -= dropped;
            }
            stats.non_finite_samples += non_finite;
            if non_finite > 0 || gap_s > 0.0 {
                let at_s = stats.source_frames as f64 / f64::from(rate.max(1));
                stats.first_damage_s.get_or_insert(at_s);
            }
            stats.source_frames += mono.len() as u64;
            stats.source_channels = planes.len();
            stats.source_rate = rate;
            // The rate is certain only once audio is decoded, and chained streams may change it.
            if resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
                if let Some((_, mut old)) = resampler.take()
                    && deliver(old.finish(), &mut stats, &mut on_chunk).is_err()
                {
                    break;
                }
                let new = StreamResampler::new(rate, self.output_rate).map_err(|e| {
                    AudioError::Unsupported {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    }
                })?;
                resampler = Some((rate, new));
            }
            let Some((_, r)) = resampler.as_mut() else {
                continue;
            };
            if gap_s > 0.0 {
                stats.gaps += 1;
                stats.gap_s += gap_s;
                if fill_silence(r, gap_s, rate, &mut stats, &mut on_chunk).is_err() {
                    break;
                }
            }
            if deliver(r.push(&mono), &mut stats, &mut on_chunk).is_err() {
                break;
            }
            // Time spent by the caller (encoding) is not the file's stalling.
            self.watch.touch();
        }
        if let Some((_, mut r)) = resampler.take().filter(|_| !stats.stopped_early) {
            let _ = deliver(r.finish(), &mut stats, &mut on_chunk);
        }
        (stats.skipped_packets, stats.truncated) = (health.skipped, health.truncated);
        if let Some(promised) = self.info.header_duration_s.filter(|_| !stats.stopped_early) {
            let missing = promised - stats.duration_s();
            stats.missing_s = if missing >= MIN_GAP_S { missing } else { 0.0 };
        }
        if stats.output_samples == 0 && !stats.stopped_early {
            return Err(health.empty_stream_error(self.path.clone()));
        }
        Ok(stats)
    }

    /// Seconds of audio missing before `packet` (a hole the demuxer skipped over), judged from
    /// timestamps; updates `next_ts` to where the packet after this one should start.
    fn gap_before(&self, packet: &Packet, next_ts: &mut Option<i64>) -> f64 {
        let Some(seconds_per_tick) = self.seconds_per_tick else {
            return 0.0;
        };
        let start = packet.pts.get();
        let gap_ticks = next_ts.map_or(0, |expected| start - expected);
        // `dur` leaves out the samples trimmed for gapless playback; the packet spans them too.
        let span = packet.trim_start.get() + packet.dur.get() + packet.trim_end.get();
        *next_ts = Some(start.saturating_add(i64::try_from(span).unwrap_or(i64::MAX)));
        let gap_s = gap_ticks as f64 * seconds_per_tick;
        if gap_s >= MIN_GAP_S { gap_s } else { 0.0 }
    }

    /// The next packet of the chosen track; `None` at the end (or where a damaged file gives out).
    fn next_packet(&mut self, health: &mut PacketHealth) -> Result<Option<Packet>, AudioError> {
        loop {
            if let Some(stalled) = self.watch.error(&self.path) {
                return Err(stalled);
            }
            match self.reader.next_packet() {
                Ok(Some(packet)) if packet.track_id == self.track_id => return Ok(Some(packet)),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(SymphoniaError::ResetRequired) => {
                    // A chained stream (e.g. concatenated Ogg) starts a new track: new decoder.
                    let (decoder, track_id, _) = make_decoder(&self.path, self.reader.as_ref())?;
                    (self.decoder, self.track_id) = (decoder, track_id);
                }
                Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    health.truncated = true;
                    return Ok(None);
                }
                Err(SymphoniaError::IoError(source)) => {
                    return Err(self.watch.error(&self.path).unwrap_or(AudioError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
                Err(e) if health.bad_packet(&e) => return Ok(None),
                Err(_) => {}
            }
        }
    }

    /// Decodes one packet and down-mixes it into `mono`; returns its sample rate and the number of
    /// non-finite samples zeroed, or `None` when the packet was skipped (undecodable, or empty).
    fn decode_packet(
        &mut self,
        packet: &Packet,
        health: &mut PacketHealth,
        planes: &mut Vec<Vec<f32>>,
        mono: &mut Vec<f32>,
    ) -> Result<Option<(u32, Counted)>, AudioError> {
        let decoded = match self.decoder.decode(packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::Unsupported(detail)) => {
                return Err(AudioError::Unsupported {
                    path: self.path.clone(),
                    detail: detail.to_string(),
                });
            }
            Err(e) => {
                health.bad_packet(&e);
                return Ok(None);
            }
        };
        health.in_a_row = 0;
        self.watch.touch();
        let rate = decoded.spec().rate();
        if !SOURCE_RATE_RANGE.contains(&rate) {
            return Err(AudioError::SampleRate {
                path: self.path.clone(),
                rate,
            });
        }
        if decoded.frames() == 0 {
            return Ok(None);
        }
        decoded.copy_to_vecs_planar(planes);
        Ok(Some((rate, downmix(planes, decoded.frames(), mono))))
    }
}

/// Hands a resampled chunk to the caller; `Err` when the caller asked to stop.
fn deliver(
    chunk: &[f32],
    stats: &mut DecodeStats,
    on_chunk: &mut impl FnMut(&[f32], Option<f64>) -> ControlFlow<()>,
) -> Result<(), StoppedEarly> {
    if chunk.is_empty() {
        return Ok(());
    }
    stats.output_samples += chunk.len() as u64;
    if on_chunk(chunk, stats.first_audio_s).is_break() {
        stats.stopped_early = true;
        return Err(StoppedEarly);
    }
    Ok(())
}

/// Feeds `seconds` of silence at `rate` through the resampler (capped at [`MAX_GAP_FILL_S`]).
fn fill_silence(
    resampler: &mut StreamResampler,
    seconds: f64,
    rate: u32,
    stats: &mut DecodeStats,
    on_chunk: &mut impl FnMut(&[f32], Option<f64>) -> ControlFlow<()>,
) -> Result<(), StoppedEarly> {
    const SILENCE: [f32; 4096] = [0.0; 4096];
    let mut frames = (seconds.min(MAX_GAP_FILL_S) * f64::from(rate)).round() as usize;
    while frames > 0 {
        let n = frames.min(SILENCE.len());
        deliver(resampler.push(&SILENCE[..n]), stats, on_chunk)?;
        frames -= n;
    }
    Ok(())
}

/// The caller's callback asked to stop.
struct StoppedEarly;

/// Bookkeeping of packets that could not be read or decoded.
#[derive(Default)]
struct PacketHealth {
    skipped: u64,
    in_a_row: u32,
    truncated: bool,
    last_error: String,
}

impl PacketHealth {
    /// Counts a bad packet; true when so many came in a row that the rest is taken for garbage.
    fn bad_packet(&mut self, err: &SymphoniaError) -> bool {
        self.last_error = err.to_string();
        self.skipped += 1;
        self.in_a_row += 1;
        if self.in_a_row >= MAX_CONSECUTIVE_BAD_PACKETS {
            self.truncated = true;
        }
        self.truncated
    }

    fn empty_stream_error(self, path: PathBuf) -> AudioError {
        if self.skipped > 0 {
            let detail = format!(
                "none of {} packets could be decoded ({})",
                self.skipped, self.last_error
            );
            AudioError::Malformed { path, detail }
        } else if self.truncated {
            AudioError::Truncated {
                path,
                detail: "its first audio packet".into(),
            }
        } else {
            AudioError::NoSamples { path }
        }
    }
}

/// Chooses the default audio track and builds its decoder.
fn make_decoder(
    path: &Path,
    reader: &dyn FormatReader,
) -> Result<(Box<dyn AudioDecoder>, u32, SourceInfo), AudioError> {
    let no_track = || AudioError::NoAudioTrack {
        path: path.to_owned(),
    };
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(no_track)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(no_track)?;
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|_| AudioError::UnsupportedCodec {
            path: path.to_owned(),
            codec: codec_name(params.codec),
        })?;
    let sample_rate = params.sample_rate;
    let header_duration_s = match (track.num_frames, sample_rate) {
        (Some(frames), Some(rate)) if rate > 0 => Some(frames as f64 / f64::from(rate)),
        _ => None,
    };
    let info = SourceInfo {
        format: String::new(),
        codec: decoder.codec_info().short_name.to_string(),
        sample_rate,
        channels: params.channels.as_ref().map(|c| c.count()),
        bits_per_sample: params.bits_per_sample,
        header_duration_s,
    };
    Ok((decoder, track.id, info))
}

/// Names of codecs users meet that symphonia has no decoder for.
fn codec_name(id: AudioCodecId) -> String {
    use symphonia::core::codecs::audio::well_known::*;
    let known = [
        (CODEC_ID_OPUS, "Opus"),
        (CODEC_ID_SPEEX, "Speex"),
        (CODEC_ID_MUSEPACK, "Musepack"),
        (CODEC_ID_AC3, "AC-3"),
        (CODEC_ID_EAC3, "E-AC-3"),
        (CODEC_ID_DCA, "DTS"),
        (CODEC_ID_WMA, "WMA"),
        (CODEC_ID_WAVPACK, "WavPack"),
        (CODEC_ID_MONKEYS_AUDIO, "Monkey's Audio"),
        (CODEC_ID_TTA, "TTA"),
        (CODEC_ID_TRUEHD, "TrueHD"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == id)
        .map_or_else(|| format!("id {id}"), |(_, name)| name.to_string())
}

fn map_probe_error(path: &Path, err: SymphoniaError) -> AudioError {
    let path = path.to_owned();
    match err {
        SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            AudioError::Truncated {
                path,
                detail: "the end of its header".into(),
            }
        }
        SymphoniaError::IoError(source) => AudioError::Io { path, source },
        SymphoniaError::Unsupported(_) => AudioError::NotAudio { path },
        SymphoniaError::DecodeError(detail) => AudioError::Malformed {
            path,
            detail: detail.to_string(),
        },
        other => AudioError::Malformed {
            path,
            detail: other.to_string(),
        },
    }
}

/// What [`downmix`] counted in one decoded buffer.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counted {
    /// Samples that were not numbers, replaced by 0.
    non_finite: u64,
    /// See [`DecodeStats::levels`].
    levels: [u64; LEVEL_BINS],
    /// See [`DecodeStats::neighbour_products`] (within the buffer).
    neighbour_products: f64,
    power: f64,
}

/// Averages the channels of one decoded buffer into `mono`, counting the samples that are not
/// numbers (replaced by 0) and the spread of the rest.
fn downmix(planes: &[Vec<f32>], frames: usize, mono: &mut Vec<f32>) -> Counted {
    mono.clear();
    mono.resize(frames, 0.0);
    let mut counted = Counted::default();
    for plane in planes {
        let mut previous = 0.0f32;
        for (acc, &x) in mono.iter_mut().zip(&plane[..frames.min(plane.len())]) {
            if x.is_finite() {
                *acc += x;
                let bin = (x.abs() * LEVEL_BINS as f32) as usize;
                counted.levels[bin.min(LEVEL_BINS - 1)] += 1;
                counted.neighbour_products += f64::from(x * previous);
                counted.power += f64::from(x * x);
                previous = x;
            } else {
                counted.non_finite += 1;
            }
        }
    }
    if planes.len() > 1 {
        let scale = 1.0 / planes.len() as f32;
        mono.iter_mut().for_each(|x| *x *= scale);
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_and_counts_nan() {
        let planes = vec![vec![1.0, f32::NAN, 0.5], vec![0.0, 1.0, f32::INFINITY]];
        let mut mono = Vec::new();
        let counted = downmix(&planes, 3, &mut mono);
        assert_eq!(counted.non_finite, 2);
        assert_eq!(counted.levels, [1, 0, 1, 2]);
        assert_eq!(mono, vec![0.5, 0.5, 0.25]);
    }

    /// Random bytes spread evenly over the scale and are named; sound, however loud, is not.
    #[test]
    fn random_data_is_told_from_sound_by_its_spread() {
        let judged = |samples: &[f32]| {
            let mut mono = Vec::new();
            let counted = downmix(&[samples.to_vec()], samples.len(), &mut mono);
            let stats = DecodeStats {
                levels: counted.levels,
                neighbour_products: counted.neighbour_products,
                power: counted.power,
                ..DecodeStats::default()
            };
            (stats.looks_like_random_data(), stats.damage())
        };
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let random: Vec<f32> = (0..16_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 48) as u16 as i16 as f32 / 32_768.0
            })
            .collect();
        let (random_data, damage) = judged(&random);
        assert!(random_data);
        assert!(damage.is_some_and(|d| d.contains("junk in place of audio")));
        // A full-scale sine spends most of its time near its peaks; a clipped one at them.
        let sine: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin()).collect();
        assert!(!judged(&sine).0);
        let clipped: Vec<f32> = sine.iter().map(|x| (3.0 * x).clamp(-1.0, 1.0)).collect();
        assert!(!judged(&clipped).0);
        // A full-scale triangle spreads as evenly as random data, but changes smoothly.
        let triangle: Vec<f32> = (0..16_000)
            .map(|i| (i % 200) as f32 / 50.0 - 2.0)
            .map(|x| 1.0 - x.abs())
            .collect();
        assert!(!judged(&triangle).0);
        assert!(!judged(&random[..4_000]).0, "too short to judge");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = AudioSource::open(Path::new("/no/such/file.wav"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("/no/such/file.wav") && err.contains("cannot open"),
            "{err}"
        );
    }
}
