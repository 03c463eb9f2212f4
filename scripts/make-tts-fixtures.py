#!/usr/bin/env python3
"""Writes a pocket-tts model directory with deterministic synthetic weights (numpy only).

The tensors carry the real names and shapes of Kyutai's pocket-tts `model.safetensors`
(the TTSModel state dict: `flow_lm.*` and `mimi.*`), so the same files load into the
reference implementation (`scripts/tts-goldens.py`, strict loading) and into trillim.

    make-tts-fixtures.py OUT_DIR [--shape tiny|english] [--seed N]

OUT_DIR receives:
  model.safetensors        the weights
  tokenizer.json           a small Unigram vocabulary in the Hugging Face format (Metaspace)
  config.json              the hyperparameters trillim reads (shapes alone do not give heads)
  embeddings/alba.safetensors  a synthetic voice state (FlowLM KV cache after a voice prompt)

`tiny` is a few-hundred-kilobyte model for the tests; `english` has the shapes of the
released English model (`config/english.yaml`, ~120 M parameters) for benchmarks.
"""

import argparse
import json
import os
import struct

import numpy as np

SHAPES = {
    "tiny": dict(
        d_model=64, num_heads=4, num_layers=2, hidden_scale=2, flow_dim=32, flow_depth=2,
        ldim=32, mimi_dim=64, n_filters=8, mimi_heads=4, mimi_layers=2, mimi_ff=128,
        outer_dim=64, inner_dim=32,
    ),
    "english": dict(
        d_model=1024, num_heads=16, num_layers=6, hidden_scale=4, flow_dim=512, flow_depth=6,
        ldim=32, mimi_dim=512, n_filters=64, mimi_heads=8, mimi_layers=2, mimi_ff=2048,
        outer_dim=512, inner_dim=32,
    ),
}
RATIOS = [6, 5, 4]
KERNEL, RES_KERNEL, LAST_KERNEL = 7, 3, 3
CONTEXT = 250
VOICES = ["alba", "marius", "javert", "jean", "fantine", "cosette", "eponine", "azelma"]


def vocab():
    """Pieces of the synthetic Unigram model: unk, ▁, characters, then a few words."""
    chars = list("abcdefghijklmnopqrstuvwxyz") + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    chars += list("0123456789") + list(".,!?;:'-\"()")
    words = ["▁the", "▁hello", "▁world", "▁is", "▁a", "▁to", "▁and", "ing", "er", "th",
             "▁Hello", "▁The", "▁test", "▁speech", "ed", "▁I", "...", "▁of", "▁in", "▁it"]
    pieces = [("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in chars]
    pieces += [("▁" + c, -4.5) for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += [(w, -3.0 - 0.01 * i) for i, w in enumerate(words)]
    return pieces


def tokenizer_json(pieces):
    meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": meta,
        "post_processor": None,
        "decoder": meta,
        "model": {"type": "Unigram", "unk_id": 0, "vocab": [[p, s] for p, s in pieces],
                  "byte_fallback": False},
    }


class Weights:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.t = {}

    def rand(self, name, shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        self.t[name] = (self.rng.standard_normal(shape) * s).astype(np.float32)

    def const(self, name, arr):
        self.t[name] = np.asarray(arr, dtype=np.float32)

    def norm(self, name, d):
        self.const(name + ".weight", 1.0 + 0.1 * self.rng.standard_normal(d))
        self.const(name + ".bias", 0.1 * self.rng.standard_normal(d))


def transformer(w, p, d, ff, layers, layer_scale):
    for i in range(layers):
        q = f"{p}.layers.{i}"
        w.rand(f"{q}.self_attn.in_proj.weight", (3 * d, d))
        w.rand(f"{q}.self_attn.out_proj.weight", (d, d))
        w.norm(f"{q}.norm1", d)
        w.norm(f"{q}.norm2", d)
        w.rand(f"{q}.linear1.weight", (ff, d))
        w.rand(f"{q}.linear2.weight", (d, ff))
        if layer_scale:
            w.const(f"{q}.layer_scale_1.scale", 0.5 + 0.1 * w.rng.standard_normal(d))
            w.const(f"{q}.layer_scale_2.scale", 0.5 + 0.1 * w.rng.standard_normal(d))


def conv(w, name, cin, cout, k, bias=True, groups=1):
    w.rand(name + ".weight", (cout, cin // groups, k))
    if bias:
        w.rand(name + ".bias", (cout,), 0.05)


def convtr(w, name, cin, cout, k, bias=True, groups=1):
    w.rand(name + ".weight", (cin, cout // groups, k), 1.0 / np.sqrt(cin * k / max(1, k // 2)))
    if bias:
        w.rand(name + ".bias", (cout,), 0.05)


def seanet_encoder(w, p, dim, nf):
    i = 0
    conv(w, f"{p}.model.{i}.conv", 1, nf, KERNEL)
    i += 1
    mult = 1
    for r in reversed(RATIOS):
        c = mult * nf
        conv(w, f"{p}.model.{i}.block.1.conv", c, c // 2, RES_KERNEL)
        conv(w, f"{p}.model.{i}.block.3.conv", c // 2, c, 1)
        i += 2  # resblock, ELU
        conv(w, f"{p}.model.{i}.conv", c, 2 * c, 2 * r)
        i += 1
        mult *= 2
    i += 1  # ELU
    conv(w, f"{p}.model.{i}.conv", mult * nf, dim, LAST_KERNEL)


def seanet_decoder(w, p, dim, nf):
    mult = 2 ** len(RATIOS)
    conv(w, f"{p}.model.0.conv", dim, mult * nf, KERNEL)
    i = 2  # ELU at 1
    for r in RATIOS:
        c = mult * nf
        convtr(w, f"{p}.model.{i}.convtr", c, c // 2, 2 * r)
        i += 1
        h = c // 2
        conv(w, f"{p}.model.{i}.block.1.conv", h, h // 2, RES_KERNEL)
        conv(w, f"{p}.model.{i}.block.3.conv", h // 2, h, 1)
        i += 2  # resblock, next ELU
        mult //= 2
    conv(w, f"{p}.model.{i}.conv", nf, 1, LAST_KERNEL)


def build(shape, n_bins, seed):
    s = SHAPES[shape]
    w = Weights(seed)
    d, ldim, fd = s["d_model"], s["ldim"], s["flow_dim"]
    f = "flow_lm"
    w.rand(f"{f}.conditioner.embed.weight", (n_bins + 1, d), 1.0)
    w.const(f"{f}.emb_std", 0.5 + w.rng.random(ldim))
    w.const(f"{f}.emb_mean", 0.1 * w.rng.standard_normal(ldim))
    w.rand(f"{f}.bos_emb", (ldim,), 1.0)
    w.rand(f"{f}.bos_before_voice", (1, 1, d), 1.0)
    # The previous latent enters weakly: with full-scale random weights the autoregressive
    # loop amplifies float rounding about twofold per frame (chaos), and no two correct
    # implementations would agree after twenty frames.
    w.rand(f"{f}.input_linear.weight", (d, ldim), 0.03 / np.sqrt(ldim))
    transformer(w, f"{f}.transformer", d, d * s["hidden_scale"], s["num_layers"], False)
    w.norm(f"{f}.out_norm", d)
    # The EOS head never fires on these weights (logit about -10, threshold -4): every text
    # runs to its length budget, so the goldens do not hinge on a decision near a threshold.
    w.rand(f"{f}.out_eos.weight", (1, d), 0.001)
    w.const(f"{f}.out_eos.bias", [-10.0])
    w.rand(f"{f}.speaker_proj_weight", (d, s["inner_dim"]))
    fn = f"{f}.flow_net"
    half = 128
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    for k in range(2):
        te = f"{fn}.time_embed.{k}"
        w.const(f"{te}.freqs", freqs)
        w.rand(f"{te}.mlp.0.weight", (fd, 256))
        w.rand(f"{te}.mlp.0.bias", (fd,), 0.05)
        w.rand(f"{te}.mlp.2.weight", (fd, fd))
        w.rand(f"{te}.mlp.2.bias", (fd,), 0.05)
        w.const(f"{te}.mlp.3.alpha", 1.0 + 0.1 * w.rng.standard_normal(fd))
    w.rand(f"{fn}.cond_embed.weight", (fd, d))
    w.rand(f"{fn}.cond_embed.bias", (fd,), 0.05)
    w.rand(f"{fn}.input_proj.weight", (fd, ldim))
    w.rand(f"{fn}.input_proj.bias", (fd,), 0.05)
    for b in range(s["flow_depth"]):
        rb = f"{fn}.res_blocks.{b}"
        w.norm(f"{rb}.in_ln", fd)
        w.rand(f"{rb}.mlp.0.weight", (fd, fd))
        w.rand(f"{rb}.mlp.0.bias", (fd,), 0.05)
        w.rand(f"{rb}.mlp.2.weight", (fd, fd))
        w.rand(f"{rb}.mlp.2.bias", (fd,), 0.05)
        w.rand(f"{rb}.adaLN_modulation.1.weight", (3 * fd, fd))
        w.rand(f"{rb}.adaLN_modulation.1.bias", (3 * fd,), 0.05)
    w.rand(f"{fn}.final_layer.linear.weight", (ldim, fd))
    w.rand(f"{fn}.final_layer.linear.bias", (ldim,), 0.05)
    w.rand(f"{fn}.final_layer.adaLN_modulation.1.weight", (2 * fd, fd))
    w.rand(f"{fn}.final_layer.adaLN_modulation.1.bias", (2 * fd,), 0.05)

    m, md, nf = "mimi", s["mimi_dim"], s["n_filters"]
    seanet_encoder(w, f"{m}.encoder", md, nf)
    seanet_decoder(w, f"{m}.decoder", md, nf)
    for side in ("encoder_transformer", "decoder_transformer"):
        transformer(w, f"{m}.{side}.transformer", md, s["mimi_ff"], s["mimi_layers"], True)
    w.rand(f"{m}.quantizer.output_proj.weight", (s["outer_dim"], ldim, 1))
    stride = 16  # 24000 / prod(RATIOS) / 12.5
    w.rand(f"{m}.downsample.conv.conv.weight", (s["inner_dim"], md, 2 * stride))
    w.rand(f"{m}.upsample.convtr.convtr.weight", (s["outer_dim"], 1, 2 * stride), 0.3)
    return w.t


def voice_state(shape, seed, prompt_len):
    """The FlowLM KV cache after a voice prompt of `prompt_len` positions."""
    s = SHAPES[shape]
    rng = np.random.default_rng(seed)
    hd = s["d_model"] // s["num_heads"]
    t = {}
    for i in range(s["num_layers"]):
        p = f"transformer.layers.{i}.self_attn"
        t[f"{p}/cache"] = rng.standard_normal((2, 1, prompt_len, s["num_heads"], hd)).astype(
            np.float32)
        t[f"{p}/offset"] = np.array([prompt_len], dtype=np.int64)
    return t


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dt = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)
    os.replace(tmp, path)


def yaml_config(shape, n_bins, out):
    """The same model as a pocket-tts config (for the reference, `scripts/tts-goldens.py`)."""
    s = SHAPES[shape]
    seanet = f"""    dimension: {s['mimi_dim']}
    channels: 1
    n_filters: {s['n_filters']}
    n_residual_layers: 1
    ratios: [6, 5, 4]
    kernel_size: {KERNEL}
    residual_kernel_size: {RES_KERNEL}
    last_kernel_size: {LAST_KERNEL}
    dilation_base: 2
    pad_mode: constant
    compress: 2"""
    return f"""weights_path: {os.path.join(out, 'model.safetensors')}
default_temperature: 0.0
flow_lm:
  insert_bos_before_voice: true
  dtype: float32
  flow:
    depth: {s['flow_depth']}
    dim: {s['flow_dim']}
  transformer:
    d_model: {s['d_model']}
    hidden_scale: {s['hidden_scale']}
    max_period: 10000
    num_heads: {s['num_heads']}
    num_layers: {s['num_layers']}
  lookup_table:
    dim: {s['d_model']}
    n_bins: {n_bins}
    tokenizer: tokenizers
    tokenizer_path: {os.path.join(out, 'tokenizer.json')}
mimi:
  dtype: float32
  sample_rate: 24000
  inner_dim: {s['inner_dim']}
  outer_dim: {s['outer_dim']}
  channels: 1
  frame_rate: 12.5
  seanet:
{seanet}
  transformer:
    d_model: {s['mimi_dim']}
    num_heads: {s['mimi_heads']}
    num_layers: {s['mimi_layers']}
    layer_scale: 0.01
    context: {CONTEXT}
    dim_feedforward: {s['mimi_ff']}
    input_dimension: {s['mimi_dim']}
    output_dimensions: [{s['mimi_dim']}]
  quantizer:
    dimension: {s['ldim']}
    output_dimension: {s['outer_dim']}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(os.path.join(out, "embeddings"), exist_ok=True)
    pieces = vocab()
    n_bins = len(pieces)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(tokenizer_json(pieces), fh, ensure_ascii=False, indent=1)
    write_safetensors(os.path.join(out, "model.safetensors"), build(a.shape, n_bins, a.seed))
    for i, v in enumerate(VOICES):
        write_safetensors(os.path.join(out, "embeddings", f"{v}.safetensors"),
                          voice_state(a.shape, a.seed + 1 + i, 5 + i))
    s = SHAPES[a.shape]
    cfg = {
        "d_model": s["d_model"], "num_heads": s["num_heads"], "max_period": 10000.0,
        "mimi_heads": s["mimi_heads"], "mimi_context": CONTEXT, "ratios": RATIOS,
        "sample_rate": 24000, "frame_rate": 12.5, "n_bins": n_bins,
        "flow_type": "lsd", "default_temperature": 0.0, "eos_threshold": -4.0,
        "replace_characters": {},
    }
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)


if __name__ == "__main__":
    main()
