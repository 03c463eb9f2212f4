#!/usr/bin/env python3
"""Hugging Face checkpoints for the `trillim quantize` tests, in the layouts the Hub ships,
built from GGUF models whose goldens come from independent implementations.

    scripts/make-hf-checkpoints.py smollm2 SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR
    scripts/make-hf-checkpoints.py bitnet  tiny-b158-i2_s.gguf OUT_DIR
    scripts/make-hf-checkpoints.py bitnet-2b4t DONOR.gguf OUT_DIR   # random weights, 2B4T's shapes
    scripts/make-hf-checkpoints.py qwen tiny-qwen2-q8_0.gguf OUT_DIR  # Qwen2/Qwen3ForCausalLM
    scripts/make-hf-checkpoints.py tokenizer MODEL.gguf OUT_DIR       # tokenizer files only

smollm2: `LlamaForCausalLM`, every tensor dequantized (gguf-py) to float32 (norms float16),
  q_proj/k_proj rows put back into Hugging Face's rotate-half order (the inverse of llama.cpp's
  converter permutation), two shards named by model.safetensors.index.json, tied embeddings.
bitnet: `BitNetForCausalLM` as microsoft/bitnet-b1.58-2B-4T stores it: every projection as
  packed uint8 `[out/4, in]` whose 2-bit field i holds row block i (code = ternary + 1), a bf16
  `weight_scale` (weight = ternary / weight_scale), bf16 embeddings and norms, one file.
bitnet-2b4t: the same layout with random ternary weights and 2B4T's real dimensions (2560
  hidden, 30 layers, 6912 FFN, 128256 vocabulary), for timing and memory of the converter.

Both read tokenizers write tokenizer.json (byte-level BPE: vocabulary, merges, special tokens,
SmolLM2's Digits + ByteLevel pre-tokenizer) and tokenizer_config.json (chat template, BOS/EOS)
from the GGUF's tokenizer metadata.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from safetensors.numpy import save_file

I2S = 36  # bitnet.cpp's I2_S type id


def read_gguf(path):
    """(metadata dict, {name: (type, dims, raw bytes)}): a small reader that also knows I2_S,
    which gguf-py does not."""
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            sub, n = take("I"), take("Q")
            return [value(sub) for _ in range(n)]
        return take(scalar[t])

    assert data[:4] == b"GGUF", path
    pos = 4
    take("I")  # version
    n_tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        ty, off = take("I"), take("Q")
        infos.append((name, dims, ty, off))
    align = meta.get("general.alignment", 32)
    start = (pos + align - 1) // align * align
    tensors = {}
    for name, dims, ty, off in infos:
        n = int(np.prod(dims))
        if ty == I2S:
            size = n // 4 + 32
        else:
            block, tsize = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ty)]
            size = n // block * tsize
        tensors[name] = (ty, dims, data[start + off:start + off + size])
    return meta, tensors


def to_f32(ty, dims, raw):
    """A GGUF tensor as float32, shape [rows, cols] (GGUF lists cols first)."""
    shape = list(reversed(dims))
    if ty == I2S:
        return i2s_ternary(raw, int(np.prod(dims))).astype(np.float32).reshape(shape) * i2s_scale(raw)
    arr = np.frombuffer(raw, dtype=np.uint8)
    return gguf.quants.dequantize(arr, gguf.GGMLQuantizationType(ty)).astype(np.float32).reshape(shape)


def i2s_ternary(raw, n):
    """I2_S codes as ternary int8: byte j of each 32-byte group holds weights j, j+32, j+64,
    j+96 of the 128-group in bits 7-6, 5-4, 3-2, 1-0 (code - 1)."""
    b = np.frombuffer(raw[:n // 4], dtype=np.uint8).reshape(-1, 32)
    out = np.empty((b.shape[0], 4, 32), dtype=np.int8)
    for k in range(4):
        out[:, k, :] = ((b >> (6 - 2 * k)) & 3).astype(np.int8) - 1
    return out.reshape(n)


def i2s_scale(raw):
    n = len(raw) - 32
    return np.frombuffer(raw[n:n + 4], dtype=np.float32)[0]


def unpermute(w, n_head):
    """GGUF adjacent-pair rows -> Hugging Face rotate-half rows (inverse of llama.cpp's
    converter `permute`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def pack_ternary(t):
    """Ternary int [out, in] -> BitNet's packed uint8 [out/4, in]: field i = row block i."""
    rows = t.shape[0] // 4
    codes = (t + 1).astype(np.uint8)
    packed = np.zeros((rows, t.shape[1]), dtype=np.uint8)
    for i in range(4):
        packed |= codes[i * rows:(i + 1) * rows] << (2 * i)
    return packed


def bf16(x):
    """float32 -> bfloat16 bits (round to nearest even), as uint16 stored under dtype BF16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16(tensors, path):
    """Writes a safetensors file in which uint16 arrays are bfloat16 bits (safetensors.numpy
    has no bfloat16): the header tags them BF16."""
    dtypes = {np.dtype(np.uint16): "BF16", np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32",
              np.dtype(np.float16): "F16"}
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for k, v in tensors.items():
        header[k] = {"dtype": dtypes[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for v in tensors.values():
            f.write(np.ascontiguousarray(v).tobytes())


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def write_tokenizer(meta, out):
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    assert meta["tokenizer.ggml.model"] == "gpt2", "byte-level BPE vocabularies only"
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            dict(byte_level, use_regex=False)]}
        if meta.get("tokenizer.ggml.pre") == "qwen2" else
        {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": byte_level,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": meta["tokenizer.ggml.merges"],
        },
    }
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    cfg = {"add_prefix_space": False, "clean_up_tokenization_spaces": False,
           "model_max_length": 8192, "tokenizer_class": "GPT2Tokenizer"}
    for key, name in [("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                      ("pad_token", "padding")]:
        i = meta.get(f"tokenizer.ggml.{name}_token_id")
        if i is not None:
            cfg[key] = tokens[i]
    if "tokenizer.chat_template" in meta:
        cfg["chat_template"] = meta["tokenizer.chat_template"]
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)


def hf_config(meta, arch, **extra):
    a = meta["general.architecture"]
    g = lambda k, d=None: meta.get(f"{a}.{k}", d)
    n_vocab = len(meta["tokenizer.ggml.tokens"])
    c = {
        "architectures": [arch],
        "hidden_size": g("embedding_length"),
        "intermediate_size": g("feed_forward_length"),
        "num_hidden_layers": g("block_count"),
        "num_attention_heads": g("attention.head_count"),
        "num_key_value_heads": g("attention.head_count_kv"),
        "rms_norm_eps": g("attention.layer_norm_rms_epsilon"),
        "rope_theta": g("rope.freq_base", 10000.0),
        "max_position_embeddings": g("context_length", 2048),
        "vocab_size": n_vocab,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    c.update(extra)
    return c


PROJ = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down")]


def smollm2(src, out):
    meta, ts = read_gguf(src)
    assert meta["general.architecture"] == "llama"
    cfg = hf_config(meta, "LlamaForCausalLM", model_type="llama", hidden_act="silu",
                    torch_dtype="float32")
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    f32 = lambda n: to_f32(*ts[n])
    layers = cfg["num_hidden_layers"]
    shards = [{}, {}]
    shards[0]["model.embed_tokens.weight"] = f32("token_embd.weight")
    shards[1]["model.norm.weight"] = f32("output_norm.weight").reshape(-1).astype(np.float16)
    for i in range(layers):
        s = shards[0 if i < layers // 2 else 1]
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = f32(f"blk.{i}.attn_norm.weight").reshape(-1).astype(np.float16)
        s[p + "post_attention_layernorm.weight"] = f32(f"blk.{i}.ffn_norm.weight").reshape(-1).astype(np.float16)
        for hf, gg in PROJ:
            w = f32(f"blk.{i}.{gg}.weight")
            if gg == "attn_q":
                w = unpermute(w, n_head)
            elif gg == "attn_k":
                w = unpermute(w, n_kv)
            s[p + hf + ".weight"] = np.ascontiguousarray(w)
    os.makedirs(out, exist_ok=True)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for shard, name in zip(shards, names):
        save_file(shard, os.path.join(out, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(v.nbytes for s in shards for v in s.values())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(meta, out)


def qwen(src, out):
    """`Qwen2ForCausalLM` / `Qwen3ForCausalLM`: float32 matrices, no q/k permutation (GGUF's
    qwen architectures rotate halves as Hugging Face does), Qwen 2's q/k/v biases, Qwen 3's
    per-head q/k norms, the output matrix apart unless the GGUF shares the embedding."""
    meta, ts = read_gguf(src)
    arch = meta["general.architecture"]
    assert arch in ("qwen2", "qwen3"), arch
    tied = "output.weight" not in ts
    cls = "Qwen2ForCausalLM" if arch == "qwen2" else "Qwen3ForCausalLM"
    cfg = hf_config(meta, cls, model_type=arch, hidden_act="silu", torch_dtype="float32",
                    tie_word_embeddings=tied, use_sliding_window=False)
    if f"{arch}.attention.key_length" in meta:
        cfg["head_dim"] = meta[f"{arch}.attention.key_length"]
    f32 = lambda n: to_f32(*ts[n])
    t = {"model.embed_tokens.weight": f32("token_embd.weight"),
         "model.norm.weight": f32("output_norm.weight").reshape(-1)}
    if not tied:
        t["lm_head.weight"] = f32("output.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = f32(f"blk.{i}.attn_norm.weight").reshape(-1)
        t[p + "post_attention_layernorm.weight"] = f32(f"blk.{i}.ffn_norm.weight").reshape(-1)
        for hf, gg in PROJ:
            t[p + hf + ".weight"] = np.ascontiguousarray(f32(f"blk.{i}.{gg}.weight"))
        for x in "qkv":
            if f"blk.{i}.attn_{x}.bias" in ts:
                t[p + f"self_attn.{x}_proj.bias"] = f32(f"blk.{i}.attn_{x}.bias").reshape(-1)
        for x in "qk":
            if f"blk.{i}.attn_{x}_norm.weight" in ts:
                t[p + f"self_attn.{x}_norm.weight"] = f32(f"blk.{i}.attn_{x}_norm.weight").reshape(-1)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(meta, out)


BITNET_EXTRA = dict(model_type="bitnet", hidden_act="relu2", torch_dtype="bfloat16",
                    quantization_config={"quant_method": "bitnet", "linear_class": "autobitlinear",
                                         "quantization_mode": "offline"})


def bitnet(src, out):
    meta, ts = read_gguf(src)
    assert meta["general.architecture"] == "bitnet-b1.58"
    cfg = hf_config(meta, "BitNetForCausalLM", **BITNET_EXTRA)
    t = {"model.embed_tokens.weight": bf16(to_f32(*ts["token_embd.weight"])),
         "model.norm.weight": bf16(to_f32(*ts["output_norm.weight"]).reshape(-1))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for hf, gg in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                       ("self_attn.attn_sub_norm", "attn_sub_norm"), ("mlp.ffn_sub_norm", "ffn_sub_norm")]:
            t[p + hf + ".weight"] = bf16(to_f32(*ts[f"blk.{i}.{gg}.weight"]).reshape(-1))
        for hf, gg in PROJ:
            ty, dims, raw = ts[f"blk.{i}.{gg}.weight"]
            assert ty == I2S
            tern = i2s_ternary(raw, int(np.prod(dims))).reshape(dims[1], dims[0])
            t[p + hf + ".weight"] = pack_ternary(tern)
            t[p + hf + ".weight_scale"] = bf16(np.array([1.0 / i2s_scale(raw)], dtype=np.float32))
    os.makedirs(out, exist_ok=True)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(meta, out)


def bitnet_2b4t(out, donor):
    """2B4T's dimensions, random weights; the donor GGUF gives the tokenizer (padded to 128256)."""
    meta, _ = read_gguf(donor)
    d, ff, layers, heads, kv, vocab = 2560, 6912, 30, 20, 5, 128256
    rng = np.random.default_rng(1)
    cfg = hf_config(meta, "BitNetForCausalLM", **BITNET_EXTRA)
    cfg.update(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=kv, vocab_size=vocab, rope_theta=500000.0, rms_norm_eps=1e-5,
               max_position_embeddings=4096)
    hd = d // heads
    shapes = {"attn_q": (d, d), "attn_k": (kv * hd, d), "attn_v": (kv * hd, d), "attn_output": (d, d),
              "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
    t = {"model.embed_tokens.weight": bf16(rng.standard_normal((vocab, d), dtype=np.float32) * 0.02),
         "model.norm.weight": bf16(np.ones(d, dtype=np.float32))}
    for i in range(layers):
        p = f"model.layers.{i}."
        for hf, n in [("input_layernorm", d), ("post_attention_layernorm", d),
                      ("self_attn.attn_sub_norm", d), ("mlp.ffn_sub_norm", ff)]:
            t[p + hf + ".weight"] = bf16(np.ones(n, dtype=np.float32))
        for hf, gg in PROJ:
            rows, cols = shapes[gg]
            t[p + hf + ".weight"] = pack_ternary(rng.integers(-1, 2, size=(rows, cols), dtype=np.int8))
            t[p + hf + ".weight_scale"] = bf16(np.array([2.0], dtype=np.float32))
    os.makedirs(out, exist_ok=True)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(meta, out)


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind == "smollm2" and len(sys.argv) == 4:
        smollm2(sys.argv[2], sys.argv[3])
    elif kind == "bitnet" and len(sys.argv) == 4:
        bitnet(sys.argv[2], sys.argv[3])
    elif kind == "qwen" and len(sys.argv) == 4:
        qwen(sys.argv[2], sys.argv[3])
    elif kind == "tokenizer" and len(sys.argv) == 4:
        os.makedirs(sys.argv[3], exist_ok=True)
        write_tokenizer(read_gguf(sys.argv[2])[0], sys.argv[3])
    elif kind == "bitnet-2b4t" and len(sys.argv) == 4:
        bitnet_2b4t(sys.argv[3], sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
