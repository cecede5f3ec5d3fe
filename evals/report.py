"""The eval report: `report.md` (a summary to paste into a PR) and `report.html` (one self-contained page).

    from evals.report import write_reports
    write_reports(metrics, records, [(r.id, r.text) for r in spec.rules], Path("runs/eval"), "demo eval")

`metrics` and `records` are what `evals.run.main` computes (metrics.json and answers_<arm>.jsonl). The HTML
page loads nothing: its plots are inline SVG drawn here, and its Content-Security-Policy forbids every fetch
and every script except the render check below, so a model's answer can neither load nor run anything even
if escaping were ever missed.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from evals.drift import drift_rows
from promptbake.core.html import PALETTE, arm_bars_svg, bar, md_cell, page, svg_open
from promptbake.core.io import atomic_write_text

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
    atomic_write_text(md_path, markdown(title, arms, rules, rows, disagree) + drift_markdown(metrics.get("drift")))
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
        for field in ms[0].get("label_match_per_field", {}):
            rows.append((f"  label: {field}", [pct(m.get("label_match_per_field", {}).get(field)) for m in ms]))
    for key in (k for k in metrics if k.startswith("judge_vs_")):
        rows.append((f"judge win rate vs {key[len('judge_vs_'):]}",
                     [pct(metrics[key][arm]["win_rate"]) if arm in metrics[key] else "-" for arm in arms]))
    if any("answer_diversity" in m for m in ms):
        rows.append(("answer diversity", [pct(m.get("answer_diversity")) for m in ms]))
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
    rule_list = "".join(f"<li><code>{escape(rule_id)}</code>: {escape(text)}</li>" for rule_id, text in rules)
    return page(title, f"""<h1>{escape(title)}</h1>
<p><b>How to read it.</b> {escape(HOW_TO_READ)}</p>
<table><tr><th>metric</th>{headers}</tr>{table}</table>
<h2>Rules</h2><ul>{rule_list}</ul>
{drift_html(metrics.get("drift"))}
<h2>Adherence</h2>
{adherence_svg(metrics, arms, [rule_id for rule_id, _ in rules])}
<h2>Cost</h2>
{arm_bars_svg("plot-prompt-tokens", "Prompt tokens per request", "prompt tokens per request", arms,
              [metrics[a]["prompt_tokens_per_request"] for a in arms], ".0f")}
{arm_bars_svg("plot-latency", "Latency per request", "seconds per request (same batch size for every arm)",
              arms, [metrics[a]["latency_s_per_request"] for a in arms], ".3f")}
<h2>Inputs where the arms disagree on all rules ({len(disagree)})</h2>
{disagree_html}
<pre id="render-check" hidden></pre>""", script=RENDER_CHECK_JS)


# ---------------------------------------------------------------- off-spec drift (the drift arm)

DRIFT_HOW_TO_READ = (
    "The base and the tuned model answered general questions that no spec asks, with no system prompt, greedily. "
    "KL is the tuned model's divergence from the base per token of the base's own answers (0: it would say the "
    "same with the same confidence). 'agrees with base' compares the short answers of fact and arithmetic "
    "questions; 'correct' compares them with the expected answer. The spec's checks should not pass on unrelated "
    "questions: a rise from base to tuned (all checks, or one check) means the spec's format leaks into them."
)


def drift_markdown(drift: dict | None) -> str:
    if not drift:
        return ""
    lines = ["", "## Off-spec drift", "", "| metric | base | tuned |", "| --- | ---: | ---: |"]
    lines += [f"| {md_cell(label)} | {base} | {tuned} |" for label, base, tuned in drift_rows(drift)]
    lines += ["", f"How to read it: {DRIFT_HOW_TO_READ}"]
    if drift.get("warning"):
        lines += ["", f"**Warning:** {md_cell(drift['warning'])}"]
    return "\n".join(lines) + "\n"


def drift_html(drift: dict | None) -> str:
    if not drift:
        return ""
    table = "".join(f"<tr><th>{escape(label)}</th><td class=\"num\">{escape(base)}</td>"
                    f"<td class=\"num\">{escape(tuned)}</td></tr>" for label, base, tuned in drift_rows(drift))
    warning = f'<p class="fail"><b>Warning:</b> {escape(drift["warning"])}</p>' if drift.get("warning") else ""
    return (f'<h2 id="drift">Off-spec drift</h2><p>{escape(DRIFT_HOW_TO_READ)}</p>{warning}'
            f"<table><tr><th>metric</th><th>base</th><th>tuned</th></tr>{table}</table>")
