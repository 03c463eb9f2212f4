#!/usr/bin/env python3
"""Time to first token for short prompts: through the HTTP server (streamed /v1/completions)
against the same through `trillim generate`, on one model, in one run.

    python3 scripts/ttft.py MODEL [--threads 2] [--runs 7] [--bin target/release/trillim]

Each request uses a fresh prompt (a different first word), so no prefix comes from the cache;
the i-th request is sampled with seed i on both sides, so both produce the same tokens.
Both sides time the first generated token (the server streams one chunk per token). Prints
the medians and their ratio.
"""
import argparse, http.client, json, re, statistics, subprocess, time

from serverproc import ServerProcess

WORDS = ["Autumn", "Bridges", "Copper", "Deserts", "Engines", "Forests", "Glaciers", "Harbors",
         "Islands", "Jungles", "Kettles", "Lanterns", "Meadows", "Nebulas", "Oceans", "Pianos"]

MAX_TOKENS = 16

def prompt(i):
    return f"{WORDS[i % len(WORDS)]} are interesting because"

def via_generate(args):
    out = []
    for i in range(args.runs):
        p = subprocess.run([args.bin, "generate", args.model, "--prompt", prompt(i), "--max-tokens", str(MAX_TOKENS),
                            "--temperature", "1", "--seed", str(i), "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
        m = re.search(r"first token after ([0-9.]+) ms", p.stderr)
        if m is None:
            raise SystemExit(f"no token generated: {p.stderr.strip()}")
        out.append(float(m.group(1)))
    return out

def via_http(args):
    cmd = [args.bin, "serve", args.model, "--port", "{port}", "--threads", str(args.threads)]
    with ServerProcess(cmd) as srv:
        out = []
        for i in range(args.runs):
            body = json.dumps({"prompt": prompt(i), "max_tokens": MAX_TOKENS, "temperature": 1, "seed": i, "stream": True})
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
            t0 = time.perf_counter()
            c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            while True:
                line = r.readline()
                if not line:
                    raise SystemExit("stream ended without a token")
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    # The first token's chunk (its text may be empty while held back).
                    if chunk["choices"] and chunk["choices"][0].get("finish_reason") is None:
                        out.append((time.perf_counter() - t0) * 1e3)
                        break
            r.read()
            c.close()
        return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bin", default="target/release/trillim")
    args = ap.parse_args()
    g = statistics.median(via_generate(args))
    h = statistics.median(via_http(args))
    print(json.dumps({"generate_ttft_ms": round(g, 2), "http_ttft_ms": round(h, 2), "http_over_generate": round(h / g, 3)}))

if __name__ == "__main__":
    main()
