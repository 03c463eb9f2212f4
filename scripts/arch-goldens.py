#!/usr/bin/env python3
"""Tiny Qwen 2, Qwen 3, Phi-3 and Gemma 3 models and their goldens, from llama.cpp itself.

Writes testdata/models/tiny-qwen2-q8_0.gguf, tiny-qwen3-f16.gguf, tiny-phi3-q8_0.gguf,
tiny-phi3.5-q8_0.gguf and tiny-phi3.5-long-q8_0.gguf (LongRoPE, short and long
factors), tiny-gemma3-q8_0.gguf and tiny-gemma2-q8_0.gguf with
scripts/make_gguf.py (random weights in the real tensor names and layouts; the Qwen tokenizer is
the real Qwen 2 one that llama.cpp ships as models/ggml-vocab-qwen2.gguf, cut to its first 5117
tokens plus its three control tokens, the Phi-3 one models/ggml-vocab-phi-3.gguf cut to its first
8000 tokens plus its special tokens; the chat templates are llama.cpp's copies of
Qwen2.5-7B-Instruct's, Qwen3-0.6B's and Phi-3.5-mini-instruct's), then has llama.cpp (scripts/quant-ref.cpp, built by scripts/quant-models.sh)
tokenize texts, teacher-force the text of the other goldens and continue four prompts greedily,
and writes testdata/golden/logits-<model>.json. Chats are rendered by jinja2 as Hugging Face
transformers renders them (trim_blocks, lstrip_blocks).

    scripts/arch-goldens.py [NAME...]   (needs: pip install gguf numpy jinja2; NAME: only those)
"""
import hashlib
import json
import math
import os
import subprocess
import sys

import gguf
import jinja2
import jinja2.sandbox

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "testdata/golden/logits-SmolLM2-135M-Instruct.Q4_1.json")
TOKENIZER = os.path.join(ROOT, "testdata/golden/tokenizer-smollm2.json")
VOCAB_KEEP = 5117

QWEN = ["--donor-vocab", "qwen2", "--vocab-keep", str(VOCAB_KEEP), "--eos-token", "<|im_end|>"]
# name, make_gguf.py arguments, chat template file under llama.cpp's models/templates/
MODELS = [
    ("tiny-qwen2-q8_0", QWEN + ["--arch", "qwen2", "--shape", "qwen2-tiny", "--wtype", "q8_0",
                                "--embd-type", "q8_0", "--untied", "--seed", "2"],
     "Qwen-Qwen2.5-7B-Instruct.jinja"),
    ("tiny-qwen3-f16", QWEN + ["--arch", "qwen3", "--shape", "qwen3-tiny", "--head-dim", "128",
                               "--wtype", "f16", "--embd-type", "q8_0", "--seed", "3"],
     "Qwen-Qwen3-0.6B.jinja"),
    # Partial RoPE (16 of 32 dimensions) and a sliding window longer than any text here.
    ("tiny-phi3-q8_0", ["--donor-vocab", "phi-3", "--vocab-keep", "8000", "--eos-token", "<|end|>",
                        "--arch", "phi3", "--shape", "phi3-tiny", "--rope-dim", "16",
                        "--sliding-window", "2047", "--wtype", "q8_0", "--embd-type", "q8_0",
                        "--seed", "4"],
     "microsoft-Phi-3.5-mini-instruct.jinja"),
    # LongRoPE as Phi-3.5-mini: 128k context, short factors within the original 4096.
    ("tiny-phi3.5-q8_0", ["--donor-vocab", "phi-3", "--vocab-keep", "8000", "--eos-token",
                          "<|end|>", "--arch", "phi3", "--shape", "phi3.5-tiny", "--rope-dim", "16",
                          "--longrope", "4096", "--sliding-window", "262144", "--wtype", "q8_0",
                          "--embd-type", "q8_0", "--seed", "5"],
     "microsoft-Phi-3.5-mini-instruct.jinja"),
    # LongRoPE with an original context of 512, below the goldens' 2048: the long factors.
    ("tiny-phi3.5-long-q8_0", ["--donor-vocab", "phi-3", "--vocab-keep", "8000", "--eos-token",
                               "<|end|>", "--arch", "phi3", "--shape", "phi3.5-tiny", "--rope-dim",
                               "16", "--longrope", "512", "--sliding-window", "262144", "--wtype",
                               "q8_0", "--embd-type", "q8_0", "--seed", "8"],
     "microsoft-Phi-3.5-mini-instruct.jinja"),
]
# Gemma: the SentencePiece vocabulary llama.cpp ships as models/ggml-vocab-llama-spm.gguf (it has
# no Gemma one) cut to its first 8000 tokens, with Gemma's turn markers added and Gemma's
# settings (no space prefix); the template is llama.cpp's copy of gemma-2-2b-it's, whose turns
# Gemma 3's template writes the same way. A 16-token sliding window, shorter than the texts.
GEMMA = ["--donor-vocab", "llama-spm", "--vocab-keep", "8000", "--add-tokens", "<start_of_turn>",
         "<end_of_turn>", "--no-space-prefix", "--sliding-window", "16"]
MODELS += [
    # Eight layers: 0-4 and 6-7 local (base 10000, unscaled), 5 global (base 1e6, linear 8).
    ("tiny-gemma3-q8_0", GEMMA + ["--arch", "gemma3", "--shape", "gemma3-tiny", "--head-dim", "128",
                                  "--rope-linear", "8", "--wtype", "q8_0", "--embd-type", "q8_0",
                                  "--untied", "--seed", "6"],
     "google-gemma-2-2b-it.jinja"),
    # Layers 0 and 2 local, 1 and 3 global; attention scores and logits soft-capped at 2 and 4
    # (Gemma 2's own 50 and 30 are out of these random weights' reach); tied, as llama.cpp
    # always runs Gemma 2.
    ("tiny-gemma2-q8_0", GEMMA + ["--arch", "gemma2", "--shape", "gemma2-tiny", "--softcap", "2",
                                  "4", "--embd-std", "0.06", "--wtype", "q8_0", "--embd-type",
                                  "q8_0", "--seed", "7"],
     "google-gemma-2-2b-it.jinja"),
]

CHATS = [
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    ([{"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Name a prime."},
      {"role": "assistant", "content": "7"},
      {"role": "user", "content": "Another?"}], True),
    # Ends with the assistant's turn: Qwen 3's template writes an empty think block there.
    ([{"role": "user", "content": "Say hi."},
      {"role": "assistant", "content": "Hi!"}], False),
    # Reasoning in an earlier assistant turn, which Qwen 3's template drops.
    ([{"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\n4"},
      {"role": "user", "content": "And 3+3?"}], True),
    # Tool results become one user turn of <tool_response> blocks; unknown roles are dropped.
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "Checking."},
      {"role": "tool", "content": "{\"temp\": 20}"},
      {"role": "tool", "content": "{\"rain\": false}"},
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": "Thanks"}], True),
]

EXTRA_TEXTS = [
    "In 2024, 12345 apples cost $6.78.",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>assistant\n",
    "Tab\there, CRLF\r\nend   \n\n  ",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render(template, messages, add_generation_prompt, eos_token, bos_token):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, eos_token=eos_token,
        bos_token=bos_token)


def main():
    llama = subprocess.run(
        [os.path.join(ROOT, "scripts/build-llama-bench.sh")], env={**os.environ, "TARGET": "llama"},
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    tool = subprocess.run(
        [os.path.join(ROOT, "scripts/quant-models.sh"), "--tool"],
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    base = json.load(open(BASE))
    texts = [t["text"] for t in json.load(open(TOKENIZER))["tokenize"]] + EXTRA_TEXTS
    for name, args, template_file in MODELS:
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        i = args.index("--donor-vocab")
        donor = os.path.join(llama, "models/ggml-vocab-%s.gguf" % args[i + 1])
        args = args[:i] + args[i + 2:]
        vocab = gguf.GGUFReader(donor)
        names = vocab.fields["tokenizer.ggml.tokens"]
        name_of = lambda key: bytes(names.parts[names.data[int(vocab.fields[key].contents())]]).decode()
        eos = (args[args.index("--eos-token") + 1] if "--eos-token" in args
               else name_of("tokenizer.ggml.eos_token_id"))
        bos = name_of("tokenizer.ggml.bos_token_id")
        template_path = os.path.join(llama, "models/templates", template_file)
        template = open(template_path, encoding="utf-8").read()
        path = os.path.join(ROOT, "testdata/models", name + ".gguf")
        subprocess.run(
            ["python3", os.path.join(ROOT, "scripts/make_gguf.py"), "--donor", donor,
             "--chat-template", template_path, *args, "-o", path],
            check=True, stdout=subprocess.DEVNULL)
        # Chats the template refuses (Gemma's: a system turn, turns not alternating) are left out.
        chats = []
        for m, g in CHATS:
            try:
                chats.append({"messages": m, "add_generation_prompt": g,
                              "rendered": render(template, m, g, eos, bos)})
            except jinja2.exceptions.TemplateError:
                pass
        tok_req = "".join("T %s\n" % s.encode().hex()
                          for s in [base["text"], *texts, *(c["rendered"] for c in chats)])
        ans = subprocess.run([tool, "goldens", path], input=tok_req, check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ids = [[int(x) for x in line.split()[1:]] for line in ans.stdout.splitlines()]
        tokens, ids = ids[0], ids[1:]
        tokenize = [{"text": t, "ids": i} for t, i in zip(texts, ids)]
        for c, i in zip(chats, ids[len(texts):]):
            c["ids"] = i
        prompts = [{"messages": c["messages"], "prompt_ids": c["ids"]}
                   for c in chats if c["add_generation_prompt"]][:2]
        for g in base["greedy"]:
            if "prompt" in g:
                p = subprocess.run([tool, "goldens", path], check=True, text=True,
                                   input="T %s\n" % g["prompt"].encode().hex(),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                prompts.append({"prompt": g["prompt"],
                                "prompt_ids": [int(x) for x in p.stdout.split()[1:]]})
        req = "L " + " ".join(map(str, tokens)) + "\n"
        for p in prompts:
            req += "G " + " ".join(map(str, p["prompt_ids"])) + "\n"
        ans = subprocess.run([tool, "goldens", path], input=req, check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout.splitlines()
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
        assert len(positions) == len(tokens) and len(greedy) == len(prompts)
        for g, p in zip(greedy, prompts):
            g.update(p)
        out = {
            "model": name + ".gguf",
            "source": "llama.cpp (llama-cpp-python 0.3.36 sources) through scripts/quant-ref.cpp; "
                      "chats rendered by jinja2 %s" % jinja2.__version__,
            "model_sha256": sha256(path),
            "text": base["text"],
            "tokens": tokens,
            "ppl": round(math.exp(nll / (len(positions) - 1)), 4),
            "positions": positions,
            "greedy": greedy,
            "tokenize": tokenize,
            "chat": chats,
        }
        dst = os.path.join(ROOT, "testdata/golden", "logits-%s.json" % name)
        with open(dst, "w") as f:
            json.dump(out, f, separators=(",", ":"), ensure_ascii=False)
            f.write("\n")
        print(dst, "ppl", out["ppl"], "size", os.path.getsize(path))


if __name__ == "__main__":
    main()
