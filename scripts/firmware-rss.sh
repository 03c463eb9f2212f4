#!/usr/bin/env bash
# Starts trillim-firmware on 127.0.0.1, sends a few requests of each kind and reports the
# model's size, the process's peak RSS (VmHWM) and their difference.
#
#   scripts/firmware-rss.sh [MODEL.gguf] [PORT]
#
# Default model: ~/.cache/trillim/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-test-model.sh).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$HOME/.cache/trillim/SmolLM2-135M-Instruct.Q4_1.gguf}"
port="${2:-18431}"
bin="${FIRMWARE_BIN:-$root/target/release/trillim-firmware}"
if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release -p trillim-firmware)
fi

"$bin" --model "$model" --host 127.0.0.1 --port "$port" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break
    sleep 0.2
done

url="http://127.0.0.1:$port/v1"
json='Content-Type: application/json'
for i in 1 2 3; do
    curl -fsS "$url/chat/completions" -H "$json" \
        -d '{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":48}' >/dev/null
    curl -fsS -N "$url/chat/completions" -H "$json" \
        -d '{"messages":[{"role":"user","content":"Tell me a short story."}],"max_tokens":64,"stream":true}' >/dev/null
    curl -fsS "$url/completions" -H "$json" \
        -d '{"prompt":"The quick brown fox","max_tokens":32,"stream":true}' >/dev/null
    curl -sS "$url/chat/completions" -H "$json" -d '{"messages":' >/dev/null
done

model_kib=$(( $(stat -c %s "$model") / 1024 ))
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "model size:      $((model_kib / 1024)) MiB ($model_kib KiB)"
echo "peak RSS (HWM):  $((hwm_kib / 1024)) MiB ($hwm_kib KiB)"
echo "RSS now:         $((rss_kib / 1024)) MiB"
echo "peak - model:    $(((hwm_kib - model_kib) / 1024)) MiB (budget 64 MiB)"
if (( hwm_kib - model_kib > 64 * 1024 )); then
    echo "over budget" >&2
    exit 1
fi
