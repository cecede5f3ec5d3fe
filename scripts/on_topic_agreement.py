"""How often the demo's topic checks agree with a reader: the embedding check (`{kind: on_topic}`) at several
thresholds and the word-overlap check it replaced (`content_checks:demo_on_topic`), on hand-labelled answers.

    .venv/bin/python scripts/on_topic_agreement.py [--labels tests/fixtures/on_topic_labels.jsonl]

The labels (tests/fixtures/on_topic_labels.jsonl, 410 answers to the demo's dev questions, ten everyday tasks that
none of the spec's inputs asks about): the 170 distinct answers of the tuned demo models of teacher seeds 0-2
(runs of `scripts/bench_seeds.py`), each read and labelled on topic when it addresses the question's task (names
it, or what belongs to it: detergent for washing a sweater, spending for a budget) and off topic when it is about
something else (a cake for meal prep, teeth for a bathroom) or advice that fits any task ("they don't practice");
and the four fixed answers of the null arm ("quick answer: yes." and the three few-shot outputs) given to every
question, all off topic. Half `choose` (the answers of seed 0's model, the fixed answers to the first five tasks)
chose the threshold; half `test` (the other answers) measures it. The last line is key=value, for the record.

    .venv/bin/python scripts/on_topic_agreement.py --spec style_rules

The same on style_rules' answers (tests/fixtures/on_topic_labels_style_rules.jsonl, all `test`: 79 distinct
answers of the gallery bake's tuned model, prompted base and repaired prompted base to the 32 held-out
home-improvement questions, 4 of them off topic by reading), against that spec's word check
(`content_checks:style_on_topic`): whether the demo's threshold carries over to another kind of question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs" / "specs"))  # content_checks.py sits beside the specs that use it

from content_checks import demo_on_topic, style_on_topic  # noqa: E402

from data_tools.checks import OnTopic  # noqa: E402

THRESHOLDS = (0.25, 0.3, 0.35, 0.4, 0.45)
FIXTURES = ROOT / "tests" / "fixtures"
SPECS = {
    # spec -> (its labels, its word-overlap check, the phrase every answer carries)
    "demo_style": (FIXTURES / "on_topic_labels.jsonl", demo_on_topic, ["quick answer:"]),
    "style_rules": (FIXTURES / "on_topic_labels_style_rules.jsonl", style_on_topic, ["anything else i can help with?"]),
}


def agreement(rows: list[dict], passed: list[bool]) -> dict:
    """Agreeing answers, and the two kinds of disagreement: on-topic answers failed, off-topic answers passed."""
    return {"agree": sum(p == r["on_topic"] for r, p in zip(rows, passed)), "n": len(rows),
            "fails_on_topic": sum(r["on_topic"] and not p for r, p in zip(rows, passed)),
            "passes_off_topic": sum(p and not r["on_topic"] for r, p in zip(rows, passed))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", choices=sorted(SPECS), default="demo_style")
    parser.add_argument("--labels", help="another labels file in the same format (default: the spec's)")
    args = parser.parse_args()
    labels, word_check, prefix = SPECS[args.spec]
    rows = [json.loads(line) for line in Path(args.labels or labels).read_text().splitlines() if line.strip()]
    halves = {half: sub for half in ("choose", "test") if (sub := [r for r in rows if r["half"] == half])}
    checks = {"word overlap": lambda r: word_check(r["input"], r["answer"])[0]}
    for t in THRESHOLDS:
        check = OnTopic(kind="on_topic", min_similarity=t, ignore=prefix)
        checks[f"on_topic >= {t}"] = lambda r, c=check: c.evaluate(r["input"], r["answer"]).passed
    results = {}
    print("check               " + "   ".join(f"{h} (n={len(sub)}): agree, on-topic failed, off-topic passed"
                                            for h, sub in halves.items()))
    for name, check in checks.items():
        results[name] = {h: agreement(sub, [check(r) for r in sub]) for h, sub in halves.items()}
        cells = [f"{a['agree']}/{a['n']} ({a['agree'] / a['n']:.0%}), {a['fails_on_topic']}, {a['passes_off_topic']}"
                 for a in results[name].values()]
        print(f"{name:<19} " + "   ".join(f"{c:<50}" for c in cells))
    # the threshold is chosen on the `choose` half where there is one; else the kind's default is measured
    best = (max(THRESHOLDS, key=lambda t: results[f"on_topic >= {t}"]["choose"]["agree"]) if "choose" in halves
            else OnTopic.model_fields["min_similarity"].default)
    chosen, word = results[f"on_topic >= {best}"], results["word overlap"]
    print(f"spec={args.spec} threshold={best} " + "".join(
        f"{h}_agree={chosen[h]['agree']}/{chosen[h]['n']} " for h in halves)
        + f"word_overlap_test_agree={word['test']['agree']}/{word['test']['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
