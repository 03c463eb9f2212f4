#!/usr/bin/env python3
"""Search harness figures: the time one search round adds (provider, page fetch and
extraction, formatting) with stand-in servers on 127.0.0.1, the tokens of the search message,
and main-text extraction quality on saved article pages against trafilatura.

    scripts/bench-search.sh            (sets up the environment, then runs this)

Extraction quality per page: the share of the article's sentences found in the extracted text
(recall) and the share of the page's boilerplate strings (navigation, cookie banners,
comments, related links, footers) found in it (boilerplate kept); whitespace is normalized
before comparing. Both extractors get the same bytes.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "server/tests/fixtures/search-pages"


def ddg_page(urls):
    out = ['<html><body><div id="links" class="results">']
    for i, u in enumerate(urls):
        enc = urllib.parse.quote(u, safe="")
        out.append(
            f'<div class="result results_links web-result"><div class="links_main result__body">'
            f'<h2 class="result__title"><a class="result__a" href="//duckduckgo.com/l/?uddg={enc}&amp;rut=x">'
            f"Result {i}</a></h2><a class=\"result__snippet\">Snippet {i}.</a></div></div>"
        )
    out.append("</div></body></html>")
    return "".join(out).encode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        q = form.get("q", [""])[0]
        base = f"http://127.0.0.1:{self.server.server_port}"
        if q.startswith("page "):
            names = [q[5:]]
        else:
            names = ["news.html", "wiki.html", "blog.html"]
        self.reply(200, "text/html; charset=utf-8", ddg_page([f"{base}/pages/{n}" for n in names]))

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        p = PAGES / name
        if not self.path.startswith("/pages/") or not p.is_file():
            return self.reply(404, "text/plain", b"not found")
        ctype = "text/html" if "cp1252" in name else "text/html; charset=utf-8"
        self.reply(200, ctype, p.read_bytes())

    def reply(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def norm(s):
    return " ".join(s.split())


def score(text, truth):
    t = norm(text or "")
    art = [norm(a) for a in truth["article"]]
    boil = [norm(b) for b in truth["boilerplate"]]
    recall = sum(a in t for a in art) / len(art)
    kept = sum(b in t for b in boil) / len(boil)
    return recall, kept


def trillim_search(binary, model, env, query, extra):
    out = subprocess.run(
        [binary, "search", query, "--json", "--model", model] + extra,
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    import trafilatura

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "TRILLIM_DDG_URL": f"http://127.0.0.1:{srv.server_port}",
        "TRILLIM_SEARCH_ALLOW_HOSTS": "127.0.0.1",
        "TRILLIM_LOG": "warn",
    })
    truth = json.loads((PAGES / "truth.json").read_text(encoding="utf-8"))

    print("## Extraction quality (article sentences recovered / boilerplate strings kept)\n")
    print("| page | trillim (dom_smoothie) | trafilatura %s |" % trafilatura.__version__)
    print("|---|---|---|")
    sums = {"trillim": [0.0, 0.0], "trafilatura": [0.0, 0.0]}
    for name, t in truth.items():
        v = trillim_search(args.binary, args.model, env, f"page {name}",
                           ["--max-results", "1", "--budget", "100000"])
        ours = v["results"][0].get("page_text") or ""
        theirs = trafilatura.extract((PAGES / name).read_bytes(), include_comments=False,
                                     include_tables=False) or ""
        a, b = score(ours, t), score(theirs, t)
        for k, s in (("trillim", a), ("trafilatura", b)):
            sums[k][0] += s[0]
            sums[k][1] += s[1]
        print(f"| {name} | {a[0]:.0%} / {a[1]:.0%} | {b[0]:.0%} / {b[1]:.0%} |")
    n = len(truth)
    print(f"| **mean** | **{sums['trillim'][0]/n:.0%} / {sums['trillim'][1]/n:.0%}** "
          f"| **{sums['trafilatura'][0]/n:.0%} / {sums['trafilatura'][1]/n:.0%}** |")

    print(f"\n## One search round (3 results, 1024-token budget), median of {args.runs} runs\n")
    rows = []
    for _ in range(args.runs):
        v = trillim_search(args.binary, args.model, env, "tram depot library", [])
        assert all(r["fetched"] for r in v["results"]), v
        rows.append(v)
    med = lambda k: statistics.median(r["timings_ms"][k] for r in rows)
    tokens = statistics.median(r["tokens"] for r in rows)
    print("| provider | fetch + extract (3 pages, parallel) | format (budgets, tokenizer) | total | search message tokens |")
    print("|---|---|---|---|---|")
    print(f"| {med('provider'):.1f} ms | {med('fetch_extract'):.1f} ms | {med('format'):.1f} ms "
          f"| {med('total'):.1f} ms | {tokens:.0f} |")
    srv.shutdown()


if __name__ == "__main__":
    sys.exit(main())
