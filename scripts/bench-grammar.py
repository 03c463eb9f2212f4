#!/usr/bin/env python3
"""Decode speed with and without response_format against a running `trillim serve`.

Usage: scripts/bench-grammar.py [BASE_URL] [RUNS]   (default http://127.0.0.1:8000, 3)

Streams each request and times from the first to the last content chunk, so prompt
processing is left out; prints tokens/s (chunks/s: one chunk per generated token) per mode.
"""
import json
import sys
import time
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "bio": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "bio", "hobbies"],
    "additionalProperties": False,
}
# Pattern and format strings: every value byte steps a DFA.
PATTERNS = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email", "maxLength": 60},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,6}$"},
        "born": {"type": "string", "format": "date"},
        "bio": {"type": "string", "pattern": "^[A-Za-z ,.]+$"},
    },
    "required": ["email", "code", "born", "bio"],
    "additionalProperties": False,
}
MODES = {
    "text": None,
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": SCHEMA}},
    "pattern": {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": PATTERNS}},
}


def run(fmt):
    body = {
        "messages": [{"role": "user", "content": "Describe a person in JSON with a long bio."}],
        "max_tokens": 128,
        "temperature": 0.7,
        "seed": 1,
        "stream": True,
    }
    if fmt:
        body["response_format"] = fmt
    req = urllib.request.Request(BASE + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    first = last = None
    n = 0
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: {"):
                continue
            d = json.loads(line[6:])
            if d.get("choices") and "content" in d["choices"][0].get("delta", {}):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return n, (last - first) if first and last and last > first else 0.0


for mode, fmt in MODES.items():
    toks = secs = 0.0
    for _ in range(RUNS):
        n, s = run(fmt)
        toks += max(n - 1, 0)
        secs += s
    print(f"{mode:12s} {toks / secs if secs else 0:8.1f} tokens/s over {int(toks)} tokens")
