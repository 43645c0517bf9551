"""A setup in and out of the page: in its link (the query string) and as the YAML file that
``python -m core train --config`` reads.

Both ways in give a ``Setup`` (checked values per widget key, the freeze section, a lesson, and notes
on what could not be taken), which ``apply`` puts into ``st.session_state`` before any widget is drawn:
the link once per session, a loaded file in the uploader's callback. The freeze section waits in
``PENDING_FREEZE`` until the backbone's parts are known (``apply_pending_freeze``).

The link holds only settings that differ from their defaults, and is written at the end of each
whole-page run, after the widgets have settled, and only when it changed; writing it does not rerun
the page, so the widgets and the address bar never chase each other. Streamlit's own
``bind="query-params"`` is not used: it drops the value of a widget a run does not draw (a section a
lesson hides, the freeze toggles while a backbone loads) and corrects a bad value silently, where a
link here keeps them and says what it changed.

Neither way in passes the teacher's rules: a value over a visitor's limit falls back with a note, a
backbone the page does not offer is refused, and Train checks the limits again (``access.check_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from core import parts as part_names
from core.config import ConfigError, ExperimentConfig, LessonConfig, parse_config, parse_config_text
from core.freezing import FreezeError
from core.presets import preset_plan
from dashboard import access, lesson, resources
from dashboard.page_settings import (DEMO, FREEZE_KEYS, FROZEN, HUB, KEEPS, LOCAL_PATH, OWN, PRESET, PRESET_HEAD,
                                     PRESET_K, PRETRAINED, SCHEDULE_KEYS, SETTINGS, TRAINING_KEYS, UPLOAD, toggle_key,
                                     trains_backbone_key)
from dashboard.settings import TASKS, names_local_path

LINK_READ, NOTES, PENDING_FREEZE = "_link_read", "_setup_notes", "_pending_freeze"
LOAD_MESSAGE, SETUP_FILE = "_setup_loaded", "setup_file"
LESSON_PREFIX, UPLOAD_PREFIX = "lesson.", "upload:"
LESSON_LISTS = ("hide", "lock", "choices")  # lesson keys given once per item in a link


@dataclass
class Setup:
    values: dict[str, Any] = field(default_factory=dict)  # widget key -> checked value
    freeze: dict = field(default_factory=dict)  # preset, k, head, parts (<part>:<kind> too): the config's
    lesson: LessonConfig | None = None
    notes: list[str] = field(default_factory=list)


# ---- from a link ------------------------------------------------------------------------------------

def from_link(params: dict[str, list[str]]) -> Setup:
    """A link's setup; every key that is unknown or holds a bad value becomes a note, never an error."""
    setup, lesson_fields, freeze, keeps = Setup(), {}, {}, []
    for key, texts in params.items():
        text = texts[-1] if texts else ""
        if key.startswith(LESSON_PREFIX):
            name = key[len(LESSON_PREFIX):]
            lesson_fields[name] = texts if name in LESSON_LISTS else text
        elif key.startswith(UPLOAD_PREFIX) and key[len(UPLOAD_PREFIX):] in TASKS:
            setup.notes.append(f"task {key[len(UPLOAD_PREFIX):]}: its file ({text}) was uploaded, and files cannot "
                               "travel in a link; upload it again under 2. Data")
        elif key == FROZEN:
            freeze["parts"] = list(dict.fromkeys(t for t in texts if t))
        elif key == KEEPS:  # the kinds every frozen part keeps training, said once instead of per part
            keeps = [t for t in texts if t]
        elif key in SETTINGS and SETTINGS[key].shared:
            try:
                value = SETTINGS[key].parse(text)
            except ValueError as error:
                setup.notes.append(f"{error}; using the default")
                continue
            if key in (PRESET, PRESET_K, PRESET_HEAD):
                freeze[SETTINGS[key].config.split(".")[-1]] = value
            else:
                setup.values[key] = value
        else:
            setup.notes.append(f"unknown link key {key!r} ignored")
    if keeps:
        freeze["parts"] = with_keeps(freeze.get("parts", []), keeps, setup.notes)
    setup.freeze = checked_freeze(freeze, setup.notes)
    if lesson_fields:
        try:
            setup.lesson = parse_config({"lesson": lesson_fields}).lesson
        except ConfigError as error:
            setup.notes.append(f"{error}; the page opens without the lesson")
    return setup


def with_keeps(parts: list[str], keeps: list[str], notes: list[str]) -> list[str]:
    """``frozen_keeps`` applied to the frozen parts named without a kind: layer.3 and bias -> layer.3:bias."""
    unknown = [k for k in keeps if k not in SETTINGS[KEEPS].choices]
    if unknown:
        notes.append(f"{KEEPS}: no kind {', '.join(unknown)} (kinds: {', '.join(SETTINGS[KEEPS].choices)}); left out")
    kinds = [k for k in dict.fromkeys(keeps) if k not in unknown]
    named = []
    for part in parts:
        plain = part_names.split_kind(part)[1] is None
        named += [part_names.with_kind(part, kind) for kind in kinds] if plain and kinds else [part]
    return named


def checked_freeze(freeze: dict, notes: list[str]) -> dict:
    """The freeze section as the config checks it (a preset's k or head); a bad preset is left out."""
    try:
        return parse_config({"freeze": freeze}).freeze.model_dump()
    except ConfigError as error:
        notes.append(f"{error}; no preset applied")
        return {"parts": freeze.get("parts", [])}


# ---- from a setup file ------------------------------------------------------------------------------

def from_config(config: ExperimentConfig) -> Setup:
    """The page's values for a config; what the page has no widget for is named in a note."""
    setup = Setup(freeze=config.freeze.model_dump(), lesson=config.lesson)
    values = setup.values
    if config.init_from:
        values["warm_start"] = config.init_from
    else:
        values["backbone"] = config.backbone
    values["pooling"] = config.pooling
    values.update({key: getattr(config.training, key) for key in TRAINING_KEYS})
    if config.freeze.schedule is not None:
        values.update({key: getattr(config.freeze.schedule, name) for key, name in SCHEDULE_KEYS.items()})
    if config.adapter is not None:
        setup.notes.append("adapter: the page sets no adapters of its own (its switch 'Also train LoRA at this "
                           "budget' queues a LoRA run after this plan's); the file's adapter section is left out")
    defaults = ExperimentConfig()
    for name in ("head_dropout", "name"):
        if getattr(config, name) != getattr(defaults, name):
            setup.notes.append(f"{name} is not set on the page; it is left out")
    for name, value in config.training.model_dump().items():
        if name not in TRAINING_KEYS and value != getattr(defaults.training, name):
            setup.notes.append(f"training.{name} is not set on the page; the page trains with "
                               f"{getattr(defaults.training, name)!r}, not {value!r}")
    tasks = config.tasks or {}
    if not tasks or all(task.train == "demo" for task in tasks.values()):
        values["data_mode"] = DEMO
    else:
        values["data_mode"] = OWN
    for name, task in tasks.items():
        if name not in TASKS:
            setup.notes.append(f"task {name}: the page trains only {' and '.join(TASKS)}; it is left out")
    for name in TASKS:
        task = tasks.get(name)
        values[trains_backbone_key(name)] = task.trains_backbone if task else True
        if values["data_mode"] == OWN:
            values[f"use:{name}"] = task is not None
            if task is not None:
                values.update(task_values(name, task, setup.notes))
    return setup


def task_values(name: str, task, notes: list[str]) -> dict[str, Any]:
    """One task's data settings: a hub name, or a local file where this page may read one."""
    from core.data import is_hub_name

    values = {f"text_col:{name}": task.text_column, f"label_col:{name}": task.label_column,
              f"max_train:{name}": task.max_train_examples or 0}
    if task.train != "demo" and is_hub_name(task.train) and not names_local_path(task.train):
        values.update({f"source_kind:{name}": HUB, f"hub:{name}": task.train})
    elif access.local_paths_offered():
        values.update({f"source_kind:{name}": LOCAL_PATH, f"path:{name}": task.train})
    else:
        values[f"source_kind:{name}"] = UPLOAD
        notes.append(f"task {name}: this page does not read local files; upload {task.train} under 2. Data")
    skipped = [key for key, value in task.model_dump(exclude={"train", "text_column", "label_column",
                                                              "max_train_examples", "trains_backbone"}).items()
               if value != type(task).model_fields[key].default]
    if skipped:
        notes.append(f"task {name}: {', '.join(skipped)} not set on the page; left at the defaults")
    return values


# ---- into the page ----------------------------------------------------------------------------------

def apply(setup: Setup) -> None:
    """Put a setup into the page's state: every shared setting takes its value, or its default where the
    setup has none, within the teacher's rules; each change made here is a note."""
    state, notes = st.session_state, list(setup.notes)
    values = {**setup.values}
    check_teacher_rules(values, notes)
    for key, setting in SETTINGS.items():
        if not setting.shared or key in FREEZE_KEYS:
            continue
        if key in values:
            state[key] = values[key]
        elif setting.preset_in_state:
            state[key] = list(setting.default) if isinstance(setting.default, list) else setting.default
        else:
            state.pop(key, None)
    limit = access.limits().train_examples
    for task in TASKS:  # a visitor's page starts within the teacher's limit
        key = f"max_train:{task}"
        if limit and key not in values:
            state[key] = min(state[key], limit)
    state[PENDING_FREEZE] = setup.freeze
    state.pop("_preset", None)
    lesson.start(setup.lesson)
    state[NOTES] = notes


def check_teacher_rules(values: dict[str, Any], notes: list[str]) -> None:
    """Leave out what this visitor may not ask for: a backbone the page does not offer or a path on a
    shared page, a run that cannot be a start, numbers over the teacher's limits."""
    for task in TASKS:
        if values.get(f"source_kind:{task}") == LOCAL_PATH and not access.local_paths_offered():
            notes.append(f"source_kind:{task}: this page does not read local files; upload the file instead")
            values[f"source_kind:{task}"] = UPLOAD
    run_id = values.get("warm_start", PRETRAINED)
    if run_id != PRETRAINED and not usable_start(run_id):
        notes.append(f"warm_start: no finished run {run_id!r} with weights on this page; starting from the "
                     "pretrained backbone")
        values.pop("warm_start")
    if access.is_teacher():
        return
    limits = access.limits()
    backbone = values.get("backbone")
    if backbone is not None:
        try:
            if limits.backbones is not None and backbone not in limits.backbones:
                raise ValueError(f"backbone {backbone!r} is not offered on this page")
            if limits.backbones is None and access.served():
                access.check_hub_name(backbone, "backbone")
        except ValueError as error:
            notes.append(f"{error}; using the default")
            values.pop("backbone")
    for key, limit in (("epochs", limits.epochs), ("max_length", limits.max_length),
                       *((f"max_train:{t}", limits.train_examples) for t in TASKS)):
        value = values.get(key)
        if limit and value is not None and (value > limit or (key.startswith("max_train:") and value == 0)):
            notes.append(f"{key}={value} is over this page's limit of {limit}; using {limit}")
            values[key] = limit


def usable_start(run_id: str) -> bool:
    try:
        return resources.run_store().get(run_id, by_path=False).has_weights()
    except ValueError:
        return False


def apply_pending_freeze(parts: list[str]) -> None:
    """Once the backbone's parts are known: set the toggles from the setup's preset and parts; a part this
    backbone does not have, or a preset it cannot take, is a note."""
    state = st.session_state
    pending = state.pop(PENDING_FREEZE, None)
    if pending is None:
        return
    notes, frozen = state.setdefault(NOTES, []), set()
    if pending.get("preset"):
        name, k, head = pending["preset"], pending.get("k"), pending.get("head")
        try:
            frozen |= set(preset_plan(name, parts, k=k, head=head).frozen)  # bitfit's are <part>:<kind>
            state["_preset"] = {"preset": name, "k": k if name == "lower_k" else None,
                                "head": head if name == "scenario3" else None}
            state.update({key: value for key, value in ((PRESET_K, k), (PRESET_HEAD, head)) if value is not None})
        except FreezeError as error:
            notes.append(f"preset: {error}; no preset applied")
    named = pending.get("parts", [])
    unknown = [p for p in named if part_names.split_kind(p)[0] not in parts]
    if unknown:
        notes.append(f"frozen: this backbone has no part {', '.join(unknown)}; left out")
    frozen |= {p for p in named if p not in unknown}
    toggles_from_plan(parts, frozen, notes)


def toggles_from_plan(parts: list[str], frozen: set[str], notes: list[str]) -> None:
    """The toggles and the kinds frozen parts keep training (one choice for every part on the page) from a
    plan's names, ``layer.3`` or ``layer.3:bias``; a kind the page cannot hold is a note."""
    state, kinds_of = st.session_state, {}
    for name in frozen:
        part, kind = part_names.split_kind(name)
        kinds_of.setdefault(part, set()).add(kind)
    known = set(SETTINGS[KEEPS].choices)
    odd = sorted({kind for kinds in kinds_of.values() for kind in kinds if kind is not None and kind not in known})
    if odd:
        notes.append(f"frozen: no kind {', '.join(odd)} (kinds: {', '.join(SETTINGS[KEEPS].choices)}); left out")
    keeps = [k for k in SETTINGS[KEEPS].choices if any(k in kinds for kinds in kinds_of.values())]
    if any(kinds - set(odd) != set(keeps or [None]) for kinds in kinds_of.values()):
        notes.append(f"frozen: the page keeps the same kinds training in every frozen part; they all keep "
                     f"{', '.join(keeps) or 'nothing'}")
    state[KEEPS] = keeps
    for part in parts:
        state[toggle_key(part)] = part in kinds_of


def read_link() -> None:
    """Once per session, before any widget is drawn: the link's setup, if it holds one."""
    if LINK_READ in st.session_state:
        return
    st.session_state[LINK_READ] = True
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    if params:
        apply(from_link(params))


# ---- out of the page --------------------------------------------------------------------------------

def link_params(parts: list[str], frozen: list[str], preset: dict | None) -> dict[str, str | list[str]]:
    """The page's setup as query parameters: only what differs from the defaults."""
    state, out = st.session_state, {}
    for key, setting in SETTINGS.items():
        if setting.shared and key not in FREEZE_KEYS and key in state and relevant(key) \
                and state[key] != setting.default:
            out[key] = setting.text(state[key])
    for task in TASKS:
        upload = state.get(f"upload:{task}")
        if relevant(f"upload:{task}") and upload is not None:
            out[f"{UPLOAD_PREFIX}{task}"] = upload.name
    out.update(freeze_params(state.get(PENDING_FREEZE) if not parts else freeze_section(frozen, preset)))
    if (active := lesson.active()) is not None:
        for name, value in active.model_dump(exclude_defaults=True).items():
            out[f"{LESSON_PREFIX}{name}"] = value
    return out


def freeze_section(frozen: list[str], preset: dict | None) -> dict:
    """The toggles as a config's freeze section: the preset they match, else the frozen parts."""
    return {**preset, "parts": []} if preset else {"parts": frozen}


def freeze_params(freeze: dict | None) -> dict[str, str | list[str]]:
    if not freeze:
        return {}
    names = {PRESET: "preset", PRESET_K: "k", PRESET_HEAD: "head"}
    out = {key: SETTINGS[key].text(freeze[name]) for key, name in names.items() if freeze.get(name) is not None}
    if freeze.get("parts"):
        out[FROZEN] = list(freeze["parts"])
    return out


def section_keys(section: str) -> list[str]:
    """The widget keys of a page section (kept while a lesson hides it)."""
    return [key for key, setting in SETTINGS.items() if setting.section == section and key in st.session_state]


def relevant(key: str) -> bool:
    """Whether a data setting matters now: a task's source only for 'My own data', its path or hub name
    only for that kind of source."""
    state = st.session_state
    if ":" not in key or key.startswith("trains_backbone:"):
        return True
    kind, task = key.split(":", 1)
    if state.get("data_mode") != OWN or not state.get(f"use:{task}", True):
        return kind == "use" and state.get("data_mode") == OWN
    source = state.get(f"source_kind:{task}")
    return {"path": source == LOCAL_PATH, "hub": source == HUB, "upload": source == UPLOAD}.get(kind, True)


def write_link(parts: list[str], frozen: list[str], preset: dict | None) -> None:
    """At the end of a whole-page run: the address bar holds the setup (sent only when it changed)."""
    wanted = {key: value if isinstance(value, list) else [value]
              for key, value in link_params(parts, frozen, preset).items()}
    current = {key: st.query_params.get_all(key) for key in st.query_params}
    if wanted != current:
        st.query_params.from_dict(wanted)


def setup_yaml(frozen: list[str], preset: dict | None) -> str:
    """The setup as the YAML ``python -m core train --config`` reads (ConfigError if it is not complete)."""
    from core.config import dump_config
    from dashboard.form import current_config

    return dump_config(current_config(frozen, preset))


def load_setup_file() -> None:
    """The uploader's callback (before the page is drawn, so the widgets take the file's values)."""
    upload = st.session_state.get(SETUP_FILE)
    if upload is None:
        return
    try:
        text = upload.getvalue().decode("utf-8")
        config = parse_config_text(text, upload.name)
    except UnicodeDecodeError:
        st.session_state[LOAD_MESSAGE] = ("error", f"{upload.name}: the setup is not UTF-8 text; save it as UTF-8")
        return
    except ConfigError as error:
        st.session_state[LOAD_MESSAGE] = ("error", str(error))
        return
    apply(from_config(config))
    st.session_state[LOAD_MESSAGE] = ("success", f"Loaded {upload.name}: the page now shows its setup.")


# ---- on the page ------------------------------------------------------------------------------------

def notes_box() -> None:
    """What a link or a loaded file could not set, one line each, until dismissed."""
    notes = st.session_state.get(NOTES)
    if not notes:
        return
    st.warning("This setup was opened with changes:\n" + "\n".join(f"- {note}" for note in notes))
    st.button("Dismiss these notes", key="dismiss_setup_notes", on_click=st.session_state.pop, args=(NOTES, None))


def share_panel(frozen: list[str], preset: dict | None) -> None:
    """Download the setup as YAML, or load one; the address bar already holds it as a link."""
    with st.expander("Share or save this setup"):
        st.caption("The address bar holds this setup (only what differs from the defaults): copy it to share. "
                   "Uploaded files cannot travel in a link. The file below is the one "
                   "`python -m core train --config` reads.")
        try:
            text = setup_yaml(frozen, preset)
        except ValueError as error:  # ConfigError: the data is not chosen yet, a backbone not offered
            st.caption(f"No setup file yet: {error}")
        else:
            st.download_button("Download setup", text, file_name="freeze-lab-setup.yaml", mime="application/x-yaml",
                               key="download_setup", on_click="ignore")
            st.code(text, language="yaml")
        st.file_uploader("Load setup", type=["yaml", "yml", "json"], key=SETUP_FILE, on_change=load_setup_file,
                         help="A YAML file such as Download setup gives: the page's settings take its values.")
        if message := st.session_state.pop(LOAD_MESSAGE, None):
            (st.error if message[0] == "error" else st.success)(message[1])
