"""``python -m core ...`` in a child process.

The page's server is one Python process: everything it runs shares one GIL with
its reruns, widgets and websocket. Work that imports torch or trains (parameter
counts, device detection, training itself) therefore runs as the CLI in a child
process, and the page only reads what the child prints or writes to its run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RUN_FOLDER = "run folder: "  # ``train`` (and ``sweep``, per member) prints this on stderr once the run exists
SWEEP_FOLDER = "sweep folder: "  # ``sweep`` prints this on stderr once its folder exists, and last on stdout


def core_command(*args: str) -> list[str]:
    """The command line for ``python -m core <args>`` with this interpreter."""
    return [sys.executable, "-m", "core", *args]


def child_env() -> dict[str, str]:
    """The parent's environment, with the project importable from any working folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the parent as they are printed
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


def cache_dir() -> Path:
    """Where probe results (parameter counts, the device) are remembered between servers."""
    return Path(os.environ.get("FREEZE_LAB_CACHE_DIR", Path.home() / ".cache" / "freeze-lab")).expanduser()


def machine_fingerprint() -> str:
    """A key that changes with what decides the device and its label, read without importing torch:
    the host, the interpreter, torch's installed version, the GPUs the system and the environment show,
    and the CPU thread settings."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    gpus = sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")) if Path("/dev").is_dir() else []
    text = json.dumps([socket.gethostname(), platform.system(), platform.machine(), sys.executable, torch_version,
                       gpus, os.cpu_count(), *(os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"))])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_remembered(path: Path | None) -> dict | None:
    """A probe result stored by ``remember``, or None (not stored, unreadable, or no path)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None


def remember(path: Path | None, value: dict) -> None:
    """Store a probe result for the next server; a read-only home is no reason to fail."""
    from core.runs import atomic_write_json

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, value)
    except OSError:
        pass


def remembered_device_path() -> Path:
    return cache_dir() / f"device-{machine_fingerprint()}.json"


def remembered_device_label() -> str | None:
    """The label ``device_label`` stored for this machine as it is now, or None."""
    stored = read_remembered(remembered_device_path())
    return stored.get("label") if isinstance(stored, dict) else None


def device_label() -> str:
    """Which device training would use, as ``python -m core device`` says in a child (it imports torch);
    remembered on disk, so a restarted page shows it at once without a second torch import."""
    remembered = remembered_device_label()
    if remembered:
        return remembered
    label = run_core("device", timeout=120).strip()
    remember(remembered_device_path(), {"label": label})
    return label
