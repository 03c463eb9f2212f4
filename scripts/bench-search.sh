#!/usr/bin/env bash
# Search harness figures for BENCHMARKS.md: one search round's time against stand-in servers
# on 127.0.0.1 and the tokens of the search message, and main-text extraction quality on the
# saved pages in server/tests/fixtures/search-pages/ against trafilatura (installed into a
# virtual environment under ~/.cache/trillim/). Tokens are counted with SmolLM2's tokenizer.
#
#   scripts/bench-search.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-test-model.sh >/dev/null
venv="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/venv-search"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import trafilatura' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'trafilatura>=2,<3' lxml_html_clean
fi
cargo build --release -p trillim
target="${CARGO_TARGET_DIR:-target}"
model="${TRILLIM_TEST_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/trillim/SmolLM2-135M-Instruct.Q4_1.gguf}"
exec "$venv/bin/python" scripts/bench-search.py --binary "$target/release/trillim" --model "$model" "$@"
