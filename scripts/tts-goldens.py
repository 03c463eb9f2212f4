#!/usr/bin/env python3
"""Writes the text-to-speech goldens with the reference implementation, pocket-tts==4.0.1.

    tts-goldens.py MODEL_DIR OUT_DIR [--shape tiny]

MODEL_DIR is what `scripts/make-tts-fixtures.py` wrote (synthetic weights with the real
tensor names; the reference loads them strictly, so a wrong name or shape fails here).
Sampling is made deterministic with temperature 0: the flow head starts from zero noise on
both sides. The decoder is run one frame per call, as trillim streams.

OUT_DIR receives goldens.json (texts, token ids, the chunks the reference spoke and the
shapes) and one <id>.safetensors per case with `latents` [frames, 32] (what the FlowLM
produced, before the latent de-normalization) and `audio` [samples] (float, before int16).
Run through scripts/tts-goldens.sh, which builds the torch environment once.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np
import torch

from pocket_tts.models.model_state import _import_model_state
from pocket_tts.models.text_chunking import split_into_best_sentences
from pocket_tts.models.tts_model import TTSModel

CASES = [
    # id, voice, text, max tokens per chunk
    ("hello", "alba", "Hello world.", 50),
    ("test", "marius", "the test is speech", 50),
    ("chunks", "alba", "Hello world. It is the end", 4),
]


def fixtures_module():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("fx", os.path.join(here, "make-tts-fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_safetensors(path, tensors):
    fx = fixtures_module()
    fx.write_safetensors(path, tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--shape", default="tiny")
    a = ap.parse_args()
    model_dir = os.path.abspath(a.model)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    fx = fixtures_module()
    n_bins = json.load(open(os.path.join(model_dir, "config.json")))["n_bins"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "tiny.yaml")
        with open(cfg, "w") as fh:
            fh.write(fx.yaml_config(a.shape, n_bins, model_dir))
        model = TTSModel.load_model(config=cfg, temp=0.0, eos_threshold=-4.0)
    model.max_decoder_frames_per_call = 1
    tok = model.flow_lm.conditioner.tokenizer

    latents = []
    inner = model._run_flow_lm_and_increment_step

    def spy(model_state, text_tokens=None, backbone_input_latents=None, audio_conditioning=None):
        out = inner(model_state, text_tokens, backbone_input_latents, audio_conditioning)
        if backbone_input_latents is not None:
            latents.append(out[0][0, 0].detach().numpy().copy())
        return out

    model._run_flow_lm_and_increment_step = spy
    index = {"reference": "pocket-tts==4.0.1", "torch": torch.__version__,
             "temperature": 0.0, "eos_threshold": -4.0, "cases": []}
    for cid, voice, text, max_tokens in CASES:
        latents.clear()
        state = _import_model_state(os.path.join(model_dir, "embeddings", f"{voice}.safetensors"),
                                    torch.device("cpu"))
        chunks = split_into_best_sentences(tok, text, max_tokens, False, False)
        audio = model.generate_audio(state, text, max_tokens=max_tokens).numpy()
        lat = np.stack(latents).astype(np.float32)
        write_safetensors(os.path.join(a.out, f"{cid}.safetensors"),
                          {"latents": lat, "audio": audio.astype(np.float32)})
        index["cases"].append({
            "id": cid, "voice": voice, "text": text, "max_tokens": max_tokens,
            "tokens": tok.encode(text), "chunks": chunks,
            "chunk_tokens": [tok.encode(c) for c in chunks],
            "frames": int(lat.shape[0]), "samples": int(audio.shape[0]),
        })
        print(cid, lat.shape, audio.shape, float(np.abs(audio).max()), file=sys.stderr)
    # Token ids of a few more strings, for the tokenizer test.
    index["tokenizer"] = [{"text": t, "ids": tok.encode(t)} for t in [
        "Hello world.", "the quick brown fox", "  spaces   between ", "It's 42, isn't it?",
        "Thething", "...!?", "Zebra"]]
    with open(os.path.join(a.out, "goldens.json"), "w") as fh:
        json.dump(index, fh, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
