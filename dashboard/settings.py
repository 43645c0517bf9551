"""Where the page keeps things, and which local files a visitor may read.

Each can be changed with environment variables, so a teacher can point the page at a
shared runs folder or allow a data folder outside the project. A typed path is read
only if, after its links are resolved, it lies in an allowed folder, names no hidden
file or folder, and has a data file's extension: whatever pandas could parse is not
enough (a visitor could otherwise read ``~/.aws/credentials`` through the preview).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TASKS = ("topic", "sentiment")
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
ALLOWED_DIRS = "FREEZE_LAB_ALLOWED_DIRS"


def runs_dir() -> Path:
    return Path(os.environ.get("FREEZE_LAB_RUNS_DIR", PROJECT / "runs"))


def uploads_dir() -> Path:
    return Path(os.environ.get("FREEZE_LAB_UPLOADS_DIR", PROJECT / "uploads"))


def train_in_process() -> bool:
    """FREEZE_LAB_TRAIN_IN_PROCESS=1 trains in a thread of the server (for a debugger or profiler);
    by default each run is a child process, so the page costs training no speed."""
    return os.environ.get("FREEZE_LAB_TRAIN_IN_PROCESS", "") == "1"


def extra_allowed_dirs() -> list[str]:
    """The folders listed in FREEZE_LAB_ALLOWED_DIRS (separated by the OS path separator)."""
    return [p for p in os.environ.get(ALLOWED_DIRS, "").split(os.pathsep) if p]


def allowed_roots() -> list[Path]:
    """Folders whose files may be typed into the page: the project, the uploads folder and those
    listed in FREEZE_LAB_ALLOWED_DIRS. Not the home folder: list it there on a single-user machine."""
    return [Path(p).expanduser().resolve() for p in [PROJECT, uploads_dir(), *extra_allowed_dirs()]]


def _hidden(parts) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


def resolve_allowed(text: str) -> Path:
    """A typed path, links resolved, if it lies in an allowed folder and names nothing hidden; else
    ValueError. The message repeats what was typed, never where it leads or what the file holds."""
    try:
        typed = Path(text.strip()).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist here
        raise ValueError(f"{text}: no such home folder") from None
    if _hidden(typed.parts):
        raise ValueError(f"{text}: hidden files and folders (names starting with '.') are never read")
    path = (typed if typed.is_absolute() else PROJECT / typed).resolve()
    root = next((r for r in allowed_roots() if path == r or r in path.parents), None)
    if root is None:
        raise ValueError(f"{text}: outside the folders this page may read (the project, the uploads folder and "
                         f"{ALLOWED_DIRS}); the teacher can allow more with {ALLOWED_DIRS}")
    runs = runs_dir().expanduser().resolve()
    if path == runs or runs in path.parents:
        raise ValueError(f"{text}: inside the runs folder; run records are not data")
    if _hidden(path.relative_to(root).parts):
        raise ValueError(f"{text}: hidden files and folders (names starting with '.') are never read")
    return path


def check_local_path(text: str) -> Path:
    """A typed data file: in an allowed folder, nothing hidden, and a data file's extension."""
    path = resolve_allowed(text)
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise ValueError(f"{text}: not a data file; the page reads only {', '.join(DATA_SUFFIXES)} files")
    return path


def names_local_path(text: str) -> bool:
    """Whether a typed backbone or data set name would be read from disk rather than the hub: written as a
    path, or naming something that exists (core.backbones.typed_as_path only looks at how it is written)."""
    text = text.strip()
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~someone": a path, to a home folder that does not exist here
        return True
    return text.startswith((".", "~")) or path.is_absolute() or path.exists() or (PROJECT / path).exists()
