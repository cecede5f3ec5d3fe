"""Generation backends behind one small interface, shared by the teacher (data_tools) and the evals.

    backend.generate(conversations, sampling, on_batch=...) -> list[Completion]

`LocalBackend` runs a transformers model here: conversations are sorted by prompt length (so a batch pads
little) and all n samples of an input are drawn in one batch with a KV cache, by `data_tools.decode`: the
prompt prefix that every conversation of a spec shares is computed once per batch, each input is prefilled
once for its n samples, and the cache is written in place (see that module for the measurements behind it).
`VLLMBackend` (`teacher.backend: vllm`, GPU machines) hands the same rendered prompts to vLLM's offline engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
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
        from promptbake.core.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(name)
        return cls(model, tokenizer, batch_size)

    def render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def generate(
        self,
        conversations: list[list[dict]],
        sampling: Sampling,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
        skip: Collection[int] = (),
    ) -> list[Completion]:
        """Answer every conversation with `sampling.n` samples; `on_batch(indices, completions)` is called
        after each batch (for journaling and progress), with indices into `conversations`. `skip`: indices
        answered before (a resumed journal): not generated again (None in the result). Each sample draws from
        its own seeded stream (`Sampling.stream_seed`: the sampling seed, its prompt, its number), so a
        conversation's samples do not depend on the batch size, on the others in the call or on `skip`."""
        import torch  # here, not at the top: the HTTP backend shares `Completion` and needs no torch

        with torch.inference_mode():
            return self._generate(conversations, sampling, on_batch, skip)

    def _generate(self, conversations, sampling, on_batch, skip=()) -> list[Completion]:
        from data_tools.decode import decode_batch, plain_cache_layout

        tok = self.tokenizer
        prompts = [self.render(c) for c in conversations]
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted((i for i in range(len(prompts)) if i not in skip), key=lambda i: len(encoded[i]))
        per_batch = max(1, self.batch_size // sampling.n)
        decode = decode_batch if plain_cache_layout(self.model) else self._decode_with_generate
        results: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            t0 = time.perf_counter()
            answers = decode(
                self.model, [encoded[i] for i in idx], n=sampling.n, max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                eos_token_ids=self.eos_token_ids(), pad_token_id=tok.pad_token_id,
                seeds=[sampling.stream_seed(prompts[i], j) for i in idx for j in range(sampling.n)],
            )
            latency = time.perf_counter() - t0
            batch_results = []
            for row, i in enumerate(idx):
                seqs = answers[row * sampling.n : (row + 1) * sampling.n]
                texts = [t.strip() for t in tok.batch_decode(seqs, skip_special_tokens=True)]
                results[i] = Completion(texts, len(encoded[i]), [len(s) for s in seqs], latency)
                batch_results.append(results[i])
            if on_batch is not None:
                on_batch(idx, batch_results)
        return results  # type: ignore[return-value]

    def eos_token_ids(self) -> set[int]:
        """The tokenizer's EOS plus any the model's generation config lists (chat models often stop on several)."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        listed = configured if isinstance(configured, list) else [configured]
        return {i for i in [self.tokenizer.eos_token_id, *listed] if i is not None}

    def _decode_with_generate(self, model, rows, *, n, max_new_tokens, temperature, top_k, top_p, eos_token_ids,
                              pad_token_id, seeds) -> list[list[int]]:
        """transformers' `generate()` on left-padded rows: for models whose cache `decode_batch` does not model
        (sliding-window or recurrent layers). It draws from torch's one global stream, seeded from the batch's
        first sample, so here (unlike `decode_batch`) the samples depend on what shares the batch."""
        import torch

        from data_tools.decode import cut_at_eos

        if seeds:
            torch.manual_seed(seeds[0])

        self.tokenizer.padding_side = "left"
        batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(model.device)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if temperature > 0 else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)  # None: quiet a config's own knobs
        out = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             pad_token_id=pad_token_id, eos_token_id=sorted(eos_token_ids), **sampling)
        return [cut_at_eos(seq, eos_token_ids) for seq in out[:, batch["input_ids"].shape[1] :].tolist()]


def require_vllm(asked_by: str):
    """The `vllm` module, or an InputError naming the setting that asked for it (`asked_by`) and what to do
    instead."""
    import importlib.util

    from promptbake.core.config import InputError

    if importlib.util.find_spec("vllm") is None:
        raise InputError(f"{asked_by}: vLLM runs in this process and `vllm` is not importable here: install it on a "
                         "GPU machine (pip install vllm), or serve the model with vLLM and send requests to it "
                         "(teacher.backend: openai; scripts/setup_vllm.sh, python -m data_tools.vllm_server)")
    import vllm

    return vllm


class VLLMBackend:
    """Offline generation with vLLM in this process (`teacher.backend: vllm`, for GPU machines): each chunk of
    conversations goes to `vllm.LLM.generate` at once, n samples per prompt in one request with its own seed;
    vLLM's continuous batching schedules them and its prefix cache computes the spec's shared system prompt,
    rules and examples once. Prompts are rendered and tokenized here as `LocalBackend` does, so both count the
    same prompt tokens; `on_batch` is called after each chunk (journal and progress)."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enable_prefix_caching: bool = True, dtype: str = "auto",
                 chunk_size: int = 1024, asked_by: str = "teacher.backend 'vllm'"):
        from promptbake.core.models import resolve_model_path

        vllm = require_vllm(asked_by)
        self.llm = vllm.LLM(model=resolve_model_path(model), tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            enable_prefix_caching=enable_prefix_caching, dtype=dtype)
        self.tokenizer = self.llm.get_tokenizer()
        self.chunk_size = chunk_size

    def generate(
        self,
        conversations: list[list[dict]],
        sampling: Sampling,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
        skip: Collection[int] = (),
    ) -> list[Completion]:
        """As `LocalBackend.generate` (`skip`: indices answered before, None in the result)."""
        from vllm import SamplingParams

        results: list[Completion | None] = [None] * len(conversations)
        for start in range(0, len(conversations), self.chunk_size):
            indices = [i for i in range(start, min(start + self.chunk_size, len(conversations))) if i not in skip]
            if not indices:
                continue
            texts = [self.tokenizer.apply_chat_template(conversations[i], tokenize=False, add_generation_prompt=True)
                     for i in indices]
            prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
            # a seed per input, from its prompt (`Sampling.stream_seed`): an input's samples do not depend on its
            # chunk, nor on the inputs skipped before it
            params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                     top_k=sampling.top_k, max_tokens=sampling.max_new_tokens,
                                     seed=sampling.stream_seed(t, 0, bits=31)) for t in texts]
            t0 = time.perf_counter()
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            latency = time.perf_counter() - t0
            batch = [Completion([o.text.strip() for o in out.outputs], len(out.prompt_token_ids),
                                [len(o.token_ids) for o in out.outputs], latency) for out in outputs]
            for i, completion in zip(indices, batch):
                results[i] = completion
            if on_batch is not None:
                on_batch(indices, batch)
        return results  # type: ignore[return-value]

