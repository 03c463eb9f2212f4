"""End-to-end tests of `trillim serve` with the official `openai` Python client (and raw HTTP
for the error cases). Run by scripts/e2e.sh against a release binary.

Models: SmolLM2-135M-Instruct (real chat; TRILLIM_TEST_MODEL or the cache used by
scripts/fetch-test-model.sh) and the tiny fixtures in testdata/models (hot swap).
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("TRILLIM_BIN", ROOT / "target" / "release" / "trillim"))
TINY = ROOT / "testdata" / "models" / "tiny-bitnet-tq2_0.gguf"
GOLDEN = ROOT / "testdata" / "golden" / "logits-SmolLM2-135M-Instruct.Q4_1.json"


def smollm2():
    p = os.environ.get("TRILLIM_TEST_MODEL")
    if p:
        return Path(p)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "trillim" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def place(src: Path, dst_dir: Path):
    """Puts a model file into the store (hard link when possible, else a copy)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, model: str, extra=()):
        self.port = free_port()
        self.home = home
        self.log = open(home / "server.log", "wb")
        env = dict(os.environ, TRILLIM_HOME=str(home), TRILLIM_LOG="info")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", model, "--port", str(self.port), *extra],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, (home / "server.log").read_text()
            try:
                if self.raw("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw):
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120)
        return openai.OpenAI(base_url=self.base, api_key="unused", **kw)

    def raw(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        finally:
            c.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: build it with `cargo build --release -p trillim`")
    model = smollm2()
    if not model.exists():
        pytest.fail(f"{model} not found: run scripts/fetch-test-model.sh")
    home = Path(tempfile.mkdtemp(prefix="trillim-e2e-"))
    place(model, home / "models" / "HuggingFaceTB" / "SmolLM2-135M-Instruct")
    place(TINY, home / "models" / "test-org" / "tiny")
    s = Server(home, "HuggingFaceTB/SmolLM2-135M-Instruct", ["--ctx", "2048"])
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


def ask(server, content, **kw):
    kw.setdefault("max_tokens", 24)
    return server.client().chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": content}], **kw
    )


def test_models_list(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]


def test_chat_answers(server):
    r = ask(server, "Say hello.", temperature=0, max_tokens=64)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == u.model_extra["cached_tokens"]


def test_content_parts_and_unknown_fields(server):
    r = server.client().chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        max_tokens=4,
        extra_body={"some_unknown_field": {"a": 1}},
    )
    assert r.choices[0].message.role == "assistant"


def test_streaming_with_usage(server):
    stream = ask(server, "Tell me about cats.", stream=True, stream_options={"include_usage": True}, max_tokens=12)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_finish_reason_length(server):
    r = ask(server, "Write a long story about a dragon.", max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = server.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Write a long story."}], max_completion_tokens=2
    )
    assert r.usage.completion_tokens == 2


def test_ignore_eos_generates_to_max_tokens(server):
    msgs = [{"role": "user", "content": "Say only the word yes."}]
    short = server.client().chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=40)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 40
    full = server.client().chat.completions.create(
        model="m", messages=msgs, temperature=0, max_tokens=40, extra_body={"ignore_eos": True}
    )
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 40
    assert full.choices[0].message.content.startswith(short.choices[0].message.content)


def test_stop_sequences(server):
    prompt = "Count from 1 to 20, one number per line."
    free = ask(server, prompt, temperature=0, max_tokens=40).choices[0].message.content
    assert "\n" in free
    r = ask(server, prompt, temperature=0, max_tokens=40, stop=["\n", "zzz"])
    assert r.choices[0].message.content == free[: free.index("\n")]
    assert r.choices[0].finish_reason == "stop"
    cut = free.index("\n") + 2
    stop = free[cut - 1 : cut + 2]
    stream = ask(server, prompt, temperature=0, max_tokens=40, stop=stop, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == free[: free.index(stop)]


def test_seed_reproducible(server):
    a = ask(server, "Invent a name for a cat.", temperature=1.0, seed=1234, max_tokens=16)
    ask(server, "Something else entirely.", temperature=1.0, max_tokens=4)
    b = ask(server, "Invent a name for a cat.", temperature=1.0, seed=1234, max_tokens=16)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_cached_tokens_grow_across_turns(server):
    c = server.client()
    msgs = [{"role": "user", "content": "Name a fruit."}]
    r1 = c.chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=8)
    msgs += [{"role": "assistant", "content": r1.choices[0].message.content}, {"role": "user", "content": "Another?"}]
    r2 = c.chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=8)
    assert r2.usage.prompt_tokens_details.cached_tokens > 0
    assert r2.usage.prompt_tokens_details.cached_tokens < r2.usage.prompt_tokens


def test_n_choices_and_too_many_is_400(server):
    r = ask(server, "Name a colour.", n=2, seed=1)
    assert [c.index for c in r.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as e:
        ask(server, "hi", n=65)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "n"


def test_context_length_exceeded(server):
    with pytest.raises(openai.BadRequestError) as e:
        ask(server, "hello " * 3000)
    assert e.value.body["code"] == "context_length_exceeded"


def test_error_shapes_raw(server):
    def check(status, body, want):
        assert status == want, body
        err = json.loads(body)["error"]
        assert set(err) >= {"message", "type", "param", "code"}

    check(*server.raw("POST", "/v1/chat/completions", b"{oops")[::2], 400)
    check(*server.raw("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user"}], "temperature": -1}))[::2], 400)
    check(*server.raw("GET", "/v1/does-not-exist")[::2], 404)
    check(*server.raw("DELETE", "/v1/models")[::2], 405)
    check(*server.raw("POST", "/v1/completions", b"x" * (3 * 1024 * 1024))[::2], 413)


def test_completions_echo_logprobs_score_the_prompt(server):
    golden = json.loads(GOLDEN.read_text())
    r = server.client().completions.create(model="m", prompt=golden["text"], max_tokens=0, echo=True, logprobs=1)
    ch = r.choices[0]
    assert ch.text == golden["text"]
    lp = ch.logprobs
    assert len(lp.tokens) == len(golden["tokens"]) == r.usage.prompt_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    diffs = [abs(lp.token_logprobs[i + 1] - p["next_logprob"]) for i, p in enumerate(golden["positions"][:-1])]
    assert sum(diffs) / len(diffs) < 0.15
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    # A batch of prompts (as evaluation tools send them): one choice per prompt, in order.
    r = server.client().completions.create(model="m", prompt=["Hello", "The sky is"], max_tokens=0, echo=True, logprobs=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == ["Hello", "The sky is"]
    # Generation after the echoed prompt, streamed.
    chunks = list(server.client().completions.create(model="m", prompt="Once upon a time", max_tokens=5, stream=True, logprobs=2))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks if c.choices[0].logprobs) == 5


def test_forty_concurrent_clients(server):
    def one(i):
        try:
            r = ask(server, f"Say a word about the number {i}.", max_tokens=16)
            return r.choices[0].finish_reason
        except openai.RateLimitError as e:
            assert e.response.headers.get("retry-after")
            return 429

    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        results = list(ex.map(one, range(40), timeout=170))
    assert results.count(429) > 0
    assert sum(1 for r in results if r in ("stop", "length")) >= 1


def test_batched_streams_equal_their_solo_runs(server):
    """Greedy text is the same whether a request runs alone or batched with others."""
    prompts = [f"Write one sentence about {t}." for t in ("rivers", "bread", "owls", "glass", "snow", "maps")]

    def streamed(p):
        stream = server.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": p}], max_tokens=32, temperature=0, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [streamed(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as ex:
        together = list(ex.map(streamed, prompts, timeout=170))
    assert together == alone


def test_metrics_parse_as_prometheus_text(server):
    from prometheus_client.parser import text_string_to_metric_families

    ask(server, "hi", max_tokens=4)
    status, headers, body = server.raw("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in (
        "trillim_requests",
        "trillim_prompt_tokens",
        "trillim_generated_tokens",
        "trillim_time_to_first_token_seconds",
        "trillim_inter_token_latency_seconds",
        "trillim_queue_depth",
        "trillim_slots_busy",
        "trillim_kv_cells_used",
        "trillim_model_load_seconds",
    ):
        assert name in families, name
    chat = [
        s
        for s in families["trillim_requests"].samples
        if s.labels.get("route") == "/v1/chat/completions" and s.labels.get("status") == "200"
    ]
    assert chat and chat[0].value >= 1
    gen = families["trillim_generated_tokens"].samples[0].value
    assert gen >= 1
    ttft = [s for s in families["trillim_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert ttft[0].value >= 1
    assert ask(server, "ok?", max_tokens=2).choices[0].finish_reason in ("stop", "length")


def test_client_disconnect_cancels(server):
    c = server.client()
    stream = c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Write an endless story."}], stream=True, max_tokens=1900,
        temperature=1.0,
    )
    for i, _ in enumerate(stream):
        if i >= 3:
            break
    stream.close()
    # If the abandoned generation kept running, this would wait behind ~1900 tokens.
    r = ask(server, "Hi", max_tokens=1)
    assert r.choices[0].finish_reason == "length"
    time.sleep(0.2)
    assert b"cancelled" in (server.home / "server.log").read_bytes()


def test_path_safety(server):
    for model_dir, want in [("../../../etc", 403), ("/etc", 403), ("nobody/nothing", 404)]:
        st, _, body = server.raw("POST", "/v1/models/load", json.dumps({"model_dir": model_dir}))
        assert st == want, body
        assert "error" in json.loads(body)
    st, _, body = server.raw("POST", "/v1/models/load", json.dumps({"model_dir": "test-org/tiny", "adapter_dir": "x/y"}))
    assert st == 400 and "adapter" in json.loads(body)["error"]["message"].lower()


def test_hot_swap(server):
    st, _, body = server.raw("POST", "/v1/models/load", json.dumps({"model_dir": "test-org/tiny", "threads": None}))
    assert st == 200, body
    assert json.loads(body) == {"status": "success", "model": "tiny", "recompiled": False, "message": ""}
    assert [m.id for m in server.client().models.list().data] == ["tiny"]
    r = ask(server, "hello", max_tokens=3)
    assert r.usage.model_extra["cached_tokens"] == 0
    st, _, body = server.raw("POST", "/v1/models/load", json.dumps({"model_dir": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    assert st == 200, body
    assert ask(server, "Say hello.", max_tokens=4).choices[0].message.content
