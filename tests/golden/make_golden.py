#!/usr/bin/env python3
"""Writes librosa_reference.json: reference features for Earshot's golden-value tests.

    pip install librosa==0.11.0 && python3 tests/golden/make_golden.py

The test signal (tones, a chirp and deterministic noise) is stored with the results, so the Rust
tests compare against the very same f32 samples. Settings mirror src/features/mod.rs.
"""
import json
import pathlib

import librosa
import numpy as np

SR = 16_000
N = 8_000  # 0.5 s
LOG_MEL = dict(n_fft=512, win_length=400, hop_length=160, n_mels=64)
MFCC_COEFFS = 20
MULTI_WINDOWS = [1486, 4000, 8000]  # AudioNet's 4096, 11025, 22050 samples at 44.1 kHz
MULTI_HOP = 372  # AudioNet's 1024 at 44.1 kHz
MULTI_MELS = 128
MULTI_COEFFS = 40
AMIN = 1e-10
STFT_FRAMES = [0, 1, 10, 25, 50]


def signal():
    t = np.arange(N) / SR
    duration = N / SR
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    x += 0.25 * np.sin(2 * np.pi * 3000 * t + 0.3)
    x += 0.1 * np.sin(2 * np.pi * (100 * t + 0.5 * 7000 * t * t / duration))
    state, noise = 12345, np.empty(N)
    for i in range(N):
        state = (1103515245 * state + 12345) % 2**31
        noise[i] = state / 2**31 - 0.5
    return (x + 0.05 * noise).astype(np.float32)


def rounded(values, digits=7):
    """Nested lists of floats at `digits` significant digits (f32 precision), to keep the file small."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(np.asarray(values)).tolist()


def to_db(power):
    return librosa.power_to_db(power, ref=1.0, amin=AMIN, top_db=None)


def main():
    y = signal()
    stft_power = np.abs(librosa.stft(y, n_fft=512, win_length=400, hop_length=160, window="hann",
                                     center=True, pad_mode="constant")) ** 2
    mel_basis = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=0.0, fmax=SR / 2)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, center=True, pad_mode="constant", power=2.0, **LOG_MEL)
    log_mel = to_db(mel)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=MFCC_COEFFS, dct_type=2, norm="ortho")
    multi = []
    for win in MULTI_WINDOWS:
        n_fft = 1 << (win - 1).bit_length()
        mel_w = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=n_fft, win_length=win, hop_length=MULTI_HOP,
                                               n_mels=MULTI_MELS, center=True, pad_mode="constant", power=2.0)
        multi.append(librosa.feature.mfcc(S=to_db(mel_w), n_mfcc=MULTI_COEFFS, dct_type=2, norm="ortho"))

    # Frame-major lists (frames x dims), matching Earshot's FeatureMatrix layout.
    reference = {
        "librosa_version": librosa.__version__,
        "sample_rate": SR,
        "signal": rounded(y, 9),  # 9 digits round-trip an f32 exactly
        "stft_frames": STFT_FRAMES,
        "stft_power": rounded(stft_power[:, STFT_FRAMES].T),
        "mel_basis": rounded(mel_basis),
        "log_mel": rounded(log_mel.T),
        "mfcc": rounded(mfcc.T),
        "multi_window_mfcc": [rounded(m.T) for m in multi],
    }
    out = pathlib.Path(__file__).with_name("librosa_reference.json")
    out.write_text(json.dumps(reference, separators=(",", ":")))
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB), log-mel {log_mel.shape}, mfcc {mfcc.shape}, "
          f"multi-window {[m.shape for m in multi]}")


if __name__ == "__main__":
    main()
