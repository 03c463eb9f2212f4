#!/usr/bin/env bash
# End-to-end suite: builds the release binary, then drives `trillim serve` with the official
# `openai` Python client and raw HTTP (tests/e2e/), replicas behind a real nginx
# (tests/e2e/test_replicas.py) and the chat page in headless chromium
# (tests/e2e/test_chat_page.py).
# Needs SmolLM2 and Whisper tiny.en (scripts/fetch-test-model.sh and fetch-voice-models.sh
# fetch them) and Python 3 with pip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# playwright: only its driver is used; the chat-page test runs Debian's chromium.
python3 -m pip install --quiet --disable-pip-version-check "openai>=1.40" pytest jsonschema prometheus_client pyyaml playwright >&2
# The replica tests put a real nginx in front of several servers; the chat page is tested in
# a real headless browser.
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q "${need[@]}" || { apt-get update -q && apt-get install -y -q "${need[@]}"; }) >&2
fi
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
