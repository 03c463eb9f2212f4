#!/usr/bin/env bash
# Benchmarks trillim on the models of BENCHMARKS.md and, when LLAMA_BENCH points at llama.cpp's
# llama-bench, llama.cpp on the same files in the same run.
#
#   scripts/bench.sh [OUT_DIR]      (default: bench-results/)
#
# Models: SmolLM2-135M-Instruct Q4_1 (scripts/fetch-test-model.sh), the same model requantized by
# llama.cpp to Q4_K_M and Q6_K (scripts/quant-models.sh), and synthetic models of
# BitNet b1.58 2B4T's shape in TQ2_0, TQ1_0 and I2_S (random weights, real tokenizer), written
# by scripts/make_gguf.py into ~/.cache/trillim/bench/, and that TQ2_0 file requantized to
# Q4_K_M. Environment: THREADS (default "1 2"),
# PROMPT (128), GEN (64), RUNS (3). On a CPU with more than AVX2 (AVX-512 or AVX-VNNI) each
# model also runs with TRILLIM_KERNELS=avx2 (engine "trillim-avx2"), so the AVX2 figures come
# from any x86 machine; every trillim line records the kernel path that ran ("kernels").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-bench-results}"
mkdir -p "$out"
threads="${THREADS:-1 2}"
prompt="${PROMPT:-128}"
gen="${GEN:-64}"
runs="${RUNS:-3}"

smollm="$(scripts/fetch-test-model.sh)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/bench"
mkdir -p "$cache"
make_model() { # name arch wtype
    local f="$cache/$1.gguf"
    if [ ! -s "$f" ]; then
        python3 -m pip install --quiet --disable-pip-version-check gguf numpy >&2
        python3 scripts/make_gguf.py --donor "$smollm" --arch "$2" --shape 2b4t --wtype "$3" \
            --embd-type q8_0 -o "$f.tmp" >&2
        mv "$f.tmp" "$f"
    fi
    echo "$f"
}
# The 2B4T shape requantized by llama.cpp's quantizer (its 2560- and 6912-wide rows are whole
# 256-blocks, so the K-quant kernels carry it, unlike SmolLM2's 576-wide rows).
requant() { # name source type
    local f="$cache/$1.gguf"
    if [ ! -s "$f" ]; then
        "$(scripts/quant-models.sh --tool)" quantize "$2" "$f.tmp" "$3" >&2
        mv "$f.tmp" "$f"
    fi
    echo "$f"
}
models=(
    "$smollm"
    "$(scripts/quant-models.sh Q4_K_M)"
    "$(scripts/quant-models.sh Q6_K)"
    "$(make_model bitnet-2b4t-tq2_0 bitnet tq2_0)"
    "$(requant bitnet-2b4t-Q4_K_M "$cache/bitnet-2b4t-tq2_0.gguf" Q4_K_M)"
    "$(make_model bitnet-2b4t-i2_s bitnet-b1.58 i2_s)"
    "$(make_model bitnet-2b4t-tq1_0 bitnet tq1_0)"
)

cargo build --release -p trillim >&2
results="$out/results.jsonl"
: > "$results"
# The AVX2 path as well where the CPU picks a wider one.
engines=(trillim)
if grep -qwE 'avx512f|avx_vnni' /proc/cpuinfo 2>/dev/null; then
    engines+=(trillim-avx2)
fi
for m in "${models[@]}"; do
    for t in $threads; do
        for e in "${engines[@]}"; do
            echo "== $e $(basename "$m") threads=$t" >&2
            kernels=()
            [ "$e" = trillim-avx2 ] && kernels=(env TRILLIM_KERNELS=avx2)
            line=$("${kernels[@]}" target/release/trillim bench "$m" --threads "$t" \
                --prompt-tokens "$prompt" --gen-tokens "$gen" --runs "$runs" --json)
            echo "{\"engine\":\"$e\",\"file\":\"$(basename "$m")\",${line:1}" >> "$results"
        done
        if [ -n "${LLAMA_BENCH:-}" ]; then
            # llama.cpp has no I2_S: it is bitnet.cpp's format.
            case "$m" in *i2_s*) continue ;; esac
            echo "== llama.cpp $(basename "$m") threads=$t" >&2
            # K-quants take llama.cpp's AMX repacking path on CPUs that advertise AMX, which
            # crashes where the OS does not grant it: run them on the plain layouts (--repack 0).
            extra=()
            case "$m" in *_K*) extra=(--repack 0) ;; esac
            "$LLAMA_BENCH" -m "$m" -t "$t" -p "$prompt" -n "$gen" -r "$runs" "${extra[@]}" -o jsonl 2>/dev/null \
                | python3 -c '
import json, sys
pp = tg = None
for line in sys.stdin:
    r = json.loads(line)
    if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0: pp = r["avg_ts"]
    if r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0: tg = r["avg_ts"]
print(json.dumps({"engine": "llama.cpp", "file": sys.argv[1], "threads": int(sys.argv[2]),
                  "prefill_tok_s": {"median": pp}, "decode_tok_s": {"median": tg}}))
' "$(basename "$m")" "$t" >> "$results"
        fi
    done
done
python3 scripts/plot_bench.py "$results" "$out/bench.svg"
echo "$results"
