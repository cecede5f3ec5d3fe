"""Build a checked dataset from a prompt spec: the prompted teacher answers every training input (best-of-n),
the checks score each answer, and the best passing answer becomes a training row whose prompt is the bare
input, with no rules.

    promptbake data build configs/specs/demo_style.yaml [key=value ...]
    python -m data_tools.build configs/specs/demo_style.yaml teacher.sampling.n=4
    promptbake data build configs/specs/demo_style.yaml shard=2/3   # one of 3 machines (data_tools/shards.py)

Writes to `output_dir`:
    sft_train.jsonl    TRL conversational prompt-completion rows  {"prompt": [user], "completion": [assistant]}
    prefs_train.jsonl  TRL preference rows {"prompt", "chosen", "rejected"} (a passing and a failing sample)
    eval_inputs.jsonl  TRL prompt-only rows for the held-out inputs (the evals answer these), with `label`
                       when the spec names a label column
    train_inputs.jsonl the same for the training inputs (what on-policy rounds sample answers to)
    val_inputs.jsonl   the same for the validation slice (`split.validation_size` > 0), carved from the
                       training inputs: scored while training, never trained on
    rejects.jsonl      inputs with no passing sample, with every sample's failed checks
    samples.jsonl      the journal of raw teacher samples; a killed build resumes from it
    shard_inputs.jsonl a shard only: its training inputs' positions in the unsharded order, for the merge
    manifest.json      spec hash, teacher, sampling, counts, pass rate per rule, time (written last)
    hf/                the same rows as a `datasets` DatasetDict (load_from_disk)

Training prompts carry no system message: the tuned model must behave with nothing in its context. (A chat
template may insert its own default system prompt, e.g. SmolLM2's; it does so identically when training
and when the tuned model is evaluated or served, and the evals count those tokens.)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from data_tools.backends import Completion
from data_tools.format_only import best_fixed_answer, fixed_answers, format_only_warning
from data_tools.inputs import InputItem, carve_validation, input_id, load_inputs, split_inputs
from data_tools.label_repair import label_repair
from data_tools.near_dupes import repeated_shingles
from data_tools.scoring import all_pass, failures, repair, score
from data_tools.shards import Shard, load_sharded, shard_train
from data_tools.spec import PromptSpec, Sampling
from data_tools.teachers import open_backend
from promptbake.core.config import InputError
from promptbake.core.entry import stage_parser
from promptbake.core.io import (
    append_jsonl,
    atomic_dir,
    check_output_dir,
    mark_output,
    recover_journal,
    write_json,
    write_jsonl,
)

JOURNAL = "samples.jsonl"


def user_prompt(text: str) -> list[dict]:
    """The training/eval prompt for an input: the bare input as the only message."""
    return [{"role": "user", "content": text}]


def make_backend(spec: PromptSpec):
    """The generating teacher named by the spec (data_tools/backends.py:open_backend)."""
    return open_backend(spec.teacher, f"{spec.source or 'the spec'}: field 'teacher.backend'")


def read_journal(spec: PromptSpec, out_dir: Path) -> dict[tuple[int, str], list[str]]:
    """(round, input id) -> samples already generated; refuses a journal written for another spec."""
    done = {}
    for record in recover_journal(out_dir / JOURNAL):
        if record.get("spec_hash") != spec.content_hash():
            raise InputError(f"{out_dir}: holds a build of a different spec (or different settings); "
                             "choose another output_dir or delete this one")
        done[(record.get("round", 1), record["id"])] = record["samples"]
    return done


def generate_missing(spec: PromptSpec, texts: list[str], inputs: dict[str, InputItem], out_dir: Path, done: dict,
                     sampling: Sampling, round_no: int, backend_cache: dict, hint: str | None = None
                     ) -> dict[str, list[str]]:
    """Teacher samples of one round for every input in `texts`, generating only what the journal lacks;
    returns input id -> samples. The teacher's prompt carries the input's label hint when the spec has one
    (or from the template `hint`)."""
    answered = {i for i, t in enumerate(texts) if (round_no, input_id(t)) in done}
    if round_no > 1:  # each sample's stream is seeded by its prompt: a later round of the same prompts needs its own
        sampling = sampling.model_copy(update={"seed": sampling.stream_seed(f"round {round_no}", 0, bits=31)})
    if len(answered) < len(texts):
        if "backend" not in backend_cache:  # load the model once, only when something is left to generate
            backend_cache["backend"] = make_backend(spec)
        conversations = (spec.prompted_messages(t, hint=spec.hint_for(inputs[t].label, hint)) for t in texts)
        if spec.teacher.backend != "openai":  # the HTTP backend reads them lazily: a million prompts never in memory
            conversations = list(conversations)
        label = "teacher" if round_no == 1 else f"teacher round {round_no}"
        bar = tqdm(total=len(texts), initial=len(answered), desc=label, unit="input")

        spec_hash = spec.content_hash()

        def on_batch(indices: list[int], completions: list[Completion]) -> None:
            records = [{"id": input_id(texts[i]), "round": round_no, "spec_hash": spec_hash,
                        "input": texts[i], "samples": c.texts} for i, c in zip(indices, completions)]
            append_jsonl(out_dir / JOURNAL, records)  # fsynced once per batch or group: a kill loses only
            # the one being gathered (the HTTP backend's groups: teacher.journal_every / journal_interval_s)
            for r in records:
                done[(round_no, r["id"])] = r["samples"]
            bar.update(len(records))

        # every input is handed over, the journaled ones to skip (each sample is seeded from its prompt, so a
        # resumed build asks for what an uninterrupted one did)
        backend_cache["backend"].generate(conversations, sampling, on_batch=on_batch, skip=answered)
        bar.close()
    return {input_id(t): done[(round_no, input_id(t))] for t in texts}


def teacher_samples(spec: PromptSpec, inputs: dict[str, InputItem], train: list[str], out_dir: Path,
                    cache: dict | None = None) -> tuple[dict[str, list[str]], dict, dict[str, int]]:
    """Every training input's samples (round 1, then a retry round for inputs where nothing passed), the
    statistics of those rounds, and input id -> the index of its first sample written with a label hint in the
    teacher's prompt (every sample with `teacher.hint`, those of the automatic hint round otherwise); `cache`
    holds the loaded teacher across calls."""
    if spec.teacher.backend == "labels":
        return {input_id(t): [inputs[t].label] for t in train}, {}, {}
    if spec.teacher.backend == "logs":
        return {input_id(t): [inputs[t].logged] for t in train}, {}, {}
    hinted_from = {input_id(t): 0 for t in train if spec.hint_for(inputs[t].label) is not None}
    done = read_journal(spec, out_dir)
    cache = {} if cache is None else cache
    samples = generate_missing(spec, train, inputs, out_dir, done, spec.teacher.sampling, 1, cache)
    stats = {}
    if spec.teacher.retry is not None:
        failing = [t for t in train if select(spec, t, samples[input_id(t)], inputs[t].label)["chosen"] is None]
        retry = spec.teacher.sampling.model_copy(update={"n": spec.teacher.retry.n,
                                                         "temperature": spec.teacher.retry.temperature})
        more = generate_missing(spec, failing, inputs, out_dir, done, retry, 2, cache)
        for key, extra in more.items():
            samples[key] = samples[key] + extra
        rescued = sum(select(spec, t, samples[input_id(t)], inputs[t].label)["chosen"] is not None for t in failing)
        stats = {"retry_inputs": len(failing), "retry_rescued": rescued}
    # a synthesized input's label is the teacher's own guess: it never becomes a hint (see data_tools/synthesize)
    given = [t for t in train if not inputs[t].synthesized]
    failing = [t for t in given if not any(all_pass(score(spec.rules, t, s, inputs[t].label))
                                           for s in samples[input_id(t)])]
    if (spec.teacher.auto_hint and spec.teacher.hint is None and spec.inputs.label_names()
            and len(failing) > len(given) / 2):
        print(f"[promptbake] the prompted teacher failed {len(failing)} of {len(given)} training inputs: those get "
              "one more round with their labels as a hint (teacher.auto_hint)", flush=True)
        more = generate_missing(spec, failing, inputs, out_dir, done, spec.teacher.sampling, 3, cache,
                                hint=spec.automatic_hint())
        for key, extra in more.items():
            hinted_from.setdefault(key, len(samples[key]))
            samples[key] = samples[key] + extra
        stats["hinted_inputs"] = len(failing)
        stats["hinted_rescued"] = sum(any(all_pass(score(spec.rules, t, s, inputs[t].label))
                                          for s in samples[input_id(t)]) for t in failing)
    return samples, stats, hinted_from


def add_synthesized(spec: PromptSpec, inputs: dict[str, InputItem], train: list[str], out_dir: Path,
                    cache: dict) -> list[str]:
    """Inputs the teacher writes, seeded by the training inputs (with their labels, where the spec has them),
    when the spec has fewer than `synthesis.min_inputs` distinct ones; added to `inputs` marked as
    synthesized, never close to any given input."""
    from data_tools.synthesize import synthesize_inputs

    if spec.synthesis.min_inputs <= len(inputs):
        return []
    print(f"[promptbake] {len(inputs)} distinct inputs, fewer than synthesis.min_inputs="
          f"{spec.synthesis.min_inputs}: the teacher writes {spec.synthesis.min_inputs - len(inputs)} more "
          "(training side only)", flush=True)

    def generate(conversations, sampling):
        if "backend" not in cache:
            cache["backend"] = make_backend(spec)
        return [c.texts for c in cache["backend"].generate(conversations, sampling)]

    target = spec.synthesis.min_inputs - len(inputs)
    new = synthesize_inputs(spec, target, [(t, inputs[t].label) for t in train], list(inputs), out_dir, generate)
    for text, label in new:
        inputs[text] = InputItem(label=label, synthesized=True)
    return [text for text, _ in new]


def select(spec: PromptSpec, text: str, samples: list[str], label: str | dict | None = None,
           label_is_answer: bool = True) -> dict:
    """Score one input's samples: pick the best passing answer (raw or repaired by the checks' repairs, then
    label-repaired: a sample that fails only label-reading checks with the label's fields set, then the input's
    own label when it passes every check; the last two where `teacher.label_repair` / `label_fallback` allow and
    `label_is_answer`: not for a label the teacher guessed), a rejected one for a preference pair, or report why
    every sample failed. `label` feeds the checks that compare with it.

    A raw answer comes before a repaired one, a repair that ends a sentence before one cut mid-sentence (a
    fragment). With `teacher.avoid_repeats`, an answer that never repeats a phrase (`repeated_shingles`) comes
    first of all, and fewer repeats before more: the demo's training answers held run-ons such as "pack light
    bring the right gear. pack light bring the right clothes ...", and the tuned model looped on 4 of its 9
    failing held-out answers.

    With `teacher.answers_per_input` k > 1, `more` holds up to k - 1 further distinct passing answers (raw and
    repaired, ranked the same way) as (sample index, answer, repaired): each becomes a training row too."""
    scored = [(s, score(spec.rules, text, s, label)) for s in samples]
    failing = [s for s, r in scored if not all_pass(r)]
    candidates = [(i, s, False) for i, (s, r) in enumerate(scored) if all_pass(r)]
    keep = spec.teacher.answers_per_input
    if spec.teacher.repair and (spec.teacher.avoid_repeats or keep > 1 or not candidates):
        candidates += [(i, f, True) for i, (s, r) in enumerate(scored) if not all_pass(r)
                       for f in [repair(spec.rules, text, s, label=label)] if f is not None]

    def rank(candidate: tuple[int, str, bool]) -> tuple:
        index, answer, repaired = candidate
        repeats = repeated_shingles(answer) if spec.teacher.avoid_repeats else 0
        fragment = repaired and not answer.rstrip().endswith((".", "!", "?"))
        return repeats > 0, repaired, fragment, repeats, index

    ranked = sorted(candidates, key=rank)
    index, chosen, repaired = ranked[0] if ranked else (None, None, False)
    more: list[tuple[int, str, bool]] = []  # the next distinct passing answers, best first (answers_per_input)
    for candidate in ranked[1:]:
        if len(more) + 1 >= keep:
            break
        if candidate[1] != chosen and all(candidate[1] != m[1] for m in more):
            more.append(candidate)
    label_repaired = False
    if chosen is None and spec.teacher.label_repair and label_is_answer:
        fixed = [(i, f) for i, f in enumerate(label_repair(spec.rules, text, s, label, spec.inputs.label_json_key)
                                              for s in samples) if f is not None]
        (index, chosen), label_repaired = (fixed[0], True) if fixed else ((None, None), False)
    from_label = False
    if chosen is None and spec.teacher.label_fallback and label_is_answer and isinstance(label, str) \
            and all_pass(score(spec.rules, text, label, label)):
        chosen, from_label = label, True
    return {"chosen": chosen, "index": index, "repaired": repaired, "label_repaired": label_repaired,
            "from_label": from_label, "more": more,
            "rejected": failing[0] if failing else None, "scored": scored}


BUILD_KIND = "dataset build"


def claim_build_dir(out_dir: Path, spec_hash: str) -> None:
    """Refuse an output directory that holds anything but a build of this spec (the user's files, another spec's
    build, another kind of output), then mark it as this spec's build: checked before anything is written."""
    marker = check_output_dir(out_dir, BUILD_KIND, legacy=lambda d: unmarked_build_hash(d) is not None)
    if marker is not None:
        if (marker.get("spec_hash") or unmarked_build_hash(out_dir)) != spec_hash:
            raise InputError(f"{out_dir}: holds a build of a different spec (or different settings); "
                             "choose another output_dir or delete this one")
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_output(out_dir, BUILD_KIND, {"spec_hash": spec_hash})


def unmarked_build_hash(out_dir: Path) -> str | None:
    """The spec hash of a build written before promptbake marked its outputs: its manifest's, or else its
    journal's first record's; None when it has neither (not a build)."""
    try:
        if (out_dir / "manifest.json").is_file():
            return json.loads((out_dir / "manifest.json").read_text()).get("spec_hash")
        if (out_dir / JOURNAL).is_file():
            with open(out_dir / JOURNAL, encoding="utf-8") as f:
                return json.loads(f.readline()).get("spec_hash")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass  # not JSON objects: not files a build wrote
    return None


def main(spec: PromptSpec, shard: Shard | None = None) -> dict:
    """Build the dataset described by `spec` (only `shard`'s part of its training inputs); returns the manifest."""
    start = time.time()
    out_dir = Path(spec.output_dir)
    inputs = load_inputs(spec)
    claim_build_dir(out_dir, spec.content_hash())  # the user's files or another spec's build: refused before any write
    # the manifest marks a finished build: drop a previous one before rewriting the files it describes
    (out_dir / "manifest.json").unlink(missing_ok=True)
    texts = list(inputs)
    train, held_out = split_inputs(texts, spec.split.eval_fraction, spec.split.seed)
    train, validation = carve_validation(train, spec.split.validation_size, spec.split.seed)
    train, validation, leaked = drop_leaks(held_out, train, validation)
    shard_info = None
    if shard is not None:  # after the split: every shard holds the eval split and validation slice of the whole
        train, shard_info = shard_train(spec, shard, inputs, train, out_dir)
    cache: dict = {}
    profile = {"prepare": time.time() - start}  # where the stage's time goes (bench_all and the verdict report it)
    t0 = time.time()
    synthesized = add_synthesized(spec, inputs, train, out_dir, cache)
    train = train + synthesized
    profile["synthesis"] = time.time() - t0
    t0 = time.time()
    samples, retry_stats, hinted_from = teacher_samples(spec, inputs, train, out_dir, cache)
    profile["teacher"] = time.time() - t0  # the model's load, the samples, the label-hint and retry rounds
    t0 = time.time()

    sft_rows, pref_rows, rejects = [], [], []
    rule_passes: Counter[str] = Counter()
    n_samples = n_raw_all_pass = n_repaired = n_label_repaired = n_from_labels = 0
    provenance: Counter[str] = Counter()
    unconfirmed: set[str] = set()
    for text in train:
        synthesized_label = inputs[text].synthesized and inputs[text].label is not None
        picked = select(spec, text, samples[input_id(text)], inputs[text].label, not synthesized_label)
        for _, results in picked["scored"]:
            n_samples += 1
            n_raw_all_pass += all_pass(results)
            rule_passes.update(rule_id for rule_id, r in results.items() if r.passed)
        if picked["chosen"] is None and synthesized_label:
            unconfirmed.add(text)  # no answer of the teacher's own agrees with the label it wrote: dropped
            continue
        if picked["chosen"] is None:
            rejects.append({"input": text, "samples": [{"text": s, "failed": failures(r)}
                                                       for s, r in picked["scored"]]})
            continue
        answers = [picked] + [{**picked, "index": index, "chosen": answer, "repaired": repaired}
                              for index, answer, repaired in picked["more"]]
        for row in answers:
            n_repaired += row["repaired"]
            n_label_repaired += row["label_repaired"]
            n_from_labels += row["from_label"]
            provenance[row_source(spec, row, hinted_from.get(input_id(text)))] += 1
            provenance["synthesized_inputs"] += inputs[text].synthesized
            sft_rows.append({"prompt": user_prompt(text),
                             "completion": [{"role": "assistant", "content": row["chosen"]}]})
        answer = [{"role": "assistant", "content": picked["chosen"]}]
        if picked["rejected"] is not None and picked["rejected"] != picked["chosen"]:
            pref_rows.append({"prompt": user_prompt(text), "chosen": answer,
                              "rejected": [{"role": "assistant", "content": picked["rejected"]}]})
    write_jsonl(out_dir / "rejects.jsonl", rejects)
    if not sft_rows and shard is None:  # a shard's rows may all be rejects; the merge checks the whole
        raise InputError(f"{spec.source}: no teacher sample passed every check, even after repair; "
                         f"see {out_dir / 'rejects.jsonl'}")
    write_jsonl(out_dir / "sft_train.jsonl", sft_rows)
    write_jsonl(out_dir / "prefs_train.jsonl", pref_rows)
    write_jsonl(out_dir / "eval_inputs.jsonl", prompt_only_rows(held_out, inputs))
    train = [t for t in train if t not in unconfirmed]
    write_jsonl(out_dir / "train_inputs.jsonl", prompt_only_rows(train, inputs))  # on-policy rounds answer these
    if validation:
        write_jsonl(out_dir / "val_inputs.jsonl", prompt_only_rows(validation, inputs))
    fixed = fixed_answer_finding(spec, [(t, inputs[t].label) for t in texts], sft_rows)  # the given inputs
    elapsed = time.time() - start
    profile["select_and_write"] = time.time() - t0
    checked = [r.id for r in spec.rules if r.check is not None]
    manifest = {
        "spec": spec.name,
        "spec_path": spec.source,
        "spec_hash": spec.content_hash(),
        "teacher": spec.teacher.model_dump(mode="json"),
        **({"shard": shard_info} if shard_info else {}),
        "counts": {
            "inputs": len(texts), "synthesized_inputs": len(synthesized),
            "synthesized_unconfirmed": len(unconfirmed), "train_inputs": len(train),
            "val_inputs": len(validation),
            "eval_inputs": len(held_out),
            "samples": n_samples, "sft_rows": len(sft_rows),
            "sft_rows_raw": len(sft_rows) - n_repaired - n_label_repaired - n_from_labels,
            "sft_rows_repaired": n_repaired, "sft_rows_label_repaired": n_label_repaired,
            "sft_rows_from_labels": n_from_labels, "pref_rows": len(pref_rows),
            "rejects": len(rejects), "leaked_train_inputs_dropped": leaked,
            **retry_stats,
        },
        # where each training answer came from (all but the last add up to sft_rows); synthesized_inputs counts
        # the rows, of any source, whose input the teacher wrote
        "provenance": {key: provenance[key] for key in PROVENANCE},
        "fixed_answer": fixed,
        "raw_pass_rate_per_rule": {rid: rule_passes[rid] / max(n_samples, 1) for rid in checked},
        "raw_all_rules_pass_rate": n_raw_all_pass / max(n_samples, 1),
        "time_s": round(elapsed, 1),
        "examples_per_s": round(n_samples / elapsed, 3) if elapsed else None,
        "profile_s": {k: round(v, 1) for k, v in profile.items()},
    }
    if hasattr(cache.get("backend"), "endpoint_summary"):  # what this run asked of each HTTP endpoint
        manifest["teacher_endpoints"] = cache["backend"].endpoint_summary()
    save_datasets(out_dir)
    write_json(out_dir / "manifest.json", manifest)  # last: its presence means the build finished
    print_summary(manifest, out_dir)
    return manifest


def fixed_answer_finding(spec: PromptSpec, items: list[tuple[str, str | dict | None]], sft_rows: list[dict]) -> dict:
    """Before any training: the best fixed answer (the most frequent training answer or a few-shot example's
    output) scored on every given input ((text, label) `items`); when it passes most, the checks test the
    format, not the task, and the build warns (data_tools/format_only.py)."""
    fixed = best_fixed_answer(spec, items, fixed_answers(spec, (r["completion"][-1]["content"] for r in sft_rows)))
    warning = format_only_warning(fixed)
    if warning:
        print(f"[promptbake] warning: {warning}", flush=True)
    return {"answer": fixed["answer"], "source": fixed["source"], "pass_rate": fixed["pass_rate"],
            "warning": warning}


PROVENANCE = ("teacher", "teacher_repaired", "teacher_with_label_hint", "label_repaired", "label_as_answer",
              "logged_answer", "synthesized_inputs")


def row_source(spec: PromptSpec, picked: dict, hinted_from: int | None) -> str:
    """Where a training answer came from: the teacher's own sample (as written, or repaired), a sample the
    teacher wrote with the input's label hinted in its prompt, a sample with the label's fields set from the
    label, the label itself, or a chat log's answer."""
    if picked["from_label"] or spec.teacher.backend == "labels":
        return "label_as_answer"
    if picked["label_repaired"]:
        return "label_repaired"
    if spec.teacher.backend == "logs":
        return "logged_answer"
    if hinted_from is not None and picked["index"] is not None and picked["index"] >= hinted_from:
        return "teacher_with_label_hint"
    return "teacher_repaired" if picked["repaired"] else "teacher"


def drop_leaks(held_out: list[str], train: list[str], validation: list[str]) -> tuple[list[str], list[str], int]:
    """Training and validation inputs that are near duplicates of a held-out input (word 3-shingles of the
    case-folded text, Jaccard >= lint's threshold: `my thermostat screen is blank, what do i do` and `My
    thermostat screen is blank, what do I do?` are one question) are dropped before the teacher runs: a held-out
    question must not be a training question. Returns (train, validation, inputs dropped)."""
    from data_tools.lint import LintConfig
    from data_tools.near_dupes import similar_pairs

    threshold = LintConfig.model_fields["near_duplicate_threshold"].default
    both = train + validation
    leaked = {both[j] for _, j, _ in similar_pairs(held_out, both, threshold)}
    if leaked:
        print(f"[promptbake] {len(leaked)} training input(s) near-duplicate a held-out input (similarity >= "
              f"{threshold}): dropped from training, e.g. {sorted(leaked)[0]!r:.80}", flush=True)
    return [t for t in train if t not in leaked], [t for t in validation if t not in leaked], len(leaked)


def prompt_only_rows(texts: list[str], inputs: dict[str, InputItem]) -> list[dict]:
    """TRL prompt-only rows; a reference answer, when the inputs have one, rides along as `label`."""
    return [{"prompt": user_prompt(t), **({"label": inputs[t].label} if inputs[t].label is not None else {})}
            for t in texts]


def save_datasets(out_dir: Path) -> None:
    """The same rows as a `datasets` DatasetDict (`load_from_disk(out_dir / "hf")`), splits sft_train,
    prefs_train and eval_inputs; written under a temporary name and renamed, like every output."""
    from datasets import Dataset, DatasetDict

    from promptbake.core.io import iter_jsonl

    splits = {}
    for name in ("sft_train", "prefs_train", "eval_inputs"):
        rows = [row for _, row in iter_jsonl(out_dir / f"{name}.jsonl")]
        if rows:
            splits[name] = Dataset.from_list(rows)
    with atomic_dir(out_dir / "hf", "dataset", legacy=lambda d: (d / "dataset_dict.json").is_file()) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))


def print_summary(manifest: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    c = manifest["counts"]
    table = Table(title=f"dataset {manifest['spec']} -> {out_dir}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("synthesized_inputs", "synthesized_unconfirmed", "train_inputs", "val_inputs", "eval_inputs",
                "samples", "sft_rows", "sft_rows_repaired", "sft_rows_label_repaired", "sft_rows_from_labels",
                "pref_rows", "rejects",
                "retry_inputs", "retry_rescued", "hinted_inputs", "hinted_rescued"):
        if key in c:
            table.add_row(key, str(c[key]))
    for e in manifest.get("teacher_endpoints", []):
        failed = ", ".join(f"{n} {kind}" for kind, n in e["failures"].items())
        table.add_row(f"endpoint {e['base_url']}", f"{e['answered']} of {e['requests']} requests answered"
                      + (f"; failed: {failed}" if failed else ""))
    table.add_row("raw all-rules pass rate", f"{manifest['raw_all_rules_pass_rate']:.0%}")
    for rule_id, rate in manifest["raw_pass_rate_per_rule"].items():
        table.add_row(f"raw pass: {rule_id}", f"{rate:.0%}")
    Console().print(table)
    if c.get("sft_rows_label_repaired"):
        print(f"[promptbake] {c['sft_rows_label_repaired']} of {c['sft_rows']} training rows are teacher answers whose "
              "label fields were set from the label (every check but the label-reading ones passed them; "
              "teacher.label_repair)")
    if c.get("sft_rows_from_labels"):
        print(f"[promptbake] {c['sft_rows_from_labels']} of {c['sft_rows']} training rows take the input's own label "
              "as the answer: every teacher sample failed for them, and the label passes every check")
    if c["rejects"] > c["sft_rows"]:
        print(f"[promptbake] the prompted teacher failed most inputs ({c['rejects']} rejected, {c['sft_rows']} kept): "
              "see rejects.jsonl; a stronger teacher, more examples, or `teacher.hint` from the inputs' labels "
              "would give the model more to learn from")


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`promptbake data build` (added to `subparsers`) or `python -m data_tools.build`."""
    parser = stage_parser(subparsers, "build", "build a checked SFT/preference dataset from a prompt spec")
    parser.add_argument("spec", help="prompt spec YAML, e.g. configs/specs/demo_style.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. teacher.sampling.n=4; shard=i/N "
                                                     "builds the i-th of N shards (merge them with `data merge`)")
    parser.set_defaults(run=lambda args: main(*load_sharded(args.spec, args.overrides)))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
