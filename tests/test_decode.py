"""data_tools.decode: the batched decoding loop behind LocalBackend, checked against transformers' generate()."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from data_tools import decode
from data_tools.backends import LocalBackend
from data_tools.decode import (
    PreallocatedLayer,
    SharedPrefixLayer,
    decode_batch,
    sample_next,
    shared_prefix_attention,
    shared_prefix_length,
    shares_prefix_attention,
)
from data_tools.spec import Sampling
from promptbake.core.models import load_model_and_tokenizer

SYSTEM = "You answer in one short line. Use lowercase. Never use commas. Start with ok. " * 3


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    return model.eval(), tokenizer


def conversations() -> list[list[dict]]:
    """Prompts of different lengths; the first five share a long system-prompt prefix, the last two do not."""
    questions = ["hi", "how do I boil an egg quickly", "name a colour", "what is two plus two, roughly?", "why"]
    shared = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in questions]
    return shared + [[{"role": "user", "content": "tell me a story"}], [{"role": "user", "content": "ok"}]]


def reference_greedy(model, tokenizer, conversation, max_new_tokens: int) -> list[int]:
    """transformers' own generate(), one conversation at a time (no padding, no shared cache)."""
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                         top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def test_greedy_batches_match_generate_one_by_one(tiny):
    """Shared-prefix batches, mixed batches without a shared prefix, and padding in between all give exactly the
    tokens that generate() gives each conversation alone."""
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer, batch_size=4)
    convs = conversations()
    completions = backend.generate(convs, Sampling(temperature=0.0, max_new_tokens=12))
    for conversation, completion in zip(convs, completions):
        expected = reference_greedy(model, tokenizer, conversation, 12)
        assert completion.texts[0] == tokenizer.decode(expected, skip_special_tokens=True).strip()
        assert completion.completion_tokens == [len(expected)]


@pytest.fixture(scope="module")
def peaked(tiny_model_dir, tiny):
    """The tiny architecture with weights drawn 25x wider: its next-token distributions are peaked and change
    with the context (the default tiny model's are nearly flat and alike for every prompt), so a sample drawn
    from the wrong row, position or cache entry shows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), tiny[1]


def prompt_rows(tokenizer, convs: list[list[dict]]) -> list[list[int]]:
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"] for c in convs]


@torch.inference_mode()
def reference_sampling(model, rows: list[list[int]], n: int, max_new_tokens: int, eos: set[int], pad: int,
                       seeds: list[int], **sampling) -> list[list[int]]:
    """What `decode_batch` must draw: every sample run alone, through a plain forward pass at each step (no
    cache, no padding, no shared prefix, no other sample in the batch), drawing from its own seeded stream."""
    answers = []
    for k, seed in enumerate(seeds):
        seq, answer = list(rows[k // n]), []
        generator = torch.Generator().manual_seed(seed)
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([seq]), logits_to_keep=1).logits[:, -1]
            token = sample_next(logits.float(), uniforms=torch.rand(1, generator=generator), **sampling).item()
            seq.append(token)
            answer.append(token)
            if token in eos:
                break
        answers.append(answer)
    return answers


def test_shared_prefix_is_found_and_cached(tiny):
    _, tokenizer = tiny
    rows = prompt_rows(tokenizer, conversations()[:5])
    length = shared_prefix_length(rows)
    assert length > 40 and all(r[:length] == rows[0][:length] for r in rows)
    assert shared_prefix_length(rows + [[1, 2, 3]]) == 0  # a row that shares nothing turns the prefix off


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_shared_prefix_attention_equals_sdpa_over_the_whole_sequence(mask_kind):
    """One new token per row attending over [prefix held once][own positions, some padded]: the same output as
    sdpa over each row's full copy of the sequence, for sdpa's boolean, additive and absent masks."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    rows, heads, kv_heads, dim, prefix, own = 5, 6, 2, 8, 11, 7
    module = torch.nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, heads // kv_heads, True
    prefix_keys, prefix_values = torch.randn(1, kv_heads, prefix, dim), torch.randn(1, kv_heads, prefix, dim)
    layer = SharedPrefixLayer(rows, prefix + own + 4, prefix_keys, prefix_values)
    keys, values = layer.update(torch.randn(rows, kv_heads, own, dim), torch.randn(rows, kv_heads, own, dim))
    query = torch.randn(rows, heads, 1, dim)
    keep = torch.ones(rows, 1, 1, prefix + own, dtype=torch.bool)
    keep[1, ..., prefix : prefix + 3] = False  # left padding between prefix and a row's own tokens
    keep[3, ..., prefix : prefix + 1] = False
    mask = {"bool": keep, "float": torch.zeros(keep.shape).masked_fill(~keep, float("-inf")), "none": None}[mask_kind]
    full_keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], dim=2)
    full_values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], dim=2)
    expected, _ = sdpa_attention_forward(module, query, full_keys, full_values, mask, scaling=dim**-0.5)
    cache = DynamicCache()
    cache.layers = [layer]
    token = decode._decoding_cache.set(cache)
    try:
        ours, _ = shared_prefix_attention(module, query, keys, values, mask, scaling=dim**-0.5)
    finally:
        decode._decoding_cache.reset(token)
    assert ours.shape == expected.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(ours, expected)
    # with dropout (a model decoding in training mode) sdpa runs over the whole sequence, prefix included
    torch.manual_seed(1)
    expected, _ = sdpa_attention_forward(module, query, full_keys, full_values, mask, dropout=0.5, scaling=dim**-0.5)
    token = decode._decoding_cache.set(cache)
    try:
        torch.manual_seed(1)
        ours, _ = shared_prefix_attention(module, query, keys, values, mask, dropout=0.5, scaling=dim**-0.5)
    finally:
        decode._decoding_cache.reset(token)
    torch.testing.assert_close(ours, expected)
    assert layer.get_seq_length() == prefix + own and layer.get_mask_sizes(1) == (prefix + own + 1, 0)


def test_decoding_behind_a_shared_prefix_reads_it_once_and_restores_sdpa(tiny, monkeypatch):
    """The tiny Llama decodes behind its shared prefix with `shared_prefix_attention` (so the draws and greedy
    answers compared with generate() above went through it), its prefix held once per layer, and the model
    attends with sdpa again afterwards, also when decoding fails."""
    model, tokenizer = tiny
    assert shares_prefix_attention(model)
    rows = prompt_rows(tokenizer, conversations()[:5])
    made = []
    init = SharedPrefixLayer.__init__
    monkeypatch.setattr(SharedPrefixLayer, "__init__", lambda self, *a: (made.append(a[2].shape), init(self, *a))[1])
    decode_batch(model, rows, n=2, max_new_tokens=3, temperature=0.0, top_k=0, top_p=1.0,
                 eos_token_ids={tokenizer.eos_token_id}, pad_token_id=tokenizer.pad_token_id)
    assert len(made) == model.config.num_hidden_layers and {shape[0] for shape in made} == {1}
    assert {shape[2] for shape in made} == {shared_prefix_length(rows)}
    assert model.config._attn_implementation == "sdpa"
    monkeypatch.setattr(decode, "sample_next", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        decode_batch(model, rows, n=1, max_new_tokens=3, temperature=0.0, top_k=0, top_p=1.0,
                     eos_token_ids={tokenizer.eos_token_id}, pad_token_id=tokenizer.pad_token_id)
    assert model.config._attn_implementation == "sdpa" and decode._decoding_cache.get() is None
    model.config._attn_implementation = "eager"
    try:
        assert not shares_prefix_attention(model)  # eager and other attentions keep the per-row copies
    finally:
        model.config._attn_implementation = "sdpa"


def test_shared_prefix_samples_draw_what_each_row_alone_draws(peaked):
    """n=3 samples of five rows behind a shared prefix, with padding between prefix and suffix: every sample's
    tokens equal those drawn, from the same seed, for its row run alone without any cache."""
    model, tokenizer = peaked
    rows = prompt_rows(tokenizer, conversations()[:5])
    assert shared_prefix_length(rows) > 0 and len({len(r) for r in rows}) > 1
    eos, pad = {tokenizer.eos_token_id}, tokenizer.pad_token_id
    sampling = dict(temperature=1.0, top_k=50, top_p=0.95)
    seeds = [Sampling(seed=11).stream_seed(str(row), j) for row in rows for j in range(3)]
    with torch.inference_mode():
        ours = decode_batch(model, rows, n=3, max_new_tokens=6, eos_token_ids=eos, pad_token_id=pad, seeds=seeds,
                            **sampling)
        assert ours == reference_sampling(model, rows, n=3, max_new_tokens=6, eos=eos, pad=pad, seeds=seeds,
                                          **sampling)
    assert all(len({tuple(a) for a in ours[3 * i:3 * i + 3]}) > 1 for i in range(5))  # samples differ per row
    assert len({tuple(a[:1]) for a in ours}) > 3  # and rows differ: each row sampled its own distribution


def test_finished_samples_leave_the_batch_without_changing_the_draws(peaked, monkeypatch):
    """Answers that end early are dropped from the batch (`COMPACT_SHARE`); every sample still draws exactly what
    its row run alone draws, and the longer ones go on after the drop."""
    model, tokenizer = peaked
    rows = prompt_rows(tokenizer, conversations()[:5])
    pad = tokenizer.pad_token_id
    sampling = dict(temperature=1.0, top_k=50, top_p=0.95, seeds=list(range(700, 715)))
    with torch.inference_mode():
        probe = decode_batch(model, rows, n=3, max_new_tokens=10, eos_token_ids={pad}, pad_token_id=pad, **sampling)
    # stop tokens taken at different steps of some answers: the answers end at different lengths, some never
    stops = {probe[i][1 + i % 7] for i in range(0, 15, 4)}
    dropped = []
    keep_rows = PreallocatedLayer.keep_rows
    monkeypatch.setattr(PreallocatedLayer, "keep_rows", lambda self, index: (dropped.append(self.rows - len(index)),
                                                                             keep_rows(self, index)))
    with torch.inference_mode():
        ours = decode_batch(model, rows, n=3, max_new_tokens=10, eos_token_ids=stops, pad_token_id=pad, **sampling)
        assert ours == reference_sampling(model, rows, n=3, max_new_tokens=10, eos=stops, pad=pad, **sampling)
    assert sum(dropped) > 0  # rows did leave the cache
    assert len({len(a) for a in ours}) >= 3 and max(len(a) for a in ours) > 3


def test_first_token_distribution_matches_generate(peaked):
    """Temperature, top-k and top-p as `generate()` applies them: its processed first-step scores are the
    distribution it samples from; 4000 first tokens from `decode_batch` must follow it."""
    model, tokenizer = peaked
    row = prompt_rows(tokenizer, conversations()[:1])[0]
    sampling = dict(temperature=1.5, top_k=8, top_p=0.9)
    out = model.generate(torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                         do_sample=True, max_new_tokens=1, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=tokenizer.pad_token_id, **sampling)
    expected = out.scores[0][0].float().softmax(-1)
    support = set(expected.nonzero().flatten().tolist())
    assert 3 <= len(support) < 8  # top-p cut some of the top-k: every filter takes part
    with torch.inference_mode():
        drawn = [a[0] for call in range(8) for a in decode_batch(model, [row], n=500, max_new_tokens=1,
                                                                 eos_token_ids={tokenizer.eos_token_id},
                                                                 pad_token_id=tokenizer.pad_token_id,
                                                                 seeds=[Sampling(seed=5).stream_seed(str(call), j)
                                                                        for j in range(500)], **sampling)]
    assert set(drawn) <= support
    observed = torch.bincount(torch.tensor(drawn), minlength=len(expected)).float() / len(drawn)
    # sampling noise at 4000 draws over 6 tokens is ~0.013 total variation; leaving out the temperature would
    # be 0.17 away, top-p 0.08 (and draw tokens outside the support)
    assert 0.5 * (observed - expected).abs().sum() < 0.05


def test_sampling_is_seeded_and_samples_differ(tiny):
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer, batch_size=8)
    sampling = Sampling(n=4, temperature=1.5, max_new_tokens=8, seed=3)
    first = [c.texts for c in backend.generate(conversations(), sampling)]
    again = [c.texts for c in backend.generate(conversations(), sampling)]
    assert first == again
    assert any(len(set(texts)) > 1 for texts in first)  # a random tiny model at T=1.5: samples differ


def test_sample_next_filters_like_transformers():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).repeat(2000, 1)
    u = torch.rand(2000, generator=torch.Generator().manual_seed(0))
    assert sample_next(logits[:1], 0.0, 0, 1.0).tolist() == [1]
    assert set(sample_next(logits, 1.0, 1, 1.0, u).tolist()) == {1}  # top-k 1 is greedy
    assert set(sample_next(logits, 1.0, 0, 0.01, u).tolist()) == {1}  # a tiny nucleus keeps only the top token
    assert set(sample_next(logits, 1.0, 3, 1.0, u).tolist()) == {1, 2, 3}  # top-3, each drawn among 2000
    # top-p: p(1)=0.64, p(3)=0.24 -> 0.88 reaches 0.8, so 2 and below are cut
    assert set(sample_next(logits, 1.0, 0, 0.8, u).tolist()) == {1, 3}
    # temperature flattens: at T=100 the least likely token is drawn too
    assert 4 in set(sample_next(logits, 100.0, 0, 1.0, u).tolist())
    # the inverse CDF at its ends: u = 0 takes the likeliest candidate, u -> 1 the last one top-p kept
    ends = torch.tensor([0.0, 0.9999999])
    assert sample_next(logits[:2], 1.0, 0, 0.8, ends).tolist() == [1, 3]
    with pytest.raises(ValueError, match="one uniform per row"):
        sample_next(logits, 1.0, 0, 1.0)


def test_a_sample_is_the_same_in_any_batch(peaked):
    """Each sample draws from its own stream: the backend's answers do not change with the batch size (one input
    per batch, or all in one), with the other inputs of the call, nor with `skip` — and another sampling seed
    draws other answers."""
    model, tokenizer = peaked
    convs = conversations()
    sampling = Sampling(n=3, temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=8, seed=4)
    alone = [c.texts for c in LocalBackend(model, tokenizer, batch_size=3).generate(convs, sampling)]
    together = LocalBackend(model, tokenizer, batch_size=64)
    assert [c.texts for c in together.generate(convs, sampling)] == alone
    assert [c.texts for c in together.generate(convs[2:5], sampling)] == alone[2:5]
    resumed = together.generate(convs, sampling, skip={0, 3})
    assert resumed[0] is None and resumed[3] is None
    assert [c.texts for i, c in enumerate(resumed) if i not in {0, 3}] == [t for i, t in enumerate(alone)
                                                                           if i not in {0, 3}]
    other = [c.texts for c in together.generate(convs, sampling.model_copy(update={"seed": 5}))]
    assert sum(a != b for a, b in zip(other, alone)) >= len(alone) - 1


def test_the_teacher_batch_size_is_not_part_of_the_data(tiny_spec):
    """It changes no answer (above), so a build killed at one batch size resumes at another."""
    from data_tools.spec import load_spec

    assert load_spec(tiny_spec, ["teacher.batch_size=8"]).content_hash() == load_spec(tiny_spec).content_hash()
    assert load_spec(tiny_spec, ["teacher.sampling.seed=9"]).content_hash() != load_spec(tiny_spec).content_hash()


def test_preallocated_layer_refuses_to_overflow():
    layer = PreallocatedLayer(rows=2, capacity=3)
    keys = torch.zeros(2, 1, 2, 4)
    layer.update(keys, keys)
    assert layer.get_seq_length() == 2
    with pytest.raises(ValueError, match="cannot take"):
        layer.update(keys, keys)


def test_models_without_a_plain_cache_fall_back_to_generate(tiny, monkeypatch):
    """The generate() path (for sliding-window or recurrent caches) answers greedily like the decode loop."""
    import data_tools.decode

    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer, batch_size=4)
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    ours = backend.generate(conversations(), greedy)
    monkeypatch.setattr(data_tools.decode, "plain_cache_layout", lambda model: False)
    fallback = backend.generate(conversations(), greedy)
    assert [c.texts for c in fallback] == [c.texts for c in ours]
    assert [c.completion_tokens for c in fallback] == [c.completion_tokens for c in ours]
