#!/usr/bin/env bash
# Writes small seed inputs for the fuzz targets into fuzz/corpus/<target>/ (not committed):
# short files in each format (with the decode target's format-hint byte in front), a small index
# written by `earshot index`, and the shipped events config with a tiny safetensors file.
# Needs ffmpeg and python3; run from the repository root after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/decode" "$out/index_load" "$out/model_load"

ffmpeg -hide_banner -loglevel error -f lavfi -i "sine=frequency=440:duration=0.2" -ac 2 -ar 22050 "$tmp/t.wav"
# Hint bytes, as in fuzz_targets/decode.rs: 1 wav, 2 flac, 3 mp3, 4 ogg, 5 aiff, 6 m4a.
i=1
for ext in wav flac mp3 ogg aiff m4a; do
  [ "$ext" = wav ] || ffmpeg -hide_banner -loglevel error -i "$tmp/t.wav" "$tmp/t.$ext"
  { printf "\\x$(printf %02x $i)"; cat "$tmp/t.$ext"; } > "$out/decode/seed-$ext"
  i=$((i + 1))
done

mkdir -p "$tmp/lib"
ffmpeg -hide_banner -loglevel error -f lavfi -i "sine=frequency=300:duration=1.5" "$tmp/lib/a.wav"
target/release/earshot index --db "$tmp/db" "$tmp/lib" >/dev/null
cp "$tmp/db/index.earshot" "$out/index_load/seed-index"

python3 - "$out/model_load" <<'PY'
import json, struct, sys, pathlib
out = pathlib.Path(sys.argv[1])
header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
weights = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 0.5, -0.5)
for cfg in pathlib.Path("models").glob("*/config.json"):
    (out / f"seed-{cfg.parent.name}").write_bytes(cfg.read_bytes() + b"\0" + weights)
PY
echo "seeds: $(ls "$out"/* | wc -l) files in $out"
