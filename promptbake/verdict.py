"""The bake's verdict: does the tuned model, without the prompt, beat the prompted base on the held-out inputs,
and when it does not, why, read from the run's own data, with the one change to try first.

    verdict(metrics, manifest, curve, budget_steps) -> {"won": bool, "statement": str, "diagnosis": [...], ...}

`metrics` is the eval's metrics.json, `manifest` the data build's, `curve` the validation points (dicts with
step, loss, all_rules, per_rule) in step order, `budget_steps` the most steps training was allowed.
"""

from __future__ import annotations

WIN_MARGIN = 0.10
"""A spec is won when the tuned model without prompt beats the prompted base by this much..."""
WIN_ABSOLUTE = 0.95
"""...or follows every rule on at least this share of the held-out inputs."""
SIGNIFICANCE = 0.05


def is_won(base: float, tuned: float) -> bool:
    return tuned >= base + WIN_MARGIN or tuned >= WIN_ABSOLUTE


def verdict(metrics: dict, manifest: dict, curve: list[dict], budget_steps: int | None,
            truncated_rows: int = 0) -> dict:
    base_m, tuned_m = metrics["base_prompted"], metrics["tuned_unprompted"]
    base, tuned = base_m["all_rules_adherence"], tuned_m["all_rules_adherence"]
    p = metrics.get("vs_base_prompted", {}).get("tuned_unprompted", 1.0)
    won = is_won(base, tuned)
    if tuned > base and p < SIGNIFICANCE:
        relation = "beats"
    elif tuned < base and p < SIGNIFICANCE:
        relation = "loses to"
    else:
        relation = "is not distinguishable from" if p >= SIGNIFICANCE else "ties"
    statement = (f"tuned without prompt {relation} the prompted base: all rules {tuned:.0%} vs {base:.0%} on "
                 f"{tuned_m['n']} held-out inputs (McNemar p={p:.2g}); "
                 f"{'won' if won else 'not won'} (win: >= base + {WIN_MARGIN:.0%} or >= {WIN_ABSOLUTE:.0%})")
    out = {"won": won, "relation": relation, "base_prompted": base, "tuned_unprompted": tuned, "mcnemar_p": p,
           "statement": statement, "diagnosis": [], "try_first": None}
    if not won:
        out["diagnosis"], out["try_first"] = diagnose(metrics, manifest, curve, budget_steps, truncated_rows)
    return out


def diagnose(metrics: dict, manifest: dict, curve: list[dict], budget_steps: int | None,
             truncated_rows: int) -> tuple[list[str], str]:
    """Findings from the run's own data, and the one change to try first (the first finding that has one,
    in the order: data too thin, truncation, training length, the weakest rule)."""
    findings: list[tuple[str, str | None]] = []
    counts = manifest.get("counts", {})
    rows, rejects = counts.get("sft_rows", 0), counts.get("rejects", 0)
    tuned_rules = metrics["tuned_unprompted"].get("per_rule", {})
    base_rules = metrics["base_prompted"].get("per_rule", {})
    teacher_rules = manifest.get("raw_pass_rate_per_rule", {})

    synthesized, unconfirmed = counts.get("synthesized_inputs", 0), counts.get("synthesized_unconfirmed", 0)
    findings.append((f"data: {rows} training rows, {rejects} inputs rejected (no teacher sample passed every "
                     f"check); teacher raw all-rules pass rate {manifest.get('raw_all_rules_pass_rate', 0):.0%}"
                     + (f"; {synthesized} inputs synthesized, {synthesized - unconfirmed} of them kept "
                        f"({unconfirmed} with a label the teacher's own answers did not confirm)"
                        if unconfirmed else f"; {synthesized} inputs synthesized" if synthesized else ""),
                     None))
    if rows < 40:
        findings.append((f"only {rows} training rows: too few for the model to generalise the rules",
                         "give more distinct inputs (or let synthesis add some), or raise teacher.sampling.n / "
                         "teacher.retry so that fewer inputs are rejected"))
    if rejects > rows:
        worst = min(teacher_rules, key=teacher_rules.get) if teacher_rules else None
        findings.append((f"the teacher failed most inputs ({rejects} rejected vs {rows} kept)"
                         + (f"; its weakest rule is {worst} ({teacher_rules[worst]:.0%} of samples pass)"
                            if worst else ""),
                         f"make rule {worst!r} easier for the teacher: a label hint, more examples, or a repair"
                         if worst else "give the teacher more examples"))
    if truncated_rows:
        findings.append((f"{truncated_rows} training rows were cut at max_length and lost their end (and EOS)",
                         "raise the recipe's training.max_length"))
    if curve:
        best = max(curve, key=lambda p: (p["all_rules"], sum(p["per_rule"].values())))
        last = curve[-1]
        if best["step"] == last["step"] and len(curve) > 1 and last["all_rules"] > curve[-2]["all_rules"] \
                and budget_steps is not None and last["step"] >= budget_steps:
            findings.append((f"under-trained: validation adherence was still rising at the last step "
                             f"({last['step']}, all rules {last['all_rules']:.0%})",
                             f"raise budget.max_steps (now {budget_steps})"))
        elif best["step"] < last["step"] and last["all_rules"] < best["all_rules"]:
            findings.append((f"over-trained after step {best['step']}: validation all rules fell from "
                             f"{best['all_rules']:.0%} to {last['all_rules']:.0%} (the kept adapter is step "
                             f"{best['step']}'s)", "lower the recipe's learning_rate or add rows"))
        val_gap = best["all_rules"] - metrics["tuned_unprompted"]["all_rules_adherence"]
        if val_gap > 0.25:
            findings.append((f"validation ({best['all_rules']:.0%}) is far above the held-out eval: the validation "
                             "slice may be too small or unlike the eval inputs", "raise validation.max_inputs"))
    else:
        findings.append(("no validation curve: the run trained for a fixed budget (too few inputs for a "
                         "validation slice)", "give more distinct inputs so that a validation slice can choose "
                         "the training length"))
    if tuned_rules:
        # the rule the tuned model follows least (of equals, the one it lost most on against the prompted base)
        weakest = min(tuned_rules, key=lambda r: (tuned_rules[r], tuned_rules[r] - base_rules.get(r, 0.0)))
        findings.append((f"weakest rule after tuning: {weakest} ({tuned_rules[weakest]:.0%} vs "
                         f"{base_rules.get(weakest, 0.0):.0%} for the prompted base; "
                         f"teacher raw {teacher_rules.get(weakest, 0.0):.0%})",
                         f"look at answers_tuned_unprompted.jsonl for {weakest!r}: give the teacher an example "
                         "or a repair for it"))
    try_first = next((fix for _, fix in findings if fix), "bake again with more inputs")
    return [text for text, _ in findings], try_first
