"""A sweep's members spread over devices: ``python -m core sweep ... --devices 0,1,2,3``.

Each device is a worker that trains one member at a time, each member in a child process
(``python -m core train``) that sees only its GPU (``CUDA_VISIBLE_DEVICES``); the next member
waiting starts on the first device that frees up. ``--devices cpu,cpu`` gives two workers on the
CPU, each with an equal share of its cores (``OMP_NUM_THREADS``): the same path, testable without GPUs.

The members, their configs (seeds, data seed) and the sweep.json table are those of the same sweep
run one after another: every member is still an ordinary run, and the table is computed from the
members' summaries alike. The parent holds the training lock for the whole sweep; its children
train under it (``core.locks.HELD_BY_PARENT``).

What the parallel path gives up: the shared prefix pass (core.cache.SharedPrefix). A member is
another process and cannot borrow the parent's memory, so each member caches its own frozen
prefix during its first epoch, as a single run does. The parent still makes one pass of the
pristine backbone, over the validation splits only, for the untrained reference line.

Stop (Ctrl-C, SIGTERM, the sweep's --stop-file) stops every running member after its step
(its run's ``stop`` file, read on any OS) and starts no further member.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from core.child import RUN_FOLDER, child_env, core_command, one_line_error
from core.config import ConfigError, dump_config
from core.device import DeviceError
from core.locks import HELD_BY_PARENT
from core.runs import Run, RunStore, request_stop_at

POLL_SECONDS = 0.2


def parse_devices(text: str) -> list[str]:
    """'0,1,2,3' (CUDA device numbers) or 'cpu,cpu' (that many CPU workers); not a mixture."""
    devices = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not devices or not (all(d == "cpu" for d in devices) or all(d.isdigit() for d in devices)):
        raise ConfigError(f"--devices: expected CUDA device numbers such as 0,1,2,3 or CPU workers such as "
                          f"cpu,cpu, not {text!r}")
    if devices[0] != "cpu" and len(set(devices)) < len(devices):
        raise ConfigError(f"--devices: GPU {next(d for d in devices if devices.count(d) > 1)} is listed twice")
    return devices


def check_devices(devices: list[str], requested: str) -> str:
    """The device kind the workers train on ('cuda' or 'cpu'), checked against training.device and the machine."""
    if devices[0] == "cpu":
        if requested not in ("auto", "cpu"):
            raise DeviceError(f"--devices {','.join(devices)} trains on the CPU, but training.device is {requested}")
        return "cpu"
    if requested not in ("auto", "cuda"):
        raise DeviceError(f"--devices {','.join(devices)} names CUDA GPUs, but training.device is {requested}")
    import torch

    count = torch.cuda.device_count()
    missing = [d for d in devices if int(d) >= count]
    if missing:
        raise DeviceError(f"--devices: no CUDA GPU {missing[0]} here ({count} visible); "
                          "use cpu,cpu for CPU workers")
    return "cuda"


def worker_env(device: str, cpu_workers: int, held: str) -> dict[str, str]:
    """A child's environment: its one GPU (or none, for a CPU worker and its share of the cores), under its
    parent's lock."""
    env = child_env()
    env[HELD_BY_PARENT] = held
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        if "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_workers))
    else:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


def execute_on_devices(plan, runs_dir, stop: threading.Event, devices: list[str],
                       on_member: Callable | None, on_start: Callable | None, on_run: Callable | None = None) -> dict:
    """The untrained reference (one pass over the validation splits), then the members over the devices."""
    from core.sweep import close_record, open_record, save, untrained_reference

    store = RunStore(runs_dir)
    folder, record = open_record(plan, store, on_start)
    record["devices"] = devices
    heads, shared = reference_pass(plan, folder, devices[0])
    plan.probe = None  # the children load their own weights; the parent's copy may go
    guard = threading.Lock()  # sweep.json and the callbacks, from several workers

    def announce(member: dict, run: Run) -> None:
        with guard:
            member["run_id"] = run.id
            save(folder, record, store)
            if on_run:
                on_run(run)

    def ended(member: dict) -> None:
        with guard:
            save(folder, record, store)
            if on_member:
                on_member(member, store.get(member["run_id"]).summary() if member["run_id"] else {})

    try:
        shared.build(stop)
        record["shared_prefix"] = None  # each member caches its own prefix (see the module's docstring)
        record["reference"]["untrained_accuracy"] = untrained_reference(heads, shared, plan.tasks)
        waiting: queue.SimpleQueue = queue.SimpleQueue()
        for index, member in enumerate(record["members"]):
            waiting.put((index, member))
        cpu_workers = sum(d == "cpu" for d in devices)
        held = "cpu" if devices[0] == "cpu" else "cuda"
        workers = [threading.Thread(target=work, name=f"freeze-lab-sweep-{i}", daemon=True,
                                    args=(waiting, plan, folder, runs_dir, worker_env(d, cpu_workers, held), stop,
                                          announce, ended))
                   for i, d in enumerate(devices)]
        for worker in workers:
            worker.start()
        follow(workers, folder, record, store, stop)
    finally:
        shared.close()
        close_record(folder, record, store, stop)
    return record


def reference_pass(plan, folder: Path, first_device: str):
    """The probe's heads at their random start, and a pass (to build) of the pristine backbone over the
    validation splits, on the first listed device."""
    from core.cache import SharedPrefix
    from core.training import cache_settings, encode_splits

    probe = plan.probe
    _, val = encode_splits(probe)
    device = "cpu" if first_device == "cpu" else f"cuda:{first_device}"
    shared = SharedPrefix(probe.model, {f"val/{n}": s.ids for n, s in val.items()}, cache_settings(probe), {},
                          folder, device, pooled_for=tuple(f"val/{n}" for n in val))
    return probe.model.heads, shared


def work(waiting: queue.SimpleQueue, plan, folder: Path, runs_dir, env: dict, stop: threading.Event,
         announce: Callable, ended: Callable) -> None:
    """One device's worker: the next waiting member, until none waits or the sweep stops."""
    while not stop.is_set():
        try:
            index, member = waiting.get_nowait()
        except queue.Empty:
            return
        try:
            train_member(member, plan.configs[(member["variant"], member["seed"])], folder.name, runs_dir, env,
                         stop, announce, stop_file_of(folder, index))
        except OSError as error:  # e.g. the interpreter cannot be started: this member fails, the next one runs
            member["status"], member["message"] = "failed", f"could not start its trainer: {error.strerror or error}"
        if member["status"] == "stopped":  # asked through the run's stop file: the whole sweep stops
            stop.set()
        ended(member)


def train_member(member: dict, config, sweep_id: str, runs_dir, env: dict, stop: threading.Event,
                 announce: Callable, stop_file: Path) -> None:
    """``python -m core train`` for one member in a child process; its outcome goes into ``member``.
    ``stop_file``: what the child reads for a stop before its run exists."""
    member["status"] = "running"
    process = subprocess.Popen(
        core_command("train", "--quiet", "--config", "-", "--runs-dir", str(runs_dir), "--sweep", sweep_id,
                     "--stop-file", str(stop_file)),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8",
        errors="replace", env=env)
    try:
        process.stdin.write(dump_config(config))
        process.stdin.close()
    except BrokenPipeError:  # it died at once; its stderr says why
        pass
    tail: deque[str] = deque(maxlen=50)
    for line in process.stderr:
        line = line.rstrip("\n")
        if line.startswith(RUN_FOLDER):
            announce(member, Run(Path(line[len(RUN_FOLDER):])))
        else:
            tail.append(line)
    code = process.wait()
    stop_file.unlink(missing_ok=True)
    if member["run_id"]:
        store = RunStore(runs_dir)
        run = store.get(member["run_id"])
        store.mark_if_interrupted(run)  # a child killed mid-run left it "running"
        member["status"] = run.status
    elif stop.is_set():
        member["status"] = "not started"
    else:
        member["status"], member["message"] = "failed", one_line_error("\n".join(tail), code)


def follow(workers: list[threading.Thread], folder: Path, record: dict, store: RunStore,
           stop: threading.Event) -> None:
    """Wait for the workers in short beats (so this thread still takes signals); once the sweep stops, ask
    every running member to stop after its step."""
    asked: set[int] = set()
    while any(worker.is_alive() for worker in workers):
        time.sleep(POLL_SECONDS)
        if not stop.is_set():
            continue
        for index, member in enumerate(record["members"]):
            if member["status"] != "running" or index in asked:
                continue
            if member.get("run_id"):
                store.get(member["run_id"]).request_stop()
                asked.add(index)
            else:  # its child still loads: the file it was given with --stop-file
                request_stop_at(stop_file_of(folder, index))


def stop_file_of(folder: Path, index: int) -> Path:
    """The --stop-file of member ``index``'s child, in the sweep's folder."""
    return folder / f".stop-member-{index}"
