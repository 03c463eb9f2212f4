#!/usr/bin/env python3
"""Throughput of concurrent streams through an OpenAI-compatible server, on loopback.

Starts the server command given (``{port}`` is replaced by a free port; ``{model}`` stays as
written), then for each concurrency C in ``--streams`` (default 1 2 4 8) opens C streaming
``/v1/completions`` requests at once (distinct prompts of about ``--prompt-words`` words,
``--gen`` tokens each, end-of-generation ignored) and measures:

  * aggregate decode tokens/s: tokens that arrived while all C streams were decoding, divided
    by the length of that window (prefill excluded);
  * per-stream inter-token latency, p50 and p99 over all streams;
  * the ratio of the aggregate to the single stream's.

Then the time to first token of a request that arrives while three others decode, against
the same request alone. Works against `trillim serve` and llama.cpp's `llama-server` alike:

  scripts/concurrency.py -- target/release/trillim serve MODEL.gguf --port {port} --threads 2 --parallel 4
  scripts/concurrency.py -- llama-server -m MODEL.gguf --port {port} -t 2 -np 4 -c 8192 -cb

``--json`` prints one JSON object. Every request goes to 127.0.0.1 and the script stops the
server when done.
"""

import argparse
import http.client
import json
import threading
import time

from serverproc import ServerProcess


WORDS = "the river ran past old stone walls where children played and merchants sold bread".split()


def prompt(i, words):
    return f"Story {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))


def stream(port, body, out):
    """Streams one completion; appends token arrival times (seconds) to out['times']."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.monotonic()
    out["start"] = t0
    times = out.setdefault("times", [])
    try:
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        out["status"] = r.status
        buf = b""
        while True:
            chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                data = event[6:]
                if data == b"[DONE]":
                    return
                try:
                    v = json.loads(data)
                except ValueError:
                    continue
                ch = v.get("choices") or []
                if ch and (ch[0].get("text") is not None) and ch[0].get("finish_reason") is None:
                    times.append(time.monotonic())
    except (OSError, http.client.HTTPException):
        out["broken"] = True
    finally:
        c.close()


def run_round(port, n, gen, words, offset=0):
    outs = [dict() for _ in range(n)]
    threads = []
    for i in range(n):
        body = {
            "prompt": prompt(offset + i, words),
            "max_tokens": gen,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        t = threading.Thread(target=stream, args=(port, body, outs[i]))
        threads.append(t)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summarize(outs):
    firsts = [o["times"][0] for o in outs if o.get("times")]
    lasts = [o["times"][-1] for o in outs if o.get("times")]
    if len(firsts) < len(outs):
        return None
    lo, hi = max(firsts), min(lasts)
    if hi <= lo:
        # Streams did not overlap in decoding: fall back to the whole span.
        lo, hi = min(firsts), max(lasts)
    n = sum(1 for o in outs for t in o["times"] if lo < t <= hi)
    itl = [b - a for o in outs for a, b in zip(o["times"], o["times"][1:])]
    return {
        "aggregate_tok_s": n / (hi - lo) if hi > lo else None,
        "itl_p50_ms": pct(itl, 50) * 1000 if itl else None,
        "itl_p99_ms": pct(itl, 99) * 1000 if itl else None,
        "tokens": sum(len(o["times"]) for o in outs),
    }


def ttft(port, words, busy, which):
    """TTFT of one request, alone or while `busy` long streams decode."""
    long_outs = [dict() for _ in range(busy)]
    threads = []
    for i in range(busy):
        body = {"prompt": prompt(100 + i, 8), "max_tokens": 100000, "temperature": 0, "ignore_eos": True, "stream": True}
        t = threading.Thread(target=stream, args=(port, body, long_outs[i]), daemon=True)
        t.start()
        threads.append(t)
    # Wait until every busy stream is decoding.
    deadline = time.monotonic() + 120
    while busy and not all(len(o.get("times", [])) >= 3 for o in long_outs):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    out = {}
    stream(port, {"prompt": prompt(which, words), "max_tokens": 2, "temperature": 0, "ignore_eos": True, "stream": True}, out)
    return (out["times"][0] - out["start"]) * 1000 if out.get("times") else None, threads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=24)
    ap.add_argument("--ttft-words", type=int, default=96, help="prompt size of the TTFT request")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = [c for c in a.cmd if c != "--"]
    if not cmd:
        ap.error("give the server command after --")
    with ServerProcess(cmd) as srv:
        port, cmd = srv.port, srv.cmd
        run_round(port, 1, 8, a.prompt_words)  # warm-up
        rounds = {}
        for n in a.streams:
            s = summarize(run_round(port, n, a.gen, a.prompt_words, offset=10 * n))
            rounds[str(n)] = s
        base = rounds.get("1", {}) or {}
        for n, s in rounds.items():
            if s and base.get("aggregate_tok_s"):
                s["vs_one_stream"] = s["aggregate_tok_s"] / base["aggregate_tok_s"]
        # Different prompts, so that the second cannot reuse the first's cached prefix.
        alone, _ = ttft(port, a.ttft_words, 0, 1000)
        busy, _ = ttft(port, a.ttft_words, 3, 2000)
        out = {"server": " ".join(cmd), "rounds": rounds, "ttft_ms": {"alone": alone, "while_3_decode": busy}}
        if a.json:
            print(json.dumps(out))
        else:
            print(f"server: {out['server']}")
            fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)
            for n, s in rounds.items():
                if not s:
                    print(f"{n:>2} streams: failed")
                    continue
                print(
                    f"{n:>2} streams: {fmt(s['aggregate_tok_s'])} tok/s aggregate "
                    f"({fmt(s.get('vs_one_stream'), '{:.2f}')}x one stream), "
                    f"ITL p50 {fmt(s['itl_p50_ms'])} ms p99 {fmt(s['itl_p99_ms'])} ms"
                )
            print(f"TTFT ({a.ttft_words}-word prompt): alone {fmt(alone)} ms, while 3 streams decode {fmt(busy)} ms")

if __name__ == "__main__":
    main()
