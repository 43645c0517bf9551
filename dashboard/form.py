"""The experiment's inputs: backbone, data and training settings, all keyed in
``st.session_state``. ``current_config`` turns those keys into the one validated
ExperimentConfig that the CLI uses too."""

from __future__ import annotations

import contextlib
import hashlib
import html
import re
from collections import Counter
from pathlib import Path

import streamlit as st

from core.config import ConfigError, parse_config
from dashboard import access, lesson, resources
from dashboard.page_settings import (DEMO, HUB, LOCAL_PATH, NO_SCHEDULE, OWN, PRETRAINED, SCHEDULE_KEYS, SETTINGS,
                                     TRAINING_KEYS, UPLOAD, bounds, description, trains_backbone_key, widget_defaults)
from dashboard.settings import TASKS, check_local_path, names_local_path, resolve_allowed, uploads_dir

FILE_TYPES = ["csv", "tsv", "json", "jsonl", "parquet"]


def init_state() -> None:
    """Every setting at its default (page_settings), unless set already; a visitor's page starts within
    the teacher's limit on training examples."""
    limit = access.limits().train_examples
    for key, value in widget_defaults().items():
        if key.startswith("max_train:") and limit:
            value = min(value, limit)
        st.session_state.setdefault(key, value)


# ---- backbone ---------------------------------------------------------------------------------

def backbone_section(locked: bool = False) -> None:
    """Step 1; ``locked``: shown but not editable (a lesson's)."""
    st.subheader("1. Backbone")
    left, right = st.columns([3, 1])
    warm = st.session_state.get("warm_start", PRETRAINED) != PRETRAINED
    offered = offered_backbones()
    if offered is None:
        left.text_input("Pretrained encoder", key="backbone", disabled=warm or locked,
                        help="'minilm' is the packaged all-MiniLM-L6-v2 (works offline). Or type a Hugging Face hub "
                             "id such as distilbert-base-uncased, bert-base-uncased, roberta-base, or a local folder.")
    else:
        if st.session_state.backbone not in offered:
            st.session_state.backbone = offered[0]
        left.selectbox("Pretrained encoder", offered, key="backbone", disabled=warm or locked,
                       help="The backbones the teacher offers on this page.")
    right.radio("Pooling", SETTINGS["pooling"].choices, key="pooling", horizontal=True, disabled=locked,
                help="mean: average over tokens. cls: the first token (through the pooler, if the model has one).")
    runs = [r for r in resources.run_store().list() if r.has_weights()]
    options = [PRETRAINED] + [r.id for r in runs]
    if st.session_state.warm_start not in options:
        st.session_state.warm_start = PRETRAINED
    st.selectbox("Start from", options, key="warm_start", disabled=locked,
                 format_func=lambda v: "the pretrained backbone" if v == PRETRAINED else f"run {v} (its trained weights)",
                 help="Start from a finished run to evaluate a trained model on new data (scenario 1) or to freeze "
                      "a head that has already learned (scenario 3).")
    if warm:
        st.caption("The backbone, its pooling and the heads (with their labels) come from that run.")


def offered_backbones() -> list[str] | None:
    """The teacher's list of backbones to pick from (the teacher's own session too, so the widget stays
    the same when the passcode is given); None: any may be typed."""
    backbones = access.limits().backbones
    return list(backbones) if backbones is not None else None


def selected_backbone() -> str:
    """The backbone the run will start from: a warm-start run's trained backbone folder, one the teacher
    offers, or a typed one. A typed local path is resolved and must lie in an allowed folder; a visitor
    of a served page may only name hub models (ValueError otherwise)."""
    offered = offered_backbones()
    if st.session_state.get("warm_start", PRETRAINED) != PRETRAINED:
        run = resources.run_store().get(st.session_state.warm_start)
        if offered is not None and origin_backbone(run.config()) not in offered:
            raise ValueError(f"run {run.id} was trained from a backbone this page does not offer; start from "
                             f"{', '.join(offered)} instead")
        return str(run.backbone_dir)
    backbone = st.session_state.backbone.strip() or "minilm"
    if offered is not None:
        if backbone not in offered:
            raise ValueError(f"backbone {backbone!r} is not offered on this page; choose one of {', '.join(offered)}")
        return backbone  # the teacher's own entry: a name or a folder they chose
    if access.served() and not access.is_teacher():
        return access.check_hub_name(backbone, "backbone")
    return str(resolve_allowed(backbone)) if names_local_path(backbone) else backbone  # its files checked on load


def origin_backbone(config) -> str:
    """Where a config's weights come from in the end: its backbone, or for a warm start the backbone of the
    first run of the chain (a warm-started run's own backbone is a run folder)."""
    store = resources.run_store()
    for _ in range(50):  # a chain longer than this is not one the page made
        if not config.init_from:
            return config.backbone
        try:
            config = store.get(config.init_from).config()
        except ValueError:  # the run is gone or unreadable: judge by what is left
            break
    return config.backbone


def hub_source(typed: str) -> str:
    """A typed hub data set name, checked as a name: a path typed here is never read."""
    from core.data import is_builder_name, is_hub_name

    if names_local_path(typed.strip()) and not access.served():  # on one's own computer: say where to go instead
        raise ValueError(f"hub data set {typed!r}: that is a local file name; use 'Upload a file' or 'Local path'")
    name = access.check_hub_name(typed, "hub data set")
    if is_builder_name(name):
        raise ValueError(f"hub data set {typed!r}: that is a file format, not a data set; use 'Upload a file'"
                         + (" or 'Local path'" if access.local_paths_offered() else ""))
    if not is_hub_name(name):  # e.g. 'table.csv': a file name, read from disk by the engine
        raise ValueError(f"hub data set {typed!r}: that is a local file name; use 'Upload a file'"
                         + (" or 'Local path'" if access.local_paths_offered() else ""))
    return name


# ---- data -------------------------------------------------------------------------------------

def data_section(locked: bool = False) -> None:
    """Step 2; ``locked``: shown but not editable (a lesson's)."""
    st.subheader("2. Data")
    st.radio("Examples", SETTINGS["data_mode"].choices, key="data_mode", horizontal=True, disabled=locked,
             help="The demo set has about 1,400 short sentences, each with a topic and a sentiment.")
    if st.session_state.data_mode == DEMO:
        demo_preview()
        return
    for task in TASKS:
        with st.expander(f"Task '{task}'", expanded=True):
            task_inputs(task, locked)


def hidden_data_sources() -> None:
    """Step 2 hidden by a lesson: each task's source from its settings, as if drawn (an upload cannot be)."""
    for task in TASKS:
        source = None
        if st.session_state.data_mode == OWN and st.session_state.get(f"use:{task}"):
            with contextlib.suppress(ValueError):  # the same check fails again, with its message, at Train
                source = typed_source(task, st.session_state.get(f"source_kind:{task}"))
        st.session_state[f"source:{task}"] = source


def typed_source(task: str, kind: str | None) -> str | None:
    """A task's typed local path or hub name, checked (ValueError, one line); None when none is typed."""
    if kind == LOCAL_PATH and access.local_paths_offered() and (typed := st.session_state.get(f"path:{task}")):
        return str(check_local_path(typed))
    if kind == HUB and (typed := st.session_state.get(f"hub:{task}")):
        return hub_source(typed)
    return None


@st.cache_data(show_spinner=False)
def _demo_rows() -> list[dict]:
    from core.data import load_demo_rows

    return load_demo_rows()


def demo_preview() -> None:
    rows = _demo_rows()
    cols = st.columns([2, 1, 1])
    cols[0].markdown(markdown_table(rows[:6], ["text", "topic", "sentiment"]))  # text only: fast to draw
    for column, field in zip(cols[1:], ("topic", "sentiment")):
        with column:
            balance_bars(field, dict(sorted(Counter(row[field] for row in rows).items())))


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def balance_bars(title: str, counts: dict[str, int]) -> None:
    """Examples per class as plain HTML bars: light enough to be on the first screen at once."""
    top = max(counts.values(), default=1) or 1
    bars = "".join(
        f'<div style="display:flex;align-items:center;gap:6px;font:13px sans-serif;margin:3px 0">'
        f'<div style="width:38%;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">'
        f'{html.escape(str(label))}</div><div style="flex:1"><div style="background:#2f6fde;height:14px;'
        f'width:{100 * n / top:.1f}%"></div></div><div style="width:44px">{n:,}</div></div>'
        for label, n in counts.items())
    st.html(f'<div style="font:600 13px sans-serif;margin-bottom:4px">{html.escape(title)}: examples per class</div>'
            f"{bars}")


def task_inputs(task: str, locked: bool = False) -> None:
    if not st.checkbox(f"Train a '{task}' head", key=f"use:{task}", disabled=locked):
        return
    kinds = [UPLOAD, LOCAL_PATH, HUB] if access.local_paths_offered() else [UPLOAD, HUB]
    if st.session_state.get(f"source_kind:{task}") not in kinds:
        st.session_state[f"source_kind:{task}"] = kinds[0]
    kind = st.radio("Source", kinds, key=f"source_kind:{task}", horizontal=True, disabled=locked)
    source = None
    if kind == UPLOAD:
        upload = st.file_uploader(f"{task} training file", type=FILE_TYPES, key=f"upload:{task}", disabled=locked)
        try:
            source = save_upload(upload) if upload is not None else None
        except ValueError as error:
            st.error(str(error))
    else:
        label = ("Path to a csv/tsv/json/jsonl/parquet file" if kind == LOCAL_PATH
                 else "Hub data set name (e.g. ag_news, sst2)")
        st.text_input(label, key=f"{'path' if kind == LOCAL_PATH else 'hub'}:{task}", disabled=locked)
        try:
            source = typed_source(task, kind)
        except ValueError as error:
            st.error(str(error))
    st.session_state[f"source:{task}"] = source
    if not source:
        return
    columns, rows, error = peek_source(source)
    if error:
        st.error(error)
        return
    st.dataframe(rows, hide_index=True)
    choose_column(f"text_col:{task}", columns, columns.index("text") if "text" in columns else 0)
    choose_column(f"label_col:{task}", columns,
                  columns.index("label") if "label" in columns else min(1, len(columns) - 1))
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Text column", columns, key=f"text_col:{task}", disabled=locked)
    c2.selectbox("Label column", columns, key=f"label_col:{task}", disabled=locked)
    c3.number_input("Max training examples (0: all)", *bounds(f"max_train:{task}"), step=500, key=f"max_train:{task}",
                    disabled=locked)
    check = checked_task(task)
    if isinstance(check, str):
        st.error(check)
    else:
        st.caption(f"{len(check.train_texts)} training and {len(check.val_texts)} validation examples "
                   f"(validation: a seeded 20% split); classes: {', '.join(check.labels[:12])}")
        for note in check.notes:
            st.caption(note)
        balance_bars(task, check.class_counts())


def choose_column(key: str, columns: list[str], default: int) -> None:
    """A column picker's value: the one chosen (or given by a link or setup file) if the file has it, else
    its default column, with a note when a given name is not in this file."""
    wanted = st.session_state.get(key)
    if wanted in columns:
        return
    if wanted is not None:
        st.caption(f"{key}: this file has no column {wanted!r}; using {columns[default]!r}.")
    st.session_state[key] = columns[default]


def save_upload(upload) -> str:
    """Store an upload under uploads/<content hash>/ with a safe name; it is only ever parsed, never run."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    # only the base name, safe characters, no leading dot (so never ".." or a hidden file)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.name).name).lstrip(".")[-100:] or "upload.csv"
    folder = uploads_dir() / digest
    path = folder / name
    tmp = folder / f".{name}.part"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp.write_bytes(data)
            tmp.replace(path)  # write then rename: a full disk never leaves a truncated file under the real name
    except OSError as error:  # a full disk or an unusable uploads folder: a message, not a traceback
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot store the upload in {uploads_dir()}: {error.strerror or error}") from None
    return str(path)


@st.cache_data(show_spinner="Reading the file...", max_entries=32)
def peek_source(source: str) -> tuple[list[str], list[dict], str | None]:
    from core.data import DataError, peek

    try:
        columns, rows = peek(source)
        return columns, rows, None
    except DataError as error:
        return [], [], str(error)


def task_config(task: str) -> dict | None:
    source = st.session_state.get(f"source:{task}")
    if not st.session_state.get(f"use:{task}") or not source:
        return None
    config = {"train": source, "text_column": st.session_state.get(f"text_col:{task}", "text"),
              "label_column": st.session_state.get(f"label_col:{task}", "label")}
    if st.session_state.get(f"max_train:{task}"):
        config["max_train_examples"] = int(st.session_state[f"max_train:{task}"])
    return config


def checked_task(task: str):
    """The task's data, checked exactly as training will check it; a message string if it is bad."""
    config = task_config(task)
    if not config:
        return "choose a source first"
    return _check(task, tuple(sorted(config.items())), int(st.session_state.get("seed", 0)))


@st.cache_data(show_spinner="Checking the data...", max_entries=32)
def _check(task: str, items: tuple, seed: int):
    """Cached on all it depends on: the task name (it is in the messages), the source and columns, the seed."""
    from core.config import TaskConfig
    from core.data import DataError, load_task

    try:
        return load_task(task, TaskConfig(**dict(items)), seed=seed)
    except DataError as error:
        return str(error)


def task_labels() -> dict[str, list[str]]:
    """Label names per task in use (the demo's, or the checked files')."""
    if st.session_state.data_mode == DEMO:
        return {"topic": ["Food", "Sports", "Technology", "Travel"], "sentiment": ["negative", "neutral", "positive"]}
    out = {}
    for task in TASKS:
        if task_config(task):
            data = checked_task(task)
            out[task] = data.labels if not isinstance(data, str) else ["?", "?"]
    return out


def train_counts() -> dict[str, int]:
    """Training examples per task of a visitor's own data, for the visitor limits. The built-in demo set is
    not counted: it cannot be made smaller, and a lesson on it must always be able to run."""
    if st.session_state.data_mode == DEMO:
        return {}
    counts = {}
    for task in TASKS:
        if task_config(task) and not isinstance(data := checked_task(task), str):
            counts[task] = len(data.train_texts)
    return counts


# ---- settings ---------------------------------------------------------------------------------

def settings_section(locked: bool = False) -> None:
    """Step 4; ``locked``: shown but not editable (a lesson's)."""
    st.subheader("4. Settings")
    c = st.columns(5)
    c[0].number_input("Epochs", *bounds("epochs"), key="epochs", disabled=locked, help="Passes over the training data.")
    c[1].number_input("Batch size", *bounds("batch_size"), key="batch_size", disabled=locked,
                      help="Sentences per training step.")
    c[2].number_input("Learning rate (backbone)", *bounds("learning_rate"), key="learning_rate", format="%.1e",
                      step=1e-5, disabled=locked, help=description("learning_rate"))
    c[3].number_input("Learning rate (heads)", *bounds("head_learning_rate"), key="head_learning_rate",
                      format="%.1e", step=1e-4, disabled=locked,
                      help="Heads start from scratch, so they learn with a larger rate.")
    c[4].number_input("Layer-wise LR decay", *bounds("layer_lr_decay"), key="layer_lr_decay", format="%.2f",
                      step=0.05, disabled=locked,
                      help=f"{description('layer_lr_decay')}. The Freeze step's table shows each part's rate.")
    c = st.columns(4)
    c[0].number_input("Max length (tokens)", *bounds("max_length"), key="max_length", disabled=locked,
                      help="Longer sentences are cut; a backbone's own limit (often 512) caps it.")
    c[1].number_input("Seed", *bounds("seed"), key="seed", disabled=locked, help="Same seed, same config: same run.")
    c[2].number_input("Evaluate every N steps", *bounds("eval_every"), key="eval_every", disabled=locked,
                      help="0: once per epoch. There is always a final evaluation.")
    c[3].toggle("Cache the frozen prefix", key="cache_frozen_prefix", disabled=locked,
                help="Compute the frozen embeddings and lower layers once and reuse them. Much faster; the cached "
                     "part runs without dropout, which is a (small) difference from training it uncached.")
    if not access.is_teacher():
        limits = access.limits()
        if limits.problem:
            st.error(limits.problem)
        elif limits.describe():
            st.caption(f"Limits on this page: {limits.describe()}.")
    label = resources.known_device_label()
    if label:
        st.caption(f"Device: {label}")
    else:
        st.fragment(run_every=1.0)(device_caption)()  # until it is known; the next page run stops polling


def device_caption() -> None:
    st.caption(f"Device: {resources.known_device_label() or 'detecting...'}")


# ---- the config ------------------------------------------------------------------------------

def schedule_config() -> dict | None:
    """freeze.schedule from the Freeze step's schedule controls; None: the plan stays fixed."""
    s = st.session_state
    if s.schedule_kind == NO_SCHEDULE:
        return None
    return {name: int(s[key]) if name == "every" else s[key] for key, name in SCHEDULE_KEYS.items()}


def current_config(frozen: list[str], preset: dict | None):
    """The ExperimentConfig the inputs describe; raises ConfigError with one line."""
    s = st.session_state
    try:
        backbone = selected_backbone()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    data = {
        "backbone": backbone, "pooling": s.pooling,
        "freeze": {**(preset or {}), "parts": frozen, "schedule": schedule_config()},
        "training": {key: s[key] for key in TRAINING_KEYS},
    }
    if s.warm_start != PRETRAINED:
        data["init_from"] = s.warm_start
    if s.data_mode == OWN:
        tasks = {t: c for t in TASKS if (c := task_config(t))}
        if not tasks and lesson.hidden("data"):  # the student has no way to choose it
            raise ConfigError("this lesson hides the Data step but names no data this page can read (an upload "
                              "is each visitor's own): the teacher should point the lesson at the demo data or a "
                              "file in an allowed folder")
        if not tasks:
            raise ConfigError("choose the data for at least one task, or use the built-in demo data")
        for task in tasks:
            check = checked_task(task)
            if isinstance(check, str):
                raise ConfigError(f"task {task}: {check}")
        data["tasks"] = tasks
    elif not all(s.get(trains_backbone_key(t), True) for t in TASKS):  # the demo data, named per task
        data["tasks"] = {t: {"train": "demo"} for t in TASKS}
    for task, section in (data.get("tasks") or {}).items():
        if not s.get(trains_backbone_key(task), True):
            section["trains_backbone"] = False
    if (active := lesson.active()) is not None:
        data["lesson"] = active.model_dump()
    return parse_config(data)
