"""One run trains at a time per device, across threads, tabs and processes."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

_thread_lock = threading.Lock()
_held = threading.local()  # the device this thread holds, so a sweep's members re-enter its lock


class BusyError(RuntimeError):
    """Another run is already training on this device."""


def lock_path(device: str) -> Path:
    return Path(os.environ.get("FREEZE_LAB_LOCK_DIR", tempfile.gettempdir())) / f"freeze-lab-train-{device}.lock"


@contextmanager
def training_lock(device: str):
    """Hold the device for one run; refuse at once (not queue) if it is taken.

    Re-entrant within one thread: a sweep holds the lock for all its members, so no other
    training can slip in between two of them.
    """
    if getattr(_held, "device", None) == device:
        yield
        return
    if not _thread_lock.acquire(blocking=False):
        raise BusyError("another run is already training in this process; wait for it or stop it")
    try:
        path = lock_path(device)
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"another run is already training on {device}; wait for it or stop it") from None
            _held.device = device
            try:
                yield
            finally:
                _held.device = None
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        _thread_lock.release()
