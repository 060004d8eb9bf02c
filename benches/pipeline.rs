//! Decode + resample + log-mel throughput on one core.
//!
//! Throughput is counted in seconds of audio, so criterion's `elem/s` reads directly as
//! "x real time" (`2.5 Kelem/s` = 2500x real time).
//!
//!     cargo bench --bench pipeline
//!
//! The inputs are one minute of 44.1 kHz stereo: a 16-bit WAV written here, and an MP3 (128 kb/s)
//! and an Ogg Vorbis (q4) made from it with ffmpeg (skipped with a message when it is missing).

use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earshot::audio::AudioSource;
use earshot::features::{FrameFeature, LogMel, LogMelConfig};

const SECONDS: u32 = 60;
const RATE: u32 = 44_100;

fn write_source_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("write bench wav");
    // A chord with a slow sweep and noise, so the codecs have real work to do.
    let mut noise = 1u32;
    for i in 0..RATE * SECONDS {
        let t = f64::from(i) / f64::from(RATE);
        let sweep = (std::f64::consts::TAU * (200.0 * t + 20.0 * t * t)).sin();
        let chord =
            (std::f64::consts::TAU * 440.0 * t).sin() + (std::f64::consts::TAU * 660.0 * t).sin();
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = f64::from(noise >> 8) / f64::from(1u32 << 24) - 0.5;
        for ch in 0..2 {
            let x = 0.2 * chord + 0.2 * sweep + 0.05 * n + 0.01 * f64::from(ch);
            w.write_sample((x * 32767.0) as i16).expect("write sample");
        }
    }
    w.finalize().expect("finalize bench wav");
}

fn encode(wav: &Path, out: PathBuf, args: &[&str]) -> Option<PathBuf> {
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(wav)
        .args(args)
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping {}: ffmpeg is not available", out.display());
    }
    ok.then_some(out)
}

/// The indexing road up to the encoder: decode, down-mix, resample to 16 kHz, log-mel.
fn decode_and_log_mel(path: &Path) -> usize {
    let mut log_mel = LogMel::new(&LogMelConfig::default());
    let mut frames = 0;
    let source = AudioSource::open(path).expect("open bench file");
    source
        .stream(|chunk| {
            log_mel.push(chunk, &mut |f| frames += black_box(f).len());
            ControlFlow::Continue(())
        })
        .expect("decode bench file");
    log_mel.finish(&mut |f| frames += f.len());
    frames
}

fn decode_only(path: &Path) -> u64 {
    let source = AudioSource::open(path).expect("open bench file");
    source
        .stream(|chunk| {
            black_box(chunk);
            ControlFlow::Continue(())
        })
        .expect("decode")
        .output_samples
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("source.wav");
    write_source_wav(&wav);
    let mut inputs = vec![("wav_44k_stereo_16bit", wav.clone())];
    if let Some(mp3) = encode(&wav, dir.path().join("source.mp3"), &["-b:a", "128k"]) {
        inputs.push(("mp3_128k", mp3));
    }
    if let Some(ogg) = encode(
        &wav,
        dir.path().join("source.ogg"),
        &["-c:a", "libvorbis", "-q:a", "4"],
    ) {
        inputs.push(("ogg_vorbis_q4", ogg));
    }

    let mut group = c.benchmark_group("decode_resample_logmel");
    group.throughput(Throughput::Elements(u64::from(SECONDS)));
    group.sample_size(10);
    for (name, path) in &inputs {
        group.bench_function(*name, |b| b.iter(|| decode_and_log_mel(path)));
    }
    group.finish();

    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Elements(u64::from(SECONDS)));
    group.sample_size(10);
    group.bench_function("wav_decode_resample_only", |b| b.iter(|| decode_only(&wav)));
    let signal = earshot::audio::decode_file(&wav, earshot::audio::TARGET_SAMPLE_RATE)
        .expect("decode")
        .samples;
    group.bench_function("log_mel_only", |b| {
        b.iter(|| {
            LogMel::new(&LogMelConfig::default())
                .compute(black_box(&signal))
                .n_frames
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
