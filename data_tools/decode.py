"""Batched decoding for `LocalBackend`: a prefix-sharing, preallocated KV cache and a sampling loop.

Why not `model.generate()`: profiled on the demo spec (32 rows of ~236 prompt tokens, 48 new tokens, 2-core
CPU), `generate()` spent 62% of its time in `torch.cat` growing `DynamicCache` (a copy of the whole cache per
step), and after that ~30% in logits processing over the full 49k vocabulary (top-p sorts it, every warper
clones it, multinomial draws an exponential per vocabulary entry). This loop

- computes the prefix that every prompt of a spec shares (system prompt, rules, few-shot turns: ~220 of the
  demo's ~236 tokens) once at batch size 1 and broadcasts it into the cache, so each row prefills only its own
  suffix; rows are laid out [shared prefix][padding][own suffix] with the padding masked and position ids that
  continue across it, so each row sees exactly the positions it would see alone;
- prefills each input once and shares the result among its n samples;
- writes new keys/values in place into buffers sized for the whole answer (`PreallocatedLayer`);
- samples from the top-k candidates only (temperature, then top-k, then top-p: transformers' order);
- drops finished answers from the batch once a quarter of its rows have finished (`COMPACT_SHARE`), so that the
  last steps of the longest answers do not also run the rows that stopped long before. The draws do not change:
  sampling still sees one logits row per sample (a finished one gets zeros), so the random stream is the same.

Greedy answers equal `generate()`'s (tests/test_decode.py checks it token for token).
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_SHARED_PREFIX = 16
"""Shorter common prefixes are recomputed per row: the saving would not pay for the extra forward pass."""

COMPACT_SHARE = 0.25
"""Once this share of the rows still in the batch has finished, they are dropped from it (cache, mask, positions):
a step's cost grows with its rows, and answers end at different lengths. Dropping copies the cache, so it waits
for a quarter of the rows rather than happening at every finished answer."""


class PreallocatedLayer(DynamicLayer):
    """One decoder layer's keys and values for `rows` rows in buffers of `capacity` positions, allocated at the
    first write; `self.keys`/`self.values` are views of the filled part, so `DynamicLayer`'s length and mask
    bookkeeping keep working unchanged. A write of fewer rows (one per input, before its samples branch) is
    broadcast to each input's `rows // batch` consecutive rows and answered with one row per input."""

    def __init__(self, rows: int, capacity: int):
        super().__init__()
        self.rows, self.capacity = rows, capacity
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        batch, heads, new, _ = key_states.shape
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            self._keys = key_states.new_zeros((self.rows, heads, self.capacity, key_states.shape[-1]))
            self._values = value_states.new_zeros((self.rows, heads, self.capacity, value_states.shape[-1]))
            self.is_initialized = True
        end = self._length + new
        if end > self.capacity or self.rows % batch:
            raise ValueError(f"cache of {self.rows} rows x {self.capacity} positions cannot take {batch} x {end}")
        group = self.rows // batch
        for buffer, states in ((self._keys, key_states), (self._values, value_states)):
            view = buffer.view(batch, group, *buffer.shape[1:])
            view[:, :, :, self._length : end] = states.unsqueeze(1)
        self._length = end
        self.keys, self.values = self._keys[::group, :, :end], self._values[::group, :, :end]
        return self.keys, self.values

    def keep_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows `index` names (in that order), copying their filled positions into buffers sized for
        them: the rows of answers that have finished stop costing compute in every later step."""
        end = self._length
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((len(index), *old.shape[1:]))  # positions past `end` are written before read
            new[:, :, :end] = old[index, :, :end]
            setattr(self, name, new)
        self.rows = len(index)
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]


DYNAMIC_LAYER_SIGNATURES = {
    "__init__": ("self", "kwargs"),
    "update": ("self", "key_states", "value_states", "args", "kwargs"),
}
"""`DynamicLayer`'s methods that `PreallocatedLayer` calls or overrides, with their parameters (transformers 5.24)."""


@functools.cache
def dynamic_layer_as_recorded() -> bool:
    """True when transformers' `DynamicLayer` still has `DYNAMIC_LAYER_SIGNATURES`; otherwise one warning, and
    LocalBackend decodes with `generate()` instead (slower, same answers)."""
    found = {name: tuple(inspect.signature(getattr(DynamicLayer, name)).parameters)
             for name in DYNAMIC_LAYER_SIGNATURES}
    if found == DYNAMIC_LAYER_SIGNATURES:
        return True
    warnings.warn(f"transformers' DynamicLayer changed ({found}, not {DYNAMIC_LAYER_SIGNATURES}): local decoding "
                  "falls back to generate() (slower); revisit data_tools/decode.py", RuntimeWarning, stacklevel=2)
    return False


def plain_cache_layout(model) -> bool:
    """True when the model's cache is one plain full-attention layer per decoder layer (no sliding windows or
    recurrent states), the layout `PreallocatedLayer` replaces, and `DynamicLayer` is the one it was written for."""
    layers = DynamicCache(config=model.config).layers
    return all(type(layer) is DynamicLayer for layer in layers) and dynamic_layer_as_recorded()


def new_cache(model, rows: int, capacity: int) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer(rows, capacity) for _ in cache.layers]
    return cache


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens that every row starts with, leaving at least one token of each row to prefill with the batch."""
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    length = 0
    while length < limit and all(r[length] == first[length] for r in rows):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One token per row of `logits` (rows x vocab): argmax when temperature is 0, else a draw after
    temperature scaling, top-k filtering (0 = off) and top-p (nucleus) filtering, in that order."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    k = logits.shape[-1] if top_k <= 0 else min(top_k, logits.shape[-1])
    values, indices = (logits / temperature).topk(k, dim=-1)  # sorted, largest first
    if top_p < 1.0:
        probs = values.softmax(dim=-1)
        # drop a candidate when the more likely ones before it already reach top_p (the first always stays)
        values = values.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
    choice = torch.multinomial(values.softmax(dim=-1), num_samples=1)
    return indices.gather(-1, choice).squeeze(-1)


@torch.inference_mode()
def decode_batch(
    model,
    rows: list[list[int]],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_token_ids: set[int],
    pad_token_id: int,
) -> list[list[int]]:
    """New token ids for every row's n samples (row-major: row 0's samples first), each ending at its first EOS
    (included) or after `max_new_tokens`."""
    device = model.device
    prefix_len = shared_prefix_length(rows)
    width = prefix_len + max(len(r) - prefix_len for r in rows)
    capacity = width + max_new_tokens
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        suffix = ids[prefix_len:]
        input_ids[i, :prefix_len] = torch.tensor(ids[:prefix_len])
        input_ids[i, width - len(suffix) :] = torch.tensor(suffix)
        mask[i, :prefix_len] = 1
        mask[i, width - len(suffix) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)

    cache = new_cache(model, len(rows) * n, capacity)
    start = 0
    if prefix_len:
        prefix = new_cache(model, 1, prefix_len)
        model(input_ids=input_ids[:1, :prefix_len], past_key_values=prefix, use_cache=True, logits_to_keep=1)
        for layer, prefix_layer in zip(cache.layers, prefix.layers):
            layer.update(prefix_layer.keys, prefix_layer.values)  # broadcast to every row
        start = prefix_len
    logits = model(input_ids=input_ids[:, start:], attention_mask=mask, position_ids=positions[:, start:],
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    logits = logits.repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    position = positions[:, -1:].repeat_interleave(n, dim=0)

    eos = torch.tensor(sorted(eos_token_ids), device=device)
    total = len(rows) * n
    finished = torch.zeros(total, dtype=torch.bool, device=device)
    generated = torch.full((total, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    active = torch.arange(total, device=device)  # the sample each row of the cache (and of mask/position) holds
    for step in range(max_new_tokens):
        tokens = sample_next(logits.float(), temperature, top_k, top_p)
        tokens = tokens.masked_fill(finished, pad_token_id)
        generated[:, step] = tokens
        finished |= torch.isin(tokens, eos)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        done = finished[active]
        if int(done.sum()) >= COMPACT_SHARE * len(active):
            keep = (~done).nonzero().squeeze(1)
            for layer in cache.layers:
                layer.keep_rows(keep)
            active, mask, position = active[keep], mask[keep], position[keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
        position = position + 1
        step_logits = model(input_ids=tokens[active, None], attention_mask=mask, position_ids=position,
                            past_key_values=cache, use_cache=True).logits[:, -1]
        if len(active) == total:
            logits = step_logits
        else:  # one row per sample for `sample_next`: the same random draws as without dropping
            logits = step_logits.new_zeros((total, step_logits.shape[-1]))
            logits[active] = step_logits
    return [cut_at_eos(seq, eos_token_ids) for seq in generated[:, : step + 1].tolist()]


def cut_at_eos(seq: list[int], eos_token_ids: set[int]) -> list[int]:
    """`seq` up to and including its first EOS (the padding after it dropped); all of it when it has none."""
    for k, token in enumerate(seq):
        if token in eos_token_ids:
            return seq[: k + 1]
    return seq
