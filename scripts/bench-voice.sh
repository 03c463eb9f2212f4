#!/usr/bin/env bash
# Speech-to-text speed on a 30-second clip with 2 threads: `trillim transcribe` against
# ctranslate2 (the engine faster-whisper runs; compute_type float32, which is what the fp16
# weights compute in on a CPU) on the same Whisper tiny.en weights, in the same run.
# Both do the whole job: log-mel features, the encoder and decoding with timestamps, greedy
# and with beam search (beam 5, both engines' default),
# seeking window by window as Whisper does. Reports the real-time factor (audio seconds per
# compute second, best of 3 runs) and peak RSS.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-2}"
model="$("$root/scripts/fetch-voice-models.sh")"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/ct2-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check ctranslate2==4.8.5 numpy >&2
command -v sox >/dev/null || { apt-get update -qq && apt-get install -y -qq sox >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -p trillim --quiet
bin="$CARGO_TARGET_DIR/release/trillim"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
f="$root/tests/fixtures/voice"
# Eight espeak-ng sentences back to back, cut to exactly 30 s.
sox "$f"/fox.wav "$f"/hello.wav "$f"/stella.wav "$f"/weather.wav "$f"/numbers.wav \
  "$f"/window.wav "$f"/library.wav "$f"/coffee.wav "$tmp/clip.wav" trim 0 30
tmp_whl=$(mktemp -d)
"$py" -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
  openai-whisper==20250625 -d "$tmp_whl" >&2
tar xzf "$tmp_whl"/openai_whisper-20250625.tar.gz -C "$tmp_whl"
for beam in 1 5; do
  echo "== trillim ($threads threads, beam $beam)"
  "$bin" transcribe "$tmp/clip.wav" --whisper-model "$model" --threads "$threads" \
    --whisper-beam "$beam" --repeat 3 --timings --format text
  echo "== ctranslate2 $("$py" -c 'import ctranslate2; print(ctranslate2.__version__)') ($threads threads, beam $beam)"
  "$py" "$root/scripts/bench-voice.py" "$model" \
    "$tmp_whl/openai_whisper-20250625/whisper/assets/mel_filters.npz" "$tmp/clip.wav" "$threads" "$beam"
done
rm -rf "$tmp_whl"
