"""The bake's report: `report.md` and `report.html` in the run directory, with the verdict, the diagnosis when
the tuned model did not win, adherence per rule on the held-out inputs, and the validation curve (steps vs
all-rules and per-rule adherence, and the training loss) of SFT and of each on-policy round.

    write_reports(run, verdict, metrics, curve, sft, rounds_done, replay_choice)
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from promptbake.core.html import line_chart_svg, page
from promptbake.core.io import atomic_write_text, iter_jsonl

ARM_COLUMNS = ("base_prompted", "tuned_unprompted", "constant", "base_prompted_repaired", "base_prompted_best_of_n")


def arm_table(metrics: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(arms, rows): all rules, each rule, label match, answer diversity, tokens and latency per request, p."""
    arms = [a for a in ARM_COLUMNS if a in metrics]
    ms = [metrics[a] for a in arms]
    rows = [("all rules", [f"{m['all_rules_adherence']:.1%}" for m in ms])]
    rows += [(rid, [f"{m['per_rule'].get(rid, 0):.1%}" for m in ms]) for rid in ms[0]["per_rule"]]
    if any("label_match" in m for m in ms):
        rows.append(("label match", [f"{m['label_match']:.1%}" if "label_match" in m else "-" for m in ms]))
    if all("answer_diversity" in m for m in ms):
        rows.append(("answer diversity", [f"{m['answer_diversity']:.0%}" for m in ms]))
    rows.append(("tokens / request", [f"{m['prompt_tokens_per_request'] + m['generated_tokens_per_request']:.0f}"
                                      for m in ms]))
    rows.append(("latency s / request", [f"{m['latency_s_per_request']:.2f}" for m in ms]))
    vs = metrics.get("vs_base_prompted", {})
    rows.append(("McNemar p vs base_prompted", [f"{vs[a]:.2g}" if a in vs else "-" for a in arms]))
    return arms, rows


def provenance_line(provenance: dict | None) -> str | None:
    if not provenance:
        return None
    return "training rows by source: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in provenance.items())


def replay_choice_line(choice: dict | None) -> str | None:
    """What `replay.when: sft_drifts` decided, and why (the bake's replay_choice stage record)."""
    if not choice:
        return None
    return f"{'replay rows' if choice['chosen'] == 'replay' else 'SFT on the spec rows alone'} kept: {choice['why']}"


def report_markdown(result: dict, metrics: dict, curve: list[dict], sft: dict, rounds: list[dict] = (),
                    replay_choice: dict | None = None) -> str:
    """The report as Markdown (to paste into a PR or an issue); `rounds`: the on-policy rounds' records;
    `replay_choice`: the replay_choice stage's record."""
    from promptbake.rounds import kept, summary_line

    lines = [f"# bake: {result['spec']}", "", f"**Verdict:** {result['statement']}", ""]
    if result.get("alternatives"):
        lines += [f"**Against the inference-time alternatives:** {result['alternatives']}", ""]
    if provenance_line(result.get("provenance")):
        lines += [f"**Provenance:** {provenance_line(result['provenance'])}", ""]
    if result.get("drift"):
        lines += [f"**Drift** {result['drift']['statement']}", ""]
    if result.get("drift_warning"):
        lines += [f"**Drift warning:** {result['drift_warning']}", ""]
    if result["diagnosis"]:
        lines += ["## Diagnosis", "", *[f"- {d}" for d in result["diagnosis"]], "",
                  f"**Try first:** {result['try_first']}", ""]
    arms, rows = arm_table(metrics)
    lines += ["## Arms (held-out inputs)", "", "| | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    lines += ["", f"Training budget {sft['budget_steps']} steps; kept step {sft.get('kept_step')}.", ""]
    if replay_choice_line(replay_choice):
        lines += [f"**Replay choice:** {replay_choice_line(replay_choice)}", ""]
    if rounds:
        lines += ["## On-policy rounds", "", *[f"- {summary_line(r)}: {'kept' if kept(r) else 'not kept'}"
                                              for r in rounds], ""]
    if curve:
        rule_ids = list(curve[0]["per_rule"])
        lines += ["## Validation curve", "", "| step | loss | all rules | " + " | ".join(rule_ids) + " |",
                  "|---" * (3 + len(rule_ids)) + "|"]
        for p in curve:
            loss = f"{p['loss']:.3f}" if p["loss"] is not None else "-"
            lines.append(f"| {p['step']} | {loss} | {p['all_rules']:.0%} | "
                         + " | ".join(f"{p['per_rule'][r]:.0%}" for r in rule_ids) + " |")
    return "\n".join(lines) + "\n"


def print_verdict(result: dict, metrics: dict, run: Path) -> None:
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_times_s"].items())
    print(f"\n=== bake {result['spec']} done in {result['time_s']:.0f} s{f' ({times})' if times else ''} ===")
    if result.get("profile_s"):
        parts = {stage: ", ".join(f"{k} {v:.0f} s" for k, v in p.items()) for stage, p in result["profile_s"].items()}
        print("inside the stages: " + "; ".join(f"{stage}: {p}" for stage, p in parts.items()))
    print(result["statement"])
    if result.get("alternatives"):
        print(result["alternatives"])
    if provenance_line(result.get("provenance")):
        print(provenance_line(result["provenance"]))
    for d in result["diagnosis"]:
        print(f"  - {d}")
    if result["try_first"]:
        print(f"try first: {result['try_first']}")
    if result.get("drift"):
        print(f"drift {result['drift']['statement']}")
    if result.get("drift_warning"):
        print(f"drift warning: {result['drift_warning']}")
    base, tuned = metrics["base_prompted"], metrics["tuned_unprompted"]
    print(f"prompt tokens per request: {base['prompt_tokens_per_request']:.0f} -> "
          f"{tuned['prompt_tokens_per_request']:.0f}; latency per request: "
          f"{base['latency_s_per_request']:.2f} s -> {tuned['latency_s_per_request']:.2f} s")
    print(f"run directory: {run}  (report: {run / 'report.md'})")


def curve_svg(plot_id: str, title: str, curve: list[dict]) -> str:
    steps = [p["step"] for p in curve]
    series = {"all rules": [p["all_rules"] for p in curve]}
    series.update({rid: [p["per_rule"][rid] for p in curve] for rid in curve[0]["per_rule"]})
    chart = line_chart_svg(plot_id, title, "optimizer step", steps, series)
    losses = [p["loss"] for p in curve]
    if any(v is not None for v in losses):
        top = max(v for v in losses if v is not None) or 1.0
        chart += line_chart_svg(f"{plot_id}-loss", f"{title}: training loss", "optimizer step", steps,
                                {"loss": losses}, y_max=top, y_fmt=".2f")
    return chart


def report_html(result: dict, metrics: dict, curves: list[tuple[str, list[dict]]], sft: dict) -> str:
    body = [f"<h1>bake: {escape(result['spec'])}</h1>",
            f"<p><strong>Verdict:</strong> {escape(result['statement'])}</p>"]
    if result.get("alternatives"):
        body.append(f"<p><strong>Against the inference-time alternatives:</strong> "
                    f"{escape(result['alternatives'])}</p>")
    if provenance_line(result.get("provenance")):
        body.append(f"<p><strong>Provenance:</strong> {escape(provenance_line(result['provenance']))}</p>")
    if result.get("drift"):
        body.append(f"<p><strong>Drift</strong> {escape(result['drift']['statement'])}</p>")
    if result.get("drift_warning"):
        body.append(f"<p><strong>Drift warning:</strong> {escape(result['drift_warning'])}</p>")
    if result["diagnosis"]:
        body.append("<h2>Diagnosis</h2><ul>" + "".join(f"<li>{escape(d)}</li>" for d in result["diagnosis"])
                    + f"</ul><p><strong>Try first:</strong> {escape(result['try_first'])}</p>")
    arms, rows = arm_table(metrics)
    body.append("<h2>Arms (held-out inputs)</h2><table><tr><th></th>"
                + "".join(f"<th>{escape(a)}</th>" for a in arms) + "</tr>" + "".join(
                    f"<tr><th>{escape(name)}</th>" + "".join(f'<td class="num">{escape(c)}</td>' for c in cells)
                    + "</tr>" for name, cells in rows) + "</table>")
    body.append(f"<p>Training budget {sft['budget_steps']} steps; kept step {sft.get('kept_step')}. The eval's own "
                "report (every answer, by arm) is eval/report.html.</p>")
    for i, (title, curve) in enumerate(curves):
        if curve:
            body.append(f"<h2>{escape(title)}</h2>" + curve_svg(f"curve-{i}", title, curve))
    return page(f"bake: {result['spec']}", "\n".join(body))


def read_curve_rows(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)] if path.exists() else []


def write_reports(run: Path, result: dict, metrics: dict, curve: list[dict], sft: dict,
                  rounds_done: dict | None, replay_choice: dict | None = None) -> None:
    from promptbake.rounds import kept, summary_line

    rounds = (rounds_done or {}).get("rounds", [])
    replayed = (replay_choice or {}).get("chosen") == "replay"  # the curve is then the replay SFT's
    curves = [(f"Validation while training (SFT{' with replay rows' if replayed else ''})", curve)]
    for r in rounds:
        # the title says whether the bake kept the round and why (its best point, the drift guard)
        curves.append((f"Validation in on-policy {summary_line(r)}: {'kept' if kept(r) else 'not kept'}",
                       read_curve_rows(run / "rounds" / str(r["round"]) / "validation.jsonl")))
    atomic_write_text(run / "report.md", report_markdown(result, metrics, curve, sft, rounds, replay_choice))
    atomic_write_text(run / "report.html", report_html(result, metrics, curves, sft))
