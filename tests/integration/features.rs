//! Golden values from librosa (`tests/golden/make_golden.py` writes `librosa_reference.json`).
//!
//! Tolerances, stated once:
//! - mel filterbank weights: 1e-6 absolute (the file keeps 7 significant digits);
//! - STFT power: 1e-4 of the frame's largest bin (f32 FFT against librosa's f64-accumulated one);
//! - log-mel: 0.01 dB;
//! - MFCC and multi-window MFCC: 0.01 absolute on coefficients that reach hundreds.

use earshot::features::mel::MelFilterbank;
use earshot::features::stft::{StftConfig, StftStream};
use earshot::features::{
    FrameFeature, LogMel, LogMelConfig, MFCC_COEFFS, MULTI_WINDOW_HOP, MULTI_WINDOW_LENGTHS, Mfcc,
    MultiWindowMfcc,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sample_rate: u32,
    signal: Vec<f32>,
    stft_frames: Vec<usize>,
    stft_power: Vec<Vec<f32>>,
    mel_basis: Vec<Vec<f32>>,
    log_mel: Vec<Vec<f32>>,
    mfcc: Vec<Vec<f32>>,
    multi_window_mfcc: Vec<Vec<Vec<f32>>>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/librosa_reference.json"
    );
    let text = std::fs::read_to_string(path).expect("golden file is committed");
    serde_json::from_str(&text).expect("golden file parses")
}

/// Largest absolute difference between two frame-major matrices of the same shape.
fn max_difference(ours: impl Iterator<Item = Vec<f32>>, theirs: &[Vec<f32>]) -> f32 {
    let ours: Vec<Vec<f32>> = ours.collect();
    assert_eq!(ours.len(), theirs.len(), "frame count");
    ours.iter()
        .zip(theirs)
        .flat_map(|(a, b)| {
            assert_eq!(a.len(), b.len(), "frame length");
            a.iter().zip(b).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn mel_filterbank_matches_librosa() {
    let r = reference();
    let ours =
        MelFilterbank::new(r.sample_rate, 512, 64, 0.0, f64::from(r.sample_rate) / 2.0).dense();
    let worst = max_difference(ours.into_iter(), &r.mel_basis);
    eprintln!("mel weights: max difference {worst}");
    assert!(worst < 1e-6, "mel weights differ by {worst}");
}

#[test]
fn stft_power_matches_librosa() {
    let r = reference();
    let mut stft = StftStream::new(StftConfig {
        n_fft: 512,
        win_length: 400,
        hop_length: 160,
    });
    let mut frames = Vec::new();
    let mut keep = |f: &[f32]| frames.push(f.to_vec());
    stft.push(&r.signal, &mut keep);
    stft.finish(&mut keep);
    for (&t, theirs) in r.stft_frames.iter().zip(&r.stft_power) {
        let peak = theirs.iter().cloned().fold(0.0, f32::max);
        let worst = frames[t]
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!(
            "stft frame {t}: max difference {:.2e} of peak",
            worst / peak
        );
        assert!(
            worst <= 1e-4 * peak,
            "frame {t}: differs by {worst} (peak {peak})"
        );
    }
}

#[test]
fn log_mel_matches_librosa() {
    let r = reference();
    let ours = LogMel::new(&LogMelConfig::default()).compute(&r.signal);
    let worst = max_difference(ours.frames().map(<[f32]>::to_vec), &r.log_mel);
    eprintln!("log-mel: max difference {worst} dB");
    assert!(worst < 0.01, "log-mel differs by {worst} dB");
}

#[test]
fn mfcc_matches_librosa() {
    let r = reference();
    let ours = Mfcc::new(&LogMelConfig::default(), MFCC_COEFFS).compute(&r.signal);
    let worst = max_difference(ours.frames().map(<[f32]>::to_vec), &r.mfcc);
    eprintln!("MFCC: max difference {worst}");
    assert!(worst < 0.01, "MFCC differs by {worst}");
}

#[test]
fn multi_window_mfcc_matches_librosa() {
    let r = reference();
    let channels = MultiWindowMfcc::default().compute(&r.signal);
    assert_eq!(channels.len(), MULTI_WINDOW_LENGTHS.len());
    for ((ours, theirs), window) in channels
        .iter()
        .zip(&r.multi_window_mfcc)
        .zip(MULTI_WINDOW_LENGTHS)
    {
        assert_eq!(ours.n_frames, 1 + r.signal.len() / MULTI_WINDOW_HOP);
        let worst = max_difference(ours.frames().map(<[f32]>::to_vec), theirs);
        eprintln!("multi-window {window}: max difference {worst}");
        assert!(worst < 0.01, "window {window}: MFCC differs by {worst}");
    }
}
