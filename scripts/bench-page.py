#!/usr/bin/env python3
"""The chat page's weight and speed in a real headless browser, against a running server.

Usage: scripts/bench-page.py [BASE_URL] [RUNS]   (default http://127.0.0.1:8000, 5)

Prints the page's size, the time from navigation until the model list is filled (the page is
usable), and the time from pressing Send to the first reply text on screen, beside the time
to the first streamed token of the same request sent straight to the API, so the page's own
cost shows as the difference. Needs chromium and the `playwright` package (scripts/e2e.sh
installs both).
"""
import json
import shutil
import statistics
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
PROMPT = "Write one sentence about rivers."
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def poll(cond, timeout=60):
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError
        time.sleep(0.002)
    return time.perf_counter()


def api_first_token(model):
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 16, "stream": True}
    req = urllib.request.Request(BASE + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            d = json.loads(line[6:])
            if d.get("choices") and d["choices"][0].get("delta", {}).get("content"):
                first = time.perf_counter() - t0
                for _ in r:
                    pass
                return first
    return float("nan")


def main():
    html = urllib.request.urlopen(BASE + "/").read()
    model = json.load(urllib.request.urlopen(BASE + "/v1/models"))["data"][0]["id"]
    load, first, api = [], [], []
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        for _ in range(RUNS):
            page = browser.new_context().new_page()
            t0 = time.perf_counter()
            page.goto(BASE + "/")
            load.append(poll(lambda: page.locator("#model option").count() > 0) - t0)
            page.click("#toggle")
            page.fill("#max_tokens", "16")
            page.dispatch_event("#max_tokens", "change")
            page.fill("#input", PROMPT)
            reply = page.locator(".msg.assistant").last
            t0 = time.perf_counter()
            page.click("#send")
            first.append(poll(lambda: reply.count() > 0 and reply.inner_text().strip() != "") - t0)
            page.wait_for_selector(".msg.assistant .meta")
            page.context.close()
            api.append(api_first_token(model))
        browser.close()
    ms = lambda xs: "median %.0f ms (min %.0f, max %.0f)" % (
        1000 * statistics.median(xs), 1000 * min(xs), 1000 * max(xs))
    print(f"page size             {len(html)} bytes")
    print(f"page usable           {ms(load)}")
    print(f"first token on screen {ms(first)}")
    print(f"first token, API      {ms(api)}")


if __name__ == "__main__":
    main()
