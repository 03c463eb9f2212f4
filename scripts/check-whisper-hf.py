"""Checks a directory written by whisper-ct2-to-hf.py against transformers itself: it must load
into WhisperForConditionalGeneration with no missing or unexpected tensors, and greedy
decoding without timestamps (the config's suppressed tokens applied) must give ctranslate2's
golden token ids on every clip. Needs torch and transformers.
Usage: python3 check-whisper-hf.py HF_DIR MEL_FILTERS_NPZ FIXTURES_DIR
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration

hf_dir, filters_npz, fixtures = sys.argv[1:4]
# The features exactly as the goldens were made (voice-goldens.py's log_mel).
spec = importlib.util.spec_from_file_location(
    "vg_mel", os.path.join(os.path.dirname(__file__), "voice-goldens.py"))
src = open(spec.origin).read()
mel_src = src[src.index("N_FFT, HOP"):src.index("def byte_decoder")]
ns = {"np": np, "wave": __import__("wave")}
exec("filters_npz = %r\n" % filters_npz + "filters = None\n" + mel_src.replace(
    'filters = np.load(filters_npz)["mel_80"].astype(np.float32)', ""), ns)
ns["filters"] = np.load(filters_npz)["mel_80"].astype(np.float32)

model, info = WhisperForConditionalGeneration.from_pretrained(
    hf_dir, output_loading_info=True, torch_dtype=torch.float32, use_kernels=False)
bad = {k: v for k, v in info.items() if v}
assert not bad, f"loading {hf_dir}: {bad}"
assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
model.eval()
gen = json.load(open(os.path.join(hf_dir, "generation_config.json")))
sot = gen["decoder_start_token_id"]
no_ts = gen["no_timestamps_token_id"]
eot = gen["eos_token_id"]
goldens = json.load(open(os.path.join(fixtures, "goldens.json")))["clips"]
bad = []
for cid, entry in goldens.items():
    feats = torch.from_numpy(ns["log_mel"](ns["read_wav"](os.path.join(fixtures, cid + ".wav"))))[None]
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state
        ids, out, past = [sot, no_ts], [], None
        for step in range(224):
            o = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids if past is None else ids[-1:]]),
                      past_key_values=past, use_cache=True)
            past = o.past_key_values
            logits = o.logits[0, -1].clone()
            logits[gen["suppress_tokens"]] = -float("inf")
            if step == 0:
                logits[gen["begin_suppress_tokens"]] = -float("inf")
            logits[no_ts] = -float("inf")
            t = int(logits.argmax())
            if t == eot:
                break
            ids.append(t)
            out.append(t)
    want = entry["no_timestamps"]["tokens"]
    print(cid, "ok" if out == want else f"DIFF {out} vs {want}", file=sys.stderr)
    if out != want:
        bad.append(cid)
assert not bad, bad
print(f"transformers {__import__('transformers').__version__}: {hf_dir} loads strictly and "
      f"matches ctranslate2's greedy tokens on {len(goldens)} clips")
