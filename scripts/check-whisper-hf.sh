#!/usr/bin/env bash
# Checks scripts/make-whisper-hf.sh's output with transformers itself: a strict load into
# WhisperForConditionalGeneration and ctranslate2's greedy tokens on every clip. Uses the
# torch of the pocket-tts reference venv (scripts/tts-goldens.sh) and transformers 5.25.0
# installed beside it without touching that venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trillim"
dir="$("$root/scripts/make-whisper-hf.sh")"
py="$cache/tts-venv/bin/python"
[ -x "$py" ] || { echo "needs $py (torch): run scripts/tts-goldens.sh first" >&2; exit 1; }
tf="$cache/transformers-5.25.0"
[ -d "$tf/transformers" ] || "$py" -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$tf" transformers==5.25.0 regex >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
  openai-whisper==20250625 -d "$tmp" >&2
tar xzf "$tmp"/openai_whisper-20250625.tar.gz -C "$tmp"
PYTHONPATH="$tf" "$py" "$root/scripts/check-whisper-hf.py" "$dir" \
  "$tmp/openai_whisper-20250625/whisper/assets/mel_filters.npz" "$root/tests/fixtures/voice"
