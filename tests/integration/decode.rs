//! The decoder contract on every format, width, rate and channel count, and on broken files.

use std::ops::ControlFlow;
use std::path::Path;

use earshot::audio::{
    AudioError, AudioSource, Stretch, TARGET_SAMPLE_RATE, decode_excerpt, decode_excerpts,
    decode_file,
};
use earshot::features::{FrameFeature, LogMel, LogMelConfig};
use tempfile::TempDir;

use crate::support::*;

const RATE: u32 = TARGET_SAMPLE_RATE;

/// Decodes `path` and checks it is `seconds` long (within `slack_s`) and carries a `freq` tone.
fn assert_tone(path: &Path, seconds: f64, slack_s: f64, freq: f64) {
    let decoded = decode_file(path, RATE).unwrap_or_else(|e| panic!("{e}"));
    let duration = decoded.samples.len() as f64 / f64::from(RATE);
    assert!(
        (duration - seconds).abs() <= slack_s,
        "{}: {duration} s, expected {seconds}",
        path.display()
    );
    let body = middle(&decoded.samples, 2000);
    let hz = zero_crossing_hz(body, RATE);
    assert!(
        (hz - freq).abs() < 3.0,
        "{}: tone at {hz} Hz, expected {freq}",
        path.display()
    );
    assert!(
        (rms(body) - 0.5 / 2f64.sqrt()).abs() < 0.03,
        "{}: rms {}",
        path.display(),
        rms(body)
    );
    assert_eq!(decoded.stats.skipped_packets, 0);
}

#[test]
fn wav_and_aiff_decode_to_16k_mono() {
    let dir = TempDir::new().unwrap();
    let samples = tone(44_100, 2, 2.0, 440.0, 0.5);
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, 44_100, 2, Sample::Int(16), &samples);
    assert_tone(&wav, 2.0, 1.0 / f64::from(RATE), 440.0);
    let aiff = dir.path().join("tone.aiff");
    write_aiff(&aiff, 44_100, 2, &samples);
    assert_tone(&aiff, 2.0, 1.0 / f64::from(RATE), 440.0);
}

#[test]
fn compressed_formats_decode() {
    if !ffmpeg_available() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let wav = dir.path().join("source.wav");
    write_wav(
        &wav,
        44_100,
        2,
        Sample::Int(16),
        &tone(44_100, 2, 3.0, 440.0, 0.5),
    );
    // Lossy encoders add priming and padding; AAC in MP4 is not gapless in symphonia.
    let cases: [(&str, &[&str], f64); 5] = [
        ("tone.flac", &[], 0.001),
        ("tone.mp3", &["-b:a", "128k"], 0.06),
        ("tone.ogg", &["-c:a", "libvorbis", "-q:a", "4"], 0.06),
        ("tone.m4a", &["-c:a", "aac", "-b:a", "128k"], 0.1),
        ("tone.aac", &["-c:a", "aac", "-b:a", "128k"], 0.1),
    ];
    for (name, args, slack) in cases {
        let file = ffmpeg_encode(&wav, &dir.path().join(name), args);
        assert_tone(&file, 3.0, slack, 440.0);
    }
}

/// A signal whose every stretch differs from every other (a wandering tone plus a seeded
/// crackle), so that a misplaced excerpt shows.
fn wandering_signal(rate: u32, seconds: f64) -> Vec<f32> {
    let mut state = 7u32;
    let mut phase = 0.0f64;
    (0..(seconds * f64::from(rate)) as usize)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            phase += std::f64::consts::TAU * (300.0 + 200.0 * (0.7 * t).sin()) / f64::from(rate);
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let crackle = f64::from(state >> 8) / f64::from(1u32 << 24) - 0.5;
            (0.4 * phase.sin() + 0.2 * crackle) as f32
        })
        .collect()
}

#[test]
fn an_excerpt_is_the_same_stretch_of_the_whole_file_in_every_format() {
    let dir = TempDir::new().unwrap();
    let wav = dir.path().join("source.wav");
    write_wav(
        &wav,
        44_100,
        1,
        Sample::Int(16),
        &wandering_signal(44_100, 20.0),
    );
    let mut files = vec![wav.clone()];
    if ffmpeg_available() {
        let cases: [(&str, &[&str]); 3] = [
            ("wander.flac", &[]),
            ("wander.mp3", &["-b:a", "128k"]),
            ("wander.ogg", &["-c:a", "libvorbis", "-q:a", "4"]),
        ];
        for (name, args) in cases {
            files.push(ffmpeg_encode(&wav, &dir.path().join(name), args));
        }
    }
    // At Earshot's own rate, and at the rate a 48 kHz encoder (BirdNET) asks for.
    for (file, rate) in files.iter().flat_map(|f| [(f, RATE), (f, 48_000)]) {
        let whole = decode_file(file, rate).unwrap().samples;
        // Out of order through one opening of the file: back to its start after a later
        // stretch, and back from its end.
        let stretches = [(7.31, 2.0), (0.0, 1.0), (15.5, 10.0), (3.2, 1.5)];
        let together = decode_excerpts(
            file,
            &stretches.map(|(start_s, duration_s)| Stretch {
                start_s,
                duration_s,
            }),
            rate,
        )
        .unwrap();
        let alone = stretches
            .map(|(start_s, duration_s)| decode_excerpt(file, start_s, duration_s, rate).unwrap());
        let decoded = (stretches.iter().zip(alone)).chain(stretches.iter().zip(together));
        for (&(start_s, duration_s), excerpt) in decoded {
            let from = (start_s * f64::from(rate)).round() as usize;
            let to = (from + (duration_s * f64::from(rate)) as usize).min(whole.len());
            // At the file's end, resampling from a seek may round to one sample more.
            assert!(
                excerpt.len().abs_diff(to - from) <= 1,
                "{} at {start_s} s, {rate} Hz: {} samples, not {}",
                file.display(),
                excerpt.len(),
                to - from
            );
            let n = excerpt.len().min(to - from);
            // The same samples, not a resampling between them: a seek lands on a source
            // sample, and the decoder starts from one on the output grid.
            let expected = &whole[from..from + n];
            let peak = expected.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let worst = excerpt[..n]
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4 * peak,
                "{} at {start_s} s, {rate} Hz: samples differ by up to {worst} (peak {peak})",
                file.display()
            );
        }
    }
}

#[test]
fn every_sample_width_decodes_alike() {
    let dir = TempDir::new().unwrap();
    let samples = tone(22_050, 1, 1.0, 300.0, 0.5);
    let widths = [
        Sample::Int(8),
        Sample::Int(16),
        Sample::Int(24),
        Sample::Int(32),
        Sample::Float,
    ];
    let decoded: Vec<Vec<f32>> = widths
        .iter()
        .map(|&w| {
            let path = dir.path().join(format!("{w:?}.wav"));
            write_wav(&path, 22_050, 1, w, &samples);
            decode_file(&path, RATE)
                .unwrap_or_else(|e| panic!("{e}"))
                .samples
        })
        .collect();
    let reference = &decoded[4];
    for (width, d) in widths.iter().zip(&decoded) {
        assert_eq!(d.len(), reference.len(), "{width:?}");
        // 8-bit quantisation is 1/128; the others are far finer.
        let tolerance = if matches!(width, Sample::Int(8)) {
            0.02
        } else {
            1e-3
        };
        let worst = d
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < tolerance, "{width:?}: max difference {worst}");
    }
}

#[test]
fn any_rate_from_8_to_192_khz() {
    let dir = TempDir::new().unwrap();
    for rate in [
        8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000, 192_000,
    ] {
        let path = dir.path().join(format!("{rate}.wav"));
        write_wav(
            &path,
            rate,
            1,
            Sample::Int(16),
            &tone(rate, 1, 1.5, 1000.0, 0.5),
        );
        // 1.5 s is not a whole number of samples at every rate: one source sample of slack.
        assert_tone(
            &path,
            1.5,
            1.0 / f64::from(rate) + 1.0 / f64::from(RATE),
            1000.0,
        );
    }
}

#[test]
fn six_channels_are_averaged() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("surround.wav");
    // A tone in channel 0 only; after the down-mix it has a sixth of its amplitude.
    let samples: Vec<f32> = tone(48_000, 1, 1.0, 500.0, 0.6)
        .iter()
        .flat_map(|&x| [x, 0.0, 0.0, 0.0, 0.0, 0.0])
        .collect();
    write_wav(&path, 48_000, 6, Sample::Int(16), &samples);
    let decoded = decode_file(&path, RATE).unwrap();
    assert_eq!(decoded.stats.source_channels, 6);
    let level = rms(middle(&decoded.samples, 1000));
    assert!((level - 0.1 / 2f64.sqrt()).abs() < 0.002, "rms {level}");
}

#[test]
fn nan_samples_are_zeroed_and_counted() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nan.wav");
    let mut samples = tone(16_000, 1, 1.0, 440.0, 0.5);
    for i in (0..samples.len()).step_by(100) {
        samples[i] = f32::NAN;
    }
    samples[5] = f32::INFINITY;
    write_wav(&path, 16_000, 1, Sample::Float, &samples);
    let decoded = decode_file(&path, RATE).unwrap();
    assert_eq!(decoded.stats.non_finite_samples, 161);
    assert!(decoded.samples.iter().all(|x| x.is_finite()));
    assert_eq!(decoded.samples.len(), 16_000);
}

#[test]
fn a_one_sample_file_decodes_to_one_sample() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("one.wav");
    write_wav(&path, 44_100, 1, Sample::Int(16), &[0.25]);
    let decoded = decode_file(&path, RATE).unwrap();
    assert_eq!(decoded.samples.len(), 1);
    let features = LogMel::new(&LogMelConfig::default()).compute(&decoded.samples);
    assert_eq!(features.n_frames, 1);
}

fn expect_error(path: &Path) -> AudioError {
    let err = decode_file(path, RATE)
        .err()
        .unwrap_or_else(|| panic!("{} decoded", path.display()));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    err
}

#[test]
fn a_zero_byte_file_is_reported_empty() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("empty.wav");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(expect_error(&path), AudioError::Empty { .. }));
}

#[test]
fn a_text_file_named_wav_is_not_audio() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.wav");
    std::fs::write(
        &path,
        "These are my field notes, not a recording.\n".repeat(20),
    )
    .unwrap();
    let err = expect_error(&path);
    assert!(matches!(err, AudioError::NotAudio { .. }), "{err}");
}

#[test]
fn a_truncated_wav_header_is_reported() {
    let dir = TempDir::new().unwrap();
    let full = dir.path().join("full.wav");
    write_wav(
        &full,
        44_100,
        2,
        Sample::Int(16),
        &tone(44_100, 2, 0.5, 440.0, 0.5),
    );
    let path = dir.path().join("cut.wav");
    std::fs::write(&path, &std::fs::read(&full).unwrap()[..30]).unwrap();
    let err = expect_error(&path);
    assert!(
        matches!(
            err,
            AudioError::Truncated { .. } | AudioError::NotAudio { .. }
        ),
        "{err}"
    );
}

#[test]
fn a_wav_cut_mid_data_decodes_what_is_there() {
    let dir = TempDir::new().unwrap();
    let full = dir.path().join("full.wav");
    write_wav(
        &full,
        16_000,
        1,
        Sample::Int(16),
        &tone(16_000, 1, 2.0, 440.0, 0.5),
    );
    let path = dir.path().join("half.wav");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let decoded = decode_file(&path, RATE).unwrap();
    let seconds = decoded.samples.len() as f64 / f64::from(RATE);
    assert!((seconds - 1.0).abs() < 0.01, "{seconds} s");
    assert!(
        (decoded.stats.missing_s - 1.0).abs() < 0.01,
        "{:?}",
        decoded.stats
    );
}

/// A 4 s, 440 Hz, 44.1 kHz mono WAV to encode from.
fn four_second_tone(dir: &TempDir) -> std::path::PathBuf {
    let wav = dir.path().join("source.wav");
    write_wav(
        &wav,
        44_100,
        1,
        Sample::Int(16),
        &tone(44_100, 1, 4.0, 440.0, 0.5),
    );
    wav
}

#[test]
fn a_truncated_flac_decodes_its_first_part_or_fails_clearly() {
    if !ffmpeg_available() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let wav = four_second_tone(&dir);
    let flac = ffmpeg_encode(&wav, &dir.path().join("full.flac"), &[]);
    let bytes = std::fs::read(&flac).unwrap();
    let path = dir.path().join("cut.flac");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let decoded = decode_file(&path, RATE).unwrap_or_else(|e| panic!("{e}"));
    let seconds = decoded.samples.len() as f64 / f64::from(RATE);
    assert!(
        seconds > 1.0 && seconds < 3.0,
        "{seconds} s from half a 4 s file"
    );
    assert!((zero_crossing_hz(middle(&decoded.samples, 2000), RATE) - 440.0).abs() < 3.0);
    assert!(
        decoded.stats.truncated && decoded.stats.missing_s > 1.0,
        "{:?}",
        decoded.stats
    );

    // Only the header left: nothing to decode is an error that says so.
    let stub = dir.path().join("stub.flac");
    std::fs::write(&stub, &bytes[..50]).unwrap();
    let err = expect_error(&stub);
    assert!(matches!(err, AudioError::Truncated { .. }), "{err}");
}

/// Overwrites 2000 bytes in the middle of a file with garbage.
fn damage_middle(path: &Path, out: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle_byte = bytes.len() / 2;
    bytes[middle_byte..middle_byte + 2000].fill(0x5A);
    std::fs::write(out, &bytes).unwrap();
}

#[test]
fn damage_inside_a_valid_container_is_skipped_and_counted() {
    if !ffmpeg_available() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let wav = four_second_tone(&dir);

    // FLAC frames carry their position: the hole is found and filled, so time stays aligned.
    let flac = ffmpeg_encode(&wav, &dir.path().join("tone.flac"), &[]);
    let damaged = dir.path().join("damaged.flac");
    damage_middle(&flac, &damaged);
    let decoded = decode_file(&damaged, RATE).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        decoded.stats.gaps >= 1 && decoded.stats.gap_s > 0.0,
        "{:?}",
        decoded.stats
    );
    assert_eq!(
        decoded.samples.len(),
        4 * RATE as usize,
        "filled back to the full length"
    );

    // MP3 resynchronises without timestamps to tell: the loss is reported against the header.
    let mp3 = ffmpeg_encode(&wav, &dir.path().join("tone.mp3"), &["-b:a", "128k"]);
    let damaged = dir.path().join("damaged.mp3");
    damage_middle(&mp3, &damaged);
    let decoded = decode_file(&damaged, RATE).unwrap_or_else(|e| panic!("{e}"));
    let seconds = decoded.samples.len() as f64 / f64::from(RATE);
    assert!(seconds > 3.0, "only {seconds} s survived");
    assert!(
        decoded.stats.missing_s > 0.02 || decoded.stats.skipped_packets > 0,
        "{:?}",
        decoded.stats
    );
}

/// Two hours of 44.1 kHz stereo (1.27 GB of PCM), streamed through decode, resampling and log-mel
/// while this thread's heap stays small.
#[test]
fn a_two_hour_file_streams_in_bounded_memory() {
    const SECONDS: u64 = 2 * 3600;
    const MEMORY_BOUND: i64 = 32 << 20;
    let source = SyntheticWav::new(44_100, 2, SECONDS);
    let baseline = reset_peak();
    let audio =
        AudioSource::from_media_source(Path::new("two-hours.wav"), Box::new(source), Some("wav"))
            .unwrap();
    let mut log_mel = LogMel::new(&LogMelConfig::default());
    let mut frames = 0usize;
    let stats = audio
        .stream(|chunk| {
            log_mel.push(chunk, &mut |_| frames += 1);
            ControlFlow::Continue(())
        })
        .unwrap();
    log_mel.finish(&mut |_| frames += 1);
    let used = peak_bytes() - baseline;
    eprintln!(
        "two hours streamed with a peak of {:.1} MB of heap",
        used as f64 / 1e6
    );
    assert_eq!(stats.output_samples, SECONDS * u64::from(RATE));
    assert_eq!(frames, 1 + (SECONDS * u64::from(RATE) / 160) as usize);
    assert!(
        used < MEMORY_BOUND,
        "peak heap {} MB while streaming",
        used >> 20
    );
}

#[test]
fn the_callback_can_stop_decoding() {
    let source = SyntheticWav::new(16_000, 1, 600);
    let audio =
        AudioSource::from_media_source(Path::new("long.wav"), Box::new(source), Some("wav"))
            .unwrap();
    let mut seen = 0usize;
    let stats = audio
        .stream(|chunk| {
            seen += chunk.len();
            if seen > 16_000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert!(stats.stopped_early);
    assert!(seen < 16_000 * 10);
}

/// A source that gives its first `fast` bytes at once and then a byte every 50 ms, like a file
/// on a network share that has stopped answering.
struct Stalling {
    inner: SyntheticWav,
    fast: u64,
    served: u64,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.served >= self.fast {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let one = buf.len().min(1);
            let n = self.inner.read(&mut buf[..one])?;
            self.served += n as u64;
            return Ok(n);
        }
        let room = buf.len().min((self.fast - self.served) as usize);
        let n = self.inner.read(&mut buf[..room])?;
        self.served += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Stalling {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

impl symphonia::core::io::MediaSource for Stalling {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        self.inner.byte_len()
    }
}

#[test]
fn a_file_that_stops_giving_data_is_given_up_with_a_clear_error() {
    let source = Stalling {
        inner: SyntheticWav::new(16_000, 1, 60),
        fast: 44 + 32_000 * 2,
        served: 0,
    };
    let mut audio =
        AudioSource::from_media_source(Path::new("share/slow.wav"), Box::new(source), Some("wav"))
            .unwrap();
    audio.set_stall_limit(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    let err = audio
        .stream(|chunk| {
            seen += chunk.len();
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(err, AudioError::Stalled { .. }), "{err}");
    assert!(err.to_string().contains("share/slow.wav"), "{err}");
    assert!(seen > 0, "the audio before the stall was delivered");
    // Given up soon after the limit, not after the minute of audio a byte at a time.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
