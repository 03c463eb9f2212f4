#!/usr/bin/env python3
"""Replicas of `trillim serve` behind nginx with the shipped configuration (deploy/nginx.conf),
on loopback: what the balancer costs, and what clients see when replicas fail or restart.

  scripts/replicas.py MODEL.gguf [--threads 2] [--replicas 1 2 3] [--streams 6] [--json]

1. Throughput: for each replica count R, R replicas share `--threads` (each gets threads / R,
   at least one) and `--streams` concurrent streaming completions run through nginx; the
   aggregate decode tokens/s is reported beside one replica's (the same total threads), so
   the ratio shows the overhead of splitting a machine, not the gain of adding one.
2. Failures: with two replicas under a steady load of streaming requests, one replica is
   killed (SIGKILL) and restarted, then both are restarted one after the other with SIGTERM
   (a rolling restart). Every request is classified: completed; refused with a retryable
   status (429/503 with Retry-After, which nginx normally retries itself); broken mid-stream
   (its replica died under it: the client sees the error); or failed otherwise (an
   unannounced failure, e.g. a 502). The goal is no unannounced failures, and no broken
   streams in the rolling restart.

Needs nginx (Debian: apt-get install nginx-light) and the release binary
(`cargo build --release -p trillim`; `--bin` to point elsewhere).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import run_round, summarize  # noqa: E402
from serverproc import free_port, get_status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Seconds a rolling restart waits after a replica is ready before restarting the next.
READMIT_S = 1


class Replica:
    def __init__(self, bin_, model, threads, parallel, tmp, name):
        self.cmd_base = [bin_, "serve", model, "--threads", str(threads), "--parallel", str(parallel)]
        self.port = free_port()
        self.tmp, self.name = tmp, name
        self.start()

    def start(self):
        log = open(self.tmp / f"{self.name}.log", "ab")
        env = dict(os.environ, TRILLIM_HOME=str(self.tmp / self.name))
        self.proc = subprocess.Popen(self.cmd_base + ["--port", str(self.port)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=300):
        t0 = time.monotonic()
        while get_status(self.port, "/readyz") != 200:
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                sys.exit(f"replica {self.name} did not become ready (see {self.tmp}/{self.name}.log)")
            time.sleep(0.1)

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait()


class Nginx:
    def __init__(self, replicas, tmp):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"    server 127.0.0.1:{r.port} max_fails=0;\n" for r in replicas)
        conf = re.sub(r"(    server 127\.0\.0\.1:\d+[^\n]*\n)+", servers, conf)
        conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{self.port};")
        d = Path(tempfile.mkdtemp(prefix="nginx-", dir=tmp))
        (d / "trillim.conf").write_text(conf)
        temps = "".join(f"    {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log off;\n{temps}    include {d}/trillim.conf;\n}}\n")
        self.proc = subprocess.Popen([nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"])
        t0 = time.monotonic()
        while get_status(self.port, "/livez") == 0:
            if time.monotonic() - t0 > 10:
                sys.exit("nginx did not start")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def one_request(port, i, gen):
    """One streaming completion through the balancer; returns its outcome."""
    body = {"prompt": f"Request {i}: the river ran past", "max_tokens": gen, "ignore_eos": True, "stream": True}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            r.read()
            retryable = r.status in (429, 503) and r.getheader("Retry-After") is not None
            return "refused_retryable" if retryable else f"failed_{r.status}"
        data = r.read()
        if data.rstrip().endswith(b"data: [DONE]"):
            return "completed"
        return "broken_mid_stream"
    except (OSError, http.client.HTTPException):
        return "broken_mid_stream"
    finally:
        c.close()


def load_while(port, action, workers=4, gen=24):
    """Runs `workers` request loops through the balancer while `action()` runs; outcomes."""
    counts, lock, stop = {}, threading.Lock(), threading.Event()

    def loop(w):
        i = 0
        while not stop.is_set():
            o = one_request(port, 1000 * w + i, gen)
            with lock:
                counts[o] = counts.get(o, 0) + 1
            i += 1

    ts = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for t in ts:
        t.start()
    try:
        time.sleep(2)
        action()
        time.sleep(2)
    finally:
        stop.set()
        for t in ts:
            t.join()
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "trillim"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--gen", type=int, default=48)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trillim-replicas-"))
    out = {"threads": a.threads, "streams": a.streams, "throughput": {}, "failures": {}}
    try:
        for r in a.replicas:
            # Every replica can hold every stream: the balancer may send them all to one.
            reps = [Replica(a.bin, a.model, max(1, a.threads // r), a.streams, tmp, f"t{r}-{k}") for k in range(r)]
            for x in reps:
                x.wait_ready()
            lb = Nginx(reps, tmp)
            run_round(lb.port, 2, 4, 8)  # warm-up
            s = summarize(run_round(lb.port, a.streams, a.gen, 16, offset=100 * r))
            out["throughput"][str(r)] = s["aggregate_tok_s"] if s else None
            lb.stop()
            for x in reps:
                x.stop()
        one = out["throughput"].get("1")
        out["vs_one_replica"] = {k: v / one for k, v in out["throughput"].items() if v and one}

        reps = [Replica(a.bin, a.model, max(1, a.threads // 2), 4, tmp, f"f-{k}") for k in range(2)]
        for x in reps:
            x.wait_ready()
        lb = Nginx(reps, tmp)

        def kill_and_restart():
            reps[0].stop(signal.SIGKILL)
            reps[0].start()
            reps[0].wait_ready()

        def rolling_restart():
            for x in reps:
                code = x.stop(signal.SIGTERM)
                if code != 0:
                    print(f"replica {x.name} exited with {code} after SIGTERM", file=sys.stderr)
                x.start()
                x.wait_ready()
                # As a rollout waits a moment after a new pod is ready (minReadySeconds).
                time.sleep(READMIT_S)

        out["failures"]["kill_and_restart"] = load_while(lb.port, kill_and_restart)
        out["failures"]["rolling_restart"] = load_while(lb.port, rolling_restart)
        lb.stop()
        for x in reps:
            x.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.streams} streams through nginx, {a.threads} threads in all:")
    for r, v in out["throughput"].items():
        ratio = out["vs_one_replica"].get(r)
        print(f"  {r} replica(s): {v:.1f} tok/s aggregate ({ratio:.2f}x one replica)" if v else f"  {r}: failed")
    for k, counts in out["failures"].items():
        print(f"  {k.replace('_', ' ')}: " + ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
