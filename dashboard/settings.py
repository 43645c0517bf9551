"""Where the page keeps things, and which local folders it may read.

Each can be changed with environment variables, so a teacher can point the
page at a shared runs folder or allow a data folder outside the project.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TASKS = ("topic", "sentiment")


def runs_dir() -> Path:
    return Path(os.environ.get("FREEZE_LAB_RUNS_DIR", PROJECT / "runs"))


def uploads_dir() -> Path:
    return Path(os.environ.get("FREEZE_LAB_UPLOADS_DIR", PROJECT / "uploads"))


def train_in_process() -> bool:
    """FREEZE_LAB_TRAIN_IN_PROCESS=1 trains in a thread of the server (for a debugger or profiler);
    by default each run is a child process, so the page costs training no speed."""
    return os.environ.get("FREEZE_LAB_TRAIN_IN_PROCESS", "") == "1"


def allowed_roots() -> list[Path]:
    """Folders whose files may be typed into the page: the project, the home folder, and
    any listed in FREEZE_LAB_ALLOWED_DIRS (separated by the OS path separator)."""
    extra = [p for p in os.environ.get("FREEZE_LAB_ALLOWED_DIRS", "").split(os.pathsep) if p]
    return [Path(p).expanduser().resolve() for p in [PROJECT, Path.home(), *extra]]


def check_local_path(text: str) -> Path:
    """Resolve a typed path and refuse it outside the allowed folders (links resolved first)."""
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = PROJECT / path
    path = path.resolve()
    if not any(path == root or root in path.parents for root in allowed_roots()):
        raise ValueError(f"{text}: outside the folders this page may read ({', '.join(map(str, allowed_roots()))}); "
                         "set FREEZE_LAB_ALLOWED_DIRS to allow more")
    return path
