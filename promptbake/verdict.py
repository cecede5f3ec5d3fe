"""The bake's verdict: does the tuned model, without the prompt, beat the prompted base on the held-out inputs by
a margin that is significant, that a fixed answer cannot reach and that keeps the content right; what it buys
over the cheapest inference-time alternative (repairing or re-sampling the prompted base's answers); and when it
does not win, why, read from the run's own data, with the one change to try first.

    verdict(metrics, manifest, curve, budget_steps) -> {"outcome": "won" | "not won" | "undecided", "won": bool,
                                                        "statement": str, "diagnosis": [...], ...}

`metrics` is the eval's metrics.json (arms from evals/arms.py), `manifest` the data build's, `curve` the
validation points (dicts with step, loss, all_rules, per_rule) in step order, `budget_steps` the most steps
training was allowed.

Won means all of:
- the margin: tuned >= base + 10 points, or tuned >= 95% (exact fractions of the held-out inputs);
- significance: exact McNemar p < 0.05 against the prompted base, the tuned model ahead;
- the null arm: tuned >= constant + 10 points (a fixed answer for every input must not come close);
- content: where inputs have labels, the tuned model's label match is not below the prompted base's.
Undecided: the margin is met but the test is not significant; when the split is too small for the margin ever
to be significant, the verdict says so and how many held-out inputs would be needed.
"""

from __future__ import annotations

import math
from fractions import Fraction

from evals.arms import INFERENCE_ARMS

WIN_MARGIN = Fraction(1, 10)
"""A spec is won when the tuned model without prompt beats the prompted base by this much..."""
WIN_ABSOLUTE = Fraction(95, 100)
"""...or follows every rule on at least this share of the held-out inputs."""
SIGNIFICANCE = 0.05


def passed(arm: dict) -> tuple[int, int]:
    """(inputs passing every rule, inputs) of an arm; older metrics.json files have only the rate."""
    n = arm["n"]
    return arm.get("all_rules_passed", round(arm["all_rules_adherence"] * n)), n


def meets_margin(base_k: int, tuned_k: int, n: int) -> bool:
    """tuned >= base + WIN_MARGIN or tuned >= WIN_ABSOLUTE, in exact fractions: 3/10 vs 2/10 is +0.10."""
    return Fraction(tuned_k, n) >= Fraction(base_k, n) + WIN_MARGIN or Fraction(tuned_k, n) >= WIN_ABSOLUTE


def is_won(base_k: int, tuned_k: int, n: int) -> bool:
    """The margin alone (significance and the other arms are the verdict's)."""
    return meets_margin(base_k, tuned_k, n)


def min_discordant(alpha: float = SIGNIFICANCE) -> int:
    """The fewest discordant pairs, all favouring one arm, whose exact McNemar p is below alpha (6 at 0.05)."""
    d = 1
    while 2 * 0.5**d >= alpha:
        d += 1
    return d


def min_decisive_n(margin: Fraction = WIN_MARGIN, alpha: float = SIGNIFICANCE) -> int:
    """The fewest held-out inputs on which the smallest gain that meets `margin` can be significant: that gain,
    ceil(margin * n) inputs, every one a changed outcome favouring the tuned model, must reach `min_discordant`
    (51 at 0.10 and 0.05)."""
    d = min_discordant(alpha)
    return next(n for n in range(1, 10**6) if math.ceil(margin * n) >= d)


def cost(arm: dict) -> float:
    return arm["prompt_tokens_per_request"] + arm["generated_tokens_per_request"]


def verdict(metrics: dict, manifest: dict, curve: list[dict], budget_steps: int | None,
            truncated_rows: int = 0) -> dict:
    base_m, tuned_m = metrics["base_prompted"], metrics["tuned_unprompted"]
    base_k, n = passed(base_m)
    tuned_k, _ = passed(tuned_m)
    base, tuned = base_k / n, tuned_k / n
    p = metrics.get("vs_base_prompted", {}).get("tuned_unprompted", 1.0)
    if tuned > base and p < SIGNIFICANCE:
        relation = "beats"
    elif tuned < base and p < SIGNIFICANCE:
        relation = "loses to"
    else:
        relation = "is not distinguishable from" if p >= SIGNIFICANCE else "ties"
    margin = meets_margin(base_k, tuned_k, n)
    significant = relation == "beats"
    reasons: list[str] = []  # why not won, in the words the statement uses
    notes: list[str] = []

    constant = metrics.get("constant")
    beats_constant = True
    if constant is not None:
        const_k, _ = passed(constant)
        beats_constant = Fraction(tuned_k, n) >= Fraction(const_k, n) + WIN_MARGIN
        source, answer = constant.get("constant_source", "constant"), constant.get("constant_answer", "")
        said = f"a fixed answer ({source}: {answer!r:.60}) passes {const_k / n:.0%}"
        if not beats_constant and const_k >= tuned_k:
            reasons.append(f"{said}, at least as many inputs as the tuned model")
        elif not beats_constant:
            reasons.append(f"{said}, within {float(WIN_MARGIN) * 100:.0f} points of the tuned model: the checks "
                           "cannot tell the tuned model from a template")
        elif const_k / n >= 0.5:
            notes.append(f"{said} of the held-out inputs: the checks test format more than content")

    label_ok = True
    if "label_match" in base_m and "label_match" in tuned_m:
        label_ok = tuned_m["label_match"] >= base_m["label_match"]
        notes.append(f"label match {tuned_m['label_match']:.0%} vs {base_m['label_match']:.0%}")
        if not label_ok:
            reasons.append(f"its label match is below the prompted base's ({tuned_m['label_match']:.0%} vs "
                           f"{base_m['label_match']:.0%}): it follows the format and gets the content wrong")
    if "answer_diversity" in tuned_m:
        notes.append(f"answer diversity {tuned_m['answer_diversity']:.0%}")
    judged = metrics.get("judge_vs_base_prompted", {}).get("tuned_unprompted")
    if judged is not None:
        notes.append(f"judge on content vs the prompted base: {judged['wins']} wins, {judged['losses']} losses, "
                     f"{judged['ties']} ties (sign test p={judged.get('sign_test_p', 1.0):.2g})")

    needed = min_decisive_n()
    if margin and beats_constant and label_ok and significant:
        outcome = "won"
    elif margin and beats_constant and label_ok and tuned > base:
        outcome = "undecided"
        if n - base_k < min_discordant():
            reasons.append(f"n={n} held-out inputs with {base_k} already passed by the prompted base cannot show a "
                           f"significant gain; give at least {needed}")
        elif n < needed:
            reasons.append(f"the gain is not significant (p={p:.2g}); n={n} held-out inputs cannot show a "
                           f"{float(WIN_MARGIN) * 100:.0f}-point gain; give at least {needed}")
        else:
            reasons.append(f"the gain is not significant (p={p:.2g})")
    else:
        outcome = "not won"
        if not margin:
            reasons.insert(0, f"below the margin (>= base + {float(WIN_MARGIN) * 100:.0f} points or >= "
                              f"{float(WIN_ABSOLUTE) * 100:.0f}%)")
    alternatives = inference_alternatives(metrics, tuned_k)
    statement = (f"tuned without prompt {relation} the prompted base: all rules {tuned:.0%} vs {base:.0%} on "
                 f"{n} held-out inputs (McNemar p={p:.2g})"
                 + (f"; constant {passed(constant)[0] / n:.0%}" if constant is not None else "")
                 + (f"; {'; '.join(notes)}" if notes else "")
                 + f"; {outcome}" + (f": {'; '.join(reasons)}" if reasons else ""))
    out = {"outcome": outcome, "won": outcome == "won", "relation": relation, "base_prompted": base,
           "tuned_unprompted": tuned, "n": n, "mcnemar_p": p, "constant": constant and passed(constant)[0] / n,
           "label_match": {a: metrics[a]["label_match"] for a in metrics
                           if isinstance(metrics[a], dict) and "label_match" in metrics[a]},
           "judge": judged,
           "reasons": reasons, "statement": statement, "alternatives": alternatives["statement"],
           "cheapest_reaching_tuned": alternatives["cheapest"], "min_decisive_n": needed,
           "provenance": manifest.get("provenance"), "diagnosis": [], "try_first": None}
    if outcome != "won":
        out["diagnosis"], out["try_first"] = diagnose(metrics, manifest, curve, budget_steps, truncated_rows)
        if outcome == "undecided":
            out["try_first"] = f"give at least {needed} held-out inputs (more distinct inputs in the spec)"
    return out


def inference_alternatives(metrics: dict, tuned_k: int) -> dict:
    """The cheapest inference-time arm (by prompt + generated tokens per request) that reaches the tuned model's
    all-rules count, and a sentence on what training bought over it."""
    tuned = metrics["tuned_unprompted"]
    arms = [a for a in INFERENCE_ARMS if a in metrics]
    reaching = sorted((a for a in arms if passed(metrics[a])[0] >= tuned_k), key=lambda a: cost(metrics[a]))
    if reaching:
        a = reaching[0]
        m = metrics[a]
        what = {"base_prompted": "training bought no adherence: ",
                "base_prompted_repaired": "training bought nothing over repair: ",
                "base_prompted_best_of_n": "training bought nothing over best-of-n sampling: "}[a]
        return {"cheapest": a, "statement": (
            f"{what}{a} reaches {m['all_rules_adherence']:.0%} (tuned {tuned['all_rules_adherence']:.0%}) at "
            f"{cost(m):.0f} tokens and {m['latency_s_per_request']:.2f} s per request; the tuned model needs "
            f"{cost(tuned):.0f} tokens and {tuned['latency_s_per_request']:.2f} s")}
    if not arms:
        return {"cheapest": None, "statement": None}
    best = max(arms, key=lambda a: passed(metrics[a])[0])
    return {"cheapest": "tuned_unprompted", "statement": (
        f"no inference-time alternative reaches the tuned model: the best, {best}, passes "
        f"{metrics[best]['all_rules_adherence']:.0%} at {cost(metrics[best]):.0f} tokens per request "
        f"(tuned {tuned['all_rules_adherence']:.0%} at {cost(tuned):.0f})")}


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
