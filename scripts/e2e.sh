#!/usr/bin/env bash
# End-to-end suite: builds the release binary, then drives `trillim serve` with the official
# `openai` Python client and raw HTTP (tests/e2e/).
# Needs SmolLM2 and Whisper tiny.en (scripts/fetch-test-model.sh and fetch-voice-models.sh
# fetch them) and Python 3 with pip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python3 -m pip install --quiet --disable-pip-version-check "openai>=1.40" pytest prometheus_client >&2
if [ -z "${TRILLIM_TEST_MODEL:-}" ]; then
  TRILLIM_TEST_MODEL="$(bash scripts/fetch-test-model.sh)"
  export TRILLIM_TEST_MODEL
fi
if [ -z "${TRILLIM_WHISPER_DIR:-}" ]; then
  TRILLIM_WHISPER_DIR="$(bash scripts/fetch-voice-models.sh)"
  export TRILLIM_WHISPER_DIR
fi
cargo build --release -p trillim
export TRILLIM_BIN="$root/target/release/trillim"
exec python3 -m pytest -q tests/e2e "$@"
