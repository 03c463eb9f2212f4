#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS (default 30) and fails on any crash.
#
#   scripts/fuzz.sh [SECONDS]
#
# The committed seeds in fuzz/corpus/<target>/ are read but never written: new inputs go to a
# scratch corpus, so the repository stays small. Crashes are saved under
# fuzz/artifacts/<target>/ by libFuzzer; turn each into a regression test.
set -euo pipefail

secs="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in $targets; do
    mkdir -p "$scratch/$t" "corpus/$t"
    log="$scratch/$t.log"
    echo "== $t (${secs}s)"
    if cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        tail -n 40 "$log"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    summary+=("$(printf '%-24s %-7s %12s executions' "$t" "$status" "${runs:-?}")")
done

echo
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
