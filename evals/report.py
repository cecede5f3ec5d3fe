"""The eval report: `report.md` (a summary to paste into a PR) and `report.html` (one self-contained page).

    from evals.report import write_reports
    write_reports(metrics, records, [(r.id, r.text) for r in spec.rules], Path("runs/eval"), "demo eval")

`metrics` and `records` are what `evals.run.main` computes (metrics.json and answers_<arm>.jsonl). The HTML
page loads nothing: its plots are inline SVG drawn here, and its Content-Security-Policy forbids every fetch
and every script except the render check below, so a model's answer can neither load nor run anything even
if escaping were ever missed.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from pathlib import Path

from promptbake.io import atomic_write_text

# Okabe-Ito: distinguishable under the common colour-vision deficiencies; arm i has colour i everywhere
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000"]
MD_DISAGREEMENTS = 20
HTML_DISAGREEMENTS = 200  # past this the page gets slow to scroll; answers_<arm>.jsonl has them all

HOW_TO_READ = (
    "Every arm answered the same held-out inputs with the same generation settings, and every answer is scored "
    "raw by the spec's checks (no repairs). 'all rules' is the share of answers that pass every check, with a "
    "95% Wilson interval; each rule's row is the share that pass that check. The goal is tuned_unprompted "
    "(no prompt) as close as possible to base_prompted (the full prompt the teacher saw) at a fraction of its "
    "prompt tokens. McNemar p compares an arm's pass/fail with base_prompted's on the same inputs: below 0.05 "
    "the difference is unlikely to be chance; a large p means no evidence of a difference, not proof that "
    "there is none. Latencies come from one run at one batch size: compare arms, not machines."
)

# Measures what the browser actually laid out (not just what the markup says), so a headless browser's
# dumped DOM proves the plots rendered; it also counts scripts, which would expose an injected one.
RENDER_CHECK_JS = """
addEventListener("load", () => {
  const size = (el) => el.getBoundingClientRect();
  const plots = [...document.querySelectorAll("svg.plot")].map((s) => (
    {id: s.id, width: Math.round(size(s).width), height: Math.round(size(s).height)}));
  const bars = [...document.querySelectorAll("svg.plot rect.bar")]
    .filter((r) => size(r).width > 0 && size(r).height > 0).length;
  document.getElementById("render-check").textContent =
    JSON.stringify({plots: plots, bars_rendered: bars, scripts: document.scripts.length});
});
"""

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


def write_reports(metrics: dict, records: dict[str, list[dict]], rules: list[tuple[str, str]], out_dir: Path,
                  title: str) -> tuple[Path, Path]:
    """Write report.md and report.html into out_dir; return their paths."""
    arms = [k for k, v in metrics.items() if isinstance(v, dict) and "all_rules_adherence" in v]
    # rules without a check have no rate; per_rule holds exactly the checked ones
    measured = {rule_id for arm in arms for rule_id in metrics[arm]["per_rule"]}
    rules = [(rule_id, text) for rule_id, text in rules if rule_id in measured]
    rows = table_rows(metrics, arms, [rule_id for rule_id, _ in rules])
    disagree = disagreements(records, arms)
    md_path, html_path = Path(out_dir) / "report.md", Path(out_dir) / "report.html"
    atomic_write_text(md_path, markdown(title, arms, rules, rows, disagree))
    atomic_write_text(html_path, html_page(title, metrics, arms, rules, rows, disagree))
    return md_path, html_path


def table_rows(metrics: dict, arms: list[str], rule_ids: list[str]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per arm): the rows of `evals.run.print_table`, shared by both reports."""
    ms = [metrics[arm] for arm in arms]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    rows = [("model", [str(m.get("model", "-")) for m in ms]),
            ("all rules", [pct(m["all_rules_adherence"]) for m in ms]),
            ("all rules 95% CI", [f"{m['all_rules_ci95'][0]:.0%}-{m['all_rules_ci95'][1]:.0%}" for m in ms])]
    # the loose variants are optional: older metrics.json files don't have them
    if any("all_rules_adherence_loose" in m for m in ms):
        rows.append(("all rules (loose)", [pct(m.get("all_rules_adherence_loose")) for m in ms]))
    for rule_id in rule_ids:
        rows.append((f"rule {rule_id}", [pct(m["per_rule"].get(rule_id)) for m in ms]))
        if any("per_rule_loose" in m for m in ms):
            rows.append((f"rule {rule_id} (loose)", [pct(m.get("per_rule_loose", {}).get(rule_id)) for m in ms]))
    if any("label_match" in m for m in ms):
        rows.append(("label match", [pct(m.get("label_match")) for m in ms]))
    for key in (k for k in metrics if k.startswith("judge_vs_")):
        rows.append((f"judge win rate vs {key[len('judge_vs_'):]}",
                     [pct(metrics[key][arm]["win_rate"]) if arm in metrics[key] else "-" for arm in arms]))
    rows += [("prompt tokens / request", [f"{m['prompt_tokens_per_request']:.0f}" for m in ms]),
             ("generated tokens / request", [f"{m['generated_tokens_per_request']:.0f}" for m in ms]),
             ("latency s / request", [f"{m['latency_s_per_request']:.3f}" for m in ms])]
    if "vs_base_prompted" in metrics:
        vs = metrics["vs_base_prompted"]
        rows.append(("McNemar p vs base_prompted", [f"{vs[arm]:.3g}" if arm in vs else "-" for arm in arms]))
    rows.append(("n", [str(m["n"]) for m in ms]))
    return rows


def disagreements(records: dict[str, list[dict]], arms: list[str]) -> list[tuple[str, dict[str, dict]]]:
    """(input, arm -> record) for the inputs on which the arms differ in all-rules pass/fail, in input order.

    Records are grouped by input rather than zipped by position, so that with several samples per input the
    first sample of each arm is compared; an input that appears twice counts once."""
    firsts: dict[str, dict[str, dict]] = {}
    for arm in (a for a in arms if a in records):
        firsts[arm] = {}
        for record in records[arm]:
            firsts[arm].setdefault(record["input"], record)
    if len(firsts) < 2:
        return []
    out = []
    for text in next(iter(firsts.values())):
        row = {arm: by_input[text] for arm, by_input in firsts.items() if text in by_input}
        if len({record["all_rules"] for record in row.values()}) > 1:
            out.append((text, row))
    return out


# ---------------------------------------------------------------- Markdown

def md_cell(text: str, limit: int | None = None) -> str:
    """One table cell: a single line, pipes escaped, and HTML escaped since renderers pass tags through."""
    text = " ".join(text.split())
    if limit and len(text) > limit:
        text = text[:limit - 1] + "…"
    return escape(text, quote=False).replace("|", "\\|")


def markdown(title: str, arms: list[str], rules: list[tuple[str, str]], rows: list[tuple[str, list[str]]],
             disagree: list[tuple[str, dict[str, dict]]]) -> str:
    lines = [f"# {md_cell(title)}", "", "| metric | " + " | ".join(arms) + " |",
             "| --- |" + " ---: |" * len(arms)]
    lines += [f"| {label} | " + " | ".join(md_cell(c) for c in cells) + " |" for label, cells in rows]
    lines += ["", f"How to read it: {HOW_TO_READ}", "", "Rules:", ""]
    lines += [f"- `{rule_id}`: {md_cell(text)}" for rule_id, text in rules]
    lines += ["", f"## Inputs where the arms disagree on all rules ({len(disagree)})", ""]
    if not disagree:
        lines.append("None: every arm passed or failed the same inputs.")
    else:
        lines += ["| # | input | " + " | ".join(arms) + " |", "| ---: | --- |" + " --- |" * len(arms)]
        for i, (text, row) in enumerate(disagree[:MD_DISAGREEMENTS], 1):
            verdicts = [md_cell("pass" if row[arm]["all_rules"] else "fail: " + ", ".join(row[arm]["failed"]))
                        if arm in row else "-" for arm in arms]
            lines.append(f"| {i} | {md_cell(text, 80)} | " + " | ".join(verdicts) + " |")
        if len(disagree) > MD_DISAGREEMENTS:
            lines += ["", f"First {MD_DISAGREEMENTS} of {len(disagree)}; report.html and answers_<arm>.jsonl "
                          "have the rest, with answers and reasons."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- SVG plots

def svg_open(plot_id: str, title: str, width: float, height: float) -> str:
    return (f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-labelledby="{plot_id}-title"><title id="{plot_id}-title">{escape(title)}</title>')


def bar(x: float, y: float, w: float, h: float, colour: str, tip: str) -> str:
    # at least one unit tall/wide, so that a 0 value still shows as a mark next to its "0%" label
    return (f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" height="{max(h, 1):.1f}" '
            f'fill="{colour}"><title>{escape(tip)}</title></rect>')


def adherence_svg(metrics: dict, arms: list[str], rule_ids: list[str]) -> str:
    """Grouped bars: one group for all rules then one per rule, one bar per arm, CI whiskers on all rules."""
    groups = [("all rules", [metrics[a]["all_rules_adherence"] for a in arms])]
    groups += [(rule_id, [metrics[a]["per_rule"].get(rule_id) for a in arms]) for rule_id in rule_ids]
    bar_w, gap, left, plot_h = 28, 24, 56, 220
    # a group is as wide as its bars or its label, whichever is wider, so labels never overlap
    slot = max(bar_w * len(arms), 7 * max(len(name) for name, _ in groups)) + gap
    width = max(left + slot * len(groups), left + 7 * max(len(a) for a in arms) + 36) + 16
    legend, x, y = [], left, 6
    for i, arm in enumerate(arms):  # left to right, wrapping to a new line when the plot is too narrow
        item_w = 7 * len(arm) + 36
        if x + item_w > width and x > left:
            x, y = left, y + 18
        legend.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                      f'<text x="{x + 17}" y="{y + 10}">{escape(arm)}</text>')
        x += item_w
    top = y + 32
    height = top + plot_h + 56
    parts = [svg_open("plot-adherence", "Adherence per rule by arm", width, height), *legend]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - 16}" y1="{y}" y2="{y}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick:.0%}</text>')
    for g, (name, values) in enumerate(groups):
        x0 = left + g * slot + (slot - bar_w * len(arms)) / 2
        for i, (arm, value) in enumerate(zip(arms, values)):
            if value is None:
                continue
            x, h = x0 + i * bar_w, plot_h * value
            parts.append(bar(x + 2, top + plot_h - h, bar_w - 4, h, PALETTE[i % len(PALETTE)],
                             f"{arm}, {name}: {value:.1%}"))
            label_at = value
            if g == 0:  # the all-rules interval: is a gap between arms more than sampling noise?
                lo, hi = metrics[arm]["all_rules_ci95"]
                label_at = max(value, hi)  # above the whisker, not crossed by it
                cx, y_lo, y_hi = x + bar_w / 2, top + plot_h * (1 - lo), top + plot_h * (1 - hi)
                parts.append(f'<path class="ci" d="M{cx - 4} {y_lo:.1f}H{cx + 4}M{cx} {y_lo:.1f}V{y_hi:.1f}'
                             f'M{cx - 4} {y_hi:.1f}H{cx + 4}" stroke="#333" stroke-width="1.5" fill="none"/>')
            parts.append(f'<text x="{x + bar_w / 2}" y="{top + plot_h * (1 - label_at) - 4:.1f}" '
                         f'text-anchor="middle" font-size="10">{value:.0%}</text>')
        parts.append(f'<text x="{left + g * slot + slot / 2}" y="{top + plot_h + 18}" '
                     f'text-anchor="middle">{escape(name)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - 16}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#333"/>'
                 f'<text x="{left + (width - left) / 2}" y="{height - 10}" text-anchor="middle">rule '
                 f'(whiskers: 95% CI of all rules)</text><text transform="translate(14 {top + plot_h / 2}) '
                 f'rotate(-90)" text-anchor="middle">adherence (share of answers)</text></svg>')
    return "".join(parts)


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


# ---------------------------------------------------------------- HTML

def arm_header(arm: str, i: int) -> str:
    return f'<th><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>{escape(arm)}</th>'


def verdict_html(record: dict) -> str:
    if record["all_rules"]:
        head = '<span class="pass">pass</span>'
    else:
        items = "".join(f"<li><b>{escape(rule_id)}</b>: {escape(str(reason))}</li>"
                        for rule_id, reason in record["failed"].items())
        head = f'<span class="fail">fail</span><ul class="failed">{items}</ul>'
    return f'{head}<div class="answer">{escape(record["answer"])}</div>'


def html_page(title: str, metrics: dict, arms: list[str], rules: list[tuple[str, str]],
              rows: list[tuple[str, list[str]]], disagree: list[tuple[str, dict[str, dict]]]) -> str:
    headers = "".join(arm_header(arm, i) for i, arm in enumerate(arms))
    table = "".join(f"<tr><th>{escape(label)}</th>" + "".join(f'<td class="num">{escape(c)}</td>' for c in cells)
                    + "</tr>" for label, cells in rows)
    shown = disagree[:HTML_DISAGREEMENTS]
    drows = "".join(f"<tr><td>{i}</td><td class=\"answer\">{escape(text)}</td>"
                    + "".join(f"<td>{verdict_html(row[arm]) if arm in row else '-'}</td>" for arm in arms)
                    + "</tr>" for i, (text, row) in enumerate(shown, 1))
    more = (f"<p>First {len(shown)} of {len(disagree)}; answers_&lt;arm&gt;.jsonl has them all.</p>"
            if len(disagree) > len(shown) else "")
    disagree_html = (f"<table><tr><th>#</th><th>input</th>{headers}</tr>{drows}</table>{more}" if disagree
                     else "<p>None: every arm passed or failed the same inputs.</p>")
    script_hash = base64.b64encode(hashlib.sha256(RENDER_CHECK_JS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    rule_list = "".join(f"<li><code>{escape(rule_id)}</code>: {escape(text)}</li>" for rule_id, text in rules)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p><b>How to read it.</b> {escape(HOW_TO_READ)}</p>
<table><tr><th>metric</th>{headers}</tr>{table}</table>
<h2>Rules</h2><ul>{rule_list}</ul>
<h2>Adherence</h2>
{adherence_svg(metrics, arms, [rule_id for rule_id, _ in rules])}
<h2>Cost</h2>
{arm_bars_svg("plot-prompt-tokens", "Prompt tokens per request", "prompt tokens per request", arms,
              [metrics[a]["prompt_tokens_per_request"] for a in arms], ".0f")}
{arm_bars_svg("plot-latency", "Latency per request", "seconds per request (same batch size for every arm)",
              arms, [metrics[a]["latency_s_per_request"] for a in arms], ".3f")}
<h2>Inputs where the arms disagree on all rules ({len(disagree)})</h2>
{disagree_html}
<pre id="render-check" hidden></pre>
<script>{RENDER_CHECK_JS}</script>
</body></html>
"""
