#!/usr/bin/env python3
"""TFLite (ai-edge-litert, default XNNPACK delegate) BirdNET speed: one line like
`cargo bench --bench birdnet` (pip install ai-edge-litert numpy). Usage: tflite_speed.py MODEL.tflite THREADS [WINDOWS] [ROUNDS]"""

import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

WINDOW = 144_000
WINDOW_SECONDS = 3.0


def main():
    model, threads = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    it = Interpreter(model_path=model, num_threads=threads)
    index = it.get_input_details()[0]["index"]
    it.resize_tensor_input(index, [count, WINDOW])
    it.allocate_tensors()
    t = np.arange(WINDOW, dtype=np.float32) / 48_000
    windows = np.stack([np.sin(t * (500 + 300 * w) * (1 + t)) * 0.3 for w in range(count)]).astype(np.float32)
    it.set_tensor(index, windows)
    it.invoke()  # warm-up (XNNPACK packs the weights)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        it.set_tensor(index, windows)
        it.invoke()
        best = min(best, time.perf_counter() - start)
    per_window = best / count
    print(f"tflite  threads {threads}  {1 / per_window:.1f} windows/s  {per_window * 1e3:.1f} ms/window  {WINDOW_SECONDS / per_window:.0f}x real time")


if __name__ == "__main__":
    main()
