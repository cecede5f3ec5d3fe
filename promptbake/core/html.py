"""The pieces of promptbake's self-contained reports (the eval report, the dataset lint report): one page shell
whose Content-Security-Policy forbids every fetch, a colour palette, Markdown cells and inline SVG bars.

    from promptbake.core.html import arm_bars_svg, page
    html = page("my report", "<h1>my report</h1>" + arm_bars_svg("plot-x", "X", "x", ["a", "b"], [1.0, 2.0], ".1f"))

A report's page loads nothing: its plots are inline SVG, and its only script, when it has one, runs because
its hash is in the policy; so a model's answer shown on the page can neither load nor run anything even if
escaping were ever missed.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

# Okabe-Ito: distinguishable under the common colour-vision deficiencies; arm i has colour i everywhere
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000"]

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1200px; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
th { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 5px; border-radius: 2px; }
svg.plot { display: block; max-width: 100%; height: auto; margin: 1rem 0 2rem; }
svg text { font: 11px system-ui, sans-serif; fill: #222; }
.answer { white-space: pre-wrap; font: 12px ui-monospace, monospace; max-width: 45ch; margin: 4px 0; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
ul.failed { margin: 0; padding-left: 1.2em; font-size: 12px; }
"""


def page(title: str, body: str, script: str | None = None) -> str:
    """One HTML document: `body` (already escaped) under `title`, styled by CSS; `script`, when given, is the
    only script the policy lets run (by its hash)."""
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    tail = ""
    if script is not None:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        csp += f"; script-src 'sha256-{digest}'"
        tail = f"<script>{script}</script>\n"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
{body}
{tail}</body></html>
"""


def md_cell(text: str, limit: int | None = None) -> str:
    """One Markdown table cell: a single line, pipes escaped, and HTML escaped since renderers pass tags
    through."""
    text = " ".join(text.split())
    if limit and len(text) > limit:
        text = text[:limit - 1] + "…"
    return escape(text, quote=False).replace("|", "\\|")


def svg_open(plot_id: str, title: str, width: float, height: float) -> str:
    return (f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-labelledby="{plot_id}-title"><title id="{plot_id}-title">{escape(title)}</title>')


def bar(x: float, y: float, w: float, h: float, colour: str, tip: str) -> str:
    # at least one unit tall/wide, so that a 0 value still shows as a mark next to its "0%" label
    return (f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" height="{max(h, 1):.1f}" '
            f'fill="{colour}"><title>{escape(tip)}</title></rect>')


def arm_bars_svg(plot_id: str, title: str, axis: str, arms: list[str], values: list[float], fmt: str) -> str:
    """Horizontal bars, one per arm (horizontal so that arm names stay readable)."""
    left, area, row, top = 12 + 7 * max(len(a) for a in arms), 440, 26, 24
    width, height = left + area + 90, top + row * len(arms) + 40
    scale = max(values) or 1.0
    parts = [svg_open(plot_id, title, width, height), f'<text x="{left}" y="14" font-weight="600">'
             f'{escape(title)}</text>']
    for i, (arm, value) in enumerate(zip(arms, values)):
        y, w = top + i * row, area * value / scale
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(arm)}</text>')
        parts.append(bar(left, y, w, row - 8, PALETTE[i % len(PALETTE)], f"{arm}: {value:{fmt}}"))
        parts.append(f'<text x="{left + max(w, 1) + 5:.1f}" y="{y + 13}">{value:{fmt}}</text>')
    base = top + row * len(arms)
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top - 4}" y2="{base}" stroke="#333"/>'
                 f'<text x="{left + area / 2}" y="{base + 24}" text-anchor="middle">{escape(axis)}</text></svg>')
    return "".join(parts)


def line_chart_svg(plot_id: str, title: str, x_label: str, xs: list[float], series: dict[str, list[float | None]],
                   y_max: float = 1.0, y_fmt: str = ".0%") -> str:
    """Lines over shared x values, one colour per series (None leaves a gap), y from 0 to `y_max`, with a
    legend; each point carries its value as a tooltip."""
    left, top, area_w, area_h = 56, 28, 520, 220
    legend_w = 12 + 7 * max((len(name) for name in series), default=0)
    width, height = left + area_w + 30 + legend_w, top + area_h + 48
    x_max = max(xs) or 1.0

    def px(x: float) -> float:
        return left + area_w * x / x_max

    def py(y: float) -> float:
        return top + area_h * (1 - min(y, y_max) / y_max)

    parts = [svg_open(plot_id, title, width, height), f'<text x="{left}" y="16" font-weight="600">{escape(title)}'
             "</text>"]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = py(tick * y_max)
        parts.append(f'<line x1="{left}" x2="{left + area_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * y_max:{y_fmt}}</text>')
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{top + area_h + 16}" text-anchor="middle">{x:g}</text>')
    for i, (name, ys) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [(px(x), py(y), x, y) for x, y in zip(xs, ys) if y is not None]
        if len(points) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in points)
            parts.append(f'<polyline class="line" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for a, b, x, y in points:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"><title>{escape(name)} at {x:g}: '
                         f'{y:{y_fmt}}</title></circle>')
        ly = top + 14 * i
        parts.append(f'<rect x="{left + area_w + 30}" y="{ly}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + area_w + 44}" y="{ly + 9}">{escape(name)}</text>')
    parts.append(f'<line x1="{left}" x2="{left + area_w}" y1="{top + area_h}" y2="{top + area_h}" stroke="#333"/>'
                 f'<text x="{left + area_w / 2}" y="{top + area_h + 36}" text-anchor="middle">{escape(x_label)}</text>'
                 "</svg>")
    return "".join(parts)
