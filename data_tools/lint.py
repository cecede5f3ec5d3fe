"""Lint a built dataset before training on it: the problems a pass rate hides.

    promptbake data lint runs/demo/data spec=configs/specs/demo_style.yaml [max_length=256 ...]
    python -m data_tools.lint runs/demo/data spec=configs/specs/demo_style.yaml

It finds exact and near duplicates, held-out inputs that leak into training, answer values that do not come
from their own input yet recur across rows (seed 000's invented "Kevin Smith": a fine-tune that sees one
name in many answers learns to produce it when a name is missing), rows that training would truncate, and,
given the spec, the pass rate of every rule and how many rows show each template slot missing. It writes
`lint.json`, `lint.md` and a self-contained `lint.html` (inline SVG) to `output_dir`, prints a summary table,
and counts the issues; it changes nothing in the dataset.

Near duplicates and leaks: every pair is compared up to `lsh_min_rows` texts; past that, MinHash LSH proposes
candidates that are verified exactly (data_tools/near_dupes.py), so a million rows lint in minutes, not hours
(scripts/bench_lint.py measures it).
"""

from __future__ import annotations

import argparse
import json
import re
import string
from collections import defaultdict
from pathlib import Path

from pydantic import Field, PositiveInt, field_validator, model_validator

from data_tools.checks import _valid_regex
from data_tools.lint_report import html_page, markdown
from data_tools.near_dupes import LSH_MIN_ROWS, TooManyCandidates, lsh_note, similar_pairs
from promptbake.core.config import DEFAULT_MODEL, InputError, StrictModel, apply_overrides, validate
from promptbake.core.entry import stage_parser
from promptbake.core.io import atomic_write_text, iter_jsonl, write_json
from promptbake.core.layout import DatasetLayout

# Values worth tracking, first match wins at each position: e-mails; phone-like digit runs (7+ characters of
# digits, spaces, dots, dashes, brackets); numbers of 3+ digits (order ids, amounts, years; shorter ones are
# list markers and counts); names of two or more capitalised words ("Kevin Smith"; one capitalised word is
# usually just the start of a sentence).
SHOWN_LINES = 20  # lines listed per repeated completion (the count says how many rows share it)
DEFAULT_VALUE_PATTERN = (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\+?\(?\d[\d ().-]{5,}\d|\b\d{3,}\b"
                         r"|\b[A-Z][a-z]+(?:[ '-][A-Z][a-z]+)+\b")


class LintConfig(StrictModel):
    dataset: str
    """A build output directory (sft_train.jsonl, and optionally eval_inputs.jsonl, prefs_train.jsonl,
    manifest.json) or a single sft_train.jsonl file."""
    model: str = DEFAULT_MODEL
    """The model whose tokenizer and chat template measure row lengths (the one you will train)."""
    max_length: PositiveInt = 256
    """The training max_length: longer rows lose their end, EOS included, and are flagged."""
    near_duplicate_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Jaccard similarity of word 3-shingles at or above which two texts count as near duplicates."""
    lsh_min_rows: PositiveInt = LSH_MIN_ROWS
    """From this many texts on (training rows; eval plus training prompts for leakage), near duplicates are
    found by MinHash LSH candidates verified exactly instead of by comparing every pair (~1 s per million
    pairs): the same pairs, except that at the default threshold a pair at exactly 0.8 is missed with
    probability 5e-5 (see data_tools/near_dupes.py)."""
    value_pattern: str = DEFAULT_VALUE_PATTERN
    """Regex of the values to track in answers (default: e-mails, phone numbers, 3+ digit numbers and
    multi-word capitalised names)."""
    overrepresented_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """A value absent from its row's input is flagged when it occurs in more than this share of rows (and in
    at least 3)."""
    spec: str | None = None
    """The prompt spec the data was built from: enables per-rule pass rates and missing-slot coverage."""
    output_dir: str | None = None
    """Where the reports go (default: `<dataset>/lint`, or next to a single file)."""

    _compiles = field_validator("value_pattern")(_valid_regex)

    @model_validator(mode="after")
    def _model_exists(self):
        from promptbake.core.models import check_model_fields

        check_model_fields({"model": self.model})  # refused here, not after the duplicate search
        return self


# ---------------------------------------------------------------- reading the dataset

def _text(value, role: str, where: str, field: str) -> str:
    """A TRL field as text: a plain string, or the contents of the `role` messages of a conversation."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return "\n".join(m["content"] for m in value if m.get("role") == role)
    raise InputError(f"{where}: field {field!r} must be a string or a list of {{role, content}} messages")


def read_rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """Rows of a TRL JSONL file as {line, <field>: text, raw}; errors name file:line."""
    rows = []
    for line, obj in iter_jsonl(path):
        where = f"{path}:{line}"
        missing = [f for f in fields if f not in obj]
        if missing:
            raise InputError(f"{where}: missing field(s) {missing}; expected TRL rows with {list(fields)}")
        row = {"line": line, "raw": obj}
        for f in fields:
            row[f] = _text(obj[f], "user" if f == "prompt" else "assistant", where, f)
        rows.append(row)
    return rows


def locate(dataset: str) -> tuple[Path, Path | None]:
    """(sft_train.jsonl, the build directory or None for a lone file)."""
    path = Path(dataset)
    if path.is_file():
        return path, None
    if not path.exists():
        raise InputError(f"{path}: dataset not found (give a build output directory or an sft_train.jsonl)")
    if not (path / DatasetLayout.SFT_TRAIN).is_file():
        raise InputError(f"{path}: no sft_train.jsonl in this directory (is it a build output directory?)")
    return path / DatasetLayout.SFT_TRAIN, path


# ---------------------------------------------------------------- findings

def normalise(text: str) -> str:
    return " ".join(text.casefold().split()).strip(string.punctuation + " ")


def near_pairs(left: list[str], right: list[str] | None, config: LintConfig, what: str, notes: list[str]
               ) -> list[tuple[int, int, float]]:
    """`similar_pairs` with the config's settings; a search that LSH cannot bound ends empty, with a note."""
    try:
        return similar_pairs(left, right, config.near_duplicate_threshold, config.lsh_min_rows)
    except TooManyCandidates as e:
        notes.append(f"{what} not searched: {e}")
        return []


def by_completion(rows: list[dict]) -> dict[str, list[int]]:
    """Row indices per distinct completion, in first-seen order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["completion"]].append(i)
    return groups


def duplicates(rows: list[dict], completions: dict[str, list[int]], pairs: list[tuple[int, int, float]]
               ) -> tuple[list[list[int]], list[dict], list[dict]]:
    """Exact duplicates (groups of lines with the same prompt and completion), repeated completions (one
    completion answering several different prompts: a group, not every pair of its rows, so that label-like
    answers repeated a million times cost nothing) and near-duplicate completions (`pairs` of indices into
    the distinct completions, as first lines)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        groups[(row["prompt"], row["completion"])].append(row["line"])
    exact = [lines for lines in groups.values() if len(lines) > 1]
    repeated = [{"completion": text[:80], "rows": len(idx), "lines": [rows[i]["line"] for i in idx[:SHOWN_LINES]]}
                for text, idx in completions.items() if len({rows[i]["prompt"] for i in idx}) > 1]
    first = [idx[0] for idx in completions.values()]
    near = [{"lines": [rows[first[i]]["line"], rows[first[j]]["line"]], "similarity": s} for i, j, s in pairs]
    return exact, repeated, near


def leakage(eval_rows: list[dict], train: list[tuple[str, dict]], hits: list[tuple[int, int, float]]) -> list[dict]:
    """Eval inputs equal (after `normalise`) or near-equal (`hits`: eval row, train row) to a training prompt; the
    closest match each."""
    exact = {normalise(r["prompt"]): (f, r["line"]) for f, r in reversed(train)}  # first occurrence wins
    found: dict[int, dict] = {}
    for i, j, s in sorted(hits, key=lambda t: -t[2]):
        found.setdefault(i, {"train_file": train[j][0], "train_line": train[j][1]["line"], "similarity": s,
                             "kind": "near"})
    for i, r in enumerate(eval_rows):
        if normalise(r["prompt"]) in exact:
            f, line = exact[normalise(r["prompt"])]
            found[i] = {"train_file": f, "train_line": line, "similarity": 1.0, "kind": "exact"}
    return [{"eval_line": eval_rows[i]["line"], **v, "input": eval_rows[i]["prompt"]} for i, v in sorted(found.items())]


def value_key(value: str) -> str:
    """Digits for a value with digits (so '719 555 1111' is '719-555-1111'), else the case-folded words."""
    return re.sub(r"\D", "", value) if any(c.isdigit() for c in value) else normalise(value)


def invented_values(rows: list[dict], pattern: str, fraction: float) -> dict:
    """Values of `pattern` in answers that are not in the row's own prompt, counted across rows."""
    regex = re.compile(pattern)
    where: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        given = {value_key(m.group(0)) for m in regex.finditer(row["prompt"])}
        found = {m.group(0) for m in regex.finditer(row["completion"])}
        for value in sorted(found):
            if value.casefold() not in row["prompt"].casefold() and value_key(value) not in given:
                where[value].append(row["line"])
    counted = sorted(where.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    limit = fraction * len(rows)
    listing = [{"value": v, "rows": len(lines), "share": round(len(lines) / len(rows), 3), "lines": lines,
                "flagged": len(lines) >= 3 and len(lines) > limit} for v, lines in counted]
    return {"flagged": [v for v in listing if v["flagged"]], "top": listing[:10], "distinct": len(listing)}


def token_lengths(rows: list[dict], model: str, batch: int = 1000) -> list[int]:
    """prompt + completion tokens as training renders them: the chat template over the whole conversation.
    Rendered and tokenized a batch at a time (~5x faster than row by row: a million rows take minutes)."""
    from tqdm import tqdm

    from promptbake.core.models import load_tokenizer

    tok = load_tokenizer(model)
    lengths = []
    with tqdm(total=len(rows), desc="lint: token lengths", unit="row", mininterval=2) as bar:
        for start in range(0, len(rows), batch):
            raws = [row["raw"] for row in rows[start : start + batch]]
            chat = [isinstance(r["prompt"], list) for r in raws]
            texts = tok.apply_chat_template([r["prompt"] + r["completion"] for r, c in zip(raws, chat) if c],
                                            tokenize=False) if any(chat) else []
            ids = iter(tok(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else [])
            # a plain-text row is tokenized as the trainer does, with the tokenizer's special tokens
            lengths += [len(next(ids)) if c else len(tok(r["prompt"] + r["completion"])["input_ids"])
                        for r, c in zip(raws, chat)]
            bar.update(len(raws))
    return lengths


def rule_pass_rates(rows: list[dict], spec) -> dict:
    """Every completion re-scored by the spec's checks (labels from the spec's inputs, for label checks)."""
    from data_tools.inputs import load_inputs
    from data_tools.scoring import score

    labels = {text: item.label for text, item in load_inputs(spec).items()}
    failed: dict[str, list[int]] = {r.id: [] for r in spec.rules if r.check is not None}
    bad_rows = []
    for row in rows:
        results = score(spec.rules, row["prompt"], row["completion"], labels.get(row["prompt"]))
        for rule_id, result in results.items():
            if not result.passed:
                failed[rule_id].append(row["line"])
        if not all(r.passed for r in results.values()):
            bad_rows.append(row["line"])
    n = max(len(rows), 1)
    return {"per_rule": {rid: 1 - len(lines) / n for rid, lines in failed.items()},
            "all_rules": 1 - len(bad_rows) / n, "failed_lines": failed, "rows_failing": bad_rows}


def template_regex(template: str, slots: dict[str, list], missing: dict[str, str]) -> re.Pattern:
    """A regex that parses an expanded input back into its slot values. Whitespace is loose (`\\s*`), since
    expansion collapses the double space an empty slot leaves; each slot matches one of its values or its
    missing-variant text, longest first."""
    def loose(text: str) -> str:
        return r"\s*".join(re.escape(w) for w in text.split())

    parts, seen = [r"\s*"], set()
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(loose(literal) + r"\s*")
        if name is None:
            continue
        if name in seen:
            parts.append(f"(?P={name})")
        else:
            options = {loose(str(v)) for v in slots[name]} | ({loose(missing[name])} if name in missing else set())
            parts.append(f"(?P<{name}>" + "|".join(sorted(options, key=len, reverse=True)) + ")")
            seen.add(name)
        parts.append(r"\s*")
    return re.compile("".join(parts))


def fixed_answer_check(rows: list[dict], spec) -> dict:
    """The best fixed answer (the most frequent completion, or a few-shot example's output) scored on every input
    of the spec: when it passes most of them, the checks test the format only (data_tools/format_only.py)."""
    from data_tools.format_only import best_fixed_answer, fixed_answers, format_only_warning
    from data_tools.inputs import load_inputs

    items = [(text, item.label) for text, item in load_inputs(spec, quiet=True).items()]
    best = best_fixed_answer(spec, items, fixed_answers(spec, (r["completion"] for r in rows)))
    return {"answer": best["answer"], "source": best["source"], "pass_rate": best["pass_rate"],
            "warning": format_only_warning(best)}


def slot_coverage(rows: list[dict], spec) -> dict:
    """Per template slot: training rows that show it present vs absent (empty, or its `missing` text)."""
    src = spec.inputs
    if src.template is None:
        return {"note": "the spec's inputs are a file, not a template: no slots to count"}
    missing = {slot: variant.text for slot, variant in src.missing.items()}
    regex = template_regex(src.template, src.slots, missing)
    counts = {slot: {"present": 0, "absent": 0, "designed_missing": slot in missing
                     or any(str(v).strip() == "" for v in values)} for slot, values in src.slots.items()}
    unmatched = []
    for row in rows:
        m = regex.fullmatch(row["prompt"])
        if m is None:
            unmatched.append(row["line"])
            continue
        for slot in counts:
            value = " ".join(m.group(slot).split())
            absent = value == "" or (slot in missing and value == " ".join(missing[slot].split()))
            counts[slot]["absent" if absent else "present"] += 1
    uncovered = [s for s, c in counts.items() if c["designed_missing"] and c["absent"] == 0]
    return {"slots": counts, "unmatched_lines": unmatched, "uncovered": uncovered}


# ---------------------------------------------------------------- the command

def main(config: LintConfig) -> dict:
    """Lint `config.dataset`; returns the findings (also written as lint.json/.md/.html)."""
    sft_path, build_dir = locate(config.dataset)
    rows = read_rows(sft_path, ("prompt", "completion"))
    if not rows:
        raise InputError(f"{sft_path}: no rows")
    spec = None
    if config.spec:  # a bad spec is refused before the tokenizer loads
        from data_tools.spec import load_spec

        spec = load_spec(config.spec)
    # a lone sft_train.jsonl has no held-out inputs or preference pairs to compare with
    eval_rows, pref_rows = ([] if build_dir is None or not (build_dir / name).is_file()
                            else read_rows(build_dir / name, ("prompt",))
                            for name in (DatasetLayout.EVAL_INPUTS, DatasetLayout.PREFS_TRAIN))
    out_dir = Path(config.output_dir) if config.output_dir else (build_dir or sft_path.parent) / "lint"
    notes = []

    completions = by_completion(rows)
    exact, repeated, near = duplicates(rows, completions, near_pairs(list(completions), None, config,
                                                                     "near-duplicate completions", notes))
    train = [(DatasetLayout.SFT_TRAIN, r) for r in rows] + [(DatasetLayout.PREFS_TRAIN, r) for r in pref_rows]
    leaked = leakage(eval_rows, train, near_pairs([r["prompt"] for r in eval_rows], [r["prompt"] for _, r in train],
                                                  config, "near leaks of eval inputs", notes))
    leak_texts = len(eval_rows) + len(train) if eval_rows else 0  # no eval rows: no leak search at all
    if max(len(rows), leak_texts) >= config.lsh_min_rows:
        notes.append(lsh_note(config.near_duplicate_threshold))
    lengths = token_lengths(rows, config.model)
    truncated = [r["line"] for r, n in zip(rows, lengths) if n > config.max_length]

    rules = coverage = fixed = None
    if spec is not None:
        manifest_path = build_dir / DatasetLayout.MANIFEST if build_dir else None
        if manifest_path and manifest_path.is_file():
            built_hash = json.loads(manifest_path.read_text(encoding="utf-8")).get("spec_hash")
            if built_hash and built_hash != spec.content_hash():
                notes.append(f"the dataset was built from another version of {config.spec} (or with overrides); "
                             "pass rates are for the spec as it is now")
        rules, coverage = rule_pass_rates(rows, spec), slot_coverage(rows, spec)
        if "note" in coverage:
            notes.append(coverage["note"])
        fixed = fixed_answer_check(rows, spec)
        if fixed["warning"]:
            notes.append(fixed["warning"])
    else:
        notes.append("no spec given: pass spec=<the prompt spec> for per-rule pass rates and slot coverage")

    values = invented_values(rows, config.value_pattern, config.overrepresented_fraction)
    issues = {
        "exact_duplicate_rows": sum(len(g) - 1 for g in exact),
        "repeated_completions": len(repeated),
        "near_duplicate_pairs": len(near),
        "leaked_eval_inputs": len(leaked),
        "overrepresented_values": len(values["flagged"]),
        "truncated_rows": len(truncated),
        "rows_failing_rules": len(rules["rows_failing"]) if rules else 0,
        "slots_never_missing": len(coverage.get("uncovered", [])) if coverage else 0,
        "format_only_checks": int(bool(fixed and fixed["warning"])),
    }
    report = {
        "dataset": str(config.dataset), "rows": len(rows), "eval_inputs": len(eval_rows), "pref_rows": len(pref_rows),
        "config": config.model_dump(mode="json"), "issues": sum(issues.values()), "issue_counts": issues,
        "exact_duplicates": exact, "repeated_completions": repeated,
        "near_duplicates": near, "leakage": leaked, "invented_values": values,
        "lengths": {"tokens": lengths, "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1),
                    "max_length": config.max_length, "truncated_lines": truncated},
        "rules": rules, "coverage": coverage, "fixed_answer": fixed, "notes": notes,
    }
    write_json(out_dir / "lint.json", report)
    atomic_write_text(out_dir / "lint.md", markdown(report))
    atomic_write_text(out_dir / "lint.html", html_page(report))
    print_summary(report, out_dir)
    return report


def print_summary(report: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lint {report['dataset']} -> {out_dir}")
    table.add_column("check")
    table.add_column("value", justify="right")
    for key, value in report["issue_counts"].items():
        table.add_row(key.replace("_", " "), str(value), style="bold red" if value else None)
    for rule_id, rate in (report["rules"] or {}).get("per_rule", {}).items():
        table.add_row(f"pass: {rule_id}", f"{rate:.0%}")
    table.add_row("tokens per row (mean / max)", f"{report['lengths']['mean']} / {report['lengths']['max']}")
    table.add_row("issues in all", str(report["issues"]), style="bold")
    Console().print(table)
    for note in report["notes"]:
        print(f"note: {note}")


def config_from_args(dataset: str, overrides: list[str] | tuple[str, ...] = ()) -> LintConfig:
    """`promptbake data lint DATASET key=value ...` -> a validated LintConfig."""
    data: dict = {"dataset": dataset}
    apply_overrides(data, overrides)
    return validate(LintConfig, data, "promptbake data lint")


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`promptbake data lint` (added to `subparsers`) or `python -m data_tools.lint`."""
    parser = stage_parser(subparsers, "lint", "lint a built dataset: duplicates, leakage, invented values, lengths, "
                                              "rule pass rates, missing-slot coverage")
    parser.add_argument("dataset", help="a build output directory or an sft_train.jsonl")
    parser.add_argument("overrides", nargs="*",
                        help="key=value, e.g. spec=configs/specs/demo_style.yaml max_length=128")
    parser.set_defaults(run=lambda args: main(config_from_args(args.dataset, args.overrides)))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
