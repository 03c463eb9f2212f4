#!/usr/bin/env python3
"""Resource attacks on a trillim server, on loopback, with normal traffic measured meanwhile.

Starts the server command given (``{port}`` is replaced by a free port), then for
``--seconds`` keeps up:
  * ``--slow-body`` connections that each send a request head declaring a ``--body-bytes``
    body, all of it but 1 KiB, and then stall (reconnecting when the server closes them);
  * ``--trickle`` connections that send a request one byte every ``--trickle-interval``
    seconds (reconnecting when closed);
and, alongside, normal requests (``GET /v1/models`` and a short chat completion) one after
another. It reports the server's peak resident memory (sampled from /proc), how normal
requests fared (count, statuses, p50/p99 latency) and how often the server cut attackers off.

Examples:
  scripts/attack.py -- target/release/trillim serve MODEL --port {port} --threads 1
  scripts/attack.py -- target/release/trillim-firmware --model MODEL.gguf --port {port}

Every connection goes to 127.0.0.1, every loop is bounded by --seconds, and the script stops
the server when done.
"""

import argparse
import json
import socket
import statistics
import threading
import time

from serverproc import ServerProcess


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def request(port, method, path, body=None, timeout=60.0):
    """One request on its own connection; returns (status, seconds)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            data = b""
            if body is not None:
                data = json.dumps(body).encode()
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            s.sendall(head.encode() + b"\r\n" + data)
            resp = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                resp += chunk
        status = int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else 0
    except (OSError, ValueError, IndexError):
        status = 0
    return status, time.monotonic() - t0


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.opened = 0
        self.cut_off = 0
        self.refused = 0

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def connect(port, counters):
    """A new attack connection, or None (counted) when the server does not take it."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        counters.add(refused=1)
        time.sleep(0.2)
        return None
    counters.add(opened=1)
    return s


def slow_body(port, deadline, body_bytes, counters):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n"
    ).encode()
    filler = b" " * 65536
    while time.monotonic() < deadline:
        s = connect(port, counters)
        if s is None:
            continue
        try:
            s.sendall(head)
            left = body_bytes - 1024
            while left > 0:
                n = min(left, len(filler))
                s.sendall(filler[:n])
                left -= n
            s.settimeout(0.5)
            while time.monotonic() < deadline:
                try:
                    if not s.recv(4096):
                        counters.add(cut_off=1)
                        break
                except socket.timeout:
                    continue
        except OSError:
            counters.add(cut_off=1)
        finally:
            s.close()


def trickle(port, deadline, interval, counters):
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{}        "
    while time.monotonic() < deadline:
        s = connect(port, counters)
        if s is None:
            continue
        s.setblocking(False)
        try:
            i = 0
            while time.monotonic() < deadline:
                try:
                    if s.recv(4096) == b"":
                        counters.add(cut_off=1)
                        break
                except BlockingIOError:
                    pass
                s.send(req[i % len(req) : i % len(req) + 1])
                i += 1
                time.sleep(interval)
        except OSError:
            counters.add(cut_off=1)
        finally:
            s.close()


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow-body", type=int, default=200)
    ap.add_argument("--body-bytes", type=int, default=2 * 1024 * 1024)
    ap.add_argument("--trickle", type=int, default=120)
    ap.add_argument("--trickle-interval", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="server command after --, with {port}")
    a = ap.parse_args()
    cmd = [c for c in a.cmd if c != "--"]
    if not cmd:
        ap.error("give the server command after --")
    with ServerProcess(cmd, ready_path="/v1/models") as srv:
        port, cmd = srv.port, srv.cmd
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        request(port, "POST", "/v1/chat/completions", chat)
        base_rss = rss_kib(srv.pid)
        deadline = time.monotonic() + a.seconds
        counters = Counters()
        threads = [
            threading.Thread(target=slow_body, args=(port, deadline, a.body_bytes, counters), daemon=True)
            for _ in range(a.slow_body)
        ] + [
            threading.Thread(target=trickle, args=(port, deadline, a.trickle_interval, counters), daemon=True)
            for _ in range(a.trickle)
        ]
        for t in threads:
            t.start()
        peak = base_rss
        samples = {"models": [], "chat": []}
        statuses = {}
        stop = threading.Event()

        def sample_rss():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(srv.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        time.sleep(1.0)
        i = 0
        while time.monotonic() < deadline:
            kind = "chat" if i % 4 == 3 else "models"
            st, dt = (
                request(port, "POST", "/v1/chat/completions", chat)
                if kind == "chat"
                else request(port, "GET", "/v1/models")
            )
            statuses[st] = statuses.get(st, 0) + 1
            if st == 200:
                samples[kind].append(dt)
            i += 1
            time.sleep(0.1)
        for t in threads:
            t.join(timeout=10)
        time.sleep(1.0)
        after_rss = rss_kib(srv.pid)
        stop.set()
        sampler.join()
        ok = samples["models"] + samples["chat"]
        out = {
            "server": " ".join(cmd),
            "slow_body_connections": a.slow_body,
            "trickle_connections": a.trickle,
            "seconds": a.seconds,
            "rss_mib": {"before": base_rss / 1024, "peak": peak / 1024, "after": after_rss / 1024},
            "normal_requests": {
                "sent": i,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "p50_ms": None if not ok else percentile(ok, 50) * 1000,
                "p99_ms": None if not ok else percentile(ok, 99) * 1000,
                "models_p50_ms": None if not samples["models"] else statistics.median(samples["models"]) * 1000,
                "chat_p50_ms": None if not samples["chat"] else statistics.median(samples["chat"]) * 1000,
            },
            "attack_connections": {
                "opened": counters.opened,
                "cut_off_by_server": counters.cut_off,
                "connect_failed": counters.refused,
            },
        }
        if a.json:
            print(json.dumps(out))
        else:
            r, n = out["rss_mib"], out["normal_requests"]
            print(f"server: {out['server']}")
            print(f"attack: {a.slow_body} slow-body + {a.trickle} trickling connections for {a.seconds:.0f} s")
            print(f"RSS MiB: before {r['before']:.1f}, peak {r['peak']:.1f}, after {r['after']:.1f}")
            fmt = lambda v: "-" if v is None else f"{v:.1f}"
            print(
                f"normal requests: {n['sent']} sent, statuses {n['statuses']}, "
                f"p50 {fmt(n['p50_ms'])} ms, p99 {fmt(n['p99_ms'])} ms "
                f"(models p50 {fmt(n['models_p50_ms'])}, chat p50 {fmt(n['chat_p50_ms'])})"
            )
            c = out["attack_connections"]
            print(
                f"attack connections: {c['opened']} opened, {c['cut_off_by_server']} cut off by the server, "
                f"{c['connect_failed']} failed to connect"
            )


if __name__ == "__main__":
    main()
