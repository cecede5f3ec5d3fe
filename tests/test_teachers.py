"""One factory opens every generating backend (data_tools/teachers.py): the teacher's names in the spec and the
registry stay in step, and each name opens its backend."""

import typing

import pytest

from data_tools.backends import LocalBackend
from data_tools.http_backend import OpenAIBackend
from data_tools.spec import EndpointSpec, TeacherSpec
from data_tools.teachers import GENERATING_BACKENDS, open_backend
from promptbake.core.config import InputError


def test_every_generating_backend_the_spec_accepts_is_registered():
    names = set(typing.get_args(TeacherSpec.model_fields["backend"].annotation))
    assert names - set(GENERATING_BACKENDS) == {"labels", "logs"}  # they generate nothing: the build reads them
    assert set(GENERATING_BACKENDS) <= names


def test_each_name_opens_its_backend(tiny_model_dir):
    local = open_backend(TeacherSpec(model=str(tiny_model_dir), batch_size=7))
    assert isinstance(local, LocalBackend) and local.batch_size == 7
    http = open_backend(TeacherSpec(backend="openai", endpoint=EndpointSpec(base_url="http://127.0.0.1:9/v1",
                                                                            model="m")))
    assert isinstance(http, OpenAIBackend)


def test_vllm_without_vllm_names_the_setting_that_asked_for_it(tiny_model_dir):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is importable here")
    with pytest.raises(InputError, match="s.yaml: field 'teacher.backend': vLLM runs in this process"):
        open_backend(TeacherSpec(backend="vllm", model=str(tiny_model_dir)), "s.yaml: field 'teacher.backend'")
