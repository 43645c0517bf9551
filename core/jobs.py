"""Background training for a page that must never block, and never slow training down.

A job is ``python -m core train`` in a child process. The page's server shares
one GIL between its reruns, widgets and websocket; a trainer thread inside it ran
at a sixth of the CLI's speed. In its own process the trainer runs at full speed,
and the page reads the run folder the child writes (the same record a reload, a
restart or a comparison reads). Stop writes a stop request the trainer checks once per
step, on every OS: the run folder's ``stop`` file, or, while the child still loads and no
run folder exists, the file it was given with ``--stop-file``. On POSIX it also sends
SIGTERM, which the CLI turns into the same stop; never on Windows, where it kills at once.

One JobManager per server (the page keeps it with ``st.cache_resource``), so a
reloaded page or a second tab finds the live job again; after a server restart it
adopts a run that is still training. Only one job trains at a time; a second start
is refused with a clear message (``BusyError``).

``in_process=True`` trains in a thread of this process instead, for debuggers,
profilers and tests that patch the trainer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from core.child import RUN_FOLDER, child_env, core_command, one_line_error
from core.config import ExperimentConfig, dump_config
from core.locks import BusyError
from core.runs import ACTIVE, Run, RunError, RunStore, pid_alive, request_stop_at

POLL_SECONDS = 0.5
STOPPED_EARLY = "stopped before training began"
SIGTERM_STOPS = os.name == "posix"  # on Windows os.kill(pid, SIGTERM) ends the trainer at once, without its weights


@dataclass
class Job:
    config: ExperimentConfig | None  # None for a run adopted after a restart: its folder has the config
    runs_dir: Path
    state: str = "preparing"  # preparing | running | done | error
    run: Run | None = None
    error: str = ""
    started: float = field(default_factory=time.time)
    stop_event: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None  # the trainer's process; None when it trains in this process
    watcher: threading.Thread | None = None
    stop_file: Path | None = None  # the child's --stop-file, for a stop before its run folder exists

    @property
    def active(self) -> bool:
        return self.state in ("preparing", "running")

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        """Ask the trainer to stop after its current step."""
        self.stop_event.set()  # set before reading self.run: _follow_child sets run, then reads this
        if not self.active:
            return
        if self.run is not None:
            self.run.request_stop()
        elif self.stop_file is not None:
            request_stop_at(self.stop_file)
        if SIGTERM_STOPS and self.pid is not None and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job ends; True if it did."""
        if self.watcher is not None:
            self.watcher.join(timeout)
        return not self.active


class JobManager:
    def __init__(self, runs_dir: str | Path = "runs", in_process: bool = False):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.in_process = in_process
        self._lock = threading.Lock()
        self.job: Job | None = None

    def start(self, config: ExperimentConfig) -> Job:
        with self._lock:
            if self._live_job() is not None:
                raise BusyError("a run is already training; stop it or wait until it ends")
            job = self.job = Job(config, self.runs_dir)
            try:
                RunStore(self.runs_dir).check_writable()  # a bad folder or a full disk: say so at once
                job.watcher = self._in_thread(job) if self.in_process else self._in_child(job)
            except RunError as error:
                job.state, job.error = "error", str(error)
                return job
            except OSError as error:  # e.g. the interpreter cannot be started
                job.state, job.error = "error", f"could not start the trainer: {error.strerror or error}"
                return job
            job.watcher.start()
            return job

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def current(self) -> Job | None:
        """The live job, or the last one; a run still training in another process is adopted."""
        with self._lock:
            self._live_job()
            return self.job

    # -- finding and adopting ------------------------------------------------------------------
    def _live_job(self) -> Job | None:
        if self.job is not None and self.job.active:
            return self.job
        orphan = self._running_elsewhere()
        if orphan is not None:
            self.job = self._adopt(orphan)
            return self.job
        return None

    def _running_elsewhere(self) -> Run | None:
        """A run in the store whose trainer is alive: started before a restart, or from the CLI."""
        ours = self.job.run.path if self.job is not None and self.job.run is not None else None
        for run in RunStore(self.runs_dir).list():  # list() marks runs of dead processes as interrupted
            summary = run.summary()
            if summary.get("status") == ACTIVE and run.path != ours and summary.get("pid") != os.getpid():
                return run
        return None

    def _adopt(self, run: Run) -> Job:
        summary = run.summary()
        job = Job(None, self.runs_dir, state="running", run=run, started=summary.get("started_at", time.time()),
                  pid=summary.get("pid") if summary.get("stop_by_signal") else None)  # never signal another server
        job.watcher = threading.Thread(target=self._watch_pid, args=(job, summary.get("pid")),
                                       name="freeze-lab-adopted", daemon=True)
        job.watcher.start()
        return job

    # -- a child process -----------------------------------------------------------------------
    def _in_child(self, job: Job) -> threading.Thread:
        job.stop_file = self.runs_dir / f".stop-{uuid.uuid4().hex}"
        process = subprocess.Popen(
            core_command("train", "--config", "-", "--runs-dir", str(self.runs_dir), "--quiet",
                         "--stop-file", str(job.stop_file)),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8",
            errors="replace", env=child_env())
        try:
            process.stdin.write(dump_config(job.config))
            process.stdin.close()
        except BrokenPipeError:  # it died at once; its stderr says why
            pass
        job.pid = process.pid
        return threading.Thread(target=self._follow_child, args=(job, process), name="freeze-lab-follow",
                                daemon=True)

    def _follow_child(self, job: Job, process: subprocess.Popen) -> None:
        """Read the child's stderr: the run folder as soon as it exists, then the last lines for errors."""
        tail: deque[str] = deque(maxlen=50)
        for line in process.stderr:
            line = line.rstrip("\n")
            if line.startswith(RUN_FOLDER):
                job.run, job.state = Run(Path(line[len(RUN_FOLDER):])), "running"
                if job.stop_requested:  # Stop was pressed after the child's last look at its --stop-file
                    job.run.request_stop()
            else:
                tail.append(line)
        code = process.wait()
        self._finish(job, code, "\n".join(tail))

    def _watch_pid(self, job: Job, pid: int | None) -> None:
        while pid_alive(pid) and job.run.summary().get("status") == ACTIVE:
            time.sleep(POLL_SECONDS)
        self._finish(job, 0, "")

    def _finish(self, job: Job, code: int, stderr: str) -> None:
        if job.stop_file is not None:
            job.stop_file.unlink(missing_ok=True)
        if job.run is not None:
            RunStore(self.runs_dir).mark_if_interrupted(job.run)  # killed mid-run: say so in its record
            job.state = "done"
        elif job.stop_requested:
            job.state, job.error = "done", STOPPED_EARLY
        else:
            job.state, job.error = "error", one_line_error(stderr, code)

    # -- in this process ----------------------------------------------------------------------
    def _in_thread(self, job: Job) -> threading.Thread:
        return threading.Thread(target=self._train_here, args=(job,), name="freeze-lab-train", daemon=True)

    def _train_here(self, job: Job) -> None:
        from core.training import prepare, run_experiment

        def attach(run: Run) -> None:
            job.run, job.state = run, "running"

        try:
            experiment = prepare(job.config, job.runs_dir)
            if job.stop_requested:
                job.state, job.error = "done", STOPPED_EARLY
                return
            run_experiment(job.config, job.runs_dir, stop=job.stop_event, experiment=experiment, on_run=attach)
            job.state = "done"
        except (ValueError, BusyError) as error:  # the engine's expected errors: config, data, backbone, plan, ...
            job.state, job.error = "error", str(error)
        except Exception as error:  # noqa: BLE001 - shown on the page, never lost
            traceback.print_exc()
            job.state, job.error = "error", f"{type(error).__name__}: {error}".splitlines()[0]
