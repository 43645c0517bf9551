"""Task data: the built-in demo set, or per-task files / hub data sets through ``datasets``.

Every problem with the data surfaces as a ``DataError`` whose message is one line
naming the file and what is wrong, never a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from core.backbones import typed_as_path

DEMO_CSV = Path(__file__).parent / "demo_data" / "demo.csv"
DEMO_SOURCE = "demo"  # as a task's train: the built-in demo set's task of that name
FORMATS = {".csv": ("csv", ","), ".tsv": ("csv", "\t"), ".tab": ("csv", "\t"), ".json": ("json", None),
           ".jsonl": ("json", None), ".parquet": ("parquet", None)}
MAX_LABELS = 1000
MAX_FILE_MB = 1024


class DataError(ValueError):
    """Data that cannot be used; the message is one line naming the source."""


@dataclass
class TaskData:
    """One task's examples, with labels as indices into ``labels``."""

    name: str
    labels: list[str]
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    source: str = "demo"
    notes: list[str] = field(default_factory=list)

    def class_counts(self, split: str = "train") -> dict[str, int]:
        ids = self.train_labels if split == "train" else self.val_labels
        return {label: ids.count(i) for i, label in enumerate(self.labels)}


def validation_fingerprint(task: TaskData) -> str:
    """A hash of one task's validation texts and labels: two runs compare only if theirs agree, and a
    run's texts are read back (core.flips) only while the data still gives its stored one."""
    digest = hashlib.blake2b(digest_size=16)
    for text, label in zip(task.val_texts, task.val_labels):
        digest.update(f"{text}\x00{task.labels[label]}\x01".encode())
    return digest.hexdigest()


@dataclass
class Table:
    """Raw columns read from one source, before labels are indexed."""

    texts: list
    labels: list
    label_names: list[str] | None  # from a hub ClassLabel feature
    source: str
    notes: list[str] = field(default_factory=list)  # as read (how the text was decoded); kept by load_task


def load_tasks(config) -> dict[str, TaskData]:
    """All tasks of an ExperimentConfig; the demo set when it names none."""
    if not config.tasks:
        return load_demo_tasks()
    seed = config.training.seed if config.training.data_seed is None else config.training.data_seed
    return {name: load_task(name, task, seed) for name, task in config.tasks.items()}


# ---- the built-in demo set -------------------------------------------------------------


def load_demo_rows() -> list[dict[str, str]]:
    with DEMO_CSV.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def load_demo_tasks() -> dict[str, TaskData]:
    """Topic and sentiment from the demo set, with its fixed validation split."""
    rows = load_demo_rows()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "validation"]
    tasks = {}
    for task in ("topic", "sentiment"):
        labels = sorted({r[task] for r in rows}, key=_demo_order(task))
        index = {label: i for i, label in enumerate(labels)}
        tasks[task] = TaskData(
            name=task, labels=labels,
            train_texts=[r["text"] for r in train], train_labels=[index[r[task]] for r in train],
            val_texts=[r["text"] for r in val], val_labels=[index[r[task]] for r in val],
            source=f"built-in demo ({DEMO_CSV.name})",
        )
    return tasks


def demo_task(name: str) -> TaskData:
    """``train: demo``: one task of the built-in set, so a config can name the demo data and still set
    per-task keys (``trains_backbone``, ``loss_weight``)."""
    tasks = load_demo_tasks()
    if name not in tasks:
        raise DataError(f"task {name!r}: the built-in demo data has the tasks {' and '.join(tasks)}, "
                        f"so 'train: demo' needs one of those names")
    return tasks[name]


def _demo_order(task: str):
    order = {"sentiment": ["negative", "neutral", "positive"]}.get(task, [])
    return lambda label: (order.index(label) if label in order else len(order), label)


# ---- per-task files and hub data sets --------------------------------------------------


def load_task(name: str, task, seed: int = 0) -> TaskData:
    """Read one task's train (and validation) data, check it, and index its labels."""
    if task.train == DEMO_SOURCE:
        return demo_task(name)
    train = read_table(task.train, task, task.train_split)
    notes = list(train.notes)
    if task.validation or (is_hub_name(task.train) and task.validation_split):
        val = read_table(task.validation or task.train, task, task.validation_split or "validation")
        notes += [note for note in val.notes if note not in notes]
    else:
        train, val = split_table(train, task.validation_fraction, seed)
    train = cap(train, task.max_train_examples, seed)
    val = cap(val, task.max_validation_examples, seed)
    data = index_labels(name, train, val)
    data.notes = notes
    return data


def is_builder_name(name: str) -> bool:
    """Whether ``name`` is one of ``datasets``' file-format builders (csv, json, text, parquet, ...): given
    as a data set name, such a builder reads whatever matching files lie in the working folder."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return name.strip().lower() in _PACKAGED_DATASETS_MODULES


def is_hub_name(source: str) -> bool:
    path = Path(source).expanduser()
    return not path.exists() and path.suffix.lower() not in FORMATS and not typed_as_path(source)


def read_table(source: str, task, split: str) -> Table:
    """Read the text and label columns of a local file or a hub data set."""
    notes = []
    if is_hub_name(source):
        dataset = _load_hub(source, task.hub_subset, split)
        where = f"hub data set {source!r} ({split})"
    else:
        checked = check_file(source, task.encoding)
        dataset = _load_file(checked)
        where = str(source)
        notes = [checked.note] if checked.note else []
    columns = list(dataset.column_names)
    for role, column in (("text", task.text_column), ("label", task.label_column)):
        if column not in columns:
            raise DataError(f"{where}: no {role} column {column!r}; columns are: {_column_list(columns)}")
    if len(dataset) == 0:
        raise DataError(f"{where}: the file has a header but no rows")
    feature = dataset.features[task.label_column]
    names = list(feature.names) if hasattr(feature, "names") else None
    return Table(list(dataset[task.text_column]), list(dataset[task.label_column]), names, where, notes)


def _column_list(columns: list, limit: int = 20, width: int = 40) -> str:
    """The columns for a message: a header that is really data (a missing header, one huge line) stays short."""
    shown = [str(c) if len(str(c)) <= width else str(c)[:width] + "..." for c in columns[:limit]]
    text = ", ".join(shown) + (f" and {len(columns) - limit} more" if len(columns) > limit else "")
    if any(len(str(c)) > width or " " in str(c).strip() for c in columns):
        text += " (the first line is read as the header; does the file have one?)"
    return text


class CheckedFile(NamedTuple):
    """A data file that passed the checks, the encoding its text is read in (None: parquet, not text), and a
    note when that encoding was a fallback rather than UTF-8 or the task's own."""

    path: Path
    encoding: str | None
    note: str | None = None


FALLBACK_ENCODING = "cp1252"


def check_file(source: str, encoding: str = "auto") -> CheckedFile:
    """Catch the common file problems before a parser turns them into tracebacks."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: file not found")
    if path.is_dir():
        raise DataError(f"{source}: is a folder, not a data file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{source}: unsupported file type {suffix or '(none)'}; use {', '.join(FORMATS)}")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{source}: the file is empty")
    if size > MAX_FILE_MB * 2**20:
        raise DataError(f"{source}: the file is {size / 2**20:.0f} MB, over the {MAX_FILE_MB} MB limit")
    if FORMATS[suffix][0] == "parquet":
        return CheckedFile(path, None)
    raw = path.read_bytes()
    if encoding == "auto":
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # a byte-order mark: UTF-16/32 text, not binary
            raise DataError(f"{source}: the text is UTF-16, not UTF-8; save it as UTF-8")
        if b"\x00" in raw[:65536]:
            raise DataError(f"{source}: this is not a text file (it holds binary data)")
    text, used = decode_text(source, raw, encoding)
    if "\x00" in text[:65536]:  # in an encoding the task named: NUL is still no text
        raise DataError(f"{source}: this is not a text file (it holds binary data)")
    if not text.strip():
        raise DataError(f"{source}: the file is empty")
    note = (f"{source}: not UTF-8, read as Windows-1252 (cp1252); if characters look wrong, save it as UTF-8 or "
            "give the task's encoding") if encoding == "auto" and used == FALLBACK_ENCODING else None
    return CheckedFile(path, used, note)


def decode_text(source: str, raw: bytes, encoding: str = "auto") -> tuple[str, str]:
    """The file's text and the encoding it was read in.

    ``auto`` reads UTF-8, else Windows-1252: what Excel and most Windows tools save as "ANSI" text, and a
    superset of Latin-1's printable characters (with the euro sign and curly quotes). Windows-1252 leaves five
    bytes undefined, so a file in neither is still refused. Latin-1 is never guessed: it decodes every byte
    sequence, so it would accept a file in any encoding as garbled text without a word; ``encoding: latin-1``
    (or any other codec) in the task asks for it, and is then the only encoding tried.
    """
    if encoding != "auto":
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError as error:
            raise DataError(f"{source}: the text is not {encoding} (byte 0x{raw[error.start]:02x} at offset "
                            f"{error.start}); save it as UTF-8 or give the task's encoding") from None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as error:
        utf8_error = error
    try:
        return raw.decode(FALLBACK_ENCODING), FALLBACK_ENCODING
    except UnicodeDecodeError:
        raise DataError(f"{source}: the text is not UTF-8 (byte 0x{raw[utf8_error.start]:02x} at offset "
                        f"{utf8_error.start}); save it as UTF-8") from None


def _load_file(checked: CheckedFile):
    import datasets

    path = checked.path
    builder, delimiter = FORMATS[path.suffix.lower()]
    options = {}
    if builder == "csv":
        options = {"delimiter": delimiter, "keep_default_na": False}  # "NA" and "null" stay text
    if checked.encoding not in (None, "utf-8"):  # UTF-8 files are read (and cached) exactly as before
        options["encoding"] = checked.encoding
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parsers log each failure; ours is one line
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # parsers raise many types; the user needs one sentence
        cause = _root_cause(error)
        if "corresponds to no data" in cause:  # what datasets says for a header-only csv or an empty json list
            what = "has a header but no rows" if builder == "csv" else "holds no rows"
            raise DataError(f"{path}: the file {what}") from None
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", cause)
        if ragged:
            expected, line, saw = ragged.groups()
            raise DataError(f"{path}: line {line} has {saw} fields but the header has {expected}; "
                            "check that row's separators and quotes") from None
        raise DataError(f"{path}: cannot read it as {path.suffix.lower()[1:]}: {cause}") from None


def _load_hub(name: str, subset: str | None, split: str):
    import datasets

    if is_builder_name(name):
        raise DataError(f"hub data set {name!r}: that is a file format, not a data set; give the file's path")
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(name, subset, split=split)
    except Exception as error:
        cause = _root_cause(error)
        lowered = cause.lower()  # datasets 4 offline says "... is not cached in None"
        if "offline" in lowered or "connect" in lowered or "couldn't find" in lowered or "not cached" in lowered:
            cause = "it is not cached and the hub cannot be reached (offline); use a local file"
        raise DataError(f"hub data set {name!r}: {cause}") from None


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    line = text[-1] if text else type(error).__name__
    return line[:300]


def split_table(table: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """A seeded random train/validation split, for tasks without a validation file."""
    order = list(range(len(table.texts)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fraction))
    if len(order) - n_val < 2:
        raise DataError(f"{table.source}: only {len(order)} rows, too few to split off validation data")
    pick = lambda idx: Table([table.texts[i] for i in idx], [table.labels[i] for i in idx], table.label_names,
                             table.source)  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


def cap(table: Table, limit: int | None, seed: int) -> Table:
    """Keep a seeded random ``limit`` rows, so a file sorted by label still gives every class."""
    if limit is None or len(table.texts) <= limit:
        return table
    order = sorted(random.Random(seed + 1).sample(range(len(table.texts)), limit))
    return Table([table.texts[i] for i in order], [table.labels[i] for i in order], table.label_names,
                 table.source)


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def clean_texts(table: Table) -> Table:
    """Drop rows without text; refuse a column with no real text."""
    keep = [i for i, t in enumerate(table.texts) if not _is_blank(t)]
    if not keep:
        raise DataError(f"{table.source}: the text column is empty in every row")
    if all(isinstance(table.texts[i], (int, float)) or str(table.texts[i]).strip().replace(".", "").replace(
            "-", "").isdigit() for i in keep):
        raise DataError(f"{table.source}: the text column holds only numbers; did you pick the wrong column?")
    return Table([str(table.texts[i]) for i in keep], [table.labels[i] for i in keep], table.label_names,
                 table.source)


def label_names(table: Table) -> list:
    """Distinct labels in a stable order: numeric order for numbers, else alphabetical."""
    nan_text = [i for i, v in enumerate(table.labels) if isinstance(v, str) and v.strip().lower() == "nan"]
    blanks = sorted({*(i for i, v in enumerate(table.labels) if _is_blank(v)), *nan_text})  # "NaN": a missing value
    if blanks:
        what = "an empty or NaN label" if nan_text else "an empty label"
        raise DataError(
            f"{table.source}: {len(blanks)} row(s) have {what} (first at data row {blanks[0] + 1}); "
            "fill them in or remove them"
        )
    distinct = set(table.labels)
    if len(distinct) > MAX_LABELS:
        raise DataError(
            f"{table.source}: {len(distinct)} distinct labels (over {MAX_LABELS}); did you pick the text column "
            "as the label column?"
        )
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    return sorted(distinct) if numeric else sorted(distinct, key=str)


def _label_text(value, names: list[str] | None) -> str:
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def index_labels(name: str, train: Table, val: Table) -> TaskData:
    """Turn raw labels into indices, with the checks that need both splits."""
    train, val = clean_texts(train), clean_texts(val)
    raw = label_names(train)
    if len(raw) < 2:
        raise DataError(f"{train.source}: only one class ({_label_text(raw[0], train.label_names)!r}) in "
                        f"task {name!r}; a classifier needs two or more")
    labels = [_label_text(v, train.label_names) for v in raw]
    index = {label: i for i, label in enumerate(labels)}
    label_names(val)  # same blank / count checks
    val_text = [_label_text(v, val.label_names) for v in val.labels]
    both = len(set(labels) | set(val_text))
    if both > MAX_LABELS:  # each split under the limit, together over it: still the wrong column
        raise DataError(f"{train.source}: {both} distinct labels (over {MAX_LABELS}); did you pick the text column "
                        "as the label column?")
    unseen = sorted(set(val_text) - set(index))
    if unseen:
        raise DataError(f"{val.source}: validation labels never seen in training: {', '.join(unseen[:10])}")
    return TaskData(
        name=name, labels=labels,
        train_texts=train.texts, train_labels=[index[_label_text(v, train.label_names)] for v in train.labels],
        val_texts=val.texts, val_labels=[index[t] for t in val_text], source=train.source,
    )


def peek(source: str, hub_subset: str | None = None, split: str = "train", rows: int = 5) -> tuple[list[str], list[dict]]:
    """Column names and the first few rows of a file or hub data set, for choosing columns."""
    if is_hub_name(source):
        dataset = _load_hub(source, hub_subset, split)
    else:
        dataset = _load_file(check_file(source))
    return list(dataset.column_names), dataset.select(range(min(rows, len(dataset)))).to_list()
