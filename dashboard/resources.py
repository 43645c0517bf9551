"""Things loaded once per server process (``st.cache_resource``): the job manager,
backbone descriptions and the device (each worked out by the CLI in a child
process, waited for in a background thread, so the server never imports torch
and the page never waits), and trained models for "Try it"."""

from __future__ import annotations

import threading

import streamlit as st

from core import child
from core.anatomy import describe_cached
from core.jobs import JobManager
from core.runs import EventLog, Run, RunStore
from dashboard.settings import runs_dir, train_in_process


# Set at the end of a session's first page run. The child processes that count a backbone's parameters
# and find the device (each imports torch) start only after it, so they do not slow the first drawing.
FIRST_RUN_DONE = "_first_run_done"


def once_drawn(probe, *args) -> BackgroundResult | None:
    """``probe(*args)`` (started once, then cached), or None while the session's first page is drawn."""
    return probe(*args) if st.session_state.get(FIRST_RUN_DONE) else None


def keep_state(keys: list[str]) -> None:
    """Keep the values of widgets that this run does not draw (a closed tab's): Streamlit forgets a
    widget's value at the end of a run that did not draw it, unless the run assigned it."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


@st.cache_resource
def job_manager() -> JobManager:
    return JobManager(runs_dir(), in_process=train_in_process())


def run_store() -> RunStore:
    return RunStore(runs_dir())


@st.cache_resource(max_entries=4, show_spinner=False)
def event_log(run_path: str) -> EventLog:
    """A run's events, kept per server and grown at each look: a tick parses what was appended, not the
    whole metrics.jsonl (bench/live_tick.py measures both)."""
    return EventLog(Run(run_path))


class BackgroundResult:
    """Runs ``work`` in a thread; the page polls ``done`` instead of blocking."""

    def __init__(self, work, *args):
        self.value = None
        self.error: str | None = None
        self.done = False
        self._thread = threading.Thread(target=self._run, args=(work, *args), daemon=True)
        self._thread.start()

    def _run(self, work, *args) -> None:
        try:
            self.value = work(*args)
        except Exception as error:  # noqa: BLE001 - shown on the page in one sentence
            self.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        finally:
            self.done = True

    def wait(self, timeout: float | None = None):
        self._thread.join(timeout)
        return self.value


@st.cache_resource(max_entries=8, show_spinner=False)
def backbone_description(backbone: str, pooling: str) -> BackgroundResult:
    return BackgroundResult(describe_cached, backbone, pooling)


@st.cache_resource(show_spinner=False)
def device_label() -> BackgroundResult:
    return BackgroundResult(child.device_label)


def known_device_label() -> str | None:
    """The device's label if it is known now: remembered from an earlier server, else probed in this one
    (the probe starts after the session's first page run)."""
    remembered = child.remembered_device_label()
    if remembered:
        return remembered
    probe = once_drawn(device_label)
    return (probe.value or probe.error) if probe is not None and probe.done else None


@st.cache_resource(max_entries=2, show_spinner="Loading the trained model...")
def trained_model(run_path: str):
    from core.checkpoints import load_run_model
    from core.runs import Run

    return load_run_model(Run(run_path))
