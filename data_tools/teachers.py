"""The generating backends, opened by one factory: the data build's teacher, the eval arms' models, drift's two
models and the on-policy rounds' sampler all come from `open_backend`, described as a TeacherSpec (backend,
model or endpoints, batch size).

    backend = open_backend(TeacherSpec(model="smollm2-135m-instruct", batch_size=64))
    backend.generate(conversations, sampling) -> list[Completion]

Adding a generating backend: its class (with `generate`, like data_tools/backends.py:LocalBackend), one entry in
`GENERATING_BACKENDS`, and its name in `TeacherSpec.backend` (data_tools/spec.py; tests/test_teachers.py keeps
the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from data_tools.backends import Completion, LocalBackend, VLLMBackend
from data_tools.spec import Sampling, TeacherSpec


class Backend(Protocol):
    """What the data build, the evals and drift ask of a generating backend."""

    def generate(self, conversations: list[list[dict]], sampling: Sampling,
                 on_batch: Callable[[list[int], list[Completion]], None] | None = None,
                 skip: Collection[int] = ()) -> list[Completion | None]: ...


def _local(teacher: TeacherSpec, asked_by: str) -> Backend:
    return LocalBackend.from_name(teacher.model, teacher.batch_size)


def _openai(teacher: TeacherSpec, asked_by: str) -> Backend:
    from data_tools.http_backend import OpenAIBackend

    return OpenAIBackend(teacher.endpoint_list(), teacher.journal_every, teacher.journal_interval_s)


def _vllm(teacher: TeacherSpec, asked_by: str) -> Backend:
    return VLLMBackend(teacher.model, **teacher.vllm.model_dump(), asked_by=asked_by)


GENERATING_BACKENDS: dict[str, Callable[[TeacherSpec, str], Backend]] = {
    "local": _local,
    "openai": _openai,
    "vllm": _vllm,
}
"""`teacher.backend` -> how to open it. `labels` and `logs` generate nothing: the build reads their answers."""


def open_backend(teacher: TeacherSpec, asked_by: str = "the spec: field 'teacher.backend'") -> Backend:
    """The one factory: the data build's teacher, the eval arms' models and drift's two models all come from
    here, described as a TeacherSpec (backend, model or endpoints, batch size)."""
    return GENERATING_BACKENDS[teacher.backend](teacher, asked_by)
