"""DPO, reward model and GRPO on a tiny random model: each learns what its data asks for, the base weights
stay untouched, bad rows are refused by line, and every shipped recipe validates."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data_tools.spec import load_spec
from promptbake.core.config import InputError, load_config
from promptbake.core.models import load_model_and_tokenizer
from sft import dpo, reward, rl

REPO = Path(__file__).resolve().parents[1]
THINGS = ["cats", "dogs", "rain", "snow", "tea", "bread", "maps", "ships"]
FAST = {"per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1, "save_steps": 100}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def pref_rows() -> list[dict]:
    """chosen follows the tiny spec's rules ("ok:", lowercase, no commas, short); rejected breaks them all."""
    return [{"prompt": user(f"Tell me about {t}."), "chosen": assistant(f"ok: {t} are nice"),
             "rejected": assistant(f"Well, {t.upper()} ARE, in fact, VERY NICE AND WORTH A LONG STORY.")}
            for t in THINGS]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lora_b(adapter_dir: Path) -> list[torch.Tensor]:
    return [v for k, v in load_file(adapter_dir / "adapter_model.safetensors").items() if "lora_B" in k]


@torch.no_grad()
def completion_logp(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of the log-probs of the completion's tokens after the prompt, as DPO scores them."""
    prompt_ids = tokenizer(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(tokenizer.apply_chat_template(prompt + completion, tokenize=False),
                         add_special_tokens=False)["input_ids"]
    logps = torch.log_softmax(model(torch.tensor([full_ids])).logits[0, :-1].float(), dim=-1)
    targets = torch.tensor(full_ids[1:])
    return logps[torch.arange(len(targets)), targets][len(prompt_ids) - 1:].sum().item()


def mean_margin(model_ref: str, rows: list[dict]) -> float:
    model, tokenizer = load_model_and_tokenizer(model_ref)
    return sum(completion_logp(model, tokenizer, r["prompt"], r["chosen"])
               - completion_logp(model, tokenizer, r["prompt"], r["rejected"]) for r in rows) / len(rows)


def test_dpo_widens_the_chosen_rejected_margin(tiny_model_dir, tmp_path):
    rows = pref_rows()
    write_rows(tmp_path / "prefs_train.jsonl", rows)
    base_before = load_file(tiny_model_dir / "model.safetensors")
    margin_before = mean_margin(str(tiny_model_dir), rows)
    recipe = dpo.DPORecipe(model=str(tiny_model_dir), dataset=str(tmp_path), output_dir=str(tmp_path / "run"),
                           report_to="none", lora={"r": 8}, training={**FAST, "max_steps": 4, "learning_rate": 1e-2})
    adapter_dir = dpo.main(recipe)

    assert all(v.abs().sum() > 0 for v in lora_b(adapter_dir))  # LoRA B starts at zero
    base_after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    # the policy now prefers the rule-following answers by a wider log-prob margin than the base did
    assert mean_margin(str(adapter_dir), rows) > margin_before + 1.0
    assert json.loads((adapter_dir / "promptbake_run.json").read_text())["base_model"] == str(tiny_model_dir)


@pytest.fixture
def sft_adapter(tiny_model_dir, tmp_path) -> Path:
    """A stand-in SFT run's adapter: random non-zero LoRA B, so it changes the model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    sft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    sft_dir = tmp_path / "sft" / "adapter"
    sft.save_pretrained(sft_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(sft_dir)  # as sft.train saves it
    (sft_dir / "promptbake_run.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    return sft_dir


def logged(run_dir: Path, step: int) -> list[dict]:
    """The trainer's log history as saved with the checkpoint of `step`."""
    state = run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    return json.loads(state.read_text())["log_history"]


def test_dpo_from_sft_adapter_uses_it_as_reference(tiny_model_dir, sft_adapter, tmp_path):
    data = write_rows(tmp_path / "prefs_train.jsonl", pref_rows())
    recipe = dpo.DPORecipe(model=str(tiny_model_dir), init_adapter=str(sft_adapter), dataset=str(data),
                           output_dir=str(tmp_path / "run"), report_to="none",
                           training={**FAST, "max_steps": 2, "save_steps": 2, "learning_rate": 1e-2})
    adapter_dir = dpo.main(recipe)

    # before the first update the policy IS the reference: DPO's implicit rewards are exactly zero. Had the
    # reference been the bare base, the SFT adapter's changes would show as non-zero rewards.
    log = logged(tmp_path / "run", 2)
    assert log[0]["step"] == 1 and log[0]["rewards/chosen"] == 0.0 and log[0]["rewards/margins"] == 0.0
    assert log[1]["rewards/margins"] != 0.0
    # the SFT adapter itself was trained further, and only it was saved (not TRL's frozen "ref" copy)
    before = load_file(sft_adapter / "adapter_model.safetensors")
    after = load_file(adapter_dir / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert not (adapter_dir / "ref").exists()


def test_full_dpo_from_sft_run_uses_the_sft_model_as_reference(sft_adapter, tmp_path):
    data = write_rows(tmp_path / "prefs_train.jsonl", pref_rows())
    recipe = dpo.DPORecipe(model=str(sft_adapter), method="full", dataset=str(data), output_dir=str(tmp_path / "run"),
                           report_to="none", training={**FAST, "max_steps": 1, "save_steps": 1})
    model_dir = dpo.main(recipe)
    assert logged(tmp_path / "run", 1)[0]["rewards/margins"] == 0.0  # the merged SFT model, not the bare base
    assert (model_dir / "model.safetensors").exists()


def test_reward_model_scores_chosen_above_rejected(tiny_model_dir, tmp_path):
    rows = pref_rows()
    write_rows(tmp_path / "prefs_train.jsonl", rows)
    recipe = reward.RewardRecipe(model=str(tiny_model_dir), dataset=str(tmp_path), output_dir=str(tmp_path / "rm"),
                                 report_to="none", lora={"r": 8},
                                 training={**FAST, "max_steps": 8, "learning_rate": 1e-2})
    untrained = reward.RewardScorer(*reward.load_sequence_classifier(recipe, "fp32"))  # the same seeded head
    adapter_dir = reward.main(recipe)

    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert any("score" in k for k in weights)  # the new head trained and was saved with the adapter
    scorer = reward.load_reward_model(tmp_path / "rm")
    chosen = [scorer(r["prompt"], r["chosen"][0]["content"]) for r in rows]
    rejected = [scorer(r["prompt"], r["rejected"][0]["content"]) for r in rows]
    assert sum(c > r for c, r in zip(chosen, rejected)) >= 7
    # a random head may already lean one way (the answers differ a lot); training widened the margin
    margin_before = sum(untrained(r["prompt"], r["chosen"][0]["content"])
                        - untrained(r["prompt"], r["rejected"][0]["content"]) for r in rows) / len(rows)
    assert sum(chosen) / len(rows) - sum(rejected) / len(rows) > margin_before + 0.5
    # the RL reward function scores the same way, batched
    batched = rl.reward_model([r["prompt"] for r in rows], [r["chosen"] for r in rows], scorer=scorer)
    assert batched == pytest.approx(chosen, abs=1e-4)


def test_checks_reward_is_the_share_of_rules_passed(tiny_spec):
    rules = load_spec(tiny_spec).rules  # lowercase, no_commas, short (<= 6 words), prefix "ok:"
    prompts = [user("Tell me about tea.")] * 3
    completions = [assistant("ok: tea is warm"), assistant("ok: Tea, warm"), assistant("Tea, TEA, " * 5)]
    assert rl.checks(prompts, completions, rules=rules) == [1.0, 0.5, 0.0]
    assert rl.checks(["Tell me about tea."], ["ok: tea is warm"], rules=rules) == [1.0]  # standard (text) rows


@torch.no_grad()
def first_token_prob(model_ref: str, text: str, temperature: float) -> float:
    """Mean probability, over the THINGS prompts, that the answer's first token is `text`."""
    model, tokenizer = load_model_and_tokenizer(model_ref)
    token = tokenizer.encode(text, add_special_tokens=False)
    assert len(token) == 1
    probs = []
    for t in THINGS:
        ids = tokenizer.apply_chat_template(user(f"Tell me about {t}."), add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        probs.append((model(**ids).logits[0, -1] / temperature).softmax(-1)[token[0]].item())
    return sum(probs) / len(probs)


# The random tiny model's next-token logits are almost flat (a spread of ~0.1 over 49k tokens); at temperature
# 0.03 its one-token answers concentrate: ~70% are a bare newline (a blank answer), the rest one of a few words.
# GRPO must move that share the way the spec's check rewards: away from blank answers (the reward rises from
# ~0.1 to 1 within a few steps), or, as a control, towards them.
@pytest.mark.parametrize("wants_a_word", [True, False], ids=["reward-a-word", "reward-a-blank"])
def test_grpo_moves_the_policy_the_way_the_checks_reward(tiny_model_dir, tmp_path, wants_a_word):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: says_something\nrules:\n  - id: word\n    text: Say something.\n"
                    f"    check: {{kind: regex, pattern: '\\S', must_match: {str(wants_a_word).lower()}}}\n"
                    f"inputs: {{path: sft_train.jsonl}}\nteacher: {{model: {tiny_model_dir}}}\n")
    # an sft_train.jsonl: GRPO uses its prompts and ignores the completions
    data = write_rows(tmp_path / "sft_train.jsonl",
                      [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pref_rows()])
    steps, temperature = 10, 0.03
    recipe = rl.RLRecipe(model=str(tiny_model_dir), spec=str(spec), dataset=str(data), output_dir=str(tmp_path / "rl"),
                         report_to="none", lora={"r": 8}, num_generations=8, max_completion_length=1,
                         temperature=temperature,
                         training={**FAST, "per_device_train_batch_size": 8, "max_steps": steps, "save_steps": steps,
                                   "learning_rate": 5e-3})
    blank_before = first_token_prob(str(tiny_model_dir), "\n", temperature)
    adapter_dir = rl.main(recipe)

    blank_after = first_token_prob(str(adapter_dir), "\n", temperature)
    rewards = [h["rewards/checks/mean"] for h in logged(tmp_path / "rl", steps) if "reward" in h]
    assert len(rewards) == steps
    # step 1 answers come from the untrained model; the last steps' from the trained one
    first, last = rewards[0], sum(rewards[-4:]) / 4
    if wants_a_word:
        assert 0.1 < blank_before < 0.9 and first < 0.5, (blank_before, rewards)
        assert blank_after < blank_before / 4 and last >= 0.9 and last > first + 0.4, (blank_after, rewards)
    else:  # the control: the same run with the opposite check makes blank answers more likely, not less
        assert blank_after > blank_before, (blank_before, blank_after, rewards)
    assert all(v.abs().sum() > 0 for v in lora_b(adapter_dir))


@pytest.mark.parametrize("train", [dpo.main, reward.main])
def test_malformed_preference_row_is_refused_with_its_line(tmp_path, train):
    rows = pref_rows()[:3]
    rows[1]["rejected"] = "just a string, not messages"
    data = write_rows(tmp_path / "prefs_train.jsonl", rows)
    recipe_cls = dpo.DPORecipe if train is dpo.main else reward.RewardRecipe
    with pytest.raises(InputError, match=r"prefs_train.jsonl:2: field 'rejected'"):
        train(recipe_cls(dataset=str(data), output_dir=str(tmp_path / "run"), report_to="none"))


def test_dpo_refuses_an_adapter_of_another_base(sft_adapter, tmp_path):
    data = write_rows(tmp_path / "prefs_train.jsonl", pref_rows())
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(InputError, match="was trained on base .*: set model="):
        dpo.main(dpo.DPORecipe(model=str(other), init_adapter=str(sft_adapter), dataset=str(data),
                               report_to="none", output_dir=str(tmp_path / "run")))
    with pytest.raises(ValueError, match="remove the `lora` section"):
        dpo.DPORecipe(init_adapter=str(sft_adapter), dataset=str(data), lora={"r": 4})


def test_rl_recipe_checks_rewards_and_batch():
    with pytest.raises(ValueError, match="needs `reward_model`"):
        rl.RLRecipe(spec="s.yaml", dataset="d.jsonl", reward="both")
    with pytest.raises(ValueError, match="multiple of num_generations"):
        rl.RLRecipe(spec="s.yaml", dataset="d.jsonl", num_generations=3)
    with pytest.raises(ValueError, match="needs 2 value"):
        rl.RLRecipe(spec="s.yaml", dataset="d.jsonl", reward="both", reward_model="rm", reward_weights=[1.0])


RECIPES = {"dpo": dpo.DPORecipe, "reward": reward.RewardRecipe, "rl": rl.RLRecipe}


@pytest.mark.parametrize("path", sorted(p for d in RECIPES for p in (REPO / "configs" / d).glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_validate_and_say_how_to_run(path, as_after_the_demo):
    assert path.read_text().startswith("#")
    as_after_the_demo(path)  # the RL recipe starts from the adapter the demo trains
    load_config(RECIPES[path.parent.name], path)
    assert f"python -m sft.{path.parent.name} {path.relative_to(REPO)}" in path.read_text()
