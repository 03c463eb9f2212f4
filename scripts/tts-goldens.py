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
The cloning golden: a short synthetic recording (testdata/audio/voice-24k.wav, 16-bit mono
24 kHz, a buzz through two moving resonances in syllable-like bursts, a pause and a quiet
tail; written here from a fixed seed) is cloned with `get_state_for_audio_prompt(...,
truncate=True)`. clone-voice.safetensors is the voice state the reference exports;
clone.safetensors holds `latents` [frames, 32] (the Mimi encoder's output for the prompt, as
`encode_to_latent` returns it) and `speech` [samples], "Hello world." spoken with the voice.
clone-16k*.safetensors are the same for the clip written at 16 kHz (voice-16k.wav), which the
reference resamples with scipy's polyphase filter (no speech).

Run through scripts/tts-goldens.sh, which builds the torch environment once.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

from pocket_tts.models.model_state import _import_model_state, export_model_state
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


def voice_clip(path, seed=7, rate=24000):
    """A deterministic speech-like clip: pulses at a gliding pitch through two resonances."""
    rng = np.random.default_rng(seed)
    segs = [(0.35, 120, 700, 1200), (0.3, 150, 400, 2000), (0.25, 0, 0, 0),
            (0.4, 135, 600, 1600), (0.3, 110, 300, 2300)]
    out = []
    for dur, f0, f1, f2 in segs:
        n = int(dur * rate)
        if f0 == 0:
            out.append(rng.standard_normal(n) * 1e-4)
            continue
        t = np.arange(n) / rate
        pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 2.5 * t))
        phase = np.cumsum(pitch / rate)
        src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
        y = src
        for fc, bw in ((f1, 90.0), (f2, 150.0)):
            r = np.exp(-np.pi * bw / rate)
            a1, a2 = -2 * r * np.cos(2 * np.pi * fc / rate), r * r
            z = np.zeros(n)
            for i in range(n):
                z[i] = y[i] - a1 * (z[i - 1] if i else 0) - a2 * (z[i - 2] if i > 1 else 0)
            y = z
        env = np.sin(np.pi * np.arange(n) / n) ** 0.5
        out.append(y * env + rng.standard_normal(n) * 3e-3)
    out.append(rng.standard_normal(int(0.4 * rate)) * 1e-4)
    x = np.concatenate(out)
    x = 0.6 * x / np.abs(x).max()
    pcm = np.round(x * 32767).astype("<i2")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def clone_golden(model, out, clip, name="clone", speak=True):
    """The reference's voice state and encoder latents for `clip`, and speech with it."""
    enc = model.mimi.encode_to_latent
    captured = []

    def spy(x):
        y = enc(x)
        captured.append(y[0].detach().numpy().copy())
        return y

    model.mimi.encode_to_latent = spy
    state = model.get_state_for_audio_prompt(Path(clip), truncate=True)
    model.mimi.encode_to_latent = enc
    export_model_state(state, os.path.join(out, f"{name}-voice.safetensors"))
    lat = captured[0].astype(np.float32)
    tensors = {"latents": lat}
    info = {"clip": os.path.relpath(clip, os.path.join(os.path.dirname(__file__), "..")),
            "frames": int(lat.shape[0])}
    if speak:
        speech = model.generate_audio(state, "Hello world.").numpy()
        tensors["speech"] = speech.astype(np.float32)
        info.update(text="Hello world.", samples=int(speech.shape[0]))
    write_safetensors(os.path.join(out, f"{name}.safetensors"), tensors)
    print(name, lat.shape, file=sys.stderr)
    return info


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
    audio_dir = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                              "testdata", "audio"))
    clip = os.path.join(audio_dir, "voice-24k.wav")
    voice_clip(clip)
    index["clone"] = clone_golden(model, a.out, clip)
    # The same clip at 16 kHz: the reference resamples with scipy's resample_poly.
    clip16 = os.path.join(audio_dir, "voice-16k.wav")
    voice_clip(clip16, rate=16000)
    index["clone_16k"] = clone_golden(model, a.out, clip16, "clone-16k", speak=False)
    with open(os.path.join(a.out, "goldens.json"), "w") as fh:
        json.dump(index, fh, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
