"""One run over two processes (accelerate launch, gloo on the CPU) and a sweep over two workers.

The two-process run must be one run like a single process's: one folder, metrics within
rounding of a single process on the same global batches, frozen tensors untouched, the whole
validation set evaluated once, each process caching only its shard. These tests start real
processes, so they are few and tiny (a 3-layer, 32-wide BERT, 48 training rows).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from core.child import RUN_FOLDER
from core.config import load_config
from core.distributed import Processes
from core.batching import EncodedSplit
from core.runs import RunStore
from core.sweep import run_sweep
from core.training import run_experiment
from server import free_port
from test_page_errors import page_env  # noqa: F401 - the page's fixture: runs folder, allowed folders

LAUNCH_SECONDS = 300


def launch(config: Path, runs: Path, processes: int = 2) -> subprocess.Popen:
    """``accelerate launch`` of ``python -m core train`` on the CPU, one thread per process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), "-m", "core", "train", "--config", str(config),
         "--runs-dir", str(runs), "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def ended(process: subprocess.Popen):
    """However the test ends, the launcher and its processes end too: SIGTERM (the launcher passes it on,
    and kills what is still there 30 s later), then SIGKILL."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def config_data(backbone: str, small_data: dict, k: int = 2, **training) -> dict:
    return {"name": "two processes", "backbone": backbone, "head_dropout": 0.0,
            "tasks": {t: {**small_data, "label_column": t} for t in ("topic", "sentiment")},
            "freeze": {"preset": "lower_k", "k": k},
            "training": {"epochs": 2, "batch_size": 8, "max_length": 32, "eval_every": 0, "device": "cpu",
                         **training}}


def test_processes_share_each_batch_by_row_and_cover_it_once():
    rows = [7, 2, 9, 4, 11]
    shares = [Processes(rank, 3).share(rows) for rank in range(3)]
    assert shares == [[9], [7, 4], [2, 11]]
    split = EncodedSplit([[i] for i in range(5)], [0, 1, 0, 1, 0])
    shards = [Processes(rank, 2).shard(split) for rank in range(2)]
    assert [s.rows for s in shards] == [[0, 2, 4], [1, 3]]
    assert shards[1].split.ids == [[1], [3]] and shards[1].split.labels == [1, 1]
    assert shards[1].local_rows([3, 1]) == [1, 0]
    alone = Processes().shard(split)
    assert alone.split is split and alone.local_rows([4, 0]) == [4, 0]


@pytest.mark.parametrize("k", [0, 3], ids=["nothing-cached-even-split", "heads-only-cached-by-owner"])
def test_two_processes_train_one_run_like_one_process(k, dropless_bert, small_data, tmp_path):
    """k=0: the embeddings frozen, nothing cached, each batch split evenly; k=3: the whole encoder frozen,
    its pooled output cached per process, each batch split by row owner, only the heads train."""
    from safetensors.torch import load_file

    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(config_data(dropless_bert, small_data, k)), encoding="utf-8")
    runs = tmp_path / "runs"
    with ended(launch(config_file, runs)) as process:
        out, err = process.communicate(timeout=LAUNCH_SECONDS)
    assert process.returncode == 0, err[-3000:]
    folders = [p for p in runs.iterdir() if (p / "summary.json").exists()]
    assert len(folders) == 1, folders  # one run, written by the main process alone
    assert err.count(RUN_FOLDER) == 1 and out.count("status finished") == 1
    run = RunStore(runs).get(folders[0].name)
    summary = run.summary()
    assert summary["status"] == "finished" and summary["world_size"] == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process: the same order of float sums, as far as it can be
    try:
        single = run_experiment(load_config(config_file), tmp_path / "single").summary()  # the same task order
    finally:
        torch.set_num_threads(threads)
    assert single["world_size"] == 1 and single["steps"] == summary["steps"] == summary["total_steps"]
    for task in ("topic", "sentiment"):
        two, one = summary["tasks"][task], single["tasks"][task]
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-4)
        assert two["accuracy"] == pytest.approx(one["accuracy"], abs=1 / 24 + 1e-9)  # a near-tie may flip one
        assert sum(map(sum, two["confusion"])) == 24  # the whole validation set, each example once
    predictions = json.loads(run.predictions_path.read_text(encoding="utf-8"))["tasks"]
    single_predictions = json.loads((RunStore(tmp_path / "single").list()[0].predictions_path).read_text(
        encoding="utf-8"))["tasks"]
    for task, p in predictions.items():  # in the split's order, each example once
        assert len(p["predicted"]) == len(p["confidence"]) == 24 and p["true"] == single_predictions[task]["true"]
        assert sum(a != b for a, b in zip(p["predicted"], single_predictions[task]["predicted"])) <= 1
    steps = [e for e in run.events() if e.kind == "step"]
    single_steps = [e for e in RunStore(tmp_path / "single").list()[0].events() if e.kind == "step"]
    assert [e.lr for e in steps] == pytest.approx([e.lr for e in single_steps])  # one schedule step per step
    assert [e.task for e in steps] == [e.task for e in single_steps]  # the same batch schedule
    assert [e.loss for e in steps] == pytest.approx([e.loss for e in single_steps], abs=1e-4)

    start = load_file(str(Path(dropless_bert) / "model.safetensors"))
    trained = load_file(str(run.backbone_dir / "model.safetensors"))
    frozen = ("embeddings.", *(f"encoder.layer.{i}." for i in range(k)))
    assert all(trained[name].equal(start[name]) for name in start if name.startswith(frozen))  # bit-identical
    assert k == 3 or not trained["encoder.layer.2.output.dense.weight"].equal(
        start["encoder.layer.2.output.dense.weight"])
    cache = summary["cache"]  # the main process's: its shard of each split (24 of 48, 12 of 24), built once
    if k == 3:
        assert cache["used"] and cache["kind"] == "pooled"
        assert cache["prefix_examples"] == 2 * (24 + 12) and cache["hit_examples"] == 2 * 24 + 2 * 12
    else:
        assert not cache["used"]


@pytest.mark.parametrize("how", ["sigterm", "stop-file"])
def test_a_stop_stops_every_process_after_the_same_step(how, dropless_bert, small_data, tmp_path):
    """SIGTERM to the launcher reaches every process; the run's stop file only the main one, which reads it:
    either way all stop after the same step (else one would wait for the other's all-reduce forever)."""
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(config_data(dropless_bert, small_data, 2, epochs=100)), encoding="utf-8")
    runs = tmp_path / "runs"
    with ended(launch(config_file, runs)) as process:
        run_dir = None
        for line in process.stderr:  # the main process says where its run is once it exists
            if line.startswith(RUN_FOLDER):
                run_dir = Path(line[len(RUN_FOLDER):].strip())
                break
        assert run_dir is not None
        deadline = time.time() + 60
        while not [e for e in RunStore(runs).get(run_dir.name).events() if e.kind == "step"]:
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.2)
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            RunStore(runs).get(run_dir.name).request_stop()
        process.communicate(timeout=LAUNCH_SECONDS)
    summary = RunStore(runs).get(run_dir.name).summary()
    assert summary["status"] == "stopped", summary.get("message")
    assert 0 < summary["steps"] < summary["total_steps"] and summary["world_size"] == 2
    assert summary["cache"]["kind"] == "hidden"  # layers 0-1 cached per process, layer 2 trains
    assert RunStore(runs).get(run_dir.name).has_weights()


def test_a_sweep_over_two_cpu_workers_matches_one_after_another(dropless_bert, small_data, tmp_path):
    data = config_data(dropless_bert, small_data, 2, epochs=1)
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-m", "core", "sweep", "--config", str(config_file), "--depths", "0,3",
                             "--devices", "cpu,cpu", "--runs-dir", str(tmp_path / "parallel")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    parallel = json.loads(next((tmp_path / "parallel" / "sweeps").glob("*/sweep.json")).read_text(encoding="utf-8"))
    one_by_one = run_sweep(load_config(config_file), [0, 3], runs_dir=tmp_path / "sequential")

    def members(record):
        return [{k: m[k] for k in ("variant", "depth", "seed", "status")} for m in record["members"]]

    def table(record):
        return [{"variant": r["variant"], "trainable": r["trainable"],
                 **{f"{t} {k}": r["tasks"][t][k] for t in r["tasks"] for k in ("accuracy_mean", "n_seeds")}}
                for r in record["table"]]

    assert parallel["status"] == one_by_one["status"] == "finished" and parallel["devices"] == ["cpu", "cpu"]
    assert members(parallel) == members(one_by_one)
    assert table(parallel) == table(one_by_one)
    assert parallel["reference"] == one_by_one["reference"]
    store = RunStore(tmp_path / "parallel")
    assert len(store.list()) == 2
    for member in parallel["members"]:
        summary = store.get(member["run_id"]).summary()
        assert summary["sweep"] == parallel["sweep_id"] and summary["seed"] == member["seed"]
        assert summary["world_size"] == 1
    assert not list((tmp_path / "parallel").glob("sweeps/*/.stop-member-*"))


def test_the_page_shows_a_run_that_used_several_processes(page_env):
    from page_helpers import new_app, open_tab

    for name, extra in (("20250101-120000-four-gpus", {"world_size": 4, "device": "cuda"}),
                        ("20250101-110000-one-process", {"device": "cpu"})):  # before world_size was recorded
        run = page_env.runs / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"name: {name}\n")
        (run / "summary.json").write_text(json.dumps({"run_id": name, "name": name, "status": "finished",
                                                      "started_at": time.time(), **extra}))
    at = open_tab(new_app(page_env.backbone), "Compare runs")
    assert not at.exception, at.exception
    history = next(d.value for d in at.dataframe if "run" in d.value.columns)
    devices = dict(zip(history["run"], history["device"]))
    assert devices == {"20250101-120000-four-gpus": "cuda × 4 processes", "20250101-110000-one-process": "cpu"}
    from dashboard.runs_view import processes_note  # Inspect's caption above a run's confusion matrices

    assert processes_note({"world_size": 4, "device": "cuda"}).startswith("Trained by 4 processes (cuda")
    assert processes_note({"world_size": 1}) is None and processes_note({}) is None


def test_devices_are_checked_before_a_sweep_starts(monkeypatch):
    from core.config import ConfigError
    from core.device import DeviceError
    from core.sweep_devices import check_devices, parse_devices, worker_env

    assert parse_devices("cpu, CPU") == ["cpu", "cpu"] and parse_devices("0,1,3") == ["0", "1", "3"]
    for bad in ("0,cpu", "gpu0", "", "1,1"):
        with pytest.raises(ConfigError, match="--devices"):
            parse_devices(bad)
    with pytest.raises(DeviceError, match="names CUDA GPUs, but training.device is cpu"):
        check_devices(["0", "1"], "cpu")
    with pytest.raises(DeviceError, match="trains on the CPU, but training.device is cuda"):
        check_devices(["cpu", "cpu"], "cuda")
    assert check_devices(["cpu", "cpu"], "auto") == "cpu"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cpu = worker_env("cpu", 2, "cpu")
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "4" and cpu["FREEZE_LAB_LOCK_HELD"] == "cpu"
    assert worker_env("3", 0, "cuda")["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_sweep_child_trains_under_its_parents_lock(monkeypatch):
    """The parent of a sweep over devices holds the lock; a child whose environment names that device
    trains without taking it, and any other trainer is still refused."""
    import threading

    from core.locks import BusyError, HELD_BY_PARENT, training_lock

    def try_lock() -> Exception | None:
        outcome: list = []

        def attempt() -> None:
            try:
                with training_lock("cpu"):
                    outcome.append(None)
            except BusyError as error:
                outcome.append(error)

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()
        return outcome[0]

    with training_lock("cpu"):  # the parent holds the CPU
        assert isinstance(try_lock(), BusyError)
        monkeypatch.setenv(HELD_BY_PARENT, "cpu")
        assert try_lock() is None
        monkeypatch.setenv(HELD_BY_PARENT, "cuda")  # a parent that holds another device is no help
        assert isinstance(try_lock(), BusyError)
