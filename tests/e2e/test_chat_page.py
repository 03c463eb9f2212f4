"""The chat page at `/` in a real headless browser (Debian's chromium driven through
Playwright): it lists the model, streams a reply token by token, stops a reply with the stop
button (cancelling the request on the server), keeps the conversation across a reload, and
asks for the API key when the server has one. Run by scripts/e2e.sh, which installs chromium
and the `playwright` package (its driver only: the browser is Debian's).
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from test_openai_client import Server, smollm2

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is needed (apt-get install chromium); scripts/e2e.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server():
    home = Path(tempfile.mkdtemp(prefix="trillim-page-"))
    s = Server(home, str(smollm2()), ["--threads", "1"])
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


def wait_until(cond, timeout=30):
    """Polls `cond()` from the test (the page's CSP forbids evaluating strings in it)."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_chat_page_streams_stops_and_remembers(browser, server):
    page = browser.new_page()
    r = page.goto(f"http://127.0.0.1:{server.port}/")
    assert r.status == 200 and "text/html" in r.headers["content-type"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    wait_until(lambda: page.locator("#model option").count() > 0)
    assert "SmolLM2" in page.locator("#model").inner_text()

    # A reply streams in: its text grows over several observations before it finishes.
    page.click("#toggle")
    page.fill("#max_tokens", "48")
    page.dispatch_event("#max_tokens", "change")
    page.fill("#input", "Write a short poem about rivers.")
    page.click("#send")
    reply = page.locator(".msg.assistant").last
    lengths = []
    deadline = time.time() + 60
    while time.time() < deadline and page.locator("#stop").is_visible():
        lengths.append(len(reply.inner_text()))
        time.sleep(0.02)
    assert len(set(l for l in lengths if l > 0)) >= 3, lengths
    page.wait_for_selector(".msg.assistant .meta")
    meta = reply.locator(".meta").inner_text()
    assert "tokens" in meta and "tokens/s" in meta, meta

    # Stop: a long reply is cut short, and the server sees the request end early.
    page.fill("#max_tokens", "2000")
    page.dispatch_event("#max_tokens", "change")
    page.fill("#input", "Tell me a very long story about a lighthouse keeper.")
    page.click("#send")
    second = page.locator(".msg.assistant").nth(1)
    wait_until(lambda: second.count() > 0 and len(second.inner_text()) > 20)
    page.click("#stop")
    wait_until(lambda: page.locator(".msg.assistant").nth(1).locator(".meta").count() > 0, 20)
    stopped = page.locator(".msg.assistant").nth(1).locator(".meta").inner_text()
    assert "stopped" in stopped, stopped
    time.sleep(0.5)
    log = (server.home / "server.log").read_text()
    assert "generation cancelled" in log

    # The conversation survives a reload (kept in the browser).
    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg.user").count() == 2
    assert page.locator(".msg.assistant").count() == 2


def test_chat_page_asks_for_the_api_key(browser):
    home = Path(tempfile.mkdtemp(prefix="trillim-page-key-"))
    s = Server(home, str(smollm2()), ["--threads", "1", "--api-key", "sekrit"])
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{s.port}/")
        wait_until(lambda: page.locator("#model option").count() > 0)
        assert "API key" in page.locator("#model").inner_text()
        assert page.locator("#settings").is_visible()
        page.fill("#key", "sekrit")
        page.dispatch_event("#key", "change")
        wait_until(lambda: "SmolLM2" in page.locator("#model").inner_text())
        page.fill("#max_tokens", "8")
        page.dispatch_event("#max_tokens", "change")
        page.fill("#input", "Hello")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .meta", timeout=30000)
        assert "Error" not in page.locator(".msg.assistant").last.inner_text()
    finally:
        s.stop()
        shutil.rmtree(home, ignore_errors=True)
