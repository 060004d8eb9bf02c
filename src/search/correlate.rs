//! Where a query's samples lie in a stretch of a file's audio, to the sample: the whitened,
//! normalised cross-correlation of the two.
//!
//! Codes and projections summarise 0.96 s of spectrum; under loud noise they no longer tell
//! one passage from another. The samples themselves do: a query cut from a file is the file's
//! samples plus whatever was added, and correlation is the matched filter for added noise.
//! Whitening (dividing by the query's own spectrum, in part) keeps bass and loud noise bands
//! from dominating and sharpens the peak, which also keeps it under reverberation.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// How far the cross-spectrum is divided by the query's power spectrum: its power to this
/// exponent. 1 is the phase transform (every frequency counts the same), 0 plain correlation.
/// On 2 s queries cut from the music tracks (30-40 each, prototype in numpy), 0.8 placed the
/// query within 50 ms in 93% of reverberated queries at 0 dB, against 57% for plain correlation,
/// and kept unrelated audio lowest.
const WHITENING: f32 = 0.8;
/// The query's power spectrum is measured in Hann frames of this many samples, half overlapping.
const SPECTRUM_FRAME: usize = 512;
/// Spectrum bins below this share of the mean power are raised to it: whitening would turn the
/// near-empty bands above a codec's cut-off into loud noise.
const SPECTRUM_FLOOR: f32 = 1e-3;
/// Lags this close to the peak (samples, 5 ms at 16 kHz) belong to it, not to the background
/// its prominence is measured against: a room's early reflections spread the peak this wide.
const PEAK_HALF_WIDTH: usize = 80;
/// In a room the strongest path can be a reflection that arrives after the direct sound (up
/// to 87 ms after it in the impulse responses of `shared/data/rir`); the query starts where
/// the direct sound does. A reflection arriving `d` later repeats the file's audio from `d`
/// earlier, so it correlates at a lag `d` before the direct sound's: every path of a room
/// lies at or before the direct sound's lag, and the lags after it hold none. The direct sound
/// is looked for in the phase-transform correlation (see [`PHASE_TRANSFORM`]): the latest lag
/// up to this many samples (100 ms) after its strongest one near the whitened peak (see
/// [`PHASE_PEAK_REACH`]) that reaches [`DIRECT_SOUND_SHARE`] of it and stands
/// [`DIRECT_SOUND_PROMINENCE`] times above the other lags (their root mean square).
const DIRECT_SOUND_SEARCH: usize = 1_600;
/// ... On the calibration split (a numpy prototype of this module: 300 queries of 2 s cut
/// from the training-half tracks through the training rooms, each searched for in 0.5 s on
/// either side of its place), that placed 97.3% within 50 ms, against 77.7% by the whitened
/// correlation and the onsets as before; through a room and noise 10 dB below the music
/// 92.3% against 76.0%; 1 s queries through a room 91.7% against 79.3%. A share of 0.1-0.3
/// and 4-5 times the rest placed within a point of that; 7 times, 2 points fewer.
const DIRECT_SOUND_SHARE: f32 = 0.2;
const DIRECT_SOUND_PROMINENCE: f32 = 5.0;
/// The phase transform: the cross-spectrum of the query and the region divided, bin by bin,
/// by its own magnitude to this exponent (1 keeps the phase alone). The whitened correlation
/// divides by the query's smoothed spectrum, which keeps a room's colouring in the
/// cross-spectrum's fine structure and smears its paths over many lags; dividing each bin
/// by the cross-spectrum itself takes the colouring out, and the room's paths stand apart as
/// taps. In the prototype above, 0.6, 0.7, 0.8 and 0.9 placed 88.7%, 94.7%, 95.7% and 93.7%
/// of 2 s queries through a room within 50 ms.
const PHASE_TRANSFORM: f32 = 0.8;
/// The phase transform's strongest lag is looked for this close (samples, 200 ms) to the
/// whitened correlation's: unrelated audio has no room, and its phase transform peaks anywhere
/// (in the Rust search on the calibration split, a search of the whole region moved matches by
/// 0.3-0.4 s: one more ESC-50 clip was found, scored anew there by its codes, and a 5 s query
/// through a room left its place). In the prototype, searching from 10, 50 or 100 ms before
/// the whitened peak to 100-200 ms after it placed 93.0-97.0% of 2 s queries through a room,
/// 200 ms on either side 97.3%, anywhere 95.7%.
const PHASE_PEAK_REACH: usize = 3_200;
/// A room smears the samples but not when notes start: a room's match is also backed by how
/// well the query's onset envelope lines up with the region's (see [`Peak::onsets`]), from
/// this many samples (10 ms) before the strongest lag to [`DIRECT_SOUND_SEARCH`] after it.
const ONSETS_BEFORE: usize = 160;
/// A room's match is also backed by its blocks: the query is cut into blocks of this many
/// samples (0.5 s), and each block's own whitened correlation is searched within
/// [`PHASE_PEAK_REACH`] of where the whole query's peak puts it. The query's own audio shows
/// in every block, so its blocks peak together; a chance peak of unrelated audio comes from a
/// block or two, and the others peak anywhere (see [`Peak::agreement`]).
const AGREEMENT_BLOCK: usize = 8_000;
/// ... or shorter, down to half that, so that a query has this many blocks at least: a 1 s
/// query is cut into four quarter-seconds (a shorter query has no blocks to agree). With two
/// halves, 19 of the 1,800 negative queries of 1 s on the calibration split had both agree,
/// scoring up to 0.38 by their codes, so agreement found no 1 s query the room's onsets did
/// not; all four quarters of a negative never agreed, and 13 more of the 360 positives of 1 s
/// were then found at the right place (2 more at a wrong one), see `fingerprint`'s
/// `AGREED_SHARE`.
const AGREEMENT_BLOCKS: usize = 4;
/// ... a block agrees when it peaks this close (samples, 50 ms) to the whole query's peak: in
/// a room each block peaks on the path its own spectrum favours, and a room's paths lie up
/// to 87 ms apart (`shared/data/rir`). A block of unrelated audio agrees by chance about one
/// time in four. On the calibration split (`earshot eval fingerprint --calibrate`), with the
/// found thresholds the negatives set each time, 0.5 s blocks and 50 ms found 82.8% of the
/// positives at the right place; 0.25 s blocks, or a reach of 5 or 20 ms, 80.8-82.0%.
const AGREEMENT_REACH: usize = 800;
/// Onset envelopes: the spectrum's rise in Hann frames of this many samples (64 ms) every
/// [`ONSET_HOP`] (8 ms), in bands of [`ONSET_BAND_BINS`]. In a prototype placing matches by
/// their onsets (every bin, 4 ms hops) 32 ms frames placed 64.4%, 64 ms 69.0%, 128 ms 70.0%.
const ONSET_FRAME: usize = 1_024;
const ONSET_HOP: usize = 128;
/// ... and in bands of this many bins (125 Hz), their power summed before its log.
const ONSET_BAND_BINS: usize = 8;
/// Only a peak correlating less than this is a room's. On the calibration split (`earshot eval
/// fingerprint --calibrate`: training noises and rooms), 95% of reverberant queries correlated
/// with their file below 0.24 and 95% of the others above 0.39 (0.4-0.9 under noise as loud as
/// the music). In music that repeats a beat or a note, the later lags of a clean query
/// correlate by a share of its peak, so searching them for a direct sound would place it late.
const ROOM_CORRELATION: f32 = 0.3;
/// ... and only one correlating at least this much is placed, and lined up, as a room's: below
/// it nothing of the query's audio shows there (in the prototype of [`DIRECT_SOUND_SHARE`], 95%
/// of 1-2 s queries through a room correlated with their place above 0.09, and 95% with
/// another track's audio below 0.06), and a phase transform of unrelated audio peaks anywhere
/// (in the Rust search on the calibration split, it moved a 5 s query's match in another file,
/// which had correlated at 0.02, so that it was found).
pub(super) const ROOM_CORRELATION_FLOOR: f32 = 0.08;

/// A query ready to be looked for in library audio.
pub(super) struct WhitenedQuery {
    samples: Vec<f32>,
    /// The whitening weight per bin of a [`SPECTRUM_FRAME`]-sample frame: the floored power
    /// there to the power of minus half [`WHITENING`].
    frame_weights: Vec<f32>,
    /// Transforms of each size used so far (a query's regions come in a size or two); regions
    /// are compared on several threads at once.
    transforms: Mutex<Vec<Arc<Transforms>>>,
    /// The query's onset envelope less its mean, made when a room's match first needs it.
    onsets: OnceLock<Vec<f32>>,
}

thread_local! {
    /// Plans are kept by the planner: a search thread plans each size once, not once a query.
    static PLANNER: RefCell<RealFftPlanner<f32>> = RefCell::new(RealFftPlanner::new());
}

/// Transforms of one size, and the query's whitened spectrum at that size.
struct Transforms {
    n: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    weights: Vec<f32>,
    query: Vec<Complex<f32>>,
    query_energy: f64,
    /// The query's own spectrum, made when a room's match first needs it.
    plain_query: OnceLock<Vec<Complex<f32>>>,
}

impl Transforms {
    fn spectrum(&self, x: &[f32]) -> Vec<Complex<f32>> {
        let mut input = x.to_vec();
        input.resize(self.n, 0.0);
        let mut out = self.forward.make_output_vec();
        // Lengths come from the plan itself, the only way this can fail.
        let _ = self.forward.process(&mut input, &mut out);
        out
    }

    fn whitened_spectrum(&self, x: &[f32]) -> Vec<Complex<f32>> {
        let mut out = self.spectrum(x);
        out.iter_mut()
            .zip(&self.weights)
            .for_each(|(c, w)| *c *= *w);
        out
    }

    fn to_time(&self, mut spectrum: Vec<Complex<f32>>) -> Vec<f32> {
        // Real signals: the first and last bins are real (rounding aside).
        spectrum[0].im = 0.0;
        spectrum[self.n / 2].im = 0.0;
        let mut out = self.inverse.make_output_vec();
        let _ = self.inverse.process(&mut spectrum, &mut out);
        out.iter_mut().for_each(|x| *x /= self.n as f32);
        out
    }
}

/// Where the query agrees best with a region, and how well.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Peak {
    /// Samples from the region's start to the query's first sample: the strongest lag's, or
    /// for a room's match its direct sound's (see [`DIRECT_SOUND_SEARCH`]).
    pub lag: usize,
    /// Normalised correlation of the whitened signals at the strongest lag: 1 for the same
    /// samples, about 0.7 for the same samples under noise as loud as the music (0 dB), near 0
    /// for unrelated audio.
    pub correlation: f32,
    /// How far the peak stands out: its correlation over the root mean square of the
    /// correlation at the lags away from it. In a room the query's samples are smeared and
    /// their correlation falls to a few hundredths, but it still stands far above the lags
    /// around it; the best lag of unrelated audio barely does.
    pub prominence: f32,
    /// For a peak weak enough to be a room's: the normalised correlation of the query's onset
    /// envelope with the region's where they line up best (see [`ONSETS_BEFORE`]).
    pub onsets: Option<f32>,
    /// For a peak weak enough to be a room's: the share of the query's blocks that peak with
    /// it (see [`AGREEMENT_BLOCK`] and [`AGREEMENT_BLOCKS`]); `None` for a query shorter
    /// than 1 s.
    pub agreement: Option<f32>,
}

/// The strongest of a query's correlations with a region, and how far it stands above the
/// rest, before a room's match is placed (see [`WhitenedQuery::placed`]).
pub(super) struct LagCorrelations {
    peak: usize,
    /// The correlation at `peak` (see [`Peak::correlation`]).
    pub correlation: f32,
    /// The root mean square of the correlations away from the peak.
    background: f32,
}

impl LagCorrelations {
    /// How far the peak stands above the other lags (see [`Peak::prominence`]).
    pub fn prominence(&self) -> f32 {
        match self.background > 0.0 {
            true => self.correlation / self.background,
            false => 0.0,
        }
    }
}

impl WhitenedQuery {
    pub fn new(samples: &[f32]) -> Self {
        let power = floored(welch_power(samples));
        Self {
            samples: samples.to_vec(),
            frame_weights: power.iter().map(|p| p.powf(-WHITENING / 2.0)).collect(),
            transforms: Mutex::new(Vec::new()),
            onsets: OnceLock::new(),
        }
    }

    /// The query's length in samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The lag within `region` (from 0 to its length less the query's) at which the query
    /// agrees best with it; `None` if the region is shorter than the query. With
    /// `direct_sound`, a peak weak enough to be a room's is moved to the room's direct sound
    /// (see [`Self::placed`]).
    #[cfg(test)]
    pub fn best_lag(&self, region: &[f32], direct_sound: bool) -> Option<Peak> {
        let lags = self.correlations(region)?;
        Some(self.placed(region, &lags, direct_sound))
    }

    /// The strongest of the query's correlations with `region` at every lag from 0 to the
    /// region's length less the query's; `None` if the region is shorter than the query.
    pub fn correlations(&self, region: &[f32]) -> Option<LagCorrelations> {
        let m = self.samples.len();
        if m == 0 || region.len() < m {
            return None;
        }
        // Lags up to region.len() - m never wrap around: l + i < region.len() <= n.
        let n = region.len().next_power_of_two().max(2);
        let t = self.transforms_of_size(n);
        let r = t.whitened_spectrum(region);
        let cross = t.to_time(r.iter().zip(&t.query).map(|(a, b)| a * b.conj()).collect());
        let region_energy = window_energies(&t.to_time(r)[..region.len()], m);
        let correlations: Vec<f32> = (0..=region.len() - m)
            .map(|lag| {
                let norm = (t.query_energy * region_energy[lag]).sqrt();
                if norm > 0.0 {
                    (f64::from(cross[lag]) / norm) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let (peak, &correlation) = correlations
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        let background = background_rms(&correlations, peak);
        Some(LagCorrelations {
            peak,
            correlation,
            background,
        })
    }

    /// The best of `lags` (`region`'s correlations). With `direct_sound`, a peak weak enough
    /// to be a room's is moved to the room's direct sound (see [`DIRECT_SOUND_SEARCH`]) and its
    /// onsets are lined up: two more transforms of the region and an onset envelope, so callers
    /// comparing several regions ask for it on the best one only.
    pub fn placed(&self, region: &[f32], lags: &LagCorrelations, direct_sound: bool) -> Peak {
        let (peak, correlation) = (lags.peak, lags.correlation);
        let room = (ROOM_CORRELATION_FLOOR..ROOM_CORRELATION).contains(&correlation);
        let (lag, onsets, agreement) = match direct_sound && room {
            true => (
                self.direct_sound(region, peak),
                self.onsets_lined_up(region, peak),
                self.blocks_agreeing(region, peak),
            ),
            false => (peak, None, None),
        };
        Peak {
            lag,
            correlation,
            prominence: lags.prominence(),
            onsets,
            agreement,
        }
    }

    /// The share of the query's blocks that peak with the whole query, whose strongest lag in
    /// `region` is `peak` (see [`AGREEMENT_BLOCK`]); `None` for a query shorter than
    /// [`AGREEMENT_BLOCKS`] blocks of a quarter second.
    fn blocks_agreeing(&self, region: &[f32], peak: usize) -> Option<f32> {
        let block_len = agreement_block(self.samples.len())?;
        let blocks = self.samples.len() / block_len;
        // Each block is a few transforms of its own: on every core.
        let agreeing = (0..blocks)
            .into_par_iter()
            .filter(|b| {
                let start = b * block_len;
                let block = &self.samples[start..start + block_len];
                let expected = peak + start;
                let from = expected.saturating_sub(PHASE_PEAK_REACH);
                let to = (expected + PHASE_PEAK_REACH + block_len).min(region.len());
                let lags = WhitenedQuery::new(block).correlations(&region[from.min(to)..to]);
                lags.is_some_and(|l| l.peak.abs_diff(expected - from) <= AGREEMENT_REACH)
            })
            .count();
        Some(agreeing as f32 / blocks as f32)
    }

    /// The lag of a room's direct sound in `region`, whose whitened correlation peaks at
    /// `whitened_peak` (see [`DIRECT_SOUND_SEARCH`]).
    fn direct_sound(&self, region: &[f32], whitened_peak: usize) -> usize {
        let lags = self.phase_transform_correlations(region);
        let near = whitened_peak.saturating_sub(PHASE_PEAK_REACH)
            ..=(whitened_peak + PHASE_PEAK_REACH).min(lags.len().saturating_sub(1));
        let Some(peak) = near.max_by(|&a, &b| lags[a].total_cmp(&lags[b])) else {
            return whitened_peak;
        };
        let at_least = (DIRECT_SOUND_SHARE * lags[peak])
            .max(DIRECT_SOUND_PROMINENCE * background_rms(&lags, peak));
        let latest = (peak + DIRECT_SOUND_SEARCH).min(lags.len() - 1);
        (peak + 1..=latest)
            .rfind(|&l| lags[l] >= at_least)
            .unwrap_or(peak)
    }

    /// The query's correlation with `region` at every lag from 0 to the region's length less
    /// the query's, weighted by the phase transform (see [`PHASE_TRANSFORM`]); not normalised.
    fn phase_transform_correlations(&self, region: &[f32]) -> Vec<f32> {
        let n = region.len().next_power_of_two().max(2);
        let t = self.transforms_of_size(n);
        let query = t.plain_query.get_or_init(|| t.spectrum(&self.samples));
        let cross = (t.spectrum(region).iter().zip(query))
            .map(|(r, q)| {
                let c = r * q.conj();
                c / c.norm().max(f32::MIN_POSITIVE).powf(PHASE_TRANSFORM)
            })
            .collect();
        let mut lags = t.to_time(cross);
        lags.truncate((region.len() + 1).saturating_sub(self.samples.len()));
        lags
    }

    /// How well the onsets of a room's match whose strongest lag is `peak` line up (see
    /// [`ONSETS_BEFORE`]); `None` when the region holds no whole query there.
    fn onsets_lined_up(&self, region: &[f32], peak: usize) -> Option<f32> {
        let query = self.onsets.get_or_init(|| {
            let onsets = onset_envelope(&self.samples);
            let mean = onsets.iter().sum::<f32>() / onsets.len().max(1) as f32;
            onsets.iter().map(|o| o - mean).collect()
        });
        // Only the stretch the lags searched can reach: a region can be many times the query.
        let first = peak.saturating_sub(ONSETS_BEFORE) / ONSET_HOP;
        let last = (peak + DIRECT_SOUND_SEARCH) / ONSET_HOP;
        let from = first * ONSET_HOP;
        let to = (from + (last - first) * ONSET_HOP + self.samples.len()).min(region.len());
        let onsets = onset_envelope(&region[from.min(to)..to]);
        best_alignment(query, &onsets, 0, last - first).map(|(_, correlation)| correlation)
    }

    /// The transforms of size `n`, made the first time they are needed.
    fn transforms_of_size(&self, n: usize) -> Arc<Transforms> {
        // A thread that panicked holding the lock left the list whole: it only pushes.
        let mut made = self.transforms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = made.iter().find(|t| t.n == n) {
            return Arc::clone(t);
        }
        let t = Arc::new(self.transforms(n));
        made.push(Arc::clone(&t));
        t
    }

    /// What every region of `n`-point transforms shares: the plans, the whitening and the
    /// query's side.
    fn transforms(&self, n: usize) -> Transforms {
        let (forward, inverse) =
            PLANNER.with_borrow_mut(|p| (p.plan_fft_forward(n), p.plan_fft_inverse(n)));
        let mut t = Transforms {
            n,
            forward,
            inverse,
            weights: (0..=n / 2).map(|k| self.weight(k, n)).collect(),
            query: Vec::new(),
            query_energy: 0.0,
            plain_query: OnceLock::new(),
        };
        // Whitened, and cut back to its own length: the correlation of two m-sample windows,
        // so never above 1.
        let mut query = t.to_time(t.whitened_spectrum(&self.samples));
        query.truncate(self.samples.len());
        t.query_energy = query.iter().map(|&x| f64::from(x).powi(2)).sum();
        t.query = t.spectrum(&query);
        t
    }

    /// The whitening weight of bin `k` of an `n`-point spectrum (applied to both signals, so
    /// the cross-spectrum is divided by the query's power to the [`WHITENING`] exponent).
    fn weight(&self, k: usize, n: usize) -> f32 {
        let bin = (k * SPECTRUM_FRAME + n / 2) / n;
        self.frame_weights[bin.min(self.frame_weights.len() - 1)]
    }
}

/// Mean power per bin over half-overlapping Hann frames (one zero-padded frame for a short signal).
fn welch_power(samples: &[f32]) -> Vec<f32> {
    let hop = SPECTRUM_FRAME / 2;
    let frames = frame_count(samples.len(), SPECTRUM_FRAME, hop);
    let mut power = vec![0.0f32; SPECTRUM_FRAME / 2 + 1];
    for_each_spectrum(samples, SPECTRUM_FRAME, hop, |spectrum| {
        for (p, c) in power.iter_mut().zip(spectrum) {
            *p += c.norm_sqr() / frames as f32;
        }
    });
    power
}

/// How many frames of `frame` samples every `hop` [`for_each_spectrum`] cuts from `len` samples.
fn frame_count(len: usize, frame: usize, hop: usize) -> usize {
    len.saturating_sub(frame) / hop + 1
}

/// Hands `each` the spectrum of every Hann-windowed frame of `frame` samples of `x`, every
/// `hop` samples, in order (the last frames zero-padded; one frame for a short signal).
fn for_each_spectrum(x: &[f32], frame: usize, hop: usize, mut each: impl FnMut(&[Complex<f32>])) {
    let fft = PLANNER.with_borrow_mut(|p| p.plan_fft_forward(frame));
    let window = hann(frame);
    let mut spectrum = fft.make_output_vec();
    for f in 0..frame_count(x.len(), frame, hop) {
        let mut samples: Vec<f32> = x.iter().skip(f * hop).take(frame).copied().collect();
        samples.resize(frame, 0.0);
        samples.iter_mut().zip(&window).for_each(|(v, w)| *v *= w);
        let _ = fft.process(&mut samples, &mut spectrum);
        each(&spectrum);
    }
}

/// `power` with every bin raised to at least [`SPECTRUM_FLOOR`] of the mean (and above zero).
fn floored(mut power: Vec<f32>) -> Vec<f32> {
    let mean = power.iter().sum::<f32>() / power.len().max(1) as f32;
    let floor = (SPECTRUM_FLOOR * mean).max(f32::MIN_POSITIVE);
    power.iter_mut().for_each(|p| *p = p.max(floor));
    power
}

/// How much the spectrum rises from each [`ONSET_HOP`] to the next (log power, rises only,
/// summed over bins): large where a note starts. A room smears what follows an onset, not
/// when it comes.
fn onset_envelope(x: &[f32]) -> Vec<f32> {
    let mut previous: Option<Vec<f32>> = None;
    let mut onsets = Vec::with_capacity(frame_count(x.len(), ONSET_FRAME, ONSET_HOP));
    for_each_spectrum(x, ONSET_FRAME, ONSET_HOP, |spectrum| {
        let log_power: Vec<f32> = (spectrum.chunks(ONSET_BAND_BINS))
            .map(|band| (1e-6 + band.iter().map(|c| c.norm_sqr()).sum::<f32>()).ln())
            .collect();
        let rise = previous.as_ref().map_or(0.0, |p| {
            log_power
                .iter()
                .zip(p)
                .map(|(now, then)| (now - then).max(0.0))
                .sum()
        });
        onsets.push(rise);
        previous = Some(log_power);
    });
    onsets
}

/// The frame from `first` to `last` at which `query` (an onset envelope less its mean)
/// correlates best with `envelope`, and that normalised correlation; `None` when no such frame
/// fits the whole query.
fn best_alignment(
    query: &[f32],
    envelope: &[f32],
    first: usize,
    last: usize,
) -> Option<(usize, f32)> {
    let last = last.min(envelope.len().checked_sub(query.len())?);
    let query_norm = query.iter().map(|q| q * q).sum::<f32>().sqrt();
    let correlation = |at: usize| {
        let window = &envelope[at..at + query.len()];
        let mean = window.iter().sum::<f32>() / window.len().max(1) as f32;
        let (dot, energy) = (query.iter().zip(window)).fold((0.0f32, 0.0f32), |(d, e), (q, w)| {
            (d + q * (w - mean), e + (w - mean).powi(2))
        });
        match energy > 0.0 && query_norm > 0.0 {
            true => dot / (energy.sqrt() * query_norm),
            false => 0.0,
        }
    };
    (first..=last)
        .map(|at| (at, correlation(at)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The length of the blocks a query of `len` samples is cut into to count its agreement (see
/// [`AGREEMENT_BLOCKS`]); `None` for a query too short to have any.
fn agreement_block(len: usize) -> Option<usize> {
    let block = (len / AGREEMENT_BLOCKS).min(AGREEMENT_BLOCK);
    (block >= AGREEMENT_BLOCK / 2).then_some(block)
}

/// A Hann window of `n` samples.
fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / n as f32).cos())
        .collect()
}

/// The root mean square of `correlations` farther than [`PEAK_HALF_WIDTH`] from `peak` (0 when
/// there are none: a region hardly longer than the query shows no background).
fn background_rms(correlations: &[f32], peak: usize) -> f32 {
    let (sum, n) = correlations
        .iter()
        .enumerate()
        .filter(|(lag, _)| lag.abs_diff(peak) > PEAK_HALF_WIDTH)
        .fold((0.0f64, 0usize), |(s, n), (_, &c)| {
            (s + f64::from(c).powi(2), n + 1)
        });
    match n {
        0 => 0.0,
        n => (sum / n as f64).sqrt() as f32,
    }
}

/// Energy of every `m`-sample window of `x`, by its start.
fn window_energies(x: &[f32], m: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(x.len() + 1);
    prefix.push(0.0f64);
    for &v in x {
        prefix.push(prefix[prefix.len() - 1] + f64::from(v).powi(2));
    }
    (0..=x.len() - m)
        .map(|l| (prefix[l + m] - prefix[l]).max(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeededRng;

    /// A melody of random notes over a little noise, 16 kHz.
    fn music(seconds: f64, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        let n = (seconds * 16_000.0) as usize;
        let mut freq = 440.0;
        (0..n)
            .map(|i| {
                if i % 2400 == 0 {
                    freq = 100.0 + 1500.0 * rng.uniform();
                }
                let t = i as f64 / 16_000.0;
                (0.5 * (std::f64::consts::TAU * freq * t).sin() + 0.05 * rng.normal()) as f32
            })
            .collect()
    }

    /// Low rumbling noise: most of its power below 200 Hz, like an engine.
    fn rumble(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        let mut y = 0.0f32;
        (0..len)
            .map(|_| {
                y = 0.97 * y + rng.normal() as f32;
                y
            })
            .collect()
    }

    /// `clean` plus `noise` scaled to the same power (0 dB SNR).
    fn at_equal_power(clean: &[f32], noise: &[f32]) -> Vec<f32> {
        let power =
            |x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64;
        let gain = (power(clean) / power(noise)).sqrt() as f32;
        clean
            .iter()
            .zip(noise)
            .map(|(&c, &n)| c + gain * n)
            .collect()
    }

    /// `clean` heard through a room of impulse `response`.
    fn through_room(clean: &[f32], response: &[f32]) -> Vec<f32> {
        (0..clean.len())
            .map(|i| {
                (0..=i.min(response.len() - 1))
                    .map(|k| response[k] * clean[i - k])
                    .sum()
            })
            .collect()
    }

    /// A room's impulse response with a weak direct sound and a long diffuse tail: the samples
    /// of audio heard through it barely correlate with the audio's own.
    fn faint_room(seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        (0..6_000)
            .map(|i| match i {
                0 => 0.3,
                _ => (-(i as f32) / 2_000.0).exp() * rng.normal() as f32,
            })
            .collect()
    }

    #[test]
    fn a_query_under_noise_as_loud_as_it_is_found_at_its_sample() {
        let region = music(3.0, 1);
        let lag = 12_345;
        let clean = &region[lag..lag + 16_000];
        let query = at_equal_power(clean, &rumble(clean.len(), 2));
        let peak = WhitenedQuery::new(&query).best_lag(&region, true).unwrap();
        assert_eq!(peak.lag, lag);
        assert!(peak.correlation > 0.3, "{peak:?}");
    }

    #[test]
    fn the_same_samples_correlate_fully_and_unrelated_audio_barely() {
        let region = music(3.0, 3);
        let query = region[8_000..40_000].to_vec();
        let itself = WhitenedQuery::new(&query).best_lag(&region, true).unwrap();
        assert_eq!(itself.lag, 8_000);
        assert!(itself.correlation > 0.99, "{itself:?}");
        let other = WhitenedQuery::new(&query)
            .best_lag(&music(3.0, 4), true)
            .unwrap();
        assert!(other.correlation < 0.15, "{other:?}");
    }

    #[test]
    fn in_a_room_the_match_is_placed_at_the_direct_sound_and_stands_out() {
        let region = music(4.0, 7);
        let lag = 20_000;
        // A direct sound, a reflection twice as strong 50 ms (800 samples) later, and a tail.
        let mut response = vec![0.0f32; 4_000];
        response[0] = 0.5;
        response[800] = 1.0;
        let mut rng = SeededRng::new(8);
        for (i, r) in response.iter_mut().enumerate().skip(801) {
            *r += 0.3 * (-(i as f32) / 1_200.0).exp() * rng.normal() as f32;
        }
        let query = through_room(&region[lag..lag + 32_000], &response);
        let peak = WhitenedQuery::new(&query).best_lag(&region, true).unwrap();
        assert_eq!(peak.lag, lag, "{peak:?}");
        let other = WhitenedQuery::new(&query)
            .best_lag(&music(4.0, 9), true)
            .unwrap();
        assert!(
            peak.prominence > 2.0 * other.prominence,
            "{peak:?} {other:?}"
        );
    }

    #[test]
    fn a_faint_match_in_a_room_lines_up_its_onsets_and_starts_at_its_direct_sound() {
        let region = music(4.0, 11);
        let lag = 16_000;
        let query = through_room(&region[lag..lag + 32_000], &faint_room(12));
        let peak = WhitenedQuery::new(&query).best_lag(&region, true).unwrap();
        assert!(peak.correlation < ROOM_CORRELATION, "{peak:?}");
        assert!(peak.onsets.is_some_and(|o| o > 0.3), "{peak:?}");
        // ... and the phase transform finds its direct sound, within 5 ms (its first taps
        // are as strong as the direct sound).
        assert!(peak.lag.abs_diff(lag) <= 80, "{peak:?}");
        // A match the samples show plainly needs no onsets.
        let clean = WhitenedQuery::new(&region[lag..lag + 32_000])
            .best_lag(&region, true)
            .unwrap();
        assert_eq!(clean.onsets, None);
    }

    #[test]
    fn a_room_s_match_peaks_in_most_blocks_and_unrelated_audio_in_few() {
        let region = music(4.0, 11);
        let lag = 16_000;
        let query = WhitenedQuery::new(&through_room(&region[lag..lag + 32_000], &faint_room(12)));
        let own = query.correlations(&region).unwrap();
        let agreement = query.blocks_agreeing(&region, own.peak).unwrap();
        assert!(agreement >= 0.75, "{agreement}");
        // Unrelated music peaks somewhere too, but its blocks, one of four at most, elsewhere.
        let other = music(4.0, 13);
        let chance = query.correlations(&other).unwrap();
        let agreement = query.blocks_agreeing(&other, chance.peak).unwrap();
        assert!(agreement <= 0.25, "{agreement}");
        // A 1 s query is cut into four quarter-seconds, 2 s and longer into half-seconds ...
        let blocks = [15_999, 16_000, 24_000, 32_000, 80_000].map(agreement_block);
        assert_eq!(
            blocks,
            [None, Some(4_000), Some(6_000), Some(8_000), Some(8_000)]
        );
        // ... and a 1 s query's quarter-seconds peak with it alike.
        let second = through_room(&region[lag..lag + 16_000], &faint_room(14));
        let second = WhitenedQuery::new(&second);
        let own = second.correlations(&region).unwrap();
        let agreement = second.blocks_agreeing(&region, own.peak).unwrap();
        assert!(
            agreement >= 0.75 && (agreement * 4.0).fract() == 0.0,
            "{agreement}"
        );
        let chance = second.correlations(&other).unwrap();
        let agreement = second.blocks_agreeing(&other, chance.peak).unwrap();
        assert!(agreement <= 0.5, "{agreement}");
        // A query shorter than four quarter-seconds has no agreement to show.
        let short = WhitenedQuery::new(&region[lag..lag + AGREEMENT_BLOCK + 100]);
        assert_eq!(short.blocks_agreeing(&region, lag), None);
    }

    #[test]
    fn a_region_shorter_than_the_query_has_no_peak() {
        let query = WhitenedQuery::new(&music(1.0, 5));
        assert!(query.best_lag(&music(0.5, 6), true).is_none());
        assert!(
            WhitenedQuery::new(&[])
                .best_lag(&music(0.5, 6), true)
                .is_none()
        );
    }
}
