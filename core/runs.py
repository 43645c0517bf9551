"""The run store: one folder per run, which is the whole record of that run.

``<runs dir>/<run id>/`` holds ``config.yaml``, ``metrics.jsonl`` (appended as
events happen), ``summary.json`` (rewritten atomically), and the weights
(``backbone/`` and ``heads.safetensors``), ``predictions.json`` (the final evaluation's
prediction for each validation example) and ``notes.json`` (the user's note and tags). The
page, the CLI and comparisons all read runs back through this module, live or finished alike.

The note and tags have a file of their own because training rewrites the summary while it runs:
a note set meanwhile could be lost between the trainer's read and its write. Nothing but
``Run.annotate`` writes ``notes.json``, under a lock, so two writers (the page and the CLI) both keep theirs.

While a run trains, a ``stop`` file appearing in its folder asks its trainer to stop
after the current step: a request any process can make on any OS, with no signal. The
trainer deletes it when the run ends; one written later is harmless, as only that run's
trainer reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from core import events as ev
from core.config import ExperimentConfig, LessonConfig, dump_config, load_config
from core.presets import plan_label

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
ACTIVE = "running"
CHANGED_TENSORS = "tensors.safetensors"  # in changed/: the backbone tensors training could change
PREDICTIONS = "predictions.json"  # per task: label names, true and predicted indices, confidence
NOTES = "notes.json"  # {"note": text, "tags": [tag, ...]}: what the user wrote about the run
MAX_NOTE_CHARS, MAX_TAGS = 1000, 20
TAG = re.compile(r"^[\w.:+-]{1,32}$")  # one word: letters (any script), digits, '.', ':', '+', '-', '_'
MIN_FREE_MB = 200
# On Windows a rename onto a file fails while another process has it open (the page reading a
# summary): such a rename is tried again for about a second. Elsewhere it never waits.
REPLACE_TRIES = 20 if os.name == "nt" else 1


class RunError(ValueError):
    """A run that cannot be found, created or changed; one line."""


def clean_tag(text: str) -> str:
    """A tag as stored: trimmed and lower-case, so 'Baseline' and 'baseline' are one tag."""
    tag = text.strip().lower()
    if not TAG.fullmatch(tag):
        raise RunError(f"invalid tag {text!r}: one word of 1 to 32 letters, digits, '.', ':', '+', '-' or '_'")
    return tag


def clean_note(text: str) -> str:
    note = text.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise RunError(f"a note has at most {MAX_NOTE_CHARS} characters, not {len(note)}")
    return note


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename, so that a crash never leaves a half-written file.

    The temporary name is per process and per thread: the page's thread may rename a
    run while the trainer's thread rewrites the same summary.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(tmp, path)
    except BaseException:  # the old file stays whole; no stray temporary is left behind
        tmp.unlink(missing_ok=True)
        raise


def replace_file(tmp: Path, path: Path) -> None:
    """os.replace, tried again while Windows says the target is in use (see REPLACE_TRIES)."""
    for attempt in range(1, REPLACE_TRIES + 1):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if attempt == REPLACE_TRIES:
                raise
            time.sleep(0.05)


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False))


def request_stop_at(path: Path) -> None:
    """Write a stop request file (atomically, so a reader never sees half of one)."""
    atomic_write_text(path, f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')} by process {os.getpid()}\n")


def pid_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether process ``pid`` runs on this host. psutil, because ``os.kill(pid, 0)`` on Windows
    is no probe: it sends a console Ctrl-C event."""
    import psutil

    if not pid or (host and host != socket.gethostname()):
        return False
    return psutil.pid_exists(pid)


def parse_events(lines: list[bytes]) -> list:
    """The events among metrics.jsonl lines; a line that is not one (torn, or unknown) is skipped."""
    out = []
    for line in lines:
        try:
            out.append(ev.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError):  # UnicodeDecodeError is a ValueError
            continue
    return out


class Run:
    """One run's folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    backbone_dir = property(lambda self: self.path / "backbone")
    changed_dir = property(lambda self: self.path / "changed")  # training.save: changed
    adapter_dir = property(lambda self: self.path / "adapter")  # a LoRA run's adapter, as peft saves it
    heads_path = property(lambda self: self.path / "heads.safetensors")
    predictions_path = property(lambda self: self.path / PREDICTIONS)  # the final evaluation, per example
    stop_path = property(lambda self: self.path / "stop")
    notes_path = property(lambda self: self.path / NOTES)

    def request_stop(self) -> None:
        """Ask the run's trainer to stop after its current step; asking twice is asking once."""
        request_stop_at(self.stop_path)

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop_request(self) -> None:
        """The run has ended: a finished record keeps no stale request."""
        self.stop_path.unlink(missing_ok=True)

    def summary(self) -> dict:
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"run_id": self.id, "status": "unknown"}

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def update_summary(self, **changes) -> dict:
        summary = {**self.summary(), **changes}
        self.write_summary(summary)
        return summary

    def notes(self) -> dict:
        """The note and tags; a run without any (or with an unreadable file) has an empty note and no tags."""
        try:
            data = json.loads(self.notes_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"note": "", "tags": []}
        data = data if isinstance(data, dict) else {}
        note, tags = data.get("note"), data.get("tags")
        return {"note": note if isinstance(note, str) else "",
                "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []}

    @property
    def note(self) -> str:
        return self.notes()["note"]

    @property
    def tags(self) -> list[str]:
        return self.notes()["tags"]

    def annotate(self, note: str | None = None, add: Iterable[str] = (), remove: Iterable[str] = ()) -> dict:
        """Set the note (None keeps it, "" clears it), add tags, then remove tags; returns what is saved.

        A running run may be annotated too: training never writes this file. Everything is checked before
        anything is written, and the file is replaced whole, so a refused change leaves the old note intact.
        """
        note = None if note is None else clean_note(note)
        add, remove = [clean_tag(t) for t in add], {clean_tag(t) for t in remove}
        try:
            with FileLock(self.path / f".{NOTES}.lock", timeout=10):
                saved = self.notes()
                tags = [t for t in dict.fromkeys([*saved["tags"], *add]) if t not in remove]
                if len(tags) > MAX_TAGS:
                    raise RunError(f"a run has at most {MAX_TAGS} tags; remove some first")
                notes = {"note": saved["note"] if note is None else note, "tags": tags}
                atomic_write_json(self.notes_path, notes)
        except Timeout:
            raise RunError(f"run {self.id}'s note is being saved by another process; try again") from None
        except OSError as error:
            raise RunError(f"cannot save run {self.id}'s note and tags: {error.strerror or error}") from None
        return notes

    def config(self) -> ExperimentConfig:
        return load_config(self.config_path)

    def record_guess(self, lesson: LessonConfig, guess: str) -> None:
        """Keep a student's answer to the lesson's question in the summary's ``lesson`` entry, beside the
        question, so the page can later show the guess beside what the run measured (ConfigError: not a
        guess this lesson takes)."""
        self.update_summary(lesson={"title": lesson.title, "ask": lesson.ask, "choices": lesson.choices,
                                    "guess": lesson.checked_guess(guess)})

    def append_event(self, event) -> None:
        """A subscriber: one JSON line per event, flushed at once."""
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(ev.to_dict(event)) + "\n")

    def events(self) -> list:
        """Every stored event; a torn last line (a crash mid-write) is skipped."""
        if not self.metrics_path.exists():
            return []
        return parse_events(self.metrics_path.read_bytes().splitlines())

    def events_since(self, offset: int = 0) -> tuple[list, int]:
        """The events appended after byte ``offset`` of metrics.jsonl, and the offset to ask from next.

        Only whole lines are read: a last line without its newline (being written, or torn by a crash)
        is left where it is and read by the call after it is complete, so across calls each event comes
        back exactly once. A tick of the live view then costs what was appended, not the whole log."""
        if offset < 0:
            raise RunError(f"an offset into metrics.jsonl cannot be negative ({offset})")
        try:
            with open(self.metrics_path, "rb") as handle:  # bytes: offsets mean the same on every OS
                handle.seek(offset)
                appended = handle.read()
        except FileNotFoundError:  # no event yet
            return [], offset
        whole = appended.rfind(b"\n") + 1
        return parse_events(appended[:whole].splitlines()), offset + whole

    @property
    def status(self) -> str:
        return self.summary().get("status", "unknown")

    @property
    def name(self) -> str:
        return self.summary().get("name") or self.id

    def has_weights(self) -> bool:
        """Heads and a backbone: a full ``backbone/`` folder, or ``changed/`` (rebuilt on its base when loaded)."""
        return self.heads_path.exists() and ((self.backbone_dir / "config.json").exists()
                                             or (self.changed_dir / CHANGED_TENSORS).exists())

    def disk_bytes(self) -> int:
        """What the run folder holds on disk, weights included."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


class EventLog:
    """A run's events read so far, grown with ``events_since``: each ``update`` parses only what the
    trainer appended since the last one. One object may serve several page sessions at once."""

    def __init__(self, run: Run):
        self.run = run
        self.offset = 0
        self._events: list = []
        self._lock = threading.Lock()

    def update(self) -> list:
        """Every event so far (a copy: a later update does not change what the caller holds)."""
        with self._lock:
            new, self.offset = self.run.events_since(self.offset)
            self._events.extend(new)
            return list(self._events)


class RunStore:
    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root).expanduser()

    def check_writable(self) -> None:
        """Fail before training, not halfway: the folder must exist or be creatable, and have room."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}-{threading.get_ident()}"  # two threads, two probes
            probe.write_text("ok", encoding="utf-8")
            probe.unlink()
        except OSError as error:
            raise RunError(f"cannot write to the runs folder {self.root}: {error.strerror or error}") from None
        free_mb = shutil.disk_usage(self.root).free / 2**20
        if free_mb < MIN_FREE_MB:
            raise RunError(f"only {free_mb:.0f} MB free under {self.root}; a run needs at least {MIN_FREE_MB} MB")

    def new_id(self, config: ExperimentConfig) -> str:
        label = config.name or plan_label(config.freeze.preset, config.freeze.parts)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "run"
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
        run_id, n = base, 1
        while (self.root / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def create(self, config: ExperimentConfig) -> Run:
        self.check_writable()
        run_id = self.new_id(config)
        path = self.root / run_id
        path.mkdir()
        run = Run(path)
        atomic_write_text(run.config_path, dump_config(config))
        run.write_summary({
            "run_id": run_id, "name": config.name or run_id, "status": ACTIVE, "started_at": time.time(),
            "pid": os.getpid(), "host": socket.gethostname(), "backbone": config.backbone,
        })
        return run

    def get(self, run: str | Path, by_path: bool = True) -> Run:
        """A run by id (validated, so no name escapes the store) or, if ``by_path``, by its run folder."""
        text = str(run)
        candidate = Path(text).expanduser()
        if by_path and ("/" in text or os.sep in text):
            if not (candidate / "summary.json").is_file():
                raise RunError(f"{text} is not a run folder (it has no summary.json)")
            return Run(candidate)
        if not RUN_ID.fullmatch(text):  # fullmatch: a trailing newline is refused too
            raise RunError(f"invalid run id {text!r}: use letters, digits, '.', '-' and '_'")
        path = self.root / text
        if not (path / "summary.json").exists():
            raise RunError(f"no run {text!r} in {self.root}")
        return Run(path)

    def list(self) -> list[Run]:
        """Every run, newest first; runs left 'running' by a dead process are marked interrupted."""
        if not self.root.is_dir():
            return []
        runs = [Run(p) for p in self.root.iterdir() if (p / "summary.json").exists()]
        for run in runs:
            self.mark_if_interrupted(run)
        return sorted(runs, key=lambda r: r.summary().get("started_at", 0), reverse=True)

    def mark_if_interrupted(self, run: Run) -> None:
        summary = run.summary()
        if summary.get("status") == ACTIVE and not pid_alive(summary.get("pid"), summary.get("host")):
            run.update_summary(status="interrupted", message="the process that ran it ended before it finished")

    def rename(self, run_id: str, name: str) -> None:
        name = name.strip()
        if not name or len(name) > 80:
            raise RunError("a run name must have 1 to 80 characters")
        self.get(run_id, by_path=False).update_summary(name=name)

    def delete_weights(self, run_id: str) -> None:
        """Free a run's disk but keep its record: config, metrics, summary and predictions stay, so it is still
        listed and compared; only a warm start or an export needs the weights it no longer has."""
        run = self.get(run_id, by_path=False)
        summary = run.summary()
        if summary.get("status") == ACTIVE and pid_alive(summary.get("pid"), summary.get("host")):
            raise RunError(f"run {run_id} is still training; stop it first")
        for folder in (run.backbone_dir, run.changed_dir, run.adapter_dir):
            shutil.rmtree(folder, ignore_errors=True)
        run.heads_path.unlink(missing_ok=True)
        run.update_summary(weights="deleted")

    def delete(self, run_id: str) -> None:
        run = self.get(run_id, by_path=False)  # an id inside this store only: never rmtree a path
        summary = run.summary()
        if summary.get("status") == ACTIVE and pid_alive(summary.get("pid"), summary.get("host")):
            raise RunError(f"run {run_id} is still training; stop it first")
        shutil.rmtree(run.path)
