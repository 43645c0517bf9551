"""One run trains at a time per device, across threads, tabs and processes.

The lock between processes is ``filelock``'s: an OS lock on every platform (``flock`` on
Linux and macOS, ``msvcrt.locking`` on Windows), released by the OS when its holder dies.

A sweep spread over devices (``sweep --devices``) holds the lock itself and trains each member in a
child process; ``HELD_BY_PARENT`` in a child's environment names the device its parent holds for it.
One run over several processes (``accelerate launch``) takes it once per machine (core.distributed).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

_thread_lock = threading.Lock()
_queue = threading.local()  # the device a sweep in this thread holds for its members
HELD_BY_PARENT = "FREEZE_LAB_LOCK_HELD"  # a sweep's child: the device its parent process holds the lock of


class BusyError(RuntimeError):
    """Another run is already training on this device."""


def lock_path(device: str) -> Path:
    return Path(os.environ.get("FREEZE_LAB_LOCK_DIR", tempfile.gettempdir())) / f"freeze-lab-train-{device}.lock"


@contextmanager
def training_lock(device: str, queue: bool = False) -> Iterator[None]:
    """Hold the device for one run; refuse at once (not queue) if it is taken.

    ``queue=True`` holds it for a queue of runs (a sweep): runs this thread starts inside
    it go ahead, so no other training slips in between two members.
    """
    if getattr(_queue, "device", None) == device or os.environ.get(HELD_BY_PARENT) == device:
        yield
        return
    if not _thread_lock.acquire(blocking=False):
        raise BusyError("another run is already training in this process; wait for it or stop it")
    try:
        lock = FileLock(lock_path(device), blocking=False)
        try:
            lock.acquire()
        except Timeout:
            raise BusyError(f"another run is already training on {device}; wait for it or stop it") from None
        _queue.device = device if queue else None
        try:
            yield
        finally:
            _queue.device = None
            lock.release()
    finally:
        _thread_lock.release()
