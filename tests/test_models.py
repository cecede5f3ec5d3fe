"""Model resolution: names, directories and GGUF files; pad token distinct from EOS; chat template required."""

import json
import shutil
from pathlib import Path

import pytest

from promptbake.core.config import InputError
from promptbake.core.models import load_model_and_tokenizer, load_tokenizer, resolve_model_path


def test_default_model_resolves_to_cached_safetensors():
    path = resolve_model_path("smollm2-135m-instruct")
    files = {p.name for p in Path(path).iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    tok = load_tokenizer("smollm2-135m-instruct")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                                              tokenize=False, add_generation_prompt=True)


@pytest.mark.slow
def test_gguf_file_converts_once_into_the_configured_cache(tmp_path, monkeypatch):
    from promptbake.core.models import embedded_gguf_path

    monkeypatch.setenv("PROMPTBAKE_MODEL_CACHE", str(tmp_path))
    gguf = embedded_gguf_path("smollm2-135m-instruct")
    path = resolve_model_path(str(gguf))
    assert path.startswith(str(tmp_path)) and (tmp_path / path.split("/")[-1] / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    mtime = (tmp_path / path.split("/")[-1] / "config.json").stat().st_mtime_ns
    assert resolve_model_path(str(gguf)) == path  # second call reuses the conversion
    assert (tmp_path / path.split("/")[-1] / "config.json").stat().st_mtime_ns == mtime


def test_local_directory_and_missing_paths(tiny_model_dir):
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    with pytest.raises(InputError, match="no such directory or file"):
        resolve_model_path("./not/a/model")
    with pytest.raises(InputError, match="GGUF file not found"):
        resolve_model_path("/tmp/missing.gguf")


def test_tokenizer_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    copy = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="has no chat template"):
        load_tokenizer(str(copy))


def test_pickled_weights_are_never_loaded(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    copy = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, copy)
    model = AutoModelForCausalLM.from_pretrained(copy)
    (copy / "model.safetensors").unlink()
    torch.save(model.state_dict(), copy / "pytorch_model.bin")
    with pytest.raises(OSError):
        load_model_and_tokenizer(str(copy))
