"""`training:` is the trainer's own TRL config: any TRL field is accepted under its name and reaches the config
the trainer gets; a misspelled one fails at load, a renamed or refused one when the config is built (before any
model loads), each with the file, line and field; a flat alignment-handbook recipe loads; the fields promptbake
sets itself are refused. The fields are read from TRL's classes once and cached: loading a recipe imports no TRL."""

import dataclasses
import typing
import warnings
from pathlib import Path

import pytest
from trl import DPOConfig, SFTConfig

from promptbake.core.config import InputError, load_config
from sft.distill import DistillRecipe
from sft.dpo import DPORecipe
from sft.reward import RewardRecipe
from sft.rl import RLRecipe
from sft.train import SFTRecipe
from sft.training import TRAINING_DEFAULTS, documented_values

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"sft": SFTRecipe, "dpo": DPORecipe, "reward": RewardRecipe, "rl": RLRecipe, "distill": DistillRecipe}


def recipe_file(tmp_path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text("dataset: d.jsonl\n" + text)
    return path


def load_error(recipe_cls, path: Path, overrides=()) -> str:
    """The error of loading the recipe, or else of building its trainer config (what a trainer does first)."""
    with pytest.raises(InputError) as info:
        load_config(recipe_cls, path, overrides).trainer_config()
    return str(info.value).replace(str(path), "r.yaml")


def test_a_trl_field_promptbake_does_not_type_reaches_the_config(tmp_path):
    path = recipe_file(tmp_path, "training:\n  learning_rate: 1.0e-4\n")
    sft = load_config(SFTRecipe, path, ["training.neftune_noise_alpha=5", "training.learning_rate=3e-4"])
    config = sft.trainer_config()
    assert isinstance(config, SFTConfig) and config.neftune_noise_alpha == 5
    assert config.learning_rate == 3e-4  # `3e-4` is a string to YAML; TRL's float type makes it a number
    dpo = load_config(DPORecipe, path, ["training.use_weighting=true", "training.label_smoothing=0.1"])
    assert isinstance(dpo.trainer_config(), DPOConfig)
    assert (dpo.trainer_config().use_weighting, dpo.trainer_config().label_smoothing) == (True, 0.1)


def test_unset_fields_read_promptbakes_defaults_then_trls():
    sft, dpo = SFTRecipe(dataset="d.jsonl"), DPORecipe(dataset="d.jsonl")
    assert sft.training.max_length == 256 and sft.training.per_device_train_batch_size == 8  # ours, TRL's
    config = sft.trainer_config()
    assert (config.max_length, config.activation_checkpointing, config.train_sampling_strategy) == \
        (256, False, "group_by_length")
    assert dpo.trainer_config().train_sampling_strategy == "random"  # pairs have no single length to group by
    with pytest.raises(AttributeError):
        sft.training.not_a_field  # noqa: B018


def test_promptbake_lists_only_defaults_that_differ_from_trls():
    trl_defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    assert not [k for k, v in TRAINING_DEFAULTS.items() if trl_defaults[k] == v]


def test_a_misspelled_field_fails_at_load_with_its_line_and_the_real_name(tmp_path):
    path = recipe_file(tmp_path, "training:\n  num_train_epoch: 3\n  sampling_strategy: random\n")
    assert load_error(SFTRecipe, path) == (
        "r.yaml:3: field 'training.num_train_epoch': not a field of TRL's SFTConfig (did you mean 'num_train_epochs'?)"
        "\nr.yaml:4: field 'training.sampling_strategy': not a field of TRL's SFTConfig (did you mean "
        "'train_sampling_strategy'?)")


def test_a_renamed_field_fails_when_the_config_is_built(tmp_path):
    # transformers 5 renamed it; promptbake's default for the new name would otherwise silently win
    path = recipe_file(tmp_path, "training:\n  gradient_checkpointing: true\n")
    assert load_error(SFTRecipe, path) == (
        "r.yaml:3: field 'training.gradient_checkpointing': TRL's SFTConfig: `gradient_checkpointing` is deprecated "
        "and will be removed in v6. Use `activation_checkpointing` instead.")


@pytest.mark.parametrize("recipe_cls, text, message", [
    (SFTRecipe, "training:\n  seed: 1\n  logging_steps: 0\n",
     "r.yaml:4: field 'training.logging_steps': TRL's SFTConfig: logging strategy IntervalStrategy.STEPS requires "
     "non-zero --logging_steps"),
    (SFTRecipe, "training:\n  lr_scheduler_type: cosine_annealing\n",
     "r.yaml:3: field 'training.lr_scheduler_type': TRL's SFTConfig: cosine_annealing is not a valid SchedulerType"),
    (DPORecipe, "loss_type: ipo\ntraining:\n  loss_weights: [1.0, 0.5]\n",  # checked against the recipe's loss_type
     "r.yaml:4: field 'training.loss_weights': TRL's DPOConfig: `loss_weights` must have the same length as "
     "`loss_type`"),
    (RLRecipe, "spec: s.yaml\ntraining:\n  per_device_train_batch_size: '6'\n",
     "r.yaml:4: field 'training.per_device_train_batch_size': TRL's GRPOConfig: generation_batch_size (6) must be "
     "divisible by num_generations (4)"),
    (SFTRecipe, "training:\n  train_sampling_strategy: by_length\n",  # a choice TRL documents but does not check
     "r.yaml:3: field 'training.train_sampling_strategy': 'by_length' is not one of ['random', 'sequential', "
     "'group_by_length', 'batch_rebalance']"),
    (DPORecipe, "loss_type: sigmod\n",  # DPOTrainer would refuse it only at its first step
     "r.yaml:2: field 'loss_type': Value error, unknown loss type 'sigmod': TRL's DPOConfig knows ['aot',"),
    (DistillRecipe, "spec: s.yaml\ntraining:\n  packing: true\n",
     "r.yaml:4: field 'training.packing': not a field of transformers' TrainingArguments"),
])
def test_a_value_trl_refuses_fails_on_its_field(tmp_path, recipe_cls, text, message):
    assert message in load_error(recipe_cls, recipe_file(tmp_path, text))


@pytest.mark.parametrize("recipe_cls, text, message", [
    (SFTRecipe, "training:\n  bf16: true\n", "r.yaml:3: field 'training.bf16': promptbake sets it: use the recipe's "
                                             "`precision`"),
    (SFTRecipe, "training:\n  output_dir: x\n", "r.yaml:3: field 'training.output_dir': promptbake sets it: use the "
                                                "recipe's `output_dir`"),
    (SFTRecipe, "training:\n  packing: true\n", "field 'training.packing': promptbake sets it: use the recipe's "
                                                "`packing`"),
    (DPORecipe, "training:\n  beta: 0.2\n", "r.yaml:3: field 'training.beta': promptbake sets it: use the recipe's "
                                            "`beta`"),
    (RLRecipe, "spec: s.yaml\ntraining:\n  num_generations: 8\n", "field 'training.num_generations': promptbake "
                                                                  "sets it: use the recipe's `num_generations`"),
])
def test_a_field_promptbake_sets_is_refused_with_the_recipe_field_to_use(tmp_path, recipe_cls, text, message):
    assert message in load_error(recipe_cls, recipe_file(tmp_path, text))


def test_a_flat_handbook_style_recipe_loads(tmp_path):
    path = recipe_file(tmp_path, "model: smollm2-135m-instruct\n"
                                 "# TRL fields at the top level, as in alignment-handbook recipes\n"
                                 "learning_rate: 2.0e-05\nlr_scheduler_type: cosine\nnum_train_epochs: 1\n"
                                 "gradient_accumulation_steps: 2\nmax_length: 512\nwarmup_steps: 0.1\n")
    recipe = load_config(SFTRecipe, path)
    assert recipe.training.gradient_accumulation_steps == 2
    config = recipe.trainer_config()
    assert (config.learning_rate, config.num_train_epochs, config.max_length, config.warmup_steps) == \
        (2e-5, 1, 512, 0.1)


def test_a_flat_field_fails_on_its_own_line(tmp_path):
    path = recipe_file(tmp_path, "learning_rate: 2.0e-05\nbf16: true\n")
    assert load_error(SFTRecipe, path) == "r.yaml:3: field 'bf16': promptbake sets it: use the recipe's `precision`"
    path = recipe_file(tmp_path, "learning_rate: 2.0e-05\nmodel_name_or_path: x\n")
    assert load_error(SFTRecipe, path).startswith("r.yaml:3: field 'model_name_or_path': unknown field")
    path = recipe_file(tmp_path, "seed: 1\ntraining:\n  seed: 2\n")
    assert load_error(SFTRecipe, path) == "r.yaml:2: field 'seed': also given as training.seed; give it once"


def test_the_bakes_updates_reach_the_config_and_carry_to_a_dpo_round():
    sft = SFTRecipe(dataset="d.jsonl", training={"max_length": 512, "neftune_noise_alpha": 5})
    t = sft.training
    updated = t.model_copy(update={"max_steps": 40, "save_steps": 5, "save_total_limit": 1,
                                   "logging_steps": min(t.logging_steps, 5)})
    config = sft.model_copy(update={"training": updated}).trainer_config()
    assert (config.max_steps, config.save_steps, config.save_total_limit, config.logging_steps) == (40, 5, 1, 5)
    dpo = DPORecipe(dataset="d.jsonl", training=updated.model_copy(update={"learning_rate": 5e-6}))
    config = dpo.trainer_config()
    assert (config.max_steps, config.max_length, config.learning_rate, config.neftune_noise_alpha) == (40, 512, 5e-6, 5)
    assert config.train_sampling_strategy == "random"  # DPO's own default, not SFT's


def test_dpo_loss_types_come_from_trls_documentation():
    """The check reads TRL's help text; if TRL rewords it, this fails rather than the check going quiet."""
    assert {"sigmoid", "ipo", "hinge", "sigmoid_norm"} <= documented_values("trl.DPOConfig", "loss_type")


@pytest.mark.parametrize("path", sorted(p for d in RECIPES for p in (REPO / "configs" / d).glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_build_their_config_without_deprecation_warnings(path, as_after_the_demo):
    as_after_the_demo(path)  # the RL recipe starts from the demo's adapter
    recipe = load_config(RECIPES[path.parent.name], path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        recipe.trainer_config()


@pytest.mark.parametrize("path", ["trl.SFTConfig", "trl.DPOConfig", "trl.RewardConfig", "trl.GRPOConfig",
                                  "transformers.TrainingArguments"])
def test_the_cached_fields_are_the_classes_own(path, tmp_path, monkeypatch):
    """What a recipe is checked against without importing TRL is what the class says: every init field, its
    default and choices; a type that validates as the class's own annotation does."""
    from pydantic import TypeAdapter

    from sft.config_schema import config_class as load_class
    from sft.config_schema import config_fields
    from sft.training import OWN_KEYS, field_type

    cls = load_class(path)
    monkeypatch.setenv("PROMPTBAKE_CONFIG_CACHE", str(tmp_path))  # written afresh from the class, then read back
    config_fields.cache_clear()
    try:
        fields = config_fields(path)
        assert list(tmp_path.glob(f"{path}-*.json")), "the fields were not cached"
        config_fields.cache_clear()
        assert config_fields(path) == fields
    finally:
        config_fields.cache_clear()
    live = {f.name: f for f in dataclasses.fields(cls) if f.init}
    assert set(fields) == set(live)
    hints = typing.get_type_hints(cls)
    for name, f in live.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert fields[name].default == getattr(default, "value", default), name
        for value in (True, 3, 2.5, "2e-4", "steps", "cosine", None, [1.0], {"a": 1}):
            expected = outcome(TypeAdapter(OWN_KEYS.get(name) or hints[name]), value)
            assert outcome(field_type(path, name), value) == expected, (name, value)


def outcome(adapter, value):
    """A value as a type adapter takes it, or its first error; an enum member as its value (the config converts
    text to its enums either way)."""
    from pydantic import ValidationError

    try:
        result = adapter.validate_python(value)
    except ValidationError as e:
        return "error", e.errors()[0]["msg"]
    return "ok", getattr(result, "value", result) if not dataclasses.is_dataclass(result) else vars(result)


@pytest.mark.parametrize("field, value", [("learning_rate", -1e-4), ("per_device_train_batch_size", 0),
                                          ("gradient_accumulation_steps", 0), ("warmup_steps", -1),
                                          ("weight_decay", -0.1), ("max_grad_norm", -1.0)])
def test_promptbakes_minimums_refuse_at_load_what_the_config_class_would_build(tmp_path, field, value):
    """sft/training.py:MINIMUMS: refused when the recipe loads (no TRL import), with the line and the reason;
    and (but for warmup_steps, which the class refuses too) the class itself builds a config with that value:
    the table adds checks, it does not restate the class's."""
    from sft.training import MINIMUMS

    message = load_error(SFTRecipe, recipe_file(tmp_path, f"training:\n  {field}: {value}\n"))
    assert f"r.yaml:3: field 'training.{field}': {value!r} is below {MINIMUMS[field][0]}" in message
    from trl import SFTConfig

    if field == "warmup_steps":
        with pytest.raises(ValueError):
            SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **{field: value})
    else:
        SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **{field: value})
