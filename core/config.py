"""One validated object that describes an experiment, for the CLI and the page alike.

Every hyperparameter lives here, with its default and its bounds, so that a run's
``config.yaml`` is a complete record of what was done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESET_NAMES = ("none", "scenario1", "scenario2", "scenario3", "lower_k", "top_quarter", "bitfit", "norms_only")
PAGE_SECTIONS = ("backbone", "data", "freeze", "settings")  # the page's sections a lesson may hide or lock


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line, naming the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskConfig(_Strict):
    """Where one task's examples come from: local files or a hub data set name."""

    train: str = Field(description="training file (csv/tsv/json/jsonl/parquet), hub data set name, or 'demo' "
                                   "(the built-in demo set's task of this name, with its fixed validation split)")
    validation: str | None = Field(None, description="validation file; omitted: a seeded split of train")
    hub_subset: str | None = Field(None, description="configuration name of a hub data set")
    train_split: str = Field("train", description="split name of a hub data set used for training")
    validation_split: str | None = Field(None, description="split name of a hub data set for validation")
    text_column: str = "text"
    label_column: str = "label"
    max_train_examples: int | None = Field(None, gt=0)
    max_validation_examples: int | None = Field(None, gt=0)
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="used when no validation is given")
    loss_weight: float = Field(1.0, gt=0, le=100)
    trains_backbone: bool = Field(True, description="false: this task's loss updates only its own head (nothing, "
                                                    "if the head is frozen); its data is still evaluated")
    encoding: str = Field("auto", description="text encoding of the files: auto (UTF-8, else Windows-1252, "
                                              "with a note) or a Python codec name such as latin-1 or cp1250")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        """A codec Python knows and that decodes bytes to text (``rot13`` or ``base64`` are not)."""
        if name == "auto":
            return name
        try:
            b"a".decode(name, "ignore")  # LookupError for an unknown name and a bytes-to-bytes codec alike
        except LookupError:
            raise ValueError(f"unknown text encoding {name!r}; use auto, utf-8, cp1252, latin-1 or another "
                             "Python codec name") from None
        return name


class ScheduleConfig(_Strict):
    """A freeze plan that changes while the run trains (core.schedules)."""

    kind: Literal["gradual_unfreeze", "progressive_freeze"] = Field(
        description="gradual_unfreeze: unfreeze the highest frozen layer; progressive_freeze: freeze the lowest "
                    "trainable layer (the embeddings count as the lowest layer)")
    every: int = Field(1, ge=1, description="how often the plan changes, in units")
    unit: Literal["epoch", "step"] = "epoch"


class FreezeConfig(_Strict):
    """What is frozen: a preset, explicit part names, or both (their union)."""

    preset: Literal[PRESET_NAMES] | None = None  # type: ignore[valid-type]
    k: int | None = Field(None, ge=0, description="lower_k: how many lower layers to freeze")
    head: str | None = Field(None, description="scenario3: which task head to freeze")
    parts: list[str] = Field(default_factory=list, description="parts to freeze; <part>:<kind> (layer.3:bias, "
                                                                "layer.3:norm) freezes all of the part but that kind")
    schedule: ScheduleConfig | None = Field(None, description="change the plan while training; none: fixed")

    @model_validator(mode="after")
    def _preset_arguments(self) -> "FreezeConfig":
        if self.preset == "lower_k" and self.k is None:
            raise ValueError("preset lower_k needs k (the number of lower layers to freeze)")
        if self.preset == "scenario3" and not self.head:
            raise ValueError("preset scenario3 needs head (the task whose head is frozen)")
        return self


class TrainingConfig(_Strict):
    epochs: int = Field(2, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=1024)
    learning_rate: float = Field(5e-5, gt=0, le=1e-2, description="backbone learning rate")
    head_learning_rate: float = Field(1e-3, gt=0, le=1e-1, description="learning rate of the task heads")
    layer_lr_decay: float = Field(1.0, description="layer-wise learning rates: the top layer learns at "
                                  "learning_rate, each layer below at this times the rate above it, the embeddings "
                                  "lowest; 1: one rate for the whole backbone")
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(64, ge=8, le=4096, description="tokens per example; capped by the backbone")
    seed: int = Field(0, ge=0)
    data_seed: int | None = Field(None, ge=0, description="seed of data sampling and splitting (null: seed); "
                                  "a sweep fixes it so every member sees the same examples")
    eval_every: int = Field(25, ge=0, description="evaluate every N steps (0: once per epoch), and at the end")
    task_sampling: Literal["proportional", "equal"] = "proportional"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cache_frozen_prefix: bool = Field(True, description="reuse the frozen prefix's activations across epochs")
    length_bucketing: bool = Field(True, description="batch examples of similar length to cut padding")
    save: Literal["auto", "full", "changed", "none"] = Field(
        "auto", description="weights kept: full (a whole backbone/ folder), changed (only the tensors training "
                            "could change, rebuilt on the base when loaded), none; auto: full for a single run, "
                            "changed for a sweep's members")

    @field_validator("layer_lr_decay")
    @classmethod
    def _decay_in_range(cls, decay: float) -> float:
        if not 0 < decay <= 1:
            raise ValueError(f"must be in (0, 1] (1: one rate for the whole backbone), not {decay:g}")
        return decay


class AdapterConfig(_Strict):
    """Low-rank adapters (LoRA, through peft) instead of training the adapted layers' own weights.

    The layers that carry adapters have their base weights frozen; the adapters and the heads train.
    ``r: auto`` picks the rank whose trainable count is closest to that of the ``match`` freeze section.
    """

    kind: Literal["lora"] = "lora"
    r: int | Literal["auto"] = Field(8, description="the adapters' rank, or auto: matched to the budget of match")
    alpha: float = Field(16.0, gt=0, description="LoRA's scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    learning_rate: float | None = Field(None, gt=0, le=1e-1, description="the adapters' own learning rate (LoRA "
                                        "usually wants about ten times full fine-tuning's); null: the rate of the "
                                        "layer they sit in")
    targets: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1,
                               description="projections to adapt, by module name inside a layer (peft's "
                                           "target_modules: a name or the end of a dotted path)")
    layers: Literal["trainable", "all"] = Field("trainable", description="trainable: the layers the freeze plan "
                                                                         "leaves trainable; all: every layer")
    match: FreezeConfig | None = Field(None, description="with r: auto, the freeze section whose trainable "
                                                         "parameter count the adapters match")

    @field_validator("r", mode="before")
    @classmethod
    def _rank(cls, r):
        """One message for every bad rank (pydantic would name both arms of the union)."""
        if r != "auto" and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"the rank must be a whole number of 1 or more, or auto, not {r!r}")
        return r

    @field_validator("targets")
    @classmethod
    def _named_targets(cls, targets: list[str]) -> list[str]:
        blank = [t for t in targets if not t.strip()]
        if blank:
            raise ValueError("a target is empty; name a projection such as query or value")
        return list(dict.fromkeys(t.strip() for t in targets))

    @model_validator(mode="after")
    def _auto_needs_match(self) -> "AdapterConfig":
        if self.r == "auto" and self.match is None:
            raise ValueError("r: auto needs match, the freeze section whose trainable count to match, "
                             "e.g. match: {preset: lower_k, k: 4}")
        if self.r != "auto" and self.match is not None:
            raise ValueError(f"match is used only with r: auto (r is {self.r}); drop match or set r: auto")
        return self


class LessonConfig(_Strict):
    """A teacher's lesson: the page shows the title, hides or locks sections, and asks a question before
    Train; the student's guess is kept with the run. Training itself ignores it (the CLI too)."""

    title: str = Field(min_length=1, max_length=200)
    hide: list[Literal[PAGE_SECTIONS]] = Field(default_factory=list,  # type: ignore[valid-type]
                                               description="sections the students do not see")
    lock: list[Literal[PAGE_SECTIONS]] = Field(default_factory=list,  # type: ignore[valid-type]
                                               description="sections shown but not editable")
    ask: str | None = Field(None, min_length=1, max_length=500, description="the question asked before Train")
    choices: list[str] = Field(default_factory=list, max_length=10,
                               description="the answers to pick from; none: the student types one")

    @field_validator("choices")
    @classmethod
    def _distinct_choices(cls, choices: list[str]) -> list[str]:
        if any(not c.strip() or len(c) > 200 for c in choices):
            raise ValueError("each choice needs 1 to 200 characters")
        if len(set(choices)) < len(choices):
            raise ValueError("a choice is given twice")
        return choices

    @model_validator(mode="after")
    def _choices_need_a_question(self) -> "LessonConfig":
        if self.choices and not self.ask:
            raise ValueError("choices need a question (ask)")
        return self

    def checked_guess(self, guess: str) -> str:
        """A student's answer, stripped; ConfigError (one line) unless it is one of the choices (or, with
        none, 1 to 200 characters)."""
        guess = guess.strip()
        if not self.ask:
            raise ConfigError("this lesson asks no question, so it takes no guess")
        if not guess or len(guess) > 200:
            raise ConfigError("a guess needs 1 to 200 characters")
        if self.choices and guess not in self.choices:
            raise ConfigError(f"guess {guess!r} is not one of the lesson's choices: {', '.join(self.choices)}")
        return guess


class ExperimentConfig(_Strict):
    """The whole experiment. ``tasks`` omitted means the built-in demo data."""

    name: str | None = Field(None, max_length=80)
    backbone: str = Field("minilm", min_length=1)
    pooling: Literal["mean", "cls"] = "mean"
    head_dropout: float = Field(0.1, ge=0, lt=1)
    tasks: dict[str, TaskConfig] | None = None
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    adapter: AdapterConfig | None = Field(None, description="LoRA adapters (off when omitted)")
    init_from: str | None = Field(None, description="a run id or run folder whose weights to start from")
    lesson: LessonConfig | None = Field(None, description="a teacher's lesson for the page; training ignores it")

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks):  # a field validator, so that the message names the key "tasks"
        if tasks is not None:
            if not tasks:
                raise ValueError("tasks is empty: give one task or more, or omit it for the demo data")
            for name in tasks:
                if not name.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"task name {name!r} may hold only letters, digits, '-' and '_'")
        return tasks

    @field_validator("adapter")
    @classmethod
    def _adapter_without_schedule(cls, adapter, info):
        """A schedule sets each part's requires_grad at its changes, which would undo the adapters' frozen
        base weights; the two do not combine (yet)."""
        freeze = info.data.get("freeze")
        if adapter is not None and freeze is not None and freeze.schedule is not None:
            raise ValueError("a LoRA run cannot follow freeze.schedule; drop the schedule or the adapter")
        return adapter

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks) if self.tasks else ["topic", "sentiment"]

    def trains_backbone(self, task: str) -> bool:
        """Whether this task's loss reaches the backbone (the demo's tasks always do)."""
        return self.tasks[task].trains_backbone if self.tasks and task in self.tasks else True

    def to_dict(self) -> dict[str, Any]:
        """Every key, but ``lesson`` only where there is one (a config without one reads as before)."""
        return self.model_dump(mode="json", exclude={"lesson"} if self.lesson is None else None)


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return "invalid config: " + "; ".join(parts)


def parse_config(data: Any) -> ExperimentConfig:
    """Validate a mapping into an ExperimentConfig, or raise ConfigError with one line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid config: the top level must be a mapping of keys to values")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice is an error (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" may be overridden by the keys after it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML (or JSON, which is YAML) config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: the config is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                          f"{error.start}); save it as UTF-8") from None
    except (IsADirectoryError, PermissionError) as error:
        raise ConfigError(f"{path}: cannot read the config ({type(error).__name__})") from None
    return parse_config_text(text, str(path))


def parse_config_text(text: str, source: str) -> ExperimentConfig:
    """A config from YAML (or JSON) text; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: plain YAML types only, never Python objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line, column = (mark.line, mark.column) if mark else (None, None)
        problem = getattr(error, "problem", None) or "syntax error"
        if isinstance(error, yaml.reader.ReaderError):  # a control character: a position, not a mark
            before = text[:error.position]
            line, column = before.count("\n"), len(before) - before.rfind("\n") - 1
            problem = f"unacceptable character #x{error.character:04x}: {error.reason}"  # character: its code
        where = f" at line {line + 1}, column {column + 1}" if line is not None else ""
        raise ConfigError(f"{source}: YAML syntax error{where}: {problem}") from None
    return parse_config(data)


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
