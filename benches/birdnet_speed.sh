#!/usr/bin/env bash
# BirdNET embedding speed: TFLite (XNNPACK) vs the candle port, 1 and 2 threads, same windows,
# best of ROUNDS batches of WINDOWS windows. Run from the repository root:
#   benches/birdnet_speed.sh MODEL.tflite [PYTHON] [WINDOWS] [ROUNDS]
# PYTHON must have ai-edge-litert and numpy.
set -euo pipefail
model=${1:?usage: birdnet_speed.sh MODEL.tflite [PYTHON] [WINDOWS] [ROUNDS]}
python=${2:-python3}
windows=${3:-16}
rounds=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
bench=$(cargo bench --bench birdnet --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and "birdnet" in m["target"]["name"]][-1])')
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $windows windows x best of $rounds"
for threads in 1 2; do
  "$python" "$here/birdnet_tflite.py" "$model" "$threads" "$windows" "$rounds" 2>/dev/null
  RAYON_NUM_THREADS=$threads "$bench" "$model" "$windows" "$rounds"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
