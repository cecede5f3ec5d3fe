"""Scoring a response against a spec's rules, and the repair loop for teacher samples."""

from __future__ import annotations

from data_tools.checks import CheckResult
from data_tools.spec import Rule


def score(rules: list[Rule], input: str, response: str, label: str | None = None) -> dict[str, CheckResult]:
    """rule id -> result, for every rule that has a check. `label` is the reference answer for the checks
    that compare with one (label_match, python functions taking it); the others ignore it."""
    return {r.id: r.check.evaluate(input, response, label) for r in rules if r.check is not None}


def adherence(rules: list[Rule], scored: list[dict[str, CheckResult]]) -> tuple[float, dict[str, float]]:
    """(all-rules adherence, adherence per checked rule) of scored answers (`score`'s results, one per answer):
    the one definition validation and the eval arms share."""
    rule_ids = [r.id for r in rules if r.check is not None]
    n = len(scored)
    if n == 0:
        return 0.0, {rid: 0.0 for rid in rule_ids}
    return (sum(all_pass(results) for results in scored) / n,
            {rid: sum(results[rid].passed for results in scored) / n for rid in rule_ids})


def all_pass(results: dict[str, CheckResult]) -> bool:
    return all(r.passed for r in results.values())


def failures(results: dict[str, CheckResult]) -> dict[str, str]:
    return {rule_id: r.reason for rule_id, r in results.items() if not r.passed}


def repair(rules: list[Rule], input: str, response: str, rounds: int = 3, label: str | None = None) -> str | None:
    """Apply the repairs of failing rules (in rule order) until every check passes; None if they can't.

    Several rounds, because one repair can break another rule (adding a prefix adds words); the result is
    always re-checked, so a repair can never smuggle a failing answer into the data.
    """
    text = response
    for _ in range(rounds):
        results = score(rules, input, text, label)
        if all_pass(results):
            return text
        changed = False
        for rule in rules:
            # judged on the text as repaired so far: lowercasing "Ok: ..." already fixes a prefix "ok:"
            if rule.check is None or results[rule.id].passed or rule.check.evaluate(input, text, label).passed:
                continue
            fixed = rule.check.repair(input, text)
            if fixed is not None and fixed != text:
                text, changed = fixed, True
        if not changed:
            return None
    return text if all_pass(score(rules, input, text, label)) else None


def repair_best_effort(rules: list[Rule], input: str, response: str, rounds: int = 3) -> str:
    """The response with the repairs of its failing rules applied, even when some rule stays failed: the
    variant seen (the response itself included) that passes the most checks, earliest on ties. This is what a
    deployment could do to the prompted model's answers at inference: no label is used, and a label-comparing
    check neither triggers nor judges a repair."""
    usable = [r for r in rules if r.check is not None and not r.check.uses_label]

    def passed(text: str) -> int:
        return sum(r.check.evaluate(input, text).passed for r in usable)

    best, best_passed, text = response, passed(response), response
    for _ in range(rounds):
        changed = False
        for rule in usable:
            if rule.check.evaluate(input, text).passed:
                continue
            fixed = rule.check.repair(input, text)
            if fixed is not None and fixed != text:
                text, changed = fixed, True
        if not changed:
            break
        if passed(text) > best_passed:
            best, best_passed = text, passed(text)
    return best


def loose_variants(response: str) -> list[str]:
    """IFEval's loose transformations: the response with its first line, last line or both removed, each
    with and without markdown asterisks. A rule is loosely followed if any variant passes; this forgives a
    preamble ("Sure! Here it is:") or a sign-off that a strict check would count against the answer."""
    lines = response.split("\n")
    cuts = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [v for cut in cuts for v in (cut, cut.replace("*", ""))]


def score_loose(rules: list[Rule], input: str, response: str, label: str | None = None) -> dict[str, bool]:
    """rule id -> loosely followed (each rule judged on its own best variant, as IFEval does)."""
    variants = [v for v in loose_variants(response) if v.strip()]
    return {r.id: any(r.check.evaluate(input, v, label).passed for v in variants)
            for r in rules if r.check is not None}
