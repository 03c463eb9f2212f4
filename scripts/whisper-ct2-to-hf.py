"""Writes a CTranslate2 Whisper checkpoint (model.bin, config.json, tokenizer.json) out in
Hugging Face transformers' layout, as the openai/whisper-* repositories ship it:
model.safetensors (WhisperForConditionalGeneration names and shapes, separate q/k/v
projections, k without a bias, proj_out tied to model.decoder.embed_tokens and so not stored),
config.json, generation_config.json, tokenizer.json, vocab.json, merges.txt,
added_tokens.json, special_tokens_map.json and preprocessor_config.json.

No registry ships the safetensors weights, so this is how the Hugging Face loader is tested
on the same weights CTranslate2 runs. Needs numpy only.
Usage: python3 whisper-ct2-to-hf.py CT2_DIR OUT_DIR [f32|f16]   (f32 is what HF ships)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

src, out = sys.argv[1], sys.argv[2]
out_dtype = sys.argv[3] if len(sys.argv) > 3 else "f32"
assert out_dtype in ("f32", "f16"), out_dtype

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path):
    """CTranslate2's model.bin (binary versions 4-6): name → array, plus aliases."""
    buf = open(path, "rb").read()
    at = 0

    def take(n):
        nonlocal at
        b = buf[at:at + n]
        assert len(b) == n, "model.bin ends early"
        at += n
        return b

    u8 = lambda: take(1)[0]
    u16 = lambda: struct.unpack("<H", take(2))[0]
    u32 = lambda: struct.unpack("<I", take(4))[0]
    string = lambda: take(u16()).rstrip(b"\0").decode()
    version = u32()
    assert 4 <= version <= 6, f"binary version {version}"
    spec = string()
    assert spec == "WhisperSpec", spec
    u32()  # revision
    tensors = {}
    for _ in range(u32()):
        name = string()
        shape = [u32() for _ in range(u8())]
        dtype = DTYPES[u8()]
        nbytes = u32()
        tensors[name] = np.frombuffer(take(nbytes), dtype=dtype).reshape(shape)
    for _ in range(u32()):
        alias, target = string(), string()
        tensors[alias] = tensors[target]
    return tensors


w = read_ct2(os.path.join(src, "model.bin"))
ct2_config = json.load(open(os.path.join(src, "config.json")))
tokenizer = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
f = lambda name: np.asarray(w[name], dtype=np.float32)

n_vocab, d = w["decoder/embeddings/weight"].shape
n_mels = w["encoder/conv1/weight"].shape[1]
n_audio_ctx = w["encoder/position_encodings/encodings"].shape[0]
n_text_ctx = w["decoder/position_encodings/encodings"].shape[0]
count = lambda p: sum(1 for i in range(64) if f"{p}/layer_{i}/ffn/linear_0/weight" in w)
enc_layers, dec_layers = count("encoder"), count("decoder")
ff = w["encoder/layer_0/ffn/linear_0/weight"].shape[0]
enc_heads = int(np.asarray(w["encoder/num_heads"]).reshape(-1)[0])
dec_heads = int(np.asarray(w["decoder/num_heads"]).reshape(-1)[0])

hf = {}


def norm(dst, s):
    hf[dst + ".weight"] = f(s + "/gamma")
    hf[dst + ".bias"] = f(s + "/beta")


def linear(dst, s):
    hf[dst + ".weight"] = f(s + "/weight")
    hf[dst + ".bias"] = f(s + "/bias")


def split_proj(dst, s, names):
    """A fused CTranslate2 projection into HF's separate ones; k has no bias in Whisper."""
    ws = np.split(f(s + "/weight"), len(names))
    bs = np.split(f(s + "/bias"), len(names))
    for n, wi, bi in zip(names, ws, bs):
        hf[f"{dst}.{n}.weight"] = wi
        if n == "k_proj":
            assert not bi.any(), f"{s}: a key bias, which Whisper does not have"
        else:
            hf[f"{dst}.{n}.bias"] = bi


for conv in ("conv1", "conv2"):
    linear(f"model.encoder.{conv}", f"encoder/{conv}")
hf["model.encoder.embed_positions.weight"] = f("encoder/position_encodings/encodings")
for i in range(enc_layers):
    p, s = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
    split_proj(f"{p}.self_attn", f"{s}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
    linear(f"{p}.self_attn.out_proj", f"{s}/self_attention/linear_1")
    norm(f"{p}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
    linear(f"{p}.fc1", f"{s}/ffn/linear_0")
    linear(f"{p}.fc2", f"{s}/ffn/linear_1")
    norm(f"{p}.final_layer_norm", f"{s}/ffn/layer_norm")
norm("model.encoder.layer_norm", "encoder/layer_norm")
hf["model.decoder.embed_tokens.weight"] = f("decoder/embeddings/weight")
hf["model.decoder.embed_positions.weight"] = f("decoder/position_encodings/encodings")
for i in range(dec_layers):
    p, s = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
    split_proj(f"{p}.self_attn", f"{s}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
    linear(f"{p}.self_attn.out_proj", f"{s}/self_attention/linear_1")
    norm(f"{p}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
    linear(f"{p}.encoder_attn.q_proj", f"{s}/attention/linear_0")
    split_proj(f"{p}.encoder_attn", f"{s}/attention/linear_1", ["k_proj", "v_proj"])
    linear(f"{p}.encoder_attn.out_proj", f"{s}/attention/linear_2")
    norm(f"{p}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
    linear(f"{p}.fc1", f"{s}/ffn/linear_0")
    linear(f"{p}.fc2", f"{s}/ffn/linear_1")
    norm(f"{p}.final_layer_norm", f"{s}/ffn/layer_norm")
norm("model.decoder.layer_norm", "decoder/layer_norm")
if "decoder/projection/weight" in w:
    assert np.array_equal(w["decoder/projection/weight"], w["decoder/embeddings/weight"])

os.makedirs(out, exist_ok=True)


def write_safetensors(path, tensors, dtype):
    np_dtype, tag = (np.float32, "F32") if dtype == "f32" else (np.float16, "F16")
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype=np_dtype).astype("<" + np.dtype(np_dtype).str[1:]).tobytes()
        header[name] = {"dtype": tag, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".part", "wb") as fo:
        fo.write(struct.pack("<Q", len(h)))
        fo.write(h)
        for b in blobs:
            fo.write(b)
    os.replace(path + ".part", path)


write_safetensors(os.path.join(out, "model.safetensors"), hf, out_dtype)

ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
no_ts = ids["<|notimestamps|>"]
multilingual = n_vocab >= 51865
config = {
    "_name_or_path": "openai/whisper",
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0,
    "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
    "bos_token_id": eot,
    "d_model": int(d),
    "decoder_attention_heads": dec_heads,
    "decoder_ffn_dim": int(ff),
    "decoder_layerdrop": 0.0,
    "decoder_layers": dec_layers,
    "decoder_start_token_id": sot,
    "dropout": 0.0,
    "encoder_attention_heads": enc_heads,
    "encoder_ffn_dim": int(ff),
    "encoder_layerdrop": 0.0,
    "encoder_layers": enc_layers,
    "eos_token_id": eot,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_length": int(n_text_ctx),
    "max_source_positions": int(n_audio_ctx),
    "max_target_positions": int(n_text_ctx),
    "model_type": "whisper",
    "num_hidden_layers": enc_layers,
    "num_mel_bins": int(n_mels),
    "pad_token_id": eot,
    "scale_embedding": False,
    "suppress_tokens": ct2_config["suppress_ids"],
    "torch_dtype": "float32" if out_dtype == "f32" else "float16",
    "transformers_version": "4.27.0.dev0",
    "use_cache": True,
    "vocab_size": int(n_vocab),
}
generation = {
    "alignment_heads": ct2_config.get("alignment_heads", []),
    "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
    "bos_token_id": eot,
    "decoder_start_token_id": sot,
    "eos_token_id": eot,
    "is_multilingual": multilingual,
    "max_initial_timestamp_index": 50,
    "max_length": int(n_text_ctx),
    "no_timestamps_token_id": no_ts,
    "pad_token_id": eot,
    "return_timestamps": False,
    "suppress_tokens": ct2_config["suppress_ids"],
    "transformers_version": "4.31.0.dev0",
}
dump = lambda name, v: json.dump(v, open(os.path.join(out, name), "w", encoding="utf-8"),
                                 indent=2, ensure_ascii=False)
dump("config.json", config)
dump("generation_config.json", generation)
shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
dump("vocab.json", tokenizer["model"]["vocab"])
with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as fo:
    fo.write("#version: 0.2\n")
    for m in tokenizer["model"]["merges"]:
        fo.write((m if isinstance(m, str) else " ".join(m)) + "\n")
dump("added_tokens.json", {t["content"]: t["id"] for t in tokenizer["added_tokens"]
                           if t["id"] >= len(tokenizer["model"]["vocab"])})
dump("special_tokens_map.json", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                 "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
dump("preprocessor_config.json", {
    "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": int(n_mels), "hop_length": 160, "n_fft": 400, "n_samples": 480000,
    "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
    "processor_class": "WhisperProcessor", "return_attention_mask": False,
    "sampling_rate": 16000})
print(out, f"{len(hf)} tensors, {out_dtype}", file=sys.stderr)
