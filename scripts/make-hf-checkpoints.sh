#!/usr/bin/env bash
# Builds the Hugging Face checkpoints of the `trillim quantize` tests
# (scripts/make-hf-checkpoints.py) after installing what the script needs: numpy, safetensors
# and gguf from PyPI.
#     scripts/make-hf-checkpoints.sh smollm2 MODEL.gguf OUT_DIR
#     scripts/make-hf-checkpoints.sh bitnet tiny-b158-i2_s.gguf OUT_DIR
#     scripts/make-hf-checkpoints.sh bitnet-2b4t DONOR.gguf OUT_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! python3 -c 'import numpy, safetensors, gguf' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check numpy safetensors gguf >&2
fi
exec python3 "$root/scripts/make-hf-checkpoints.py" "$@"
