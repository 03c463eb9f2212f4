#!/usr/bin/env bash
# End-to-end suite: builds the release binary, then drives `trillim serve` with the official
# `openai` Python client and raw HTTP (tests/e2e/test_openai_client.py).
# Needs SmolLM2 (scripts/fetch-test-model.sh fetches it) and Python 3 with pip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python3 -m pip install --quiet --disable-pip-version-check "openai>=1.40" pytest prometheus_client >&2
if [ -z "${TRILLIM_TEST_MODEL:-}" ]; then
  TRILLIM_TEST_MODEL="$(bash scripts/fetch-test-model.sh)"
  export TRILLIM_TEST_MODEL
fi
cargo build --release -p trillim
export TRILLIM_BIN="$root/target/release/trillim"
exec python3 -m pytest -q tests/e2e "$@"
