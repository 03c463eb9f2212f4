#!/usr/bin/env python3
"""Draws decode and prefill tokens/s per model and thread count from scripts/bench.sh's
results.jsonl as an SVG bar chart (no dependencies)."""
import json
import sys

def main(src, dst):
    rows = [json.loads(l) for l in open(src) if l.strip()]
    files = list(dict.fromkeys(r["file"] for r in rows))
    series = list(dict.fromkeys((r["engine"], r["threads"]) for r in rows))
    colors = ["#1f77b4", "#6baed6", "#d62728", "#fc9272", "#2ca02c", "#98df8a"]
    panels = [("decode_tok_s", "decode tokens/s"), ("prefill_tok_s", "prefill tokens/s (128-token prompt)")]
    W, H, pad, top = 900, 330, 60, 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H * len(panels) + 40}" font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>']
    for pi, (key, title) in enumerate(panels):
        y0 = pi * H + top
        vals = {(r["engine"], r["threads"], r["file"]): r[key]["median"] for r in rows if r.get(key, {}).get("median")}
        vmax = max(vals.values()) * 1.15 if vals else 1
        plot_h = H - 110
        svg.append(f'<text x="{pad}" y="{y0 - 12}" font-size="14" font-weight="bold">{title}</text>')
        group_w = (W - 2 * pad) / len(files)
        bar_w = group_w * 0.8 / max(1, len(series))
        svg.append(f'<line x1="{pad}" y1="{y0 + plot_h}" x2="{W - pad}" y2="{y0 + plot_h}" stroke="black"/>')
        for fi, f in enumerate(files):
            gx = pad + fi * group_w + group_w * 0.1
            for si, s in enumerate(series):
                v = vals.get((s[0], s[1], f))
                if v is None:
                    continue
                h = plot_h * v / vmax
                x = gx + si * bar_w
                svg.append(f'<rect x="{x:.1f}" y="{y0 + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colors[si % len(colors)]}"/>')
                svg.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y0 + plot_h - h - 3:.1f}" text-anchor="middle" font-size="9">{v:.0f}</text>')
            label = f.replace(".gguf", "")
            svg.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{y0 + plot_h + 16}" text-anchor="middle">{label}</text>')
        for si, s in enumerate(series):
            lx = pad + si * 150
            ly = y0 + plot_h + 34
            svg.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colors[si % len(colors)]}"/>')
            svg.append(f'<text x="{lx + 14}" y="{ly}">{s[0]}, {s[1]} thread{"s" if s[1] != 1 else ""}</text>')
    svg.append("</svg>")
    open(dst, "w").write("\n".join(svg))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
