"""``python -m core ...`` in a child process.

The page's server is one Python process: everything it runs shares one GIL with
its reruns, widgets and websocket. Work that imports torch or trains (parameter
counts, device detection, training itself) therefore runs as the CLI in a child
process, and the page only reads what the child prints or writes to its run folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RUN_FOLDER = "run folder: "  # ``train`` prints this on stderr once the run exists, so a caller can follow it


def core_command(*args: str) -> list[str]:
    """The command line for ``python -m core <args>`` with this interpreter."""
    return [sys.executable, "-m", "core", *args]


def child_env() -> dict[str, str]:
    """The parent's environment, with the project importable from any working folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the parent as they are printed
    return env


def trainer_env() -> dict[str, str]:
    """``child_env()`` for a trainer that shares the CPU with the page and its browser. OpenMP's
    worker threads spin while they wait for each other by default; when the browser takes a core for a
    moment, the spinning thread holds the other one and the whole step waits. Passive waiting gives
    the core back (the page's trainer ran about 15% faster with a browser drawing on 2 cores; alone it
    is as fast). A value already set in the environment wins."""
    env = child_env()
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def one_line_error(stderr: str, code: int) -> str:
    """The CLI's one-line message (``error: ...``), else the last line it printed (a traceback's end)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else f"the child process ended with exit code {code}"


_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def run_core(*args: str, timeout: float = 600) -> str:
    """Run a short CLI command at low priority (the page that asked comes first); its standard
    output, or ValueError with its one-line message."""
    low_priority = ["chrt", "--idle", "0"] if shutil.which("chrt") else ["nice", "-n", "19"] if shutil.which(
        "nice") else []
    process = subprocess.Popen([*low_priority, *core_command(*args)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    with _running_lock:
        _running.add(process)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise ValueError(f"'python -m core {args[0]}' took longer than {timeout:.0f} s") from None
    finally:
        with _running_lock:
            _running.discard(process)
    if process.returncode != 0:
        raise ValueError(one_line_error(err, process.returncode))
    return out


def stop_children() -> None:
    """End every ``run_core`` child still running (what a server restart does to them)."""
    with _running_lock:
        for process in _running:
            if process.poll() is None:
                process.kill()
