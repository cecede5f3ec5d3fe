"""GGUF files for llama.cpp and Ollama, written by llama.cpp's own converter and quantizer.

    promptbake export runs/demo/sft --gguf q8_0      # -> runs/demo/sft/gguf/q8_0/{model-q8_0.gguf, Modelfile}
    promptbake export runs/demo/sft --gguf-adapter   # -> runs/demo/sft/gguf/adapter/adapter-f16.gguf

Nothing here converts tensors itself. `convert_hf_to_gguf.py` (with its `conversion/` package and `gguf-py`)
and `convert_lora_to_gguf.py` come from the llama-cpp-python sdist of the version installed here, fetched once
with pip into `~/.cache/promptbake/llama.cpp/VERSION` by scripts/setup_env.sh (never by an export, which may run
offline), so that the converter matches the llama.cpp that serves the file. They run as subprocesses of this
interpreter with that sdist's `gguf-py` first on PYTHONPATH (the venv's own `gguf` package, which reads the default
model, may be another version). q8_0 and q4_k_m are made
from an f16 intermediate by `llama_model_quantize`, llama.cpp's quantizer as llama-cpp-python exposes it: the
recipe llama.cpp documents (convert to f16, then llama-quantize).

Each quant type is written into its own directory (`gguf/<type>/`) under a temporary name and renamed when the
GGUF and its Ollama `Modelfile` are complete: a failed or killed export leaves nothing that looks finished.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from promptbake.core.config import InputError
from promptbake.core.io import atomic_dir

log = logging.getLogger(__name__)

# --gguf type -> llama.cpp file type constant in llama_cpp (None: written by the converter itself)
QUANT_TYPES = {"f16": None, "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
ADAPTER_TYPE = "f16"
"""LoRA matrices are a few MB; f16 keeps them within llama.cpp's own precision at no real cost in size."""
# what the export takes from vendor/llama.cpp of the sdist (`conversion/` exists in newer releases only)
CONVERTER_PATHS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", "LICENSE")
SOURCES_ENV = "PROMPTBAKE_LLAMA_CPP_CACHE"


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        raise InputError("--gguf needs llama-cpp-python (its converter and quantizer): bash scripts/setup_env.sh "
                         "installs it") from None


FETCH_COMMAND = "bash scripts/setup_env.sh"
"""What fetches the converter (it runs fetch_llama_cpp_sources)."""


def sources_dir() -> Path:
    root = Path(os.environ.get(SOURCES_ENV) or Path.home() / ".cache" / "promptbake" / "llama.cpp")
    return root / llama_cpp_version()


def llama_cpp_sources() -> Path:
    """vendor/llama.cpp's converters from the sdist of the installed llama-cpp-python, as setup fetched them."""
    final = sources_dir()
    if not (final / "convert_hf_to_gguf.py").is_file():
        raise InputError(f"--gguf needs llama.cpp's converter from the llama-cpp-python {final.name} sdist, which "
                         f"is not in {final}: `{FETCH_COMMAND}` fetches it (once, with pip; needs the network)")
    return final


def fetch_llama_cpp_sources() -> Path:
    """Fetch the converters once with pip (scripts/setup_env.sh calls it); returns their directory."""
    final = sources_dir()
    if (final / "convert_hf_to_gguf.py").is_file():
        return final
    version = final.name
    log.info("fetching llama.cpp's converter: the llama-cpp-python %s sdist, with pip (once)", version)
    with tempfile.TemporaryDirectory() as download, atomic_dir(final, "llama.cpp converter") as tmp:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", download], capture_output=True, text=True)
        sdists = list(Path(download).glob("*.tar.gz"))
        if fetched.returncode != 0 or not sdists:
            raise RuntimeError(f"pip could not fetch the llama-cpp-python=={version} sdist (it holds llama.cpp's "
                               f"converter):\n{(fetched.stdout + fetched.stderr)[-2000:]}")
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(tmp, members=_converter_members(tar), filter="data")
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise RuntimeError(f"{sdists[0].name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return final


def _converter_members(tar: tarfile.TarFile):
    """The CONVERTER_PATHS under `<sdist>/vendor/llama.cpp/`, renamed to be relative to it."""
    for member in tar.getmembers():
        parts = member.name.split("/")
        if parts[1:3] == ["vendor", "llama.cpp"] and len(parts) > 3 and parts[3] in CONVERTER_PATHS:
            member.name = "/".join(parts[3:])
            yield member


def run_converter(script: str, args: list[str]) -> subprocess.CompletedProcess:
    src = llama_cpp_sources()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src / "gguf-py"),
                                                                   os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, str(src / script), *args], env=env, capture_output=True, text=True)


def converter_error(result: subprocess.CompletedProcess, what: str) -> Exception:
    """The converter's own words: its ERROR lines, else the last lines of its output (a traceback's end)."""
    output = (result.stdout + result.stderr).strip().splitlines()
    errors = [line.split(":", 2)[-1].strip() for line in output if line.startswith("ERROR:")]
    detail = "; ".join(errors) if errors else "\n".join(output[-8:])
    message = f"llama.cpp's converter failed on {what} (exit status {result.returncode}): {detail}"
    return InputError(message) if "is not supported" in detail else RuntimeError(message)


@functools.cache  # one converter start (~3 s) per process, not per export
def supported_architectures() -> list[str]:
    """The model classes (config.json `architectures`) that this convert_hf_to_gguf.py converts to text GGUF."""
    result = run_converter("convert_hf_to_gguf.py", ["--print-supported-models"])
    lines = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0 or "TEXT models:" not in "\n".join(lines):
        raise converter_error(result, "--print-supported-models")
    text = lines[[line.strip() for line in lines].index("TEXT models:") + 1:]
    return [line.strip()[2:] for line in text[:next((i for i, s in enumerate(text) if not s.startswith("  - ")),
                                                    len(text))]]


def check_convertible(model_dir: Path) -> None:
    """Refuse, before any model loads, an architecture llama.cpp's converter has no class for."""
    config = model_dir / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") or []
    supported = supported_architectures()
    unsupported = [a for a in architectures if a not in supported]
    if not architectures or unsupported:
        raise InputError(
            f"{config}: field 'architectures' {architectures}: llama.cpp's converter (convert_hf_to_gguf.py of "
            f"llama-cpp-python {llama_cpp_version()}) cannot convert it to GGUF; it converts "
            f"{len(supported)} architectures, e.g. LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM")


def convert(model_dir: Path, out_file: Path, outtype: str = "f16") -> None:
    log.info("converting %s to %s GGUF with llama.cpp's convert_hf_to_gguf.py", model_dir, outtype)
    result = run_converter("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(out_file),
                                                     "--outtype", outtype])
    if result.returncode != 0 or not out_file.is_file():
        raise converter_error(result, str(model_dir))


def quantize(f16_file: Path, out_file: Path, quant: str) -> None:
    """llama.cpp's quantizer (`llama_model_quantize`, what the llama-quantize tool runs)."""
    import llama_cpp

    log.info("quantizing to %s with llama.cpp's quantizer", quant)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    # llama.cpp logs a line per tensor through llama-cpp-python's logger; its warnings (e.g. tensors whose
    # rows do not fit the k-quant block, quantized to a fallback type) still show
    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(logging.WARNING)
    try:
        status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(),
                                                ctypes.byref(params))
    finally:
        llama_log.setLevel(level)
    if status != 0 or not out_file.is_file():
        raise RuntimeError(f"llama.cpp's quantizer failed to write {quant} from {f16_file} (status {status})")


def is_legacy_gguf(path: Path) -> bool:
    """A GGUF directory written before promptbake marked its outputs: its `model-TYPE.gguf` and Modelfile, or
    an `adapter-f16.gguf`, and nothing else."""
    names = {p.name for p in path.iterdir()}
    model = len(names) == 2 and "Modelfile" in names and any(n.startswith("model-") and n.endswith(".gguf")
                                                              for n in names)
    return model or names == {f"adapter-{ADAPTER_TYPE}.gguf"}


def export_model(model_dir: Path, out_root: Path, quant: str) -> Path:
    """Merged model directory -> `out_root/<quant>/model-<quant>.gguf` + `Modelfile`; returns the GGUF path."""
    if quant not in QUANT_TYPES:
        raise InputError(f"--gguf {quant!r}: not one of {', '.join(QUANT_TYPES)}")
    start = time.perf_counter()
    name = f"model-{quant}.gguf"
    with atomic_dir(out_root / quant, "gguf", legacy=is_legacy_gguf, about={"source": str(model_dir)}) as tmp:
        if quant == "f16":
            convert(model_dir, tmp / name, "f16")
        else:
            convert(model_dir, tmp / ".intermediate-f16.gguf", "f16")
            quantize(tmp / ".intermediate-f16.gguf", tmp / name, quant)
            (tmp / ".intermediate-f16.gguf").unlink()
        (tmp / "Modelfile").write_text(modelfile(model_dir, name))
    gguf = out_root / quant / name
    print(f"[promptbake] GGUF {quant} written to {gguf} ({gguf.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s)\n  llama.cpp: llama-server -m {gguf}\n"
          f"  Ollama:    ollama create NAME -f {gguf.parent / 'Modelfile'}")
    return gguf


def export_adapter(adapter_dir: Path, base: str, out_root: Path) -> Path:
    """A PEFT LoRA adapter -> `out_root/adapter/adapter-f16.gguf`, for llama.cpp's `--lora` on the base's GGUF.
    `base` is the base model's local directory (only its config is read) or a hub id."""
    start = time.perf_counter()
    name = f"adapter-{ADAPTER_TYPE}.gguf"
    log.info("converting the LoRA adapter %s with llama.cpp's convert_lora_to_gguf.py", adapter_dir)
    with atomic_dir(out_root / "adapter", "gguf adapter", legacy=is_legacy_gguf,
                    about={"source": str(adapter_dir)}) as tmp:
        base_args = ["--base", base] if Path(base).is_dir() else ["--base-model-id", base]
        result = run_converter("convert_lora_to_gguf.py", [str(adapter_dir), *base_args, "--outfile",
                                                           str(tmp / name), "--outtype", ADAPTER_TYPE])
        if result.returncode != 0 or not (tmp / name).is_file():
            raise converter_error(result, str(adapter_dir))
    gguf = out_root / "adapter" / name
    print(f"[promptbake] GGUF LoRA adapter written to {gguf} ({gguf.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s)\n  llama.cpp: llama-server -m BASE.gguf --lora {gguf}")
    return gguf


# ---- the Ollama Modelfile -------------------------------------------------------------------------------------

# ChatML as an Ollama (Go text/template) TEMPLATE. System messages reach it as .System (Ollama joins them, or
# puts the Modelfile's SYSTEM there when a request has none), so the loop skips their role.
CHATML_OLLAMA = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '<|im_start|>assistant\n{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
)


def chatml(messages: list[dict], default_system: str | None = None) -> str:
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(whether the tokenizer's chat template renders ChatML, the system prompt it inserts when a conversation
    has none). Judged by rendering probe conversations, not by reading the Jinja source."""
    def render(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    system, user = {"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}
    turns = [system, user, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    try:
        bare = render([user])
        if render([system, user]) != chatml([system, user]) or render(turns) != chatml(turns):
            return False, None
    except Exception:  # a template that refuses the probes (e.g. no system role) is not ChatML
        return False, None
    inserted = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", bare, re.S)
    default = inserted.group(1) if inserted else None
    return bare == chatml([user], default), default


def stop_tokens(tokenizer, generation_config: dict) -> list[str]:
    eos = generation_config.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    tokens = [tokenizer.eos_token, *tokenizer.convert_ids_to_tokens(ids), "<|im_end|>", "<|im_start|>"]
    vocab = tokenizer.get_vocab()
    return [t for t in dict.fromkeys(tokens) if t and t in vocab]


def modelfile(model_dir: Path, gguf_name: str) -> str:
    """An Ollama Modelfile beside the GGUF: the chat template as Ollama's TEMPLATE (ChatML, the family of
    SmolLM2, Qwen and others; checked by rendering), its default system prompt, and the stop tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config_file = model_dir / "generation_config.json"
    generation_config = json.loads(config_file.read_text()) if config_file.exists() else {}
    lines = [f"# Ollama: ollama create NAME -f Modelfile   (written by promptbake export from {model_dir})",
             f"FROM ./{gguf_name}"]
    is_chatml, default_system = chatml_default_system(tokenizer)
    if is_chatml and '"""' not in (default_system or ""):
        lines.append(f'TEMPLATE """{CHATML_OLLAMA}"""')
        if default_system:  # what the model was trained with when a conversation has no system message
            lines.append(f'SYSTEM """{default_system}"""')
    else:
        log.warning("%s: the chat template is not ChatML; the Modelfile has no TEMPLATE, so Ollama uses the "
                    "template it recognises in the GGUF's metadata, if any", model_dir)
        lines.append("# no TEMPLATE: the chat template is not ChatML; Ollama reads the GGUF's own when it knows it")
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens(tokenizer, generation_config)]
    return "\n".join(lines) + "\n"
