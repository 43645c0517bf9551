"""Training in a background thread, for a page that must never block.

One JobManager per process (the page keeps it with ``st.cache_resource``), so a
reloaded page or a second tab finds the live job again. Only one job trains at a
time; a second start is refused with a clear message (``BusyError``).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ExperimentConfig
from core.locks import BusyError
from core.runs import Run, RunStore


@dataclass
class Job:
    config: ExperimentConfig
    runs_dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = "preparing"  # preparing | running | done | error
    run: Run | None = None
    error: str = ""
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.state in ("preparing", "running")


class JobManager:
    def __init__(self, runs_dir: str | Path = "runs"):
        self.runs_dir = Path(runs_dir)
        self._lock = threading.Lock()
        self.job: Job | None = None

    def start(self, config: ExperimentConfig) -> Job:
        with self._lock:
            if self.job is not None and self.job.active:
                raise BusyError("a run is already training; stop it or wait until it ends")
            job = Job(config, self.runs_dir)
            job.thread = threading.Thread(target=self._work, args=(job,), name="freeze-lab-train", daemon=True)
            self.job = job
            job.thread.start()
            return job

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop.set()

    def current(self) -> Job | None:
        return self.job

    def _work(self, job: Job) -> None:
        from core.training import prepare, run_experiment

        def attach(run: Run) -> None:
            job.run, job.state = run, "running"

        try:
            RunStore(job.runs_dir).check_writable()  # a full disk or a bad folder: say so before loading anything
            experiment = prepare(job.config, job.runs_dir)
            if job.stop.is_set():
                job.state, job.error = "done", "stopped before training began"
                return
            run_experiment(job.config, job.runs_dir, stop=job.stop, experiment=experiment, on_run=attach)
            job.state = "done"
        except ValueError as error:  # the engine's expected errors: config, data, backbone, plan, device, runs
            job.state, job.error = "error", str(error)
        except BusyError as error:
            job.state, job.error = "error", str(error)
        except Exception as error:  # noqa: BLE001 - shown on the page, never lost
            traceback.print_exc()
            job.state, job.error = "error", f"{type(error).__name__}: {error}".splitlines()[0]
