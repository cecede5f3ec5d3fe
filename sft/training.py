"""A recipe's `training:` section: fields of the trainer's own config class under their upstream names (TRL's
SFTConfig, DPOConfig, RewardConfig or GRPOConfig; transformers' TrainingArguments for distillation), checked against
that class's own fields when the recipe loads and by building that config before a model loads. Nothing here
re-types TRL, so a field TRL adds can be used at once, and one it renames fails instead of drifting.

    training:
      learning_rate: 3.0e-4
      neftune_noise_alpha: 5        # any field of the trainer's config, under its own name

A field left out takes promptbake's default (TRAINING_DEFAULTS) where it has one, else the config's own. At load,
each field given is checked for its name (an unknown one fails with the closest real name), its type (`2e-4`,
which YAML reads as a string, becomes a number), the choices the config documents, from the fields read without
importing TRL (sft/config_schema.py). When the trainer starts, before any model loads, the config is built
(`BaseRecipe.trainer_config`), and a value it refuses, or a deprecated name it warns about, fails with the file,
line and field. Fields promptbake
sets from the recipe (output_dir, run_name, report_to, bf16/fp16 from `precision`, use_cpu, and each trainer's
own, such as DPO's `beta`) are refused here with the recipe field to use instead.

A recipe may also give config fields at its top level, as alignment-handbook recipes do (`learning_rate: 2.0e-5`
next to `model`): those that are not recipe fields are read as `training` fields.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PositiveInt, TypeAdapter, ValidationError, model_validator

from promptbake.core.config import FieldError
from sft.config_schema import NO_DEFAULT, config_class, config_fields, decode

# promptbake's defaults where they differ from TRL's (TRL's in brackets), and why
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-4,  # LoRA's usual rate, ~10x a full fine-tuning one [SFT 2e-5, DPO/GRPO 1e-6, reward 1e-4]
    "lr_scheduler_type": "cosine",  # decays smoothly to zero over the run [linear]
    "activation_checkpointing": False,  # costs ~1/3 more compute; the small models promptbake targets fit [on]
    "max_length": 256,  # prompt + answer tokens of short rule-following rows; longer rows are warned about [1024]
    # runs of tens to hundreds of steps: a loss every 5, a checkpoint for `--resume` every 50, the last 2 kept
    "logging_steps": 5,  # [10]
    "save_steps": 50,  # [500]
    "save_total_limit": 2,  # [all]
    "seed": 0,  # the seed promptbake's runs have always had, so they stay reproducible [42]
}
# Lower bounds promptbake holds these fields to, checked with the recipe (no TRL, no torch: a refusal in under a
# second). transformers' TrainingArguments accepts every one of these values but warmup_steps (measured with
# transformers 5.24 / TRL 1.16: a negative rate, a zero batch or accumulation, a negative decay or clip norm all
# build a config), and then trains away from the data, fails at the first batch, or reads a nonsense value.
MINIMUMS: dict[str, tuple[float, str]] = {
    "learning_rate": (0, "a negative rate trains away from the data"),
    "per_device_train_batch_size": (1, "a batch needs a row"),
    "gradient_accumulation_steps": (1, "each optimizer step needs a batch"),
    "warmup_steps": (0, "the warm-up counts optimizer steps (the config class refuses it too)"),
    "weight_decay": (0, "a negative decay pushes weights away from zero"),
    "max_grad_norm": (0, "a clipping norm is a length (0 turns clipping off)"),
}
# rows of similar length batched together (shuffled in mega-batches), so less compute goes to padding [random].
# SFT and distillation only: the preference trainers' pairs have no single length to group by.
GROUP_BY_LENGTH = {"train_sampling_strategy": "group_by_length"}
OWN_KEYS: dict[str, Any] = {"max_length": PositiveInt}
"""Keys every trainer's section takes, with their types, though not every config has them. `max_length` is passed
to TRL where the config has it (SFT, DPO, reward); distillation cuts its pairs with it; GRPO, which never cuts
prompts and stops answers at the recipe's `max_completion_length`, does not use it."""


class TrainingSpec(BaseModel):
    """`training:` for SFT: any field of TRL's SFTConfig (https://huggingface.co/docs/trl/sft_trainer). Each trainer
    has a subclass naming its config and defaults."""

    model_config = ConfigDict(extra="allow")
    config_path: ClassVar[str] = "trl.SFTConfig"
    defaults: ClassVar[dict[str, Any]] = TRAINING_DEFAULTS | GROUP_BY_LENGTH

    @model_validator(mode="before")
    @classmethod
    def _from_another_trainer(cls, data):
        """Another trainer's section (the bake's DPO rounds start from SFT's) carries over the fields set in it."""
        return dict(data.model_extra) if isinstance(data, TrainingSpec) else data

    def __getattr__(self, name: str):
        """A field not set reads the value the trainer gets: promptbake's default, else the config's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            if name in self.defaults:
                return self.defaults[name]
            field = self.fields().get(name)
            if field is None:
                raise
            if field.default == NO_DEFAULT:  # not JSON: only the class has it
                return getattr(self.config_class()(), name)
            return copy.deepcopy(field.default)

    @classmethod
    def config_class(cls) -> type:
        """The config class itself: imports TRL (and torch), so only when the trainer's config is built."""
        return config_class(cls.config_path)

    @classmethod
    def fields(cls) -> dict:
        """The config class's fields, read without importing it (sft/config_schema.py)."""
        return config_fields(cls.config_path)

    def config_values(self) -> dict[str, Any]:
        """promptbake's defaults, then the fields set here, less own keys the config does not have."""
        fields = self.fields()
        return {k: v for k, v in {**self.defaults, **self.model_extra}.items() if k in fields or k not in OWN_KEYS}


@functools.cache
def field_type(config_path: str, name: str) -> TypeAdapter:
    return TypeAdapter(OWN_KEYS.get(name) or decode(config_fields(config_path)[name].type))


def owner(config_path: str) -> str:
    """How messages name a config class: TRL's SFTConfig, transformers' TrainingArguments."""
    library = "TRL's" if config_path.startswith("trl.") else "transformers'"
    return f"{library} {config_path.rpartition('.')[2]}"


def lift_top_level_fields(data: dict, recipe_fields: set[str], spec: type[TrainingSpec]) -> tuple[dict, set[str]]:
    """Move the config fields given at a recipe's top level (alignment-handbook style) into `training`; returns the
    new data and the names moved (so that errors about them point at the top level)."""
    names = set(spec.fields()) | set(OWN_KEYS)
    top = {k for k in data if k not in recipe_fields and k in names}
    training = data.get("training", {})
    if isinstance(training, TrainingSpec):
        training = dict(training.model_extra)
    if not top or not isinstance(training, dict):  # a section that is not a mapping: pydantic says so
        return data, set()
    if both := sorted(top & set(training)):
        raise FieldError([((k,), f"also given as training.{k}; give it once") for k in both])
    moved = {k: v for k, v in data.items() if k not in top}
    moved["training"] = {**training, **{k: data[k] for k in top}}
    return moved, top


def check_training(recipe, top_level: set[str]) -> None:
    """Check `recipe.training` against its config class's fields (see the module docstring), without importing
    it; values are coerced in place. Raises FieldError naming each bad field, at the top level for those in
    `top_level`. What only the class can say is checked when the config is built (check_config)."""
    if problems := check_fields(recipe, located(top_level)):
        raise FieldError(problems)


def check_config(recipe, top_level: set[str]) -> list:
    """The config class's own checks (imports TRL): deprecated names, then values it refuses; (loc, message) for
    each, as check_training places them."""
    at = located(top_level)
    return check_renamed(recipe, at) or check_builds(recipe, at)


def located(top_level: set[str]):
    def at(key: str) -> tuple[str, ...]:
        return (key,) if key in top_level else ("training", key)
    return at


def check_fields(recipe, at) -> list:
    """Each field given: not one promptbake sets, a field of the config, of its type and documented choices."""
    training = recipe.training
    path = training.config_path
    fields, settings = training.fields(), recipe.settings()
    problems = []
    for key, value in training.model_extra.items():
        if key in settings:
            problems.append((at(key), f"promptbake sets it: {settings[key][1]}"))
        elif key not in fields and key not in OWN_KEYS:
            close = difflib.get_close_matches(key, [*fields, *OWN_KEYS], n=1)
            problems.append((at(key), f"not a field of {owner(path)}"
                                      + (f" (did you mean {close[0]!r}?)" if close else "")))
        else:
            try:
                coerced = field_type(path, key).validate_python(value)
            except ValidationError as e:
                problems.append((at(key), e.errors()[0]["msg"]))
                continue
            choices = fields[key].choices if key in fields else None
            minimum, why = MINIMUMS.get(key, (None, ""))
            if choices and coerced not in choices:
                problems.append((at(key), f"{value!r} is not one of {list(choices)}"))
            elif minimum is not None and isinstance(coerced, int | float) and coerced < minimum:
                problems.append((at(key), f"{value!r} is below {minimum}: {why}"))
            elif coerced != value:  # `2e-4` read as a string; an int where a float is typed stays as written
                training.model_extra[key] = coerced
    return problems


def check_renamed(recipe, at) -> list:
    """Fields the config warns are deprecated (renamed, or going). Built from the fields as given, without
    promptbake's defaults, one of which could stand in for a deprecated name's new one and silence the warning."""
    training = recipe.training
    config_class = training.config_class()
    given = {k: v for k, v in training.model_extra.items() if k in training.fields()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config_class(**given, **recipe.setting_values())
        except (TypeError, ValueError):
            pass  # check_builds reports it, from the config the trainer gets
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    return [(at(key), f"{owner(training.config_path)}: {text}") for text in deprecations for key in given
            if f"`{key}`" in text]


def check_builds(recipe, at) -> list:
    """The trainer's config builds. A value it refuses is pinned on the first field given whose removal lets it
    build, else on a recipe field its message names, else on the section."""
    training = recipe.training
    try:
        recipe.build_config()
        return []
    except (TypeError, ValueError) as e:
        message = f"{owner(training.config_path)}: {e}"
    for key in training.model_extra:
        without = type(training)(**{k: v for k, v in training.model_extra.items() if k != key})
        try:
            recipe.model_copy(update={"training": without}).build_config()
        except (TypeError, ValueError):
            continue
        return [(at(key), message)]
    named = [(k,) for k in sorted(recipe.model_fields_set) if re.search(rf"\b{k}\b", message)]
    return [((named or [("training",)])[0], message)]


def documented_values(config_path: str, name: str) -> set[str]:
    """The values a config field's help lists after "Possible values are:" (TRL documents some choices only
    there, e.g. DPOConfig.loss_type); empty when it lists none, so that a reworded help turns the check off."""
    text = config_fields(config_path)[name].help
    listed = text.partition("Possible values are:")[2].split(". ")[0]
    return set(re.findall(r"`'([\w-]+)'`", listed))
