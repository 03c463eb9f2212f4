#!/usr/bin/env python3
"""Goldens of the quantized SmolLM2 models from llama.cpp itself.

For each type (default: all of scripts/quant-models.sh), requantizes SmolLM2 with llama.cpp's
quantizer and has llama.cpp (scripts/quant-ref.cpp) compute, on the same file, the
teacher-forced top-5 log-probabilities of the text and the greedy continuations of the prompts
of testdata/golden/logits-SmolLM2-135M-Instruct.Q4_1.json (same tokens, same shape). Writes
testdata/golden/quant/logits-SmolLM2-135M-Instruct.<TYPE>.json.

    scripts/quant-goldens.py [TYPE...]
"""
import hashlib
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "testdata/golden/logits-SmolLM2-135M-Instruct.Q4_1.json")
OUT = os.path.join(ROOT, "testdata/golden/quant")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    types = sys.argv[1:]
    paths = subprocess.run(
        [os.path.join(ROOT, "scripts/quant-models.sh"), *types],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.split()
    tool = os.path.join(os.path.dirname(paths[0]), "quant-ref")
    base = json.load(open(BASE))
    os.makedirs(OUT, exist_ok=True)
    for path in paths:
        ty = os.path.basename(path)[len("SmolLM2-135M-Instruct."):-len(".gguf")]
        req = "L " + " ".join(map(str, base["tokens"])) + "\n"
        for case in base["greedy"]:
            req += "G " + " ".join(map(str, case["prompt_ids"])) + "\n"
        ans = subprocess.run(
            [tool, "goldens", path], input=req, check=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        ).stdout.splitlines()
        positions, greedy, nll = [], [], 0.0
        for line in ans:
            f = line.split()
            if f[0] == "P":
                nxt = int(f[2])
                top = [[int(p.split(":")[0]), round(float(p.split(":")[1]), 5)] for p in f[4:]]
                pos = {"top": top, "next": None, "next_logprob": None}
                if nxt >= 0:
                    pos["next"] = nxt
                    pos["next_logprob"] = round(float(f[3]), 5)
                    nll -= float(f[3])
                positions.append(pos)
            elif f[0] == "G":
                if int(f[1]) == 0:
                    greedy.append({"greedy_ids": [], "top1_logprob": [], "top2_logprob": []})
                g = greedy[-1]
                g["greedy_ids"].append(int(f[2]))
                g["top1_logprob"].append(round(float(f[3]), 5))
                g["top2_logprob"].append(round(float(f[4]), 5))
        assert len(positions) == len(base["tokens"]) and len(greedy) == len(base["greedy"])
        for g, case in zip(greedy, base["greedy"]):
            g["prompt_ids"] = case["prompt_ids"]
        out = {
            "model": os.path.basename(path),
            "source": "llama.cpp (llama-cpp-python 0.3.36 sources), file requantized from "
                      "SmolLM2-135M-Instruct.Q4_1.gguf by scripts/quant-models.sh",
            "model_sha256": sha256(path),
            "text": base["text"],
            "tokens": base["tokens"],
            "ppl": round(math.exp(nll / (len(positions) - 1)), 4),
            "positions": positions,
            "greedy": greedy,
        }
        dst = os.path.join(OUT, "logits-SmolLM2-135M-Instruct.%s.json" % ty)
        with open(dst, "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(dst, "ppl", out["ppl"])


if __name__ == "__main__":
    main()
