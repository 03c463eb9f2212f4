#!/usr/bin/env python3
"""LoRA adapter fixtures for SmolLM2-135M, built with numpy, safetensors and gguf-py.

    scripts/make-lora-fixtures.py MODEL.gguf OUT_DIR            # test fixtures
    scripts/make-lora-fixtures.py MODEL.gguf OUT_DIR --adapters # the adapters only
    scripts/make-lora-fixtures.py MODEL.gguf OUT_DIR --bench    # rank 8/16/64, every layer

Test fixtures (one seeded adapter of rank 8, alpha 16, on layers 0, 13 and 29, all seven
projections; A stored as f16, B as f32, in Hugging Face row order):
  peft/                PEFT form (adapter_config.json + adapter_model.safetensors)
  gguf/adapter.gguf    the same adapter as llama.cpp writes it (q/k rows of B permuted)
  peft-zero/           the same matrices with lora_alpha 0 (scale 0)
  base-f32.gguf        the model with the adapted projections dequantized to f32 (exact) and
                       its other matrices to f16 (no product quantizes its activations)
  merged.gguf          base-f32 with W + s*B*A merged in float64 (the independent reference:
                       the merge is done in Hugging Face row order, then permuted back with
                       llama.cpp's converter formula)
  bad-half/, bad-shape/, bad-layer/, bad-arch/   adapters that must be refused
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
import gguf

RANK, ALPHA, LAYERS = 8, 16.0, (0, 13, 29)
PROJ = [  # (PEFT module, GGUF name)
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
]


def permute(w, n_head):
    """Hugging Face rotate-half rows -> GGUF adjacent pairs (llama.cpp's converter)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def copy_model(reader, path, replace):
    """Writes `reader`'s model to `path` with the tensors in `replace` (name -> f32 array) and
    every other quantized matrix dequantized to f16, so that no product quantizes its input
    and two such models differ only where their weights do."""
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(path, arch)
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        t = f.types[0]
        sub = f.types[-1] if t == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), t, sub_type=sub)
    for t in reader.tensors:
        if t.name in replace:
            w.add_tensor(t.name, replace[t.name].astype(np.float32))
        elif t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float16))
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def shapes(reader):
    out = {}
    for t in reader.tensors:
        if len(t.shape) == 2:
            out[t.name] = (int(t.shape[1]), int(t.shape[0]))  # rows, cols
    return out


def make_pairs(reader, rank, layers, seed):
    rng = np.random.default_rng(seed)
    sh = shapes(reader)
    pairs = {}
    for l in layers:
        for p, (_, g) in enumerate(PROJ):
            rows, cols = sh[f"blk.{l}.{g}.weight"]
            a = (rng.standard_normal((rank, cols)) / np.sqrt(cols)).astype(np.float16)
            b = (rng.standard_normal((rows, rank)) * 0.01).astype(np.float32)
            pairs[(l, p)] = (a, b)
    return pairs


def write_peft(out, pairs, rank, alpha, drop=None, extra=None):
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for (l, p), (a, b) in pairs.items():
        base = f"base_model.model.model.layers.{l}.{PROJ[p][0]}"
        tensors[f"{base}.lora_A.weight"] = a
        tensors[f"{base}.lora_B.weight"] = b
    if drop:
        del tensors[drop]
    if extra:
        tensors.update(extra)
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"))
    cfg = {
        "peft_type": "LORA",
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": False,
        "target_modules": [m.split(".")[1] for m, _ in PROJ],
        "bias": "none",
        "fan_in_fan_out": False,
    }
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def write_gguf(path, pairs, alpha, n_head, n_kv, arch="llama"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for (l, p), (a, b) in pairs.items():
        g = PROJ[p][1]
        b = b.astype(np.float32)
        if p == 0:
            b = permute(b, n_head)
        elif p == 1:
            b = permute(b, n_kv)
        w.add_tensor(f"blk.{l}.{g}.weight.lora_a", a.astype(np.float32))
        w.add_tensor(f"blk.{l}.{g}.weight.lora_b", np.ascontiguousarray(b))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    model, out = sys.argv[1], sys.argv[2]
    bench = "--bench" in sys.argv[3:]
    reader = gguf.GGUFReader(model)
    arch = reader.fields["general.architecture"].contents()
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    n_layers = int(reader.fields[f"{arch}.block_count"].contents())
    os.makedirs(out, exist_ok=True)
    if bench:
        for r in (8, 16, 64):
            pairs = make_pairs(reader, r, range(n_layers), seed=r)
            write_peft(os.path.join(out, f"bench-r{r}"), pairs, r, 2.0 * r)
        return
    pairs = make_pairs(reader, RANK, LAYERS, seed=1234)
    write_peft(os.path.join(out, "peft"), pairs, RANK, ALPHA)
    write_peft(os.path.join(out, "peft-zero"), pairs, RANK, 0.0)
    write_gguf(os.path.join(out, "gguf", "adapter.gguf"), pairs, ALPHA, n_head, n_kv)
    write_refused(out, pairs, n_layers, n_head, n_kv)
    if "--adapters" in sys.argv[3:]:
        return

    # The merged reference, in float64 and Hugging Face row order.
    s = ALPHA / RANK
    by_name = {t.name: t for t in reader.tensors}
    base, merged = {}, {}
    for (l, p), (a, b) in pairs.items():
        name = f"blk.{l}.{PROJ[p][1]}.weight"
        t = by_name[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        delta = s * (b.astype(np.float64) @ a.astype(np.float64))
        if p == 0:
            delta = permute(delta, n_head)
        elif p == 1:
            delta = permute(delta, n_kv)
        base[name] = w
        merged[name] = w + delta
    copy_model(reader, os.path.join(out, "base-f32.gguf"), base)
    copy_model(reader, os.path.join(out, "merged.gguf"), merged)


def write_refused(out, pairs, n_layers, n_head, n_kv):
    """Adapters that must be refused: half a pair, a wrong shape, a layer too many, another
    architecture."""
    q = "base_model.model.model.layers.13.self_attn.q_proj"
    write_peft(os.path.join(out, "bad-half"), pairs, RANK, ALPHA, drop=f"{q}.lora_B.weight")
    short = dict(pairs)
    a, b = short[(13, 4)]
    short[(13, 4)] = (a[:, :-1].copy(), b)
    write_peft(os.path.join(out, "bad-shape"), short, RANK, ALPHA)
    extra_layer = dict(pairs)
    extra_layer[(n_layers, 2)] = pairs[(0, 2)]
    write_peft(os.path.join(out, "bad-layer"), extra_layer, RANK, ALPHA)
    write_gguf(os.path.join(out, "bad-arch", "adapter.gguf"), pairs, ALPHA, n_head, n_kv, arch="qwen2")


if __name__ == "__main__":
    main()
