#!/usr/bin/env python3
"""Times the reference pocket-tts==4.0.1 (torch, CPU) on a model directory written by
make-tts-fixtures.py: time to the first audio chunk and the real-time factor.

    bench-tts.py MODEL_DIR SHAPE TEXT THREADS
"""
import importlib.util
import json
import os
import sys
import tempfile
import time

import torch

from pocket_tts.models.model_state import _import_model_state
from pocket_tts.models.tts_model import TTSModel

model_dir, shape, text, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("fx", os.path.join(here, "make-tts-fixtures.py"))
fx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fx)
n_bins = json.load(open(os.path.join(model_dir, "config.json")))["n_bins"]
with tempfile.TemporaryDirectory() as tmp:
    cfg = os.path.join(tmp, "m.yaml")
    open(cfg, "w").write(fx.yaml_config(shape, n_bins, os.path.abspath(model_dir)))
    model = TTSModel.load_model(config=cfg, temp=0.3)
state = _import_model_state(os.path.join(model_dir, "embeddings", "alba.safetensors"), torch.device("cpu"))
t0 = time.monotonic()
first = None
samples = 0
for chunk in model.generate_audio_stream(state, text):
    if first is None:
        first = time.monotonic() - t0
    samples += chunk.shape[-1]
total = time.monotonic() - t0
audio = samples / model.sample_rate
print(f"reference: first audio {first * 1000:.1f} ms, {audio:.2f} s of audio in {total:.3f} s: "
      f"real-time factor {total / audio:.3f}, torch {torch.__version__}, {threads} threads")
