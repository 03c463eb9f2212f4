#!/usr/bin/env bash
# Builds the LoRA adapter fixtures (scripts/make-lora-fixtures.py) after installing what the
# script needs: numpy, safetensors and gguf from PyPI.
#     scripts/make-lora-fixtures.sh MODEL.gguf OUT_DIR [--bench]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! python3 -c 'import numpy, safetensors, gguf' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check numpy safetensors gguf >&2
fi
exec python3 "$root/scripts/make-lora-fixtures.py" "$@"
