"""Batched decoding for `LocalBackend`: a prefix-sharing, preallocated KV cache and a sampling loop.

Why not `model.generate()`: profiled on the demo spec (32 rows of ~236 prompt tokens, 48 new tokens, 2-core
CPU), `generate()` spent 62% of its time in `torch.cat` growing `DynamicCache` (a copy of the whole cache per
step), and after that ~30% in logits processing over the full 49k vocabulary (top-p sorts it, every warper
clones it, multinomial draws an exponential per vocabulary entry). This loop

- computes the prefix that every prompt of a spec shares (system prompt, rules, few-shot turns: ~220 of the
  demo's ~236 tokens) once at batch size 1, so each row prefills only its own suffix; rows are laid out
  [shared prefix][padding][own suffix] with the padding masked and position ids that continue across it, so each
  row sees exactly the positions it would see alone;
- holds that prefix's keys and values once, not once per row (`SharedPrefixLayer`), and attends over it with one
  matmul for all rows' queries (`shared_prefix_attention`, sdpa models): a decode step had read rows x prefix
  keys and values per layer, 21% of the teacher's time (memory-bound), now ~7%;
- prefills each input once and shares the result among its n samples;
- writes new keys/values in place into buffers sized for the whole answer (`PreallocatedLayer`);
- samples from the top-k candidates only (temperature, then top-k, then top-p: transformers' order);
- drops finished answers from the batch once a quarter of its rows have finished (`COMPACT_SHARE`), so that the
  last steps of the longest answers do not also run the rows that stopped long before;
- draws each sample's tokens from its own random generator (`Sampling.stream_seed`: the sampling seed, the
  prompt, the sample's number), by inverse CDF over the filtered candidates. A sample's answer is then the same
  whatever else shares its batch: the batch size, the other inputs, dropped rows and a resumed run that skips
  what it answered before change no draw (with one generator for the batch, `teacher.batch_size` 32 and 64
  gave the demo different training data).

Greedy answers equal `generate()`'s (tests/test_decode.py checks it token for token).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import warnings
from collections.abc import Iterator

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

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


class SharedPrefixLayer(PreallocatedLayer):
    """A `PreallocatedLayer` for the rows' own positions behind a prefix that every row shares, whose keys and
    values are held once (1 x heads x P x dim) instead of once per row. `update` returns the rows' own positions
    only; lengths and mask sizes count the prefix too, so the model's masks and positions are those of the whole
    sequence. `shared_prefix_attention` reads the prefix from here."""

    def __init__(self, rows: int, capacity: int, prefix_keys: torch.Tensor, prefix_values: torch.Tensor):
        self.prefix_length = prefix_keys.shape[-2]
        super().__init__(rows, capacity - self.prefix_length)
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values

    def get_seq_length(self) -> int:
        return self.prefix_length + self._length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


SHARED_PREFIX_ATTENTION = "promptbake_shared_prefix"
"""The attention implementation `decode_batch` switches an sdpa model to while it decodes behind a shared prefix
(registered with transformers' `AttentionInterface`; its masks are sdpa's)."""

_decoding_cache: contextvars.ContextVar[DynamicCache | None] = contextvars.ContextVar("decoding_cache", default=None)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs):
    """Attention of one new token per row over [shared prefix][the row's own positions], reading the prefix's
    keys and values once for all rows. Why: with every row holding its own copy of a ~220-token prefix, a decode
    step read rows x prefix keys and values per layer (21% of the teacher's time, memory-bound); here the prefix
    part is one batched matmul over all rows' queries, and the two parts share one softmax, so the result is
    sdpa's over the whole sequence. Prefills (several new tokens per row) and attention with dropout go to sdpa
    with the prefix broadcast into the keys; layers without a shared prefix to sdpa unchanged."""
    cache = _decoding_cache.get()
    layer = cache.layers[module.layer_idx] if cache is not None else None
    if not isinstance(layer, SharedPrefixLayer):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[2] > 1 or dropout:
        rows = key.shape[0]
        key = torch.cat([layer.prefix_keys.expand(rows, -1, -1, -1), key], dim=2)
        value = torch.cat([layer.prefix_values.expand(rows, -1, -1, -1), value], dim=2)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads, prefix = key.shape[1], layer.prefix_length
    groups = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(rows, kv_heads, groups, dim)
    # the prefix: every row's queries of one key/value head against that head's prefix keys, in one matmul
    q_by_head = q.transpose(0, 1).reshape(kv_heads, rows * groups, dim)
    prefix_scores = torch.bmm(q_by_head, layer.prefix_keys[0].transpose(1, 2)).mul_(scale)
    prefix_scores = prefix_scores.view(kv_heads, rows, groups, prefix).transpose(0, 1)
    own_scores = torch.matmul(q, key.transpose(-1, -2)).mul_(scale)  # rows x kv_heads x groups x own positions
    if attention_mask is not None:  # sdpa's mask, rows x 1 x 1 x (prefix + own): the prefix part is all kept
        own_mask = attention_mask[..., prefix:]
        if own_mask.dtype == torch.bool:
            own_scores = own_scores.masked_fill(~own_mask, float("-inf"))
        else:
            own_scores = own_scores + own_mask
    weights = torch.cat([prefix_scores, own_scores], dim=-1).softmax(dim=-1)
    prefix_weights = weights[..., :prefix].transpose(0, 1).reshape(kv_heads, rows * groups, prefix)
    out = torch.bmm(prefix_weights, layer.prefix_values[0]).view(kv_heads, rows, groups, dim).transpose(0, 1)
    out = out + torch.matmul(weights[..., prefix:], value)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(SHARED_PREFIX_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def shares_prefix_attention(model) -> bool:
    """True for models that attend with sdpa through modules that know their layer and key/value groups (Llama
    and the families written like it): the ones `shared_prefix_attention` stands in for."""
    attention = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    return model.config._attn_implementation == "sdpa" and len(attention) == model.config.num_hidden_layers


@contextlib.contextmanager
def attending_with_shared_prefix(model, cache: DynamicCache) -> Iterator[None]:
    """The model attends with `shared_prefix_attention` over `cache` inside the block, with sdpa again after."""
    token = _decoding_cache.set(cache)
    model.config._attn_implementation = SHARED_PREFIX_ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = "sdpa"
        _decoding_cache.reset(token)


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens that every row starts with, leaving at least one token of each row to prefill with the batch."""
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    length = 0
    while length < limit and all(r[length] == first[length] for r in rows):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of `logits` (rows x vocab): argmax when temperature is 0, else a draw after
    temperature scaling, top-k filtering (0 = off) and top-p (nucleus) filtering, in that order. The draw is
    the inverse CDF of the filtered distribution at `uniforms` (one number in [0, 1) per row), so that the
    caller decides where each row's randomness comes from."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if uniforms is None or uniforms.shape != logits.shape[:1]:
        raise ValueError(f"sample_next: one uniform per row is needed to sample {logits.shape[0]} rows")
    k = logits.shape[-1] if top_k <= 0 else min(top_k, logits.shape[-1])
    values, indices = (logits / temperature).topk(k, dim=-1)  # sorted, largest first
    probs = values.softmax(dim=-1)
    if top_p < 1.0:
        # drop a candidate when the more likely ones before it already reach top_p (the first always stays)
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, 0.0)
    cdf = probs.cumsum(dim=-1)
    # the first candidate whose cumulative probability passes u x the total (renormalising what top-p kept);
    # dropped candidates add nothing to the sum, so they are never chosen
    choice = (cdf < uniforms.to(cdf)[:, None] * cdf[:, -1:]).sum(dim=-1, keepdim=True).clamp(max=k - 1)
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
    seeds: list[int] | None = None,
) -> list[list[int]]:
    """New token ids for every row's n samples (row-major: row 0's samples first), each ending at its first EOS
    (included) or after `max_new_tokens`. `seeds`: one per sample, in the same order (`Sampling.stream_seed`);
    needed unless the temperature is 0."""
    if temperature > 0.0 and (seeds is None or len(seeds) != len(rows) * n):
        raise ValueError(f"decode_batch: sampling {len(rows)} rows x {n} needs one seed per sample")
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
    attending = contextlib.nullcontext()
    start = 0
    if prefix_len:
        prefix = new_cache(model, 1, prefix_len)
        model(input_ids=input_ids[:1, :prefix_len], past_key_values=prefix, use_cache=True, logits_to_keep=1)
        if shares_prefix_attention(model):  # the prefix held once, read once per step for all rows
            cache.layers = [SharedPrefixLayer(len(rows) * n, capacity, p.keys, p.values) for p in prefix.layers]
            attending = attending_with_shared_prefix(model, cache)
        else:
            for layer, prefix_layer in zip(cache.layers, prefix.layers):
                layer.update(prefix_layer.keys, prefix_layer.values)  # broadcast to every row
        start = prefix_len
    with attending:
        return _decode_from(model, cache, input_ids[:, start:], mask, positions[:, start:], n=n,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, seeds=seeds)


def _decode_from(model, cache, input_ids, mask, positions, *, n, max_new_tokens, temperature, top_k, top_p,
                 eos_token_ids, pad_token_id, seeds) -> list[list[int]]:
    """`decode_batch`'s loop once the shared prefix is in `cache`: prefill the rows' own tokens, then one token
    per sample and step. `mask` covers the whole sequence, `input_ids` and `positions` what is left to prefill."""
    rows, device = input_ids.shape[0], input_ids.device
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    logits = logits.repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    position = positions[:, -1:].repeat_interleave(n, dim=0)

    eos = torch.tensor(sorted(eos_token_ids), device=device)
    total = rows * n
    finished = torch.zeros(total, dtype=torch.bool, device=device)
    generated = torch.full((total, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    active = torch.arange(total, device=device)  # the sample each row of the cache (and of mask/position) holds
    generators = [torch.Generator().manual_seed(seed) for seed in seeds] if temperature > 0.0 else []
    for step in range(max_new_tokens):
        uniforms = torch.cat([torch.rand(1, generator=generators[a]) for a in active.tolist()]) if generators \
            else None  # each sample's next number from its own stream, whoever else is in the batch
        tokens = torch.full((total,), pad_token_id, dtype=torch.long, device=device)
        tokens[active] = sample_next(logits.float(), temperature, top_k, top_p, uniforms)
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
        logits = model(input_ids=tokens[active, None], attention_mask=mask, position_ids=position,
                       past_key_values=cache, use_cache=True).logits[:, -1]
    return [cut_at_eos(seq, eos_token_ids) for seq in generated[:, : step + 1].tolist()]


def cut_at_eos(seq: list[int], eos_token_ids: set[int]) -> list[int]:
    """`seq` up to and including its first EOS (the padding after it dropped); all of it when it has none."""
    for k, token in enumerate(seq):
        if token in eos_token_ids:
            return seq[: k + 1]
    return seq
