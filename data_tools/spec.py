"""The prompt spec: the prompt-engineered behaviour to bake in, as one YAML file.

    promptbake data build configs/specs/demo_style.yaml

A spec holds the system prompt and its rules (each with an optional check), few-shot examples that only the
teacher sees, where the inputs come from, how the teacher samples, and how inputs are split. The rules'
text reaches the teacher and the prompted eval arm; it never reaches a training row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from data_tools.checks import Check, function_sources
from promptbake.core.config import DEFAULT_MODEL, FieldError, InputError, StrictModel, load_config, read_yaml

log = logging.getLogger(__name__)


class Rule(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Short stable name, used as the key of per-rule pass rates and adherence."""
    text: str = Field(min_length=1)
    """The instruction as the prompt states it."""
    check: Check | None = None
    """How to verify the rule on a response; a rule without one is prompted but not scored."""


class Example(StrictModel):
    """A few-shot demonstration: shown to the teacher as a user/assistant turn pair, never trained on."""

    input: str
    output: str


class MissingSlot(StrictModel):
    """A missing-field variant: some inputs render a slot as absent, so the data shows what the model must do
    when information is missing (leave the field empty, ask, say so) instead of inventing it."""

    fraction: float = Field(gt=0.0, lt=1.0)
    """Share of expanded inputs (seeded choice) in which this slot is absent."""
    text: str = ""
    """What the slot renders as when absent, e.g. "" or "a customer who gave no name"."""


class InputsSpec(StrictModel):
    """Where the inputs come from: a file (`path`) or a template expanded over slot values."""

    path: str | None = None
    """JSONL (one object per line), CSV (with a header), text (one input per line), or a directory written by
    `datasets.Dataset.save_to_disk`; relative to the spec."""
    format: Literal["rows", "chat_logs"] = "rows"
    """`rows`: one input per line/row in `field`. `chat_logs`: OpenAI-format logs of a prompted feature in
    production, JSONL of {"messages": [system, user, assistant]}: the user turn is the input, the logged
    assistant answer is a teacher sample (`teacher.backend: logs`), and the system prompt is dropped."""
    field: str = "input"
    """The JSONL key, CSV column or dataset column that holds the input text."""
    label_field: str | None = None
    """Optional JSONL key or CSV column with a reference answer; held-out rows carry it as `label`, and the
    evals report how often an arm's answer matches it (`label_match` checks use it too)."""
    label_fields: list[str] = []
    """Several label columns instead of one (e.g. [category, urgent]): the label is then a dict of them, which
    `python` checks receive as their third argument and the evals match field by field against the answer's
    JSON. Every row must carry every field."""
    label_json_key: str | None = None
    """With one `label_field` whose value is one key of a JSON answer (a ticket's category), that key, e.g.
    `category`: a label repair (`teacher.label_repair`) may then set it. Without it a plain label's place in the
    answer is unknown and no answer is label-repaired for it (`label_fields` are the answer's keys by name)."""
    system_prompts: list[str] = []
    """`chat_logs` only: use a log only if its system prompt is one of these (empty: any)."""
    checks: list[Check] = []
    """Optional checks an input must pass (applied to the input text as the response): synthesized inputs
    are kept only if they pass, e.g. [{kind: max_words, n: 40}, {kind: ends_with, suffix: "?"}]."""
    template: str | None = None
    """A `str.format` template such as "Why is {thing} useful for {who}?"."""
    slots: dict[str, list[str | int | float]] = {}
    """Values for each template slot; every combination becomes one input."""
    missing: dict[str, MissingSlot] = {}
    """Missing-field variants per slot, e.g. {name: {fraction: 0.3, text: ""}}."""
    limit: PositiveInt | None = None
    """Use at most this many inputs (after a seeded shuffle), e.g. for a quick trial or to sample a large
    template expansion."""
    max_chars: PositiveInt = 4000
    """Longer inputs are reported with their file and line and dropped before any model sees them (a pasted log
    of megabytes would make the teacher allocate its attention for all of it). About 1,000 tokens at 4000."""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.template is None):
            raise ValueError("give exactly one of `path` or `template`")
        if self.template is not None:
            names = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
            for name in sorted(names):
                if not self.slots.get(name):
                    raise ValueError(f"template slot {{{name}}} has no values in `slots.{name}`")
            unused = sorted(set(self.slots) - names)
            if unused:
                raise ValueError(f"slots {unused} do not appear in the template")
            unknown = sorted(set(self.missing) - names)
            if unknown:
                raise ValueError(f"missing variants for {unknown}, which are not template slots")
        elif self.missing:
            raise ValueError("`missing` variants need a `template`")
        if self.format == "chat_logs" and (self.path is None or self.label_field or self.label_fields):
            raise ValueError("`chat_logs` reads a JSONL `path` of messages; it takes no `label_field`")
        if self.label_field and self.label_fields:
            raise ValueError("give `label_field` (one column) or `label_fields` (several), not both")
        if self.label_json_key and not self.label_field:
            raise ValueError("`label_json_key` says which key of a JSON answer the one `label_field` holds: set "
                             "`label_field` (several `label_fields` are the answer's keys by their own names)")
        if self.label_fields and self.template is not None:
            raise ValueError("`label_fields` are columns of an input file; a `template` has none")
        return self

    def label_names(self) -> list[str]:
        """The names a teacher hint may use: the label fields, or `label` for a single label column."""
        return list(self.label_fields) or (["label"] if self.label_field else [])


class Sampling(StrictModel):
    """Generation settings, shared by the teacher and the evals."""

    n: PositiveInt = 1
    """Samples per input (best-of-n). More samples raise the chance that one passes every check."""
    temperature: float = Field(0.0, ge=0.0)
    """0 means greedy decoding (then n must be 1)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    """0 disables top-k filtering."""
    max_new_tokens: PositiveInt = 64
    seed: int = 0

    @model_validator(mode="after")
    def _greedy_is_single(self):
        if self.temperature == 0.0 and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) gives the same answer n times: set temperature > 0")
        return self

    def stream_seed(self, prompt: str, sample: int, bits: int = 63) -> int:
        """The seed of one sample's random stream: a hash of `seed`, the prompt (the rendered text, or a request's
        messages as JSON) and the sample's number (0..n-1). A sample then does not depend on its batch, on the
        other inputs or on a resume, and no two samples, inputs or sampling seeds share a stream (`seed + i`
        would give seed 1's first sample seed 0's second). `bits`: 31 for servers that take a 32-bit seed."""
        digest = hashlib.blake2b(f"{self.seed}\0{sample}\0{prompt}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % (2**bits)


# the request fields the HTTP backend fills in itself (data_tools/http_backend.py)
REQUEST_FIELDS = {"messages", "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "n", "stream"}


class EndpointSpec(StrictModel):
    """Where and how to reach an OpenAI-compatible chat completions endpoint."""

    base_url: str
    """The API root, up to and including the version, e.g. `http://127.0.0.1:8080/v1`; requests go to
    `{base_url}/chat/completions`."""
    model: str = Field(min_length=1)
    """The model name sent in each request (what the server lists under `/v1/models`)."""
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable that holds the API key, sent as `Authorization: Bearer <key>`.
    When it is unset no Authorization header is sent (local servers need none)."""
    concurrency: PositiveInt = 8
    """Requests in flight at once. Raising it helps servers that batch (vLLM) and hosted APIs, up to their
    rate limit; a server that answers one request at a time (llama-cpp-python) gains nothing."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds a request may wait on the connection or for the server's answer before it is retried."""
    max_retries: int = Field(5, ge=0)
    """Retries of one request after a 429, a 5xx, a timeout, a dropped connection or a garbled body."""
    backoff_s: float = Field(0.5, ge=0)
    """How long the endpoint is paused after a failure; it doubles with each further failure in a row (up to
    `max_backoff_s`), times a random factor in [0.5, 1.5) so that clients and replicas do not retry in
    lockstep. A 429 or 503 with `Retry-After` pauses it at least that long. With several endpoints a retried
    request goes to another one that is not paused."""
    max_backoff_s: float = Field(30.0, gt=0)
    """The longest backoff: a dead replica is probed again (one request) at least this often."""

    extra_body: dict[str, Any] = {}
    """Fields added as they are to every request body: a server's own sampling settings. llama-cpp-python's
    server penalises repeats by default (repeat_penalty 1.1), so its greedy answers differ from the local
    backend's unless it is sent `{repeat_penalty: 1.0}`; vLLM takes e.g. `{repetition_penalty: 1.0}`. The fields
    promptbake sets itself (messages, model, sampling) are refused here: set those under `sampling`."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", url):
            raise ValueError(f"expected an http:// or https:// URL up to the API version, such as "
                             f"http://127.0.0.1:8080/v1; got {url!r}")
        return url

    @field_validator("extra_body")
    @classmethod
    def _no_field_promptbake_sets(cls, extra: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(extra) & REQUEST_FIELDS)
        if taken:
            raise ValueError(f"{', '.join(taken)}: promptbake sets these in every request (from `sampling` and "
                             "the spec); extra_body is for the server's own fields")
        return extra


class VLLMSettings(StrictModel):
    """`vllm` backend: vLLM's offline engine in this process, for GPU machines (`vllm` must be importable; on a
    CPU serve the model with vLLM instead and use the `openai` backend: data_tools/vllm_server.py)."""

    tensor_parallel_size: PositiveInt = 1
    """GPUs that one copy of the model is split across: raise it for a teacher too large for one GPU."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """Share of each GPU's memory vLLM takes for the weights and the KV cache; lower it when the GPU is shared."""
    max_model_len: PositiveInt | None = None
    """Longest prompt + answer in tokens; None: the model's own. Lowering it leaves room for more sequences."""
    dtype: str = "auto"
    """vLLM's `dtype`: auto takes bf16/fp16 for an fp32 checkpoint on a GPU; `float32` answers as the local
    backend does, token for token, at a higher cost."""
    enable_prefix_caching: bool = True
    """Every prompt of a spec starts with the same system prompt, rules and examples: vLLM computes their KV
    cache once and reuses it."""
    chunk_size: PositiveInt = 1024
    """Conversations handed to vLLM at once; the journal is written after each chunk, so a kill loses at most
    one. Larger chunks keep the GPU busier at a chunk's tail."""


class RetrySpec(StrictModel):
    """A second round for the inputs whose samples all failed: more samples, usually hotter."""

    n: PositiveInt = 4
    temperature: float = Field(1.0, gt=0.0)


class TeacherSpec(StrictModel):
    backend: Literal["local", "openai", "vllm", "labels", "logs"] = "local"
    """`local`: a transformers model on this machine with batched generation. `openai`: any OpenAI-compatible
    endpoint (vLLM, llama.cpp server, Ollama, hosted APIs), see `endpoint`. `vllm`: vLLM's offline engine in
    this process (GPU machines), see `vllm`. `labels`: the inputs' own `label_field` answers are the samples.
    `logs`: the logged assistant answers of `chat_logs` inputs."""
    model: str = DEFAULT_MODEL
    """`local` and `vllm` backends: a short name, hub id, local directory or .gguf file."""
    vllm: VLLMSettings = VLLMSettings()
    """`vllm` backend: tensor parallelism, GPU memory, prefix caching."""
    endpoint: EndpointSpec | None = None
    """`openai` backend: where to send the requests."""
    endpoints: list[EndpointSpec] = []
    """`openai` backend, instead of `endpoint`: replicas of one model, served round-robin, each with its own
    `concurrency` and backoff; a failing one's requests go to the others, and the build's summary says how
    many requests each answered. They may change between a build and its resume (the journal stays valid
    while the models they name are the same)."""
    journal_every: PositiveInt = 256
    """`openai` backend: answers written to the journal (samples.jsonl) and fsynced together. A kill loses at
    most one group (this many answers, or `journal_interval_s` of them), which the resumed build asks again."""
    journal_interval_s: float = Field(2.0, gt=0)
    """`openai` backend: the longest an answer waits for its group to be journaled."""
    sampling: Sampling = Sampling()
    batch_size: PositiveInt = 64
    """Sequences generated together (inputs x n). Larger batches are faster per example until memory runs out: a
    decode step of a small model on a CPU reads every weight whatever the batch, so a step of 72 rows costs about
    what one of 32 does (demo spec, 36 inputs x 2 samples, SmolLM2-135M, one thread: 35.8 s at 32 rows, 20.9 s
    at 72)."""
    repair: bool = True
    """Apply the checks' deterministic repairs to failing samples and re-check them."""
    avoid_repeats: bool = False
    """Among an input's passing answers (raw and repaired), keep the first that repeats no word 3-gram, before a
    raw one over a repaired one. Off by default: on the demo it cut the rows with a repeated phrase from 14 to
    3 but lost 2 of 17 validation inputs (82% -> 71%, on_topic: a repeated topic phrase also names the topic)."""
    answers_per_input: PositiveInt = 1
    """How many distinct passing answers of one input become training rows (best first, as `avoid_repeats`
    ranks them; repaired samples count): more than 1 trains on several ways to answer each input, as rejection
    sampling fine-tuning does, at the cost of that many times the SFT steps. Inputs with fewer passing answers
    give what they have."""
    retry: RetrySpec | None = None
    """Resample only the inputs with no passing sample, once, with these settings (generating backends)."""
    hint: str | None = None
    """Privileged context from the input's labels, for the teacher only: a `str.format` template over the label
    fields (`{label}` for a single `label_field`), e.g. "The correct category is {category}; urgent: {urgent}.",
    appended to the teacher's system prompt for that input. Never part of a training row or of an eval arm's
    prompt: the tuned model learns to answer right without it."""
    auto_hint: bool = True
    """When the teacher, without a hint, fails most training inputs and the inputs have labels, the failing
    inputs get one more round with the labels as a hint (see `automatic_hint`), and the build says so."""
    label_fallback: bool = True
    """When every sample of an input fails, take the input's label as its answer if the label itself passes
    every check (a label that is the whole answer: an extraction, a call, a short reply). The manifest
    counts these rows."""
    label_repair: bool = True
    """When every sample of an input fails, even after the repairs, a sample whose only failing checks read the
    label and whose answer is a JSON object gets the label's fields set from the label (`inputs.label_fields`,
    or `inputs.label_json_key` for one `label_field`) and is kept if it then passes every check: the teacher's
    other fields are better training text than the bare label (data_tools/label_repair.py). Tried before
    `label_fallback`; the manifest counts these rows as `label_repaired`."""

    @model_validator(mode="after")
    def _one_endpoint_form(self):
        if self.endpoint is not None and self.endpoints:
            raise FieldError([(("endpoints",), "give `endpoint` (one server) or `endpoints` (replicas), not both")])
        urls = [e.base_url.rstrip("/") for e in self.endpoints]
        for i, url in enumerate(urls):
            if url in urls[:i]:
                raise FieldError([(("endpoints", i, "base_url"), f"{url} is listed twice")])
        return self

    @model_validator(mode="after")
    def _model_exists(self):
        """A teacher model loaded here (`local`, `vllm`) must exist: a wrong path is refused when the spec loads,
        naming `teacher.model` and its line, not after the inputs are read (promptbake.core.models)."""
        if self.backend in ("local", "vllm"):
            from promptbake.core.models import check_model_fields

            check_model_fields({"model": self.model})
        return self

    def endpoint_list(self) -> list[EndpointSpec]:
        """The endpoints of the `openai` backend: `endpoints`, or the one `endpoint`."""
        return list(self.endpoints) or ([self.endpoint] if self.endpoint is not None else [])


class SynthesisSpec(StrictModel):
    """New training inputs written by the teacher when the spec has too few (data_tools/synthesize.py)."""

    min_inputs: int = Field(0, ge=0)
    """When the spec has fewer distinct inputs than this, the teacher writes the difference (training side
    only). 0: never. With labelled inputs the teacher writes a label with each new input, and an input becomes
    a training row only where the prompted teacher's own answer agrees with that label through the checks.
    Not for `chat_logs` inputs (a synthesized input has no logged answer)."""
    seeds_per_request: PositiveInt = 4
    """Given inputs shown as seeds in each request (a fresh random draw each time)."""
    samples_per_request: PositiveInt = 4
    temperature: float = Field(1.0, gt=0.0)
    max_new_tokens: PositiveInt = 64
    max_rounds: PositiveInt = 4
    near_duplicate: float = Field(0.6, gt=0.0, le=1.0)
    """Character 3-gram Jaccard similarity at or above which a candidate counts as a duplicate."""


class SplitSpec(StrictModel):
    eval_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    """Share of inputs held out for evaluation; no input is on both sides."""
    validation_size: int = Field(0, ge=0)
    """Training inputs set aside (seeded) as a validation slice: the teacher does not answer them and no
    training row comes from them; `val_inputs.jsonl` lists them for the checks-scored validation that
    `promptbake bake` runs while training. Taken from the train side only, never from the eval split."""
    seed: int = 0


class PromptSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    system_prompt: str = ""
    rules: list[Rule] = Field(min_length=1)
    examples: list[Example] = []
    inputs: InputsSpec
    teacher: TeacherSpec = TeacherSpec()
    split: SplitSpec = SplitSpec()
    synthesis: SynthesisSpec = SynthesisSpec()
    output_dir: str = "runs/data"
    """Where the dataset is written, relative to the working directory."""

    # set by load_spec: the file the spec came from (for relative input paths and messages)
    source: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _backend_has_answers(self):
        if (self.teacher.backend == "openai") != bool(self.teacher.endpoint_list()):
            raise ValueError("teacher.endpoint (or endpoints) is required by (and only by) teacher.backend 'openai'")
        if self.teacher.backend == "labels" and not self.inputs.label_field:
            raise ValueError("teacher.backend 'labels' needs `inputs.label_field`")
        if self.teacher.backend == "logs" and self.inputs.format != "chat_logs":
            raise ValueError("teacher.backend 'logs' needs `inputs.format: chat_logs`")
        if "vllm" in self.teacher.model_fields_set and self.teacher.backend != "vllm":
            raise ValueError(f"teacher.vllm configures backend 'vllm', not {self.teacher.backend!r}")
        if self.teacher.backend in ("labels", "logs") and self.teacher.retry is not None:
            raise ValueError(f"teacher.retry resamples, but backend {self.teacher.backend!r} does not generate")
        return self

    @field_validator("teacher")
    @classmethod
    def _hint_names_label_fields(cls, teacher: TeacherSpec, info: ValidationInfo) -> TeacherSpec:
        # a field validator, so that the error points at the spec's `teacher:` line; `inputs` is validated first
        inputs = info.data.get("inputs")
        if teacher.hint is None or inputs is None:
            return teacher
        names = inputs.label_names()
        if not names:
            raise ValueError("teacher.hint needs labels: set `inputs.label_field` or `inputs.label_fields`")
        try:
            used = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(teacher.hint) if f}
        except ValueError as e:
            raise ValueError(f"teacher.hint is not a valid format template ({e})") from None
        unknown = sorted(used - set(names))
        if unknown:
            raise ValueError(f"teacher.hint names {unknown}, which the inputs lack (label fields: {names})")
        return teacher

    @model_validator(mode="after")
    def _synthesis_needs_no_logs(self):
        if self.synthesis.min_inputs and self.inputs.format == "chat_logs":
            raise ValueError("synthesis.min_inputs: synthesized inputs would have no logged answers; these "
                             "inputs carry them")
        return self

    @model_validator(mode="after")
    def _unique_rule_ids(self):
        first: dict[str, int] = {}
        repeats = []  # each repeat at its own line
        for i, rule in enumerate(self.rules):
            if rule.id in first:
                repeats.append((("rules", i, "id"), f"rule ids must be unique; repeated: {[rule.id]} (first in "
                                                    f"rules.{first[rule.id]})"))
            first.setdefault(rule.id, i)
        if repeats:
            raise FieldError(repeats)
        return self

    def full_system_prompt(self) -> str:
        """The prompt as a prompt engineer would ship it: system prompt followed by the numbered rules."""
        rules = "\n".join(f"{i}. {r.text}" for i, r in enumerate(self.rules, 1))
        head = self.system_prompt.strip()
        return f"{head}\n\nFollow these rules:\n{rules}" if head else f"Follow these rules:\n{rules}"

    def prompted_messages(self, user_input: str, with_examples: bool = True, hint: str | None = None) -> list[dict]:
        """The conversation the teacher (and the prompted eval arm) sees for one input; `hint` (the teacher's
        only) ends the system prompt."""
        system = self.full_system_prompt() + (f"\n\n{hint}" if hint else "")
        messages = [{"role": "system", "content": system}]
        if with_examples:
            for ex in self.examples:
                messages += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": ex.output}]
        return messages + [{"role": "user", "content": user_input}]

    def hint_for(self, label, template: str | None = None) -> str | None:
        """The teacher hint for an input with this label, from `template` or else `teacher.hint` (None
        without either, or without a label)."""
        template = template or self.teacher.hint
        if template is None or label is None:
            return None
        return template.format(**(label if isinstance(label, dict) else {"label": label}))

    def automatic_hint(self) -> str:
        """The hint a build falls back to when the teacher fails most inputs and the inputs have labels."""
        names = self.inputs.label_names()
        if names == ["label"]:
            return ("The reference answer for this message is: {label}\nWrite your answer so that it agrees with "
                    "the reference and follows every rule.")
        values = ", ".join(f"{n}: {{{n}}}" for n in names)
        return f"The correct values for this message are {values}. Use them, and follow every rule."

    def inputs_path(self) -> Path:
        assert self.inputs.path is not None
        return (Path(self.source).parent / self.inputs.path) if self.source else Path(self.inputs.path)

    def check_sources(self) -> dict[str, str]:
        """The source files' hashes of the rules' `python` check modules (`checks.function_sources`)."""
        return function_sources(r.check.function for r in self.rules
                                if r.check is not None and r.check.kind == "python")

    def content_hash(self) -> str:
        """Identifies what the data depends on; a resumed build refuses a journal from another spec."""
        payload = self.model_dump(mode="json", exclude={"output_dir", "source"})
        # which servers answer, how hard they are pushed and how often the journal is fsynced do not change the
        # data, only the model does: a resume may move to another server or add and drop replicas
        for field in NO_DATA_FIELDS:
            section, name = field.split(".")
            del payload[section][name]
        teacher = payload["teacher"]
        replicas = teacher.pop("endpoints")
        if teacher["endpoint"] is not None:
            teacher["endpoint"] = {"model": teacher["endpoint"]["model"]}
        if replicas:
            teacher["endpoint_models"] = sorted({e["model"] for e in replicas})
        vllm = teacher.pop("vllm")  # GPUs, memory and chunks do not change the answers either; the dtype does
        if teacher["backend"] == "vllm":
            teacher["vllm_dtype"] = vllm["dtype"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


NO_DATA_FIELDS = ("teacher.batch_size", "teacher.journal_every", "teacher.journal_interval_s")
"""Spec fields that change no answer, left out of `PromptSpec.content_hash` and free to change when a build or a
bake resumes: how many sequences decode at once (each sample draws from its own stream seeded by its prompt:
`Sampling.stream_seed`) and how often the journal is fsynced."""


@contextmanager
def importable_folder(folder: Path):
    """Put the spec's folder on the import path while its checks load, so that a `python` check module
    sitting beside the spec imports without PYTHONPATH; an imported function stays cached afterwards."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PromptSpec:
    with importable_folder(Path(path).parent):
        spec = load_config(PromptSpec, path, overrides)
    spec.source = str(path)
    if spec.inputs.path is not None and not spec.inputs_path().exists():
        raise InputError(f"{path}: field 'inputs.path': file not found: {spec.inputs_path()}")
    warn_unchecked_rules(spec, path)
    return spec


_warned: set[tuple[str, str]] = set()  # (spec file, rule id): a spec loaded twice in one command warns once


def warn_unchecked_rules(spec: PromptSpec, path: str | Path) -> None:
    """A rule without a check is prompted but never scored: legal, but it looks measured when it is not (a spec
    whose rules all lack one passes every answer: "100%"). Each is named with its file:line."""
    unchecked = [(i, r.id) for i, r in enumerate(spec.rules) if r.check is None]
    if not unchecked:
        return
    _, lines = read_yaml(path)
    for i, rule_id in unchecked:
        if (str(path), rule_id) in _warned:
            continue
        _warned.add((str(path), rule_id))
        line = lines.get(("rules", i))
        log.warning("%s%s: rule %r has no check: it is prompted but never scored (no pass rate; it rejects no "
                    "answer)%s", path, f":{line}" if line else "", rule_id,
                    "; no rule has one, so every answer passes every rule" if len(unchecked) == len(spec.rules)
                    else "")
