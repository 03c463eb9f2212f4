#!/usr/bin/env bash
# Text-to-speech speed on synthetic weights of the released English model's shapes: trillim
# (`trillim speak --timings`) against the reference pocket-tts==4.0.1 on torch, in the same
# run, alternating A/B. Needs the cached torch environment of scripts/tts-goldens.sh.
#   scripts/bench-tts.sh [THREADS] [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${1:-2}"
runs="${2:-2}"
venv="${TRILLIM_TTS_VENV:-$HOME/.cache/trillim/tts-venv}"
model="$HOME/.cache/trillim/tts-english-synth"
text="Hello world. I am a small text to speech model, fast enough to run on small CPUs."
[ -f "$model/model.safetensors" ] || python3 "$root/scripts/make-tts-fixtures.py" "$model" --shape english
(cd "$root" && cargo build --release -q -p trillim)
for i in $(seq "$runs"); do
  "$root/target/release/trillim" speak "$text" --tts-model "$model" --threads "$threads" \
    --temperature 0.3 --timings -o /dev/null
  "$venv/bin/python" "$root/scripts/bench-tts.py" "$model" english "$text" "$threads" 2>/dev/null
done
