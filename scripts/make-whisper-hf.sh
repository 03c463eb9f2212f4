#!/usr/bin/env bash
# Writes the cached CTranslate2 Whisper tiny.en (scripts/fetch-voice-models.sh) out in Hugging
# Face's openai/whisper-* layout, f32 as HF ships it (and f16 beside it), for the safetensors
# loader's tests; prints the f32 directory. No registry ships those weights.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$("$root/scripts/fetch-voice-models.sh")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trillim"
venv="$cache/ct2-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import numpy' 2>/dev/null ||
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy >&2
for dtype in f32 f16; do
  out="$cache/whisper-tiny.en-hf-$dtype"
  [ -s "$out/model.safetensors" ] ||
    "$venv/bin/python" "$root/scripts/whisper-ct2-to-hf.py" "$model" "$out" "$dtype" >&2
done
echo "$cache/whisper-tiny.en-hf-f32"
