"""Replicas behind a real nginx with the shipped configuration (deploy/nginx.conf): streams
through the balancer, a replica drained with SIGTERM while it streams, a replica killed and
restarted, and conversation affinity by `X-Session-Id`. Run by scripts/e2e.sh; needs nginx
(Debian's package; scripts/e2e.sh installs it when it can).
"""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import openai
import pytest

from test_openai_client import BIN, ROOT, free_port, smollm2

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Replica:
    def __init__(self, tmp: Path, name: str, port=None):
        self.port = port or free_port()
        self.name = name
        self.tmp = tmp
        self.start()

    def start(self):
        self.log = open(self.tmp / f"{self.name}.log", "ab")
        env = dict(os.environ, TRILLIM_HOME=str(self.tmp / self.name), TRILLIM_LOG="info")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", str(smollm2()), "--port", str(self.port), "--threads", "1",
             "--parallel", "2", "--drain-timeout", "30"],
            env=env, stdout=self.log, stderr=self.log,
        )

    def wait_ready(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            assert self.proc.poll() is None, f"replica {self.name} exited"
            try:
                if get(self.port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica {self.name} not ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Nginx:
    def __init__(self, tmp: Path, replicas):
        self.port = free_port()
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(
            f"    server 127.0.0.1:{r.port} max_fails=0;\n" for r in replicas
        )
        conf = re.sub(r"(    server 127\.0\.0\.1:\d+[^\n]*\n)+", servers, conf)
        conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{self.port};")
        d = tmp / "nginx"
        d.mkdir()
        (d / "trillim.conf").write_text(conf)
        self.access = d / "access.log"
        (d / "nginx.conf").write_text(f"""
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format up '$upstream_addr $status $http_x_session_id';
    access_log {self.access} up;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/trillim.conf;
}}
""")
        subprocess.run([NGINX, "-t", "-q", "-p", str(d), "-c", str(d / "nginx.conf")], check=True)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"]
        )
        end = time.time() + 10
        while time.time() < end:
            try:
                get(self.port, "/livez")
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not start")

    def client(self, session=None):
        headers = {"X-Session-Id": session} if session else None
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="x",
                             default_headers=headers, max_retries=0)

    def upstreams(self, session):
        lines = self.access.read_text().splitlines() if self.access.exists() else []
        return [l.split()[0] for l in lines if l.endswith(" " + session)]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def cluster():
    if not Path(NGINX).exists():
        pytest.fail("nginx is needed (apt-get install nginx-light); scripts/e2e.sh installs it")
    tmp = Path(tempfile.mkdtemp(prefix="trillim-replicas-"))
    replicas = [Replica(tmp, "a"), Replica(tmp, "b")]
    for r in replicas:
        r.wait_ready()
    lb = Nginx(tmp, replicas)
    yield lb, replicas
    lb.stop()
    for r in replicas:
        r.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def stream(client, prompt, n):
    """Streams a completion of exactly `n` tokens; returns (text, finish_reason, chunks)."""
    text, finish, chunks = "", None, 0
    s = client.completions.create(model="m", prompt=prompt, max_tokens=n, stream=True,
                                  extra_body={"ignore_eos": True})
    for c in s:
        chunks += 1
        text += c.choices[0].text
        finish = c.choices[0].finish_reason or finish
    return text, finish, chunks


def test_streams_survive_a_drain_and_a_kill(cluster):
    lb, (a, b) = cluster
    # Concurrent streams through the balancer all complete.
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        runs = list(ex.map(lambda i: stream(lb.client(), f"Story {i}:", 24), range(6)))
    assert all(f == "length" for _, f, _ in runs), runs

    # SIGTERM a replica while it streams: the stream completes, the replica stops being
    # ready, new requests through the balancer land on the other replica, and it exits 0.
    # 600 tokens outlast the signal on a fast machine and the 30 s drain on a busy one.
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{a.port}/v1", api_key="x", max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        long = ex.submit(stream, direct, "A long story:", 600)
        time.sleep(1.0)
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert get(a.port, "/readyz")[0] == 503
        assert json.loads(get(a.port, "/readyz")[1])["status"] == "draining"
        during = [stream(lb.client(), f"During the drain {i}:", 8) for i in range(4)]
        assert all(f == "length" for _, f, _ in during)
        text, finish, chunks = long.result(timeout=120)
    assert finish == "length" and chunks >= 600
    assert a.proc.wait(timeout=40) == 0

    # Kill the other one mid-stream: its client is told (an error), nothing else fails once
    # the replica that drained is back; the killed one is restarted and serves again.
    a.start()
    a.wait_ready()
    direct_b = openai.OpenAI(base_url=f"http://127.0.0.1:{b.port}/v1", api_key="x", max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        doomed = ex.submit(stream, direct_b, "Doomed:", 400)
        time.sleep(1.0)
        b.proc.kill()
        b.proc.wait()
        with pytest.raises(Exception):
            doomed.result(timeout=60)
    after = [stream(lb.client(), f"After the kill {i}:", 8) for i in range(4)]
    assert all(f == "length" for _, f, _ in after)
    b.start()
    # While b loads, the balancer keeps answering (b refuses or answers 503: retried on a).
    while_loading = [stream(lb.client(), f"While b loads {i}:", 4) for i in range(3)]
    assert all(f == "length" for _, f, _ in while_loading)
    b.wait_ready()
    assert stream(openai.OpenAI(base_url=f"http://127.0.0.1:{b.port}/v1", api_key="x"),
                  "Back:", 4)[1] == "length"


def test_a_conversation_stays_on_one_replica(cluster):
    lb, _ = cluster
    c = lb.client(session="conv-7")
    messages = [{"role": "user", "content": "Name three rivers in Europe."}]
    cached = []
    for turn in range(3):
        r = c.chat.completions.create(model="m", messages=messages, max_tokens=16, temperature=0)
        cached.append(r.usage.prompt_tokens_details.cached_tokens)
        messages += [{"role": "assistant", "content": r.choices[0].message.content},
                     {"role": "user", "content": f"And {turn + 2} more?"}]
    # nginx logs a request after its response went out: wait for the third line.
    deadline = time.time() + 10
    while len(lb.upstreams("conv-7")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    ups = lb.upstreams("conv-7")
    assert len(ups) == 3 and len(set(ups)) == 1, ups
    assert cached[1] > 0 and cached[2] > cached[1], cached


def test_shipped_manifests_agree_with_the_server():
    import yaml

    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in (ROOT / "deploy" / "k8s").glob("*.yaml")}
    (dep,) = docs["deployment.yaml"]
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    drain = int(c["args"][c["args"].index("--drain-timeout") + 1])
    assert spec["terminationGracePeriodSeconds"] > drain
    # Every flag the manifest passes is one `trillim serve` takes.
    flags = [a for a in c["args"] if a.startswith("--")]
    help_text = subprocess.run([str(BIN), "serve", "--help"], capture_output=True, text=True).stdout
    for f in flags:
        assert f in help_text, f
    assert docs["service.yaml"][0]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert docs["pdb.yaml"][0]["spec"]["maxUnavailable"] == 1
