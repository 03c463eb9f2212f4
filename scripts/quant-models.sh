#!/usr/bin/env bash
# Requantizes the real SmolLM2-135M-Instruct model (scripts/fetch-test-model.sh) into the
# llama.cpp weight formats the quantized-model tests run, with llama.cpp's own quantizer, and
# prints each file's path. Files are cached under ~/.cache/trillim/quant/.
#
#   scripts/quant-models.sh [TYPE...]   (default: every type the tests use)
#   scripts/quant-models.sh --tool      builds the reference tool only and prints its path
#
# The quantizer is scripts/quant-ref.cpp linked against llama.cpp's library (built once by
# scripts/build-llama-bench.sh with TARGET=llama; the library alone, a few minutes on 2 cores).
# It calls llama_model_quantize with allow_requantize, as `llama-quantize --allow-requantize`.
# SmolLM2's 576-wide rows are not whole 256-blocks, so llama.cpp stores those matrices in its
# fallback formats (Q5_0 for Q4_K, Q8_0 for Q6_K, IQ4_NL for Q2_K/Q3_K/IQ4_XS, Q5_1 for Q5_K):
# each file mixes its K-quant (the 1536-wide ffn_down rows) with the fallback, as Q4_K_M files
# of other models do. TYPE-pure quantizes without llama.cpp's per-tensor mix (Q2_K-pure is the
# file whose ffn_down rows are Q2_K; the Q2_K mix stores them as Q3_K).
set -euo pipefail
cd "$(dirname "$0")/.."
types=("$@")
tool_only=0
if [ "${1:-}" = --tool ]; then
    tool_only=1
    types=()
fi
[ ${#types[@]} -gt 0 ] || [ $tool_only = 1 ] || types=(Q4_K_M Q4_K_S Q5_K_M Q6_K Q3_K_M Q2_K Q2_K-pure Q5_0 Q5_1 IQ4_NL IQ4_XS BF16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/quant"
mkdir -p "$cache"
# The tests call this script from parallel threads: one caller at a time builds and quantizes.
exec 9>"$cache/.lock"
flock 9
tool="$cache/quant-ref"
if [ ! -x "$tool" ] || [ scripts/quant-ref.cpp -nt "$tool" ]; then
    if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
        apt-get install -y cmake g++ >&2 || { apt-get update >&2 && apt-get install -y cmake g++ >&2; }
    fi
    llama=$(TARGET=llama scripts/build-llama-bench.sh)
    libs=()
    for l in src/libllama.a ggml/src/libggml.a ggml/src/libggml-cpu.a ggml/src/libggml-base.a; do
        libs+=("$llama/build/$l")
    done
    g++ -O2 -std=c++17 -I"$llama/include" -I"$llama/ggml/include" scripts/quant-ref.cpp \
        "${libs[@]}" -fopenmp -lpthread -o "$tool.part" >&2
    mv "$tool.part" "$tool"
fi
if [ $tool_only = 1 ]; then
    echo "$tool"
    exit 0
fi
src=$(scripts/fetch-test-model.sh)
for t in "${types[@]}"; do
    out="$cache/SmolLM2-135M-Instruct.$t.gguf"
    if [ ! -s "$out" ]; then
        "$tool" quantize "$src" "$out.part" "$t" > "$out.log" 2>&1 || {
            cat "$out.log" >&2
            exit 1
        }
        mv "$out.part" "$out"
    fi
    echo "$out"
done
