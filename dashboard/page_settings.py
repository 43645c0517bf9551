"""Every page setting that shapes an experiment, in one place: its widget key (which is also its key in
the page's link), its section, its default and its bounds.

Defaults and bounds come from the config's own pydantic fields (``core.config``), so the widgets, the
link and the setup file cannot disagree with ``python -m core train``. A setting the config does not
know (where the data comes from, the number of examples the page starts with) says so: ``config=None``.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from core import parts as part_names
from core.config import PRESET_NAMES, ExperimentConfig, FreezeConfig, ScheduleConfig, TaskConfig, TrainingConfig
from dashboard.settings import TASKS

JS_SAFE_INTEGER = 2**53 - 1  # the largest whole number a number input holds exactly in the browser
DEMO, OWN = "Built-in demo data", "My own data"
UPLOAD, LOCAL_PATH, HUB = "Upload a file", "Local path", "Hub data set"
PRETRAINED = "pretrained"  # "Start from": the pretrained backbone, not a finished run
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "head_learning_rate", "layer_lr_decay", "max_length", "seed",
                 "eval_every", "cache_frozen_prefix")  # the training settings the page has widgets for
FROZEN, PRESET, PRESET_K, PRESET_HEAD = "frozen", "preset", "preset_k", "preset_head"  # the freeze section's keys
KEEPS = "frozen_keeps"  # the kinds (core.parts.KINDS) that frozen parts keep training: freeze.parts' <part>:<kind>
FREEZE_KEYS = (PRESET, PRESET_K, PRESET_HEAD, FROZEN, KEEPS)  # set from the freeze section once the parts are known
NO_SCHEDULE = "fixed"  # the schedule selector's "no freeze.schedule"
SCHEDULE_KEYS = {"schedule_kind": "kind", "schedule_every": "every", "schedule_unit": "unit"}  # -> freeze.schedule.*


def toggle_key(part: str) -> str:
    """The widget key of one part's freeze toggle (on: frozen)."""
    return f"freeze:{part}"


def trains_backbone_key(task: str) -> str:
    """The widget key of tasks.<task>.trains_backbone (drawn with the heads' freeze toggles)."""
    return f"trains_backbone:{task}"


@dataclass(frozen=True)
class Setting:
    """One page setting. ``low``/``high`` are inclusive (a config's ``gt=0`` becomes the next number up);
    ``codes`` name a choice's values in a link (``own`` for 'My own data')."""

    key: str
    section: str  # backbone | data | freeze | settings (the lesson's section names), sweep | train (never hidden)
    default: Any
    kind: type  # bool, int, float, str or list
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    codes: tuple = ()
    config: str | None = None  # the config key it becomes, e.g. "training.epochs"; None: the page's own
    shared: bool = True  # travels in the link and the setup file
    preset_in_state: bool = True  # False: its widget picks its first value (a file's column names)
    span: str = ""  # the range in words where a bound is open (``more than 0, at most 1``), for messages

    def parse(self, text: str) -> Any:
        """A value from a link's text; ValueError (one line, naming the key) if it is not one."""
        if self.choices:
            names = self.codes or self.choices
            if text not in names:
                raise ValueError(f"{self.key}={text!r} is not one of {', '.join(map(str, names))}")
            return self.choices[names.index(text)]
        try:
            value = {bool: parse_bool, int: int, float: float, str: str}[self.kind](text)
        except ValueError:
            raise ValueError(f"{self.key}={text!r} is not {WHAT[self.kind]}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """The value, if it lies within the bounds (or is one of the choices); ValueError otherwise."""
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.key}={value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not math.isfinite(value)):
            raise ValueError(f"{self.key}={value!r} is not {WHAT[self.kind]}")
        if self.kind is int and value != int(value):
            raise ValueError(f"{self.key}={value!r} is not {WHAT[int]}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            span = f" ({self.span})" if self.span else (f" ({self.low:g} to {self.high:g})" if self.low is not None
                                                        and self.high is not None else "")
            raise ValueError(f"{self.key}={value!r} is out of range{span}")
        if self.kind is str and len(value) > 500:
            raise ValueError(f"{self.key} is longer than 500 characters")
        return self.kind(value) if self.kind in (int, float) else value

    def text(self, value: Any) -> str:
        """The value as a link writes it."""
        if self.choices and self.codes:
            return self.codes[self.choices.index(value)]
        if self.kind is bool:
            return "true" if value else "false"
        return repr(value) if self.kind is float else str(value)


WHAT = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0"):
        raise ValueError(text)
    return lowered in ("true", "1")


def field_bounds(model: type[BaseModel], name: str, kind: type) -> tuple[float | None, float | None]:
    """A config field's bounds as inclusive widget bounds; whole numbers stay within the browser's."""
    low = high = None
    for rule in model.model_fields[name].metadata:
        if isinstance(rule, Ge):
            low = rule.ge
        elif isinstance(rule, Gt):
            low = rule.gt + 1 if kind is int else math.nextafter(rule.gt, math.inf)
        elif isinstance(rule, Le):
            high = rule.le
        elif isinstance(rule, Lt):
            high = rule.lt - 1 if kind is int else math.nextafter(rule.lt, -math.inf)
    if kind is int:
        low = -JS_SAFE_INTEGER if low is None else low
        high = JS_SAFE_INTEGER if high is None else min(high, JS_SAFE_INTEGER)
    return low, high


def from_field(key: str, section: str, model: type[BaseModel], name: str, config: str) -> Setting:
    """A setting whose default, type, bounds or choices are the config field's own."""
    field = model.model_fields[name]
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return Setting(key, section, field.default, str, choices=typing.get_args(annotation), config=config)
    kind = annotation if annotation in (bool, int, float, str) else str
    low, high = field_bounds(model, name, kind) if kind in (int, float) else (None, None)
    return Setting(key, section, field.default, kind, low, high, config=config,
                   span=open_span(model, name) if kind is float else "")


def open_span(model: type[BaseModel], name: str) -> str:
    """A float field's range in words when a bound is open (gt, lt), where the inclusive widget bound
    (the next float) would read as 5e-324; "" when both bounds are closed."""
    words = {Gt: ("more than", "gt"), Ge: ("at least", "ge"), Lt: ("less than", "lt"), Le: ("at most", "le")}
    rules = [rule for rule in model.model_fields[name].metadata if type(rule) in words]
    if not any(isinstance(rule, (Gt, Lt)) for rule in rules):
        return ""
    return ", ".join(f"{words[type(rule)][0]} {getattr(rule, words[type(rule)][1]):g}" for rule in rules)


def task_settings(task: str) -> list[Setting]:
    """One task's data settings (only used with 'My own data') and whether its loss trains the backbone."""
    low, high = field_bounds(TaskConfig, "max_train_examples", int)
    return [
        Setting(f"use:{task}", "data", True, bool),
        Setting(f"source_kind:{task}", "data", UPLOAD, str, choices=(UPLOAD, LOCAL_PATH, HUB),
                codes=("upload", "path", "hub")),
        Setting(f"path:{task}", "data", "", str, config=f"tasks.{task}.train"),
        Setting(f"hub:{task}", "data", "", str, config=f"tasks.{task}.train"),
        Setting(f"text_col:{task}", "data", TaskConfig.model_fields["text_column"].default, str,
                config=f"tasks.{task}.text_column", preset_in_state=False),
        Setting(f"label_col:{task}", "data", TaskConfig.model_fields["label_column"].default, str,
                config=f"tasks.{task}.label_column", preset_in_state=False),
        # The page starts from 2,000 examples (0: all of them); the config's default is all of them.
        Setting(f"max_train:{task}", "data", 2000, int, 0, high, config=f"tasks.{task}.max_train_examples"),
        from_field(trains_backbone_key(task), "freeze", TaskConfig, "trains_backbone",
                   f"tasks.{task}.trains_backbone"),
    ]


def schedule_settings() -> list[Setting]:
    """freeze.schedule's kind (or fixed: no schedule), every and unit."""
    kinds = typing.get_args(ScheduleConfig.model_fields["kind"].annotation)
    return [Setting("schedule_kind", "freeze", NO_SCHEDULE, str, choices=(NO_SCHEDULE, *kinds),
                    config="freeze.schedule.kind"),
            *(from_field(key, "freeze", ScheduleConfig, name, f"freeze.schedule.{name}")
              for key, name in SCHEDULE_KEYS.items() if name != "kind")]


def _all_settings() -> dict[str, Setting]:
    k_low, k_high = field_bounds(FreezeConfig, "k", int)
    settings = [
        from_field("backbone", "backbone", ExperimentConfig, "backbone", "backbone"),
        from_field("pooling", "backbone", ExperimentConfig, "pooling", "pooling"),
        Setting("warm_start", "backbone", PRETRAINED, str, config="init_from"),
        Setting("data_mode", "data", DEMO, str, choices=(DEMO, OWN), codes=("demo", "own")),
        *(setting for task in TASKS for setting in task_settings(task)),
        *(from_field(name, "settings", TrainingConfig, name, f"training.{name}") for name in TRAINING_KEYS
          if name != "layer_lr_decay"),
        # Its range, (0, 1], is a validator's in the config, not a field bound pydantic lists.
        Setting("layer_lr_decay", "settings", TrainingConfig.model_fields["layer_lr_decay"].default, float,
                math.nextafter(0.0, math.inf), 1.0, config="training.layer_lr_decay", span="more than 0, at most 1"),
        # The freeze section: a preset (with its k or head) and the parts frozen by hand, checked against
        # the backbone's parts once they are known.
        Setting(PRESET, "freeze", None, str, choices=PRESET_NAMES, config="freeze.preset"),
        Setting(PRESET_K, "freeze", None, int, k_low, k_high, config="freeze.k"),
        Setting(PRESET_HEAD, "freeze", None, str, choices=TASKS, config="freeze.head"),
        Setting(FROZEN, "freeze", [], list, config="freeze.parts"),
        Setting(KEEPS, "freeze", [], list, choices=tuple(part_names.KINDS), config="freeze.parts"),
        *schedule_settings(),
        # The sweep popover's choices: how to vary the setup, not the setup itself.
        Setting("sweep_kind", "sweep", "freeze depth", str, choices=("freeze depth", "presets"), shared=False),
        Setting("sweep_seeds", "sweep", 2, int, 1, 10, shared=False),
        Setting("sweep_presets", "sweep", ["none", "top_quarter", "scenario2"], list, shared=False),
        # Beside Train: a LoRA run at this plan's budget queued behind it (the config's adapter, r: auto).
        Setting("also_lora", "train", False, bool),
    ]
    return {s.key: s for s in settings}


SETTINGS = _all_settings()


def bounds(key: str) -> tuple[float | None, float | None]:
    """A number widget's min and max: the config field's."""
    return SETTINGS[key].low, SETTINGS[key].high


def description(key: str) -> str | None:
    """The config field's description, for a widget's help."""
    setting = SETTINGS[key]
    if not setting.config or not setting.config.startswith("training."):
        return None
    return TrainingConfig.model_fields[setting.config.split(".")[-1]].description


def widget_defaults() -> dict[str, Any]:
    """The first value of every widget the page keys in st.session_state (the preset and the frozen parts
    are set by the freeze section's toggles and presets instead)."""
    return {key: (list(s.default) if isinstance(s.default, list) else s.default) for key, s in SETTINGS.items()
            if s.preset_in_state and (key not in FREEZE_KEYS or key == KEEPS)}
