"""The lint report's Markdown and self-contained HTML (inline SVG histogram; no fetches, no scripts)."""

from __future__ import annotations

from collections import Counter
from html import escape

from promptbake.core.html import PALETTE, arm_bars_svg, bar, md_cell, page, svg_open

SHOWN = 50  # findings listed per section in lint.md / lint.html; lint.json has them all


def sections(report: dict) -> list[tuple[str, list[str]]]:
    """(heading, finding lines) shared by the Markdown and HTML reports; texts are plain, escaped later."""
    lengths, cov = report["lengths"], report["coverage"]
    out = [("Exact duplicates (same prompt and completion)",
            [f"sft_train.jsonl lines {g}" for g in report["exact_duplicates"]]),
           ("One completion answering different prompts",
            [f"{r['completion']!r} in {r['rows']} rows: lines {r['lines']}"
             + (" ..." if r["rows"] > len(r["lines"]) else "") for r in report["repeated_completions"]]),
           (f"Near-duplicate completions (Jaccard >= {report['config']['near_duplicate_threshold']})",
            [f"lines {n['lines']}: similarity {n['similarity']}" for n in report["near_duplicates"]]),
           ("Eval inputs that leak into training",
            [f"eval_inputs.jsonl line {x['eval_line']} ~ {x['train_file']} line {x['train_line']} ({x['kind']}, "
             f"{x['similarity']}): {x['input'][:80]}" for x in report["leakage"]]),
           ("Over-represented values not in their row's input",
            [f"{v['value']!r} in {v['rows']} rows ({v['share']:.0%}): lines {v['lines']}"
             for v in report["invented_values"]["flagged"]]),
           (f"Rows longer than max_length={lengths['max_length']} tokens (truncated in training)",
            [f"sft_train.jsonl lines {lengths['truncated_lines']}"] if lengths["truncated_lines"] else [])]
    if report["rules"]:
        out.append(("Rows failing the spec's rules",
                    [f"{rid}: lines {lines}" for rid, lines in report["rules"]["failed_lines"].items() if lines]))
    if cov and "slots" in cov:
        out.append(("Template slots: training rows with the slot present / absent",
                    [f"{s}: {c['present']} present, {c['absent']} absent"
                     + (" (designed to be missing, never is)" if s in cov["uncovered"] else "")
                     for s, c in cov["slots"].items()]))
    return out


def markdown(report: dict) -> str:
    lines = [f"# Lint: {md_cell(report['dataset'])}", "", f"{report['rows']} training rows, {report['eval_inputs']} "
             f"eval inputs, {report['pref_rows']} preference rows: **{report['issues']} issues**.", "",
             "| check | issues |", "| --- | ---: |"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in report["issue_counts"].items()]
    lines += [f"\nNote: {md_cell(n)}" for n in report["notes"]]
    if report["rules"]:
        lines += ["", "| rule | pass rate |", "| --- | ---: |"]
        lines += [f"| {rid} | {rate:.1%} |" for rid, rate in report["rules"]["per_rule"].items()]
    for heading, items in sections(report):
        lines += ["", f"## {md_cell(heading)} ({len(items)})", ""]
        lines += [f"- {md_cell(i)}" for i in items[:SHOWN]] or ["None."]
    return "\n".join(lines) + "\n"


def histogram_svg(lengths: list[int], max_length: int) -> str:
    """Token lengths in 24 bins, with the max_length cut as a dashed line; bins past it in vermillion."""
    top = max(max(lengths), max_length) * 1.05
    n_bins, left, area_w, area_h, y0 = 24, 48, 600, 200, 30
    width_bin = top / n_bins
    counts = Counter(min(int(n / width_bin), n_bins - 1) for n in lengths)
    peak = max(counts.values())
    parts = [svg_open("plot-lengths", "Token lengths of prompt + completion", left + area_w + 30, y0 + area_h + 50),
             f'<text x="{left}" y="16" font-weight="600">Tokens per row (chat template applied), '
             f'{len(lengths)} rows</text>']
    for b in range(n_bins):
        h = area_h * counts.get(b, 0) / peak
        colour = PALETTE[5] if (b + 1) * width_bin > max_length else PALETTE[0]
        if counts.get(b):
            parts.append(bar(left + b * area_w / n_bins + 1, y0 + area_h - h, area_w / n_bins - 2, h, colour,
                             f"{b * width_bin:.0f}-{(b + 1) * width_bin:.0f} tokens: {counts[b]} rows"))
    x_cut = left + area_w * max_length / top
    parts.append(f'<line x1="{x_cut:.1f}" x2="{x_cut:.1f}" y1="{y0 - 6}" y2="{y0 + area_h}" stroke="#D55E00" '
                 f'stroke-dasharray="4 3"/><text x="{x_cut + 4:.1f}" y="{y0 + 4}">max_length {max_length}</text>'
                 f'<line x1="{left}" x2="{left + area_w}" y1="{y0 + area_h}" y2="{y0 + area_h}" stroke="#333"/>'
                 f'<text x="{left}" y="{y0 + area_h + 16}">0</text><text x="{left + area_w}" y="{y0 + area_h + 16}" '
                 f'text-anchor="end">{top:.0f}</text><text x="{left + area_w / 2}" y="{y0 + area_h + 36}" '
                 f'text-anchor="middle">tokens (bar height: rows, tallest {peak})</text></svg>')
    return "".join(parts)


def html_page(report: dict) -> str:
    counts = "".join(f"<tr><th>{escape(k.replace('_', ' '))}</th><td class=\"num\">{v}</td></tr>"
                     for k, v in report["issue_counts"].items())
    plots = [histogram_svg(report["lengths"]["tokens"], report["lengths"]["max_length"])]
    if report["rules"]:
        per_rule = report["rules"]["per_rule"]
        plots.append(arm_bars_svg("plot-rules", "Pass rate per rule", "share of training rows that pass",
                                  list(per_rule), list(per_rule.values()), ".0%"))
    top = report["invented_values"]["top"]
    if top:
        plots.append(arm_bars_svg("plot-values", "Values not in their row's input", "rows containing the value",
                                  [v["value"][:40] for v in top], [float(v["rows"]) for v in top], ".0f"))
    body = "".join(f"<h2>{escape(h)} ({len(items)})</h2>"
                   + ("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items[:SHOWN]) + "</ul>" if items
                      else "<p>None.</p>") for h, items in sections(report))
    notes = "".join(f"<p><b>Note.</b> {escape(n)}</p>" for n in report["notes"])
    return page(f"lint: {report['dataset']}", f"""<h1>Lint: {escape(report['dataset'])}</h1>
<p>{report['rows']} training rows, {report['eval_inputs']} eval inputs, {report['pref_rows']} preference rows:
<b>{report['issues']} issues</b>.</p>{notes}
<table><tr><th>check</th><th>issues</th></tr>{counts}</table>
{''.join(plots)}{body}""")
