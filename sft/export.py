"""Merge a run's LoRA adapter into its base model and save a standalone model that plain transformers loads.

    promptbake export runs/demo/sft [--out runs/demo/merged]
    promptbake export runs/demo/sft --gguf q8_0 [--gguf-adapter]    # + llama.cpp / Ollama files (sft/gguf.py)

Writes safetensors weights, the tokenizer with its chat template, the generation config (EOS and pad) and a
model card with the training data manifest. Before anything is written, the merged model's logits are
compared with base+adapter on a few prompts; after writing, the saved directory is reloaded with plain
`AutoModelForCausalLM.from_pretrained` and compared again. A mismatch beyond `ATOL` fails the export.

`--gguf TYPE` then converts the merged model to GGUF (in `gguf/` beside it) with llama.cpp's own converter;
RUN_DIR may also be a merged model directory or a bake's run directory (its `merged/`), converted as they are.
`--gguf-adapter` writes the LoRA adapter itself as a GGUF LoRA.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from promptbake.core.config import InputError
from promptbake.core.entry import stage_parser
from promptbake.core.io import atomic_dir, check_output_dir, describe_output
from promptbake.core.models import RUN_INFO_FILE, load_model_and_tokenizer, resolve_model_path
from sft import gguf as gguf_export

if TYPE_CHECKING:  # loaded with the model, not when the command line is checked
    import torch

ATOL = 1e-3
"""Max absolute logit difference accepted (fp32). Merging reorders float sums, so ~1e-5 is typical."""

PROBE_PROMPTS = ["Why is a map useful for a tourist?", "hello", "List three colors."]


def find_adapter(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    for candidate in (run_dir / "adapter", run_dir):
        if (candidate / "adapter_config.json").exists():
            if not (candidate / RUN_INFO_FILE).exists():
                raise InputError(f"{candidate}: has no {RUN_INFO_FILE}; was it written by `promptbake train`?")
            return candidate
    raise InputError(f"{run_dir}: no LoRA adapter found (expected {run_dir / 'adapter' / 'adapter_config.json'})")


def probe_logits(model, tokenizer) -> torch.Tensor:
    import torch

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in PROBE_PROMPTS]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        logits = model(**batch).logits
        return logits[batch["attention_mask"].bool()]


def check_close(reference: torch.Tensor, other: torch.Tensor, what: str) -> float:
    diff = (reference - other).abs().max().item()
    if not diff <= ATOL:
        raise RuntimeError(f"export verification failed: {what} logits differ by {diff:.2e} > {ATOL:.0e}")
    return diff


def model_card(info: dict, diff: float) -> str:
    manifest = info.get("data_manifest")
    lines = [
        "---", "library_name: transformers", "tags: [promptbake, lora-merged]", "---", "",
        f"# Fine-tuned model (base: `{info['base_model']}`, method: {info.get('method', 'lora')})", "",
        "Produced by `promptbake export` from a `promptbake train` run (adapters merged into full-precision base "
        "weights). Use it **without** the original system prompt: the behaviour is in the weights.", "",
        f"- max |logit difference| merged vs base+adapter: {diff:.2e}",
        f"- dataset: `{info.get('dataset')}`", "",
    ]
    if manifest:
        lines += ["## Training data manifest", "", "```json", json.dumps(manifest, indent=2), "```", ""]
    lines += ["## Training recipe", "", "```json", json.dumps(info.get("recipe", {}), indent=2), "```", ""]
    return "\n".join(lines)


def main(run_dir: str | Path, out: str | Path | None = None, gguf: str | None = None,
         gguf_adapter: bool = False, force: bool = False) -> Path:
    """Merge, verify, save; returns the merged model's directory. With `gguf` (a type of sft.gguf.QUANT_TYPES)
    or `gguf_adapter`, also the GGUF files; then returns the `gguf/` directory that holds them.

    Every directory it writes is claimed before anything loads (`claim_outputs`): one holding anything but a
    promptbake output of its kind is refused, and with `out` given, a promptbake output there is replaced only
    with `force` (inside RUN_DIR, its own outputs are redone as before)."""
    run_dir = Path(run_dir)
    if gguf is not None and gguf not in gguf_export.QUANT_TYPES:
        raise InputError(f"--gguf {gguf!r}: not one of {', '.join(gguf_export.QUANT_TYPES)}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory (RUN_DIR: a training run, its adapter/ or a merged model)")
    force = force or out is None
    if gguf is not None or gguf_adapter:
        gguf_export.llama_cpp_sources()  # refused now when setup has not fetched the converter
    if gguf is None and not gguf_adapter:
        claim_outputs([(merged_out(run_dir, out), "export", is_legacy_export)], force)
        return merge(run_dir, out)
    # everything that can be refused is refused before a model loads
    adapter_dir = find_adapter(run_dir) if gguf_adapter or has_adapter(run_dir) else None
    trained = adapter_dir or full_model_dir(run_dir)
    targets = []
    if gguf is not None:
        merged = merged_out(run_dir, out) if trained else merged_model_dir(run_dir)
        targets += [(merged, "export", is_legacy_export)] if trained else []
        targets += [(merged.parent / "gguf" / gguf, "gguf", gguf_export.is_legacy_gguf)]
    if gguf_adapter:
        targets += [(adapter_dir.parent / "gguf" / "adapter", "gguf adapter", gguf_export.is_legacy_gguf)]
    claim_outputs(targets, force)
    base = resolve_model_path(json.loads((adapter_dir / RUN_INFO_FILE).read_text())["base_model"]) \
        if adapter_dir else None
    if gguf is not None:
        source = Path(base) if adapter_dir else trained or merged
        if source.is_dir():  # a hub id (no local config) is left to the converter to judge
            gguf_export.check_convertible(source)
        merged = merge(run_dir, out) if trained else merged
        written = gguf_export.export_model(merged, merged.parent / "gguf", gguf)
    if gguf_adapter:
        written = gguf_export.export_adapter(adapter_dir, base, adapter_dir.parent / "gguf")
    return written.parent.parent


def claim_outputs(targets: list[tuple[Path, str, Callable[[Path], bool]]], force: bool) -> None:
    """Check every (directory, kind, legacy test) the export will write before anything is: all are refused
    or all go ahead; what `force` replaces is said."""
    replaced = [(path, check_output_dir(path, kind, force=force, legacy=legacy)) for path, kind, legacy in targets]
    for path, marker in replaced:
        if marker is not None:
            print(f"[promptbake] replacing {path}: {describe_output(path, marker)}")


def merged_out(run_dir: Path, out: str | Path | None) -> Path:
    return Path(out) if out else run_dir / "merged"


def is_legacy_export(path: Path) -> bool:
    """An export written before promptbake marked its outputs: its model card says what wrote it."""
    card = path / "README.md"
    return card.is_file() and "Produced by `promptbake export`" in card.read_text(errors="replace")


def full_model_dir(run_dir: Path) -> Path | None:
    """RUN_DIR/model of a full fine-tuning run (no adapter to merge), if that is what RUN_DIR holds."""
    full = run_dir / "model"
    return full if (full / RUN_INFO_FILE).exists() and not (full / "adapter_config.json").exists() else None


def has_adapter(run_dir: Path) -> bool:
    return any((d / "adapter_config.json").exists() for d in (run_dir / "adapter", run_dir))


def is_model_dir(path: Path) -> bool:
    """A standalone transformers model (config + weights), not an adapter."""
    return (path / "config.json").exists() and not (path / "adapter_config.json").exists() \
        and any(path.glob("*.safetensors"))


def merged_model_dir(run_dir: Path) -> Path:
    """A merged model to convert as it is: RUN_DIR itself, or RUN_DIR/merged (a bake's run directory)."""
    for candidate in (run_dir, run_dir / "merged"):
        if is_model_dir(candidate):
            return candidate
    raise InputError(f"{run_dir}: nothing to export: no LoRA adapter ({run_dir / 'adapter' / 'adapter_config.json'}"
                     f"), no full fine-tuned model ({run_dir / 'model'}) and no merged model "
                     f"({run_dir / 'merged' / 'config.json'} with safetensors weights)")


def merge(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Merge, verify, save; returns the output directory. A full fine-tuning run (`RUN_DIR/model`) has no
    adapter to merge: its weights are re-saved and verified the same way."""
    run_dir = Path(run_dir)
    out = merged_out(run_dir, out)
    full = full_model_dir(run_dir)
    if full is not None:
        info = json.loads((full / RUN_INFO_FILE).read_text())
        model, tokenizer = load_model_and_tokenizer(str(full))
        reference = probe_logits(model.eval(), tokenizer)
        return save_verified(model, tokenizer, reference, info, 0.0, out, full)

    adapter_dir = find_adapter(run_dir)
    from peft import PeftModel  # torch with it: after what can be refused

    info = json.loads((adapter_dir / RUN_INFO_FILE).read_text())
    # Always a full-precision base: a QLoRA adapter is merged into the dequantized weights, never the 4-bit ones.
    base, tokenizer = load_model_and_tokenizer(info["base_model"])
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    reference = probe_logits(model, tokenizer)
    merged = model.merge_and_unload()
    diff = check_close(reference, probe_logits(merged, tokenizer), "merged model")
    return save_verified(merged, tokenizer, reference, info, diff, out, adapter_dir)


def save_verified(model, tokenizer, reference: torch.Tensor, info: dict, diff: float, out: Path,
                  source: Path) -> Path:
    """Save model + tokenizer + card under a temporary name, reload it with plain transformers, compare its
    logits with `reference`, and only then rename it into place: an export killed midway never looks finished."""
    import torch
    from transformers import AutoModelForCausalLM

    with atomic_dir(out, "export", legacy=is_legacy_export, about={"source": str(source)}) as tmp:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(info, diff))
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True)
        check_close(reference, probe_logits(reloaded.eval(), tokenizer), "saved and reloaded")
    print(f"[promptbake] model written to {out} (max |logit diff| vs base+adapter {diff:.2e})")
    return out


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`promptbake export` (added to `subparsers`) or `python -m sft.export`."""
    parser = stage_parser(subparsers, "export", "merge a run's LoRA adapter into its base and save safetensors")
    parser.add_argument("run_dir", help="a training run directory (or its adapter/ directory)")
    parser.add_argument("--out", help="where to write the merged model (default: RUN_DIR/merged)")
    parser.add_argument("--gguf", choices=list(gguf_export.QUANT_TYPES),
                        help="also convert the merged model to GGUF of this type, with an Ollama Modelfile, in "
                             "gguf/TYPE/ beside it (llama.cpp's own converter and quantizer)")
    parser.add_argument("--gguf-adapter", action="store_true",
                        help="also write the LoRA adapter as a GGUF LoRA (gguf/adapter/) for llama.cpp's --lora")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier promptbake export at --out (and its gguf/ beside it); a directory "
                             "promptbake did not write is refused even so")
    parser.set_defaults(run=lambda args: main(args.run_dir, args.out, args.gguf, args.gguf_adapter, args.force))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
