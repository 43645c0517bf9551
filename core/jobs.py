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
adopts a run that is still training. Only one job trains at a time: a start while
one trains waits in a queue (``position`` says where) and begins when the training
one ends, whoever started it. Each starter has at most one waiting job; a second is
refused with a clear message (``BusyError``). A job remembers its ``owner`` (the
page's visitor id), which the child also writes into the run's summary.

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

from core.child import RUN_FOLDER, SWEEP_FOLDER, child_env, core_command, one_line_error
from core.config import ExperimentConfig, dump_config
from core.locks import BusyError
from core.runs import ACTIVE, Run, RunError, RunStore, pid_alive, request_stop_at

POLL_SECONDS = 0.5
STOPPED_EARLY = "stopped before training began"
CANCELLED = "cancelled while it waited in the queue"
MAX_WAITING = 20
SIGTERM_STOPS = os.name == "posix"  # on Windows os.kill(pid, SIGTERM) ends the trainer at once, without its weights


@dataclass
class Job:
    config: ExperimentConfig | None  # None for a run adopted after a restart: its folder has the config
    runs_dir: Path
    owner: str | None = None  # who started it (the page's visitor id); None: the CLI, or unknown
    sweep: dict | None = None  # a sweep instead of one run: {"depths": "0,2", "presets": "", "seeds": 2}
    guess: str | None = None  # a student's answer to the config's lesson question, kept in each run's summary
    sweep_folder: Path | None = None  # the sweep's folder, once it exists; ``run`` is then its current member
    state: str = "preparing"  # queued | preparing | running | done | error
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
        if self.stop_file is not None and (self.run is None or self.sweep is not None):
            request_stop_at(self.stop_file)  # a sweep looks at it between members, too
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
        self._lock = threading.RLock()  # a job that ends starts the next one while holding it
        self.job: Job | None = None  # the job that trains now, or the last one
        self.queue: list[Job] = []  # jobs waiting for the device, first to start first

    def start(self, config: ExperimentConfig, owner: str | None = None, sweep: dict | None = None,
              then: list[ExperimentConfig] | tuple = (), guess: str | None = None) -> Job:
        """Start a run (or a sweep: ``python -m core sweep`` arguments) now, or queue it behind the one that
        trains (one trainer per device). ``then``: runs queued right behind it as part of the same request
        (the page's "Also train LoRA at this budget"); they do not count against the one waiting job.
        ``guess``: the student's answer to ``config.lesson``'s question, kept by the first run only."""
        if guess is not None:
            if config.lesson is None:
                raise ValueError("a guess needs a lesson with a question")
            guess = config.lesson.checked_guess(guess)
        with self._lock:
            job = Job(config, self.runs_dir, owner=owner, sweep=sweep, guess=guess)
            followers = [Job(c, self.runs_dir, owner=owner, state="queued") for c in then]
            if not self.queue and self._live_job() is None:  # never ahead of a job that waits
                self._launch(job)
                if job.state != "error":  # a runs folder that failed the first fails the rest: queue none
                    self.queue.extend(followers)
                return job
            waiting = [j for j in self.queue if owner is not None and j.owner == owner]
            if waiting:
                raise BusyError(f"your run is already waiting in the queue (position {self._position(waiting[0])}); "
                                "wait for it or cancel it")
            if len(self.queue) + len(followers) >= MAX_WAITING:
                raise BusyError(f"the queue is full ({MAX_WAITING} runs waiting); try again when one has trained")
            job.state = "queued"
            self.queue.extend([job, *followers])
            return job

    def stop(self, job: Job | None = None) -> None:
        """Stop a job (the current one by default) after its step; a waiting job leaves the queue."""
        with self._lock:
            job = job or self.job
            if job in self.queue:
                self.queue.remove(job)
                job.state, job.error = "done", CANCELLED
                return
        if job is not None:
            job.stop()

    def current(self) -> Job | None:
        """The live job, or the last one; a run still training in another process is adopted."""
        with self._lock:
            self._live_job()
            return self.job

    def waiting(self, owner: str | None = None) -> list[Job]:
        """The queue in order, or only ``owner``'s part of it."""
        with self._lock:
            return [j for j in self.queue if owner is None or j.owner == owner]

    def position(self, job: Job) -> int | None:
        """1 for the next job to start; None when the job is not waiting."""
        with self._lock:
            return self._position(job)

    def _position(self, job: Job) -> int | None:
        return self.queue.index(job) + 1 if job in self.queue else None

    def _launch(self, job: Job) -> None:
        """Start the trainer for ``job`` (the lock is held); a bad runs folder fails the job at once."""
        self.job = job
        job.state = "preparing"
        try:
            RunStore(self.runs_dir).check_writable()  # a bad folder or a full disk: say so at once
            job.watcher = self._in_thread(job) if self.in_process else self._in_child(job)
        except RunError as error:
            job.state, job.error = "error", str(error)
            return
        except OSError as error:  # e.g. the interpreter cannot be started
            job.state, job.error = "error", f"could not start the trainer: {error.strerror or error}"
            return
        job.watcher.start()

    def _start_next(self) -> None:
        """A job ended: start the first waiting one, if the device is free now."""
        with self._lock:
            while self.queue and self._live_job() is None:
                job = self.queue.pop(0)
                if job.stop_requested:  # stopped directly (Job.stop) while it waited
                    job.state, job.error = "done", CANCELLED
                    continue
                self._launch(job)

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
        job = Job(None, self.runs_dir, owner=summary.get("owner"), state="running", run=run,
                  started=summary.get("started_at", time.time()),
                  pid=summary.get("pid") if summary.get("stop_by_signal") else None)  # never signal another server
        job.watcher = threading.Thread(target=self._watch_pid, args=(job, summary.get("pid")),
                                       name="freeze-lab-adopted", daemon=True)
        job.watcher.start()
        return job

    # -- a child process -----------------------------------------------------------------------
    def _in_child(self, job: Job) -> threading.Thread:
        job.stop_file = self.runs_dir / f".stop-{uuid.uuid4().hex}"
        process = subprocess.Popen(
            core_command(*self._command(job), "--config", "-", "--runs-dir", str(self.runs_dir),
                         "--stop-file", str(job.stop_file), *(["--owner", job.owner] if job.owner else []),
                         *(["--guess", job.guess] if job.guess is not None else [])),
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

    @staticmethod
    def _command(job: Job) -> list[str]:
        if job.sweep is None:
            return ["train", "--quiet"]
        options = [(f"--{key}", str(value)) for key, value in job.sweep.items() if value not in (None, "")]
        return ["sweep", *(part for option in options for part in option)]

    def _follow_child(self, job: Job, process: subprocess.Popen) -> None:
        """Read the child's stderr: each run folder as soon as it exists (a sweep's members one after another),
        the sweep folder, then the last lines for errors."""
        tail: deque[str] = deque(maxlen=50)
        for line in process.stderr:
            line = line.rstrip("\n")
            if line.startswith(RUN_FOLDER):
                job.run, job.state = Run(Path(line[len(RUN_FOLDER):])), "running"
                if job.stop_requested:  # Stop was pressed after the child's last look at its --stop-file
                    job.run.request_stop()
            elif line.startswith(SWEEP_FOLDER):
                job.sweep_folder = Path(line[len(SWEEP_FOLDER):])
            else:
                tail.append(line)
        code = process.wait()
        self._finish(job, code, "\n".join(tail))

    def _watch_pid(self, job: Job, pid: int | None) -> None:
        while pid_alive(pid) and job.run.summary().get("status") == ACTIVE:
            time.sleep(POLL_SECONDS)
        self._finish(job, 0, "")

    def _finish(self, job: Job, code: int, stderr: str) -> None:
        """The job's process ended: record how, then start the next waiting job, whatever went wrong here."""
        try:
            if job.stop_file is not None:
                job.stop_file.unlink(missing_ok=True)
            if job.run is not None:
                RunStore(self.runs_dir).mark_if_interrupted(job.run)  # killed mid-run: say so in its record
        finally:
            with self._lock:  # a start() now sees either the live job or the queue, never neither
                if job.run is not None:
                    job.state = "done"
                elif job.stop_requested:
                    job.state, job.error = "done", STOPPED_EARLY
                else:
                    job.state, job.error = "error", one_line_error(stderr, code)
                self._start_next()

    # -- in this process ----------------------------------------------------------------------
    def _in_thread(self, job: Job) -> threading.Thread:
        return threading.Thread(target=self._train_here, args=(job,), name="freeze-lab-train", daemon=True)

    def _train_here(self, job: Job) -> None:
        from core.training import prepare, run_experiment

        def attach(run: Run) -> None:
            if job.owner:
                run.update_summary(owner=job.owner)
            if job.guess is not None:
                run.record_guess(job.config.lesson, job.guess)
            job.run, job.state = run, "running"

        try:
            if job.sweep is not None:
                self._sweep_here(job, attach)
                return
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
        finally:
            self._start_next()

    @staticmethod
    def _sweep_here(job: Job, attach) -> None:
        from core.sweep import parse_depths, run_sweep

        options = job.sweep
        depths = parse_depths(options["depths"]) if options.get("depths") else None
        presets = [p for p in (options.get("presets") or "").split(",") if p]

        def started(folder: Path) -> None:
            job.sweep_folder = folder

        run_sweep(job.config, depths, presets, int(options.get("seeds", 1)), job.runs_dir, job.stop_event,
                  on_start=started, on_run=attach)
        job.state = "done"
