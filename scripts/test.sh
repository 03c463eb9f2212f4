#!/usr/bin/env bash
# trillim's test suite: lint, the dependency policy, every Rust test (golden outputs, kernels,
# tokenizer, server, firmware), the end-to-end suite through the official openai client, the
# aarch64 kernel tests under emulation, and a short fuzzing pass over every parser.
#
# Environment: TRILLIM_FUZZ_SECONDS (default 30) per fuzz target; 0 skips fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "test model (SmolLM2-135M-Instruct Q4_1)"
scripts/fetch-test-model.sh

step "speech model (Whisper tiny.en, CTranslate2 format)"
scripts/fetch-voice-models.sh
scripts/make-whisper-hf.sh >/dev/null
scripts/make-whisper-multilingual.sh >/dev/null

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

step "dependency policy (deny.toml: licenses, duplicate versions, sources)"
# Offline: checks the locked dependency tree only; advisories would need the network database.
# The first run installs cargo-deny from crates.io, which compiles for a few minutes on two
# cores (later runs reuse the installed binary).
if ! command -v cargo-deny >/dev/null 2>&1; then
    cargo install --locked cargo-deny
fi
# The check reads the metadata of every platform's dependencies: fetch them all first.
cargo fetch --locked
cargo deny --offline check licenses bans sources

step "Rust tests"
# --no-fail-fast: one run reports every failing test binary, not only the first.
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$logs/cargo.log"

step "end-to-end tests with the official openai client"
scripts/e2e.sh 2>&1 | tee "$logs/e2e.log"

step "aarch64 kernels under qemu (Cortex-A72 and Cortex-A76)"
if [ "$(id -u)" = 0 ] || command -v qemu-aarch64 >/dev/null 2>&1; then
    scripts/test-aarch64-kernels.sh
else
    echo "skipped: needs root to install the Debian cross toolchain and qemu-user"
fi

fuzz_seconds="${TRILLIM_FUZZ_SECONDS:-30}"
if [ -x scripts/fuzz.sh ] && [ "$fuzz_seconds" != 0 ]; then
    step "fuzzing, ${fuzz_seconds}s per target"
    scripts/fuzz.sh "$fuzz_seconds"
fi

rust=$(grep -E '^test result: ok\.' "$logs/cargo.log" | awk '{n += $4} END {print n + 0}')
e2e=$(grep -Eo '[0-9]+ passed' "$logs/e2e.log" | tail -1 | awk '{print $1 + 0}')
step "all tests passed"
echo "tests: $((rust + e2e)) passed, 0 failed"
