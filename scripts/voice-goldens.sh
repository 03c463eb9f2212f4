#!/usr/bin/env bash
# Regenerates tests/fixtures/voice/goldens.json (and goldens-multilingual.json) with the
# independent oracle: ctranslate2==4.8.5 on the same Whisper tiny.en weights (and on them in the
# multilingual vocabulary layout), with openai-whisper's mel filterbank (read from its sdist, no
# dependencies installed) for the features.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$("$root/scripts/fetch-voice-models.sh")"
multilingual="$("$root/scripts/make-whisper-multilingual.sh")"
# Its own venv, so the system Python stays as it is.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/ct2-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ctranslate2==4.8.5 numpy >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
  openai-whisper==20250625 -d "$tmp" >&2
tar xzf "$tmp"/openai_whisper-20250625.tar.gz -C "$tmp"
"$venv/bin/python" "$root/scripts/voice-goldens.py" "$model" \
  "$tmp/openai_whisper-20250625/whisper/assets/mel_filters.npz" "$root/tests/fixtures/voice" \
  "$multilingual"
