#!/usr/bin/env bash
# Regenerates the text-to-speech fixtures and goldens: synthetic weights with the real tensor
# names and shapes (testdata/models/tts-tiny, numpy only), then the reference implementation,
# pocket-tts==4.0.1 on torch, run on those weights (testdata/golden/tts). Torch is large, so
# it lives in a virtual environment cached under ~/.cache/trillim/tts-venv, built on first
# use; CI never runs this (the goldens are committed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TRILLIM_TTS_VENV:-$HOME/.cache/trillim/tts-venv}"
if ! "$venv/bin/python" -c 'import torch, pocket_tts' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch "setuptools>=77" numpy \
    einops safetensors sentencepiece tokenizers scipy pyyaml pydantic huggingface-hub \
    typing-extensions requests typer
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps pocket-tts==4.0.1
fi
"$venv/bin/python" "$root/scripts/make-tts-fixtures.py" "$root/testdata/models/tts-tiny"
"$venv/bin/python" "$root/scripts/tts-goldens.py" "$root/testdata/models/tts-tiny" \
  "$root/testdata/golden/tts"
