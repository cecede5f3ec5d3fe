"""Generation backends behind one small interface, shared by the teacher (data_tools) and the evals.

    backend.generate(conversations, sampling, on_batch=...) -> list[Completion]

`LocalBackend` runs a transformers model here: conversations are sorted by prompt length (so a batch pads
little), left-padded (so every row's new tokens start at the same position), and all n samples of an input
are drawn in one batch with the KV cache on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from data_tools.spec import Sampling


@dataclass
class Completion:
    texts: list[str]
    """The n sampled answers for one conversation."""
    prompt_tokens: int
    """Tokens of the rendered prompt (chat template included) that this request paid for."""
    completion_tokens: list[int]
    """Generated tokens of each answer, EOS included when the model stopped by itself."""
    latency_s: float
    """Wall time of the batch that produced this completion (the time a caller waited for it)."""


class LocalBackend:
    """Batched generation with a local transformers model."""

    def __init__(self, model, tokenizer, batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_name(cls, name: str, batch_size: int = 32) -> LocalBackend:
        from sft.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(name)
        return cls(model, tokenizer, batch_size)

    def render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def generate(
        self,
        conversations: list[list[dict]],
        sampling: Sampling,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
    ) -> list[Completion]:
        """Answer every conversation with `sampling.n` samples; `on_batch(indices, completions)` is called
        after each batch (for journaling and progress), with indices into `conversations`."""
        import torch  # here, not at the top: the HTTP backend shares `Completion` and needs no torch

        with torch.inference_mode():
            return self._generate(conversations, sampling, on_batch)

    def _generate(self, conversations, sampling, on_batch) -> list[Completion]:
        import torch

        tok = self.tokenizer
        prompts = [self.render(c) for c in conversations]
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        per_batch = max(1, self.batch_size // sampling.n)
        results: list[Completion | None] = [None] * len(prompts)
        do_sample = sampling.temperature > 0
        gen_kwargs = dict(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=do_sample,
            num_return_sequences=sampling.n,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if do_sample:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            # greedy: unset sampling knobs a model's generation_config may carry, to keep transformers quiet
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        tok.padding_side = "left"
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            torch.manual_seed(sampling.seed + start)  # a fresh run with the same seed samples the same answers
            batch = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            t0 = time.perf_counter()
            out = self.model.generate(**batch.to(self.model.device), **gen_kwargs)
            latency = time.perf_counter() - t0
            new = out[:, batch["input_ids"].shape[1] :]
            batch_results = []
            for row, i in enumerate(idx):
                seqs = new[row * sampling.n : (row + 1) * sampling.n]
                texts = [t.strip() for t in tok.batch_decode(seqs, skip_special_tokens=True)]
                lengths = [int((s != tok.pad_token_id).sum()) for s in seqs]
                results[i] = Completion(texts, len(encoded[i]), lengths, latency)
                batch_results.append(results[i])
            if on_batch is not None:
                on_batch(idx, batch_results)
        return results  # type: ignore[return-value]
