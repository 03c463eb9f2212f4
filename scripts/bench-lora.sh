#!/usr/bin/env bash
# Decode and prefill speed of a model (default SmolLM2-135M) with PEFT adapters of rank 8, 16
# and 64 on every layer and all seven projections (bf16, the default), and rank 16 in f32
# (`lora_quant none`), against no adapter (`trillim bench`, 2 threads).
#     scripts/bench-lora.sh [THREADS] [MODEL.gguf]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
threads="${1:-2}"
model="${2:-$(bash scripts/fetch-test-model.sh)}"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/lora-bench-$(basename "$model" .gguf)"
if [ ! -f "$dir/complete" ]; then
    rm -rf "$dir"
    bash scripts/make-lora-fixtures.sh "$model" "$dir" --bench
    touch "$dir/complete"
fi
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -p trillim >&2
bin="$target/release/trillim"
run() {
    "$bin" bench "$model" --threads "$threads" --prompt-tokens 128 --gen-tokens 64 --runs 5 --json "$@"
}
echo "adapter,decode_tok_s,prefill_tok_s"
for r in none 8 16 64 16-f32; do
    case "$r" in
        none) out="$(run)" ;;
        16-f32) out="$(run --lora "$dir/bench-r16" --lora-quant none)" ;;
        *) out="$(run --lora "$dir/bench-r$r")" ;;
    esac
    python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print(sys.argv[1], j["decode_tok_s"]["median"], j["prefill_tok_s"]["median"], sep=",")' "$r" "$out"
done
