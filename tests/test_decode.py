"""data_tools.decode: the batched decoding loop behind LocalBackend, checked against transformers' generate()."""

from __future__ import annotations

import pytest
import torch

from data_tools.backends import LocalBackend
from data_tools.decode import PreallocatedLayer, decode_batch, sample_next, shared_prefix_length
from data_tools.spec import Sampling
from promptbake.models import load_model_and_tokenizer

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


def test_shared_prefix_is_found_and_cached(tiny):
    model, tokenizer = tiny
    rows = [tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in conversations()[:5]]
    rows = [r["input_ids"] if isinstance(r, dict) or hasattr(r, "keys") else r for r in rows]
    length = shared_prefix_length(rows)
    assert length > 40 and all(r[:length] == rows[0][:length] for r in rows)
    assert shared_prefix_length(rows + [[1, 2, 3]]) == 0  # a row that shares nothing turns the prefix off

    with torch.inference_mode():
        answers = decode_batch(model, rows, n=3, max_new_tokens=5, temperature=1.0, top_k=0, top_p=1.0,
                               eos_token_ids={tokenizer.eos_token_id}, pad_token_id=tokenizer.pad_token_id)
    assert len(answers) == 15 and all(1 <= len(a) <= 5 for a in answers)


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
    assert sample_next(logits[:1], 0.0, 0, 1.0).tolist() == [1]
    assert set(sample_next(logits, 1.0, 1, 1.0).tolist()) == {1}  # top-k 1 is greedy
    assert set(sample_next(logits, 1.0, 0, 0.01).tolist()) == {1}  # a tiny nucleus keeps only the top token
    assert set(sample_next(logits, 1.0, 3, 1.0).tolist()) == {1, 2, 3}  # top-3, each drawn among 2000
    # top-p: p(1)=0.64, p(3)=0.24 -> 0.88 reaches 0.8, so 2 and below are cut
    assert set(sample_next(logits, 1.0, 0, 0.8).tolist()) == {1, 3}
    # temperature flattens: at T=100 the least likely token is drawn too
    assert 4 in set(sample_next(logits, 100.0, 0, 1.0).tolist())


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
