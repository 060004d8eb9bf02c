//! A demo library the app synthesises on first run, so a new user sees a search work without
//! downloading anything: a few dozen labelled sounds (chirps, tones, noise bursts, clicks...),
//! each class with its own recipe and every file a seeded variation of it.

use std::f32::consts::TAU;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::SeededRng;

/// Sample rate of the demo files (the engine's rate, so nothing is resampled).
pub const DEMO_SAMPLE_RATE: u32 = 16_000;
/// Files per class.
pub const FILES_PER_CLASS: usize = 6;
/// The classes, in the order they are generated; each is a folder (and so a label).
pub const DEMO_CLASSES: [&str; 8] = [
    "chirp-up",
    "chirp-down",
    "low-tone",
    "high-tone",
    "noise-burst",
    "clicks",
    "warble",
    "hum",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot write the demo library at {path}: {source}")]
pub struct DemoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes the demo library under `dir` (one folder per class) and returns the files written.
/// Existing files are overwritten with the same content: the library is the same on every run.
pub fn write_demo_library(dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
    let mut written = Vec::new();
    let mut rng = SeededRng::new(0xDE30);
    for class in DEMO_CLASSES {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).map_err(|source| DemoError {
            path: folder.clone(),
            source,
        })?;
        for i in 0..FILES_PER_CLASS {
            let path = folder.join(format!("{class}-{i}.wav"));
            let samples = synthesise(class, &mut rng);
            write_wav(&path, &samples).map_err(|source| DemoError {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}

/// One sound of `class`: 1.5-3 s, with seeded pitch, timing and level, over faint noise.
pub fn synthesise(class: &str, rng: &mut SeededRng) -> Vec<f32> {
    let rate = DEMO_SAMPLE_RATE as f32;
    let seconds = 1.5 + 1.5 * rng.uniform() as f32;
    let n = (seconds * rate) as usize;
    let jitter = 0.85 + 0.3 * rng.uniform() as f32;
    let gain = 0.3 + 0.3 * rng.uniform() as f32;
    let mut phase = 0.0f32;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f32 / rate;
        let x = t / seconds; // 0..1 through the sound
        let tone = |phase: &mut f32, hz: f32| {
            *phase = (*phase + TAU * hz / rate) % TAU;
            phase.sin()
        };
        let noise = rng.normal() as f32;
        let value = match class {
            "chirp-up" => tone(&mut phase, jitter * (400.0 + 3600.0 * x)),
            "chirp-down" => tone(&mut phase, jitter * (4000.0 - 3600.0 * x)),
            "low-tone" => tone(&mut phase, jitter * 220.0) * envelope(x),
            "high-tone" => tone(&mut phase, jitter * 2500.0) * envelope(x),
            "noise-burst" => noise * 0.5 * burst(t * jitter, 0.4),
            "clicks" => click_train(t, 0.12 * jitter) * noise.signum(),
            "warble" => tone(
                &mut phase,
                jitter * (1200.0 + 400.0 * (TAU * 6.0 * t).sin()),
            ),
            _ => {
                // hum: a 100 Hz fundamental with its harmonics
                let base = tone(&mut phase, jitter * 100.0);
                base + 0.5 * (3.0 * phase).sin() + 0.25 * (5.0 * phase).sin()
            }
        };
        out.push(gain * value + 0.003 * noise);
    }
    out
}

/// Fades in and out over the first and last 10%.
fn envelope(x: f32) -> f32 {
    (x / 0.1).min((1.0 - x) / 0.1).clamp(0.0, 1.0)
}

/// On for the first `duty` of every 0.5 s.
fn burst(t: f32, duty: f32) -> f32 {
    if (t % 0.5) / 0.5 < duty { 1.0 } else { 0.0 }
}

/// A short decaying impulse every `period` seconds.
fn click_train(t: f32, period: f32) -> f32 {
    let since = t % period;
    (-since * 400.0).exp()
}

/// 16-bit PCM mono WAV (written whole, then renamed, so a half-written file never appears).
pub fn write_wav(path: &Path, samples: &[f32]) -> std::io::Result<()> {
    let data_bytes = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&DEMO_SAMPLE_RATE.to_le_bytes());
    bytes.extend_from_slice(&(DEMO_SAMPLE_RATE * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_bytes.to_le_bytes());
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let tmp = path.with_extension("wav.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_distinct_audible_and_within_range() {
        let mut rng = SeededRng::new(7);
        for class in DEMO_CLASSES {
            let s = synthesise(class, &mut rng);
            let secs = s.len() as f32 / DEMO_SAMPLE_RATE as f32;
            assert!((1.5..=3.0).contains(&secs), "{class}: {secs} s");
            let rms = (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt();
            assert!(rms > 0.02, "{class} is too quiet: {rms}");
            assert!(s.iter().all(|x| x.is_finite()));
        }
    }
}
