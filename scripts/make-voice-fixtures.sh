#!/usr/bin/env bash
# Regenerates the speech test clips in tests/fixtures/voice/ with espeak-ng and sox (installed
# through apt when missing): short English sentences as 16 kHz mono WAV, plus one sentence in
# the format and sample-rate matrix (8/44.1/48 kHz, stereo, FLAC, MP3, Ogg Vorbis).
# The clips are committed; rerun this only to change them, then rerun scripts/voice-goldens.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/tests/fixtures/voice"
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  apt-get update -qq && apt-get install -y -qq espeak-ng sox libsox-fmt-mp3 libsox-fmt-all >/dev/null
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# id|voice|words per minute|text
clips="fox|en-us|150|The quick brown fox jumps over the lazy dog.
hello|en-us|160|Hello world, this is a test of the speech recognition system.
stella|en-gb|150|Please call Stella and ask her to bring these things with her from the store.
weather|en-us+f3|145|The weather today is sunny with a light breeze from the west.
numbers|en-gb+m3|140|My phone number is five five five, one two three four.
window|en-us|170|Open the window and let the fresh air into the room.
library|en-us+m2|150|She borrowed three books from the library on Monday morning.
coffee|en-gb|155|I would like a cup of coffee with milk and no sugar, please."
echo "$clips" > "$out/clips.txt"
while IFS='|' read -r id voice wpm text; do
  espeak-ng -v "$voice" -s "$wpm" -w "$tmp/$id.wav" "$text"
  sox "$tmp/$id.wav" -r 16000 -c 1 -b 16 "$out/$id.wav"
done <<< "$clips"
src="$tmp/hello.wav"
sox "$src" -r 8000 -c 1 -b 16 "$out/hello-8k.wav"
sox "$src" -r 44100 -c 1 -b 16 "$out/hello-44k.wav"
sox "$src" -r 48000 -c 2 -b 16 "$out/hello-48k-stereo.wav"
sox "$src" -r 16000 -c 1 "$out/hello.flac"
sox "$src" -r 44100 -c 2 -C 64 "$out/hello.mp3"
sox "$src" -r 22050 -c 1 "$out/hello.ogg"
ls -la "$out"
