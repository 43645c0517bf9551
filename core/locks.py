"""One run trains at a time per device, across threads, tabs and processes."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

_thread_lock = threading.Lock()


class BusyError(RuntimeError):
    """Another run is already training on this device."""


def lock_path(device: str) -> Path:
    return Path(os.environ.get("FREEZE_LAB_LOCK_DIR", tempfile.gettempdir())) / f"freeze-lab-train-{device}.lock"


@contextmanager
def training_lock(device: str):
    """Hold the device for one run; refuse at once (not queue) if it is taken."""
    if not _thread_lock.acquire(blocking=False):
        raise BusyError("another run is already training in this process; wait for it or stop it")
    try:
        path = lock_path(device)
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"another run is already training on {device}; wait for it or stop it") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        _thread_lock.release()
