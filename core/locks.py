"""One run trains at a time per device, across threads, tabs and processes."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

_thread_lock = threading.Lock()
_queue = threading.local()  # the device a sweep in this thread holds for its members


class BusyError(RuntimeError):
    """Another run is already training on this device."""


def lock_path(device: str) -> Path:
    return Path(os.environ.get("FREEZE_LAB_LOCK_DIR", tempfile.gettempdir())) / f"freeze-lab-train-{device}.lock"


@contextmanager
def training_lock(device: str, queue: bool = False):
    """Hold the device for one run; refuse at once (not queue) if it is taken.

    ``queue=True`` holds it for a queue of runs (a sweep): runs this thread starts inside
    it go ahead, so no other training slips in between two members.
    """
    if getattr(_queue, "device", None) == device:
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
            _queue.device = device if queue else None
            try:
                yield
            finally:
                _queue.device = None
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        _thread_lock.release()
