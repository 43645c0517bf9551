"""Training in a child process (what the page does), stopping it, and finding it again after a restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

import core.jobs
from conftest import ROOT
from core.child import RUN_FOLDER, child_env, core_command, run_core
from core.jobs import STOPPED_EARLY, JobManager


def wait_until(condition, timeout: float = 90.0, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def steps_written(run) -> int:
    return sum(e.kind == "step" for e in run.events())


@pytest.fixture
def long_config(small_config, tiny_bert):
    """A run that would take minutes: it only ends when it is stopped."""
    return small_config(tiny_bert, name="long", training={"epochs": 100})


@pytest.fixture(params=[
    pytest.param(True, id="stop-file-and-sigterm", marks=pytest.mark.skipif(os.name != "posix", reason="POSIX only")),
    pytest.param(False, id="stop-file-only"),  # what Stop does on Windows
])
def stop_route(request, monkeypatch) -> bool:
    """Whether Stop also sends SIGTERM (POSIX) or only writes its stop file (every OS)."""
    monkeypatch.setattr(core.jobs, "SIGTERM_STOPS", request.param)
    return request.param


def test_a_child_trains_streams_to_its_folder_and_stops_after_a_step(long_config, tmp_path, stop_route):
    manager = JobManager(tmp_path / "runs")
    job = manager.start(long_config)
    assert job.pid is not None and job.pid != os.getpid()
    wait_until(lambda: job.run is not None and steps_written(job.run) >= 3, what="steps in metrics.jsonl")
    assert job.state == "running" and job.active
    assert job.run.summary()["pid"] == job.pid  # trained in the child, not in this process
    manager.stop()  # the stop file exists once this returns: every step that begins later sees it
    steps_when_asked = steps_written(job.run)  # read after the request, so a busy machine cannot make it stale
    assert job.wait(60)
    summary = job.run.summary()
    assert job.state == "done" and summary["status"] == "stopped"
    assert 0 < summary["steps"] <= steps_when_asked + 1 < summary["total_steps"]  # only the step under way ends
    assert steps_written(job.run) == summary["steps"]  # every step it took is in the record
    assert job.run.has_weights()  # a stopped run keeps its weights
    assert not job.run.stop_requested()  # the trainer removed its stop file when the run ended


def test_a_child_that_cannot_start_reports_the_engines_one_line_error(small_config, tmp_path):
    from core.training import prepare

    config = small_config(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError) as in_process:
        prepare(config, tmp_path / "runs")
    job = JobManager(tmp_path / "runs").start(config)
    assert job.wait(90)
    assert job.state == "error" and job.error == str(in_process.value)
    assert job.run is None and not list((tmp_path / "runs").iterdir())


def test_stop_while_the_child_is_still_loading_creates_no_run(long_config, tmp_path, stop_route):
    manager = JobManager(tmp_path / "runs")
    job = manager.start(long_config)
    manager.stop()
    assert stop_route or job.stop_file.exists()  # without a signal, the --stop-file carries the request
    assert job.wait(90)
    assert job.state == "done" and job.error == STOPPED_EARLY and job.run is None
    assert not list((tmp_path / "runs").iterdir())  # no run, and the stop file is gone


def test_a_restarted_server_adopts_the_live_run_and_can_stop_it(long_config, small_config, tiny_bert, tmp_path,
                                                                stop_route):
    before = JobManager(tmp_path / "runs")
    job = before.start(long_config)
    try:
        wait_until(lambda: job.run is not None and steps_written(job.run) >= 1, what="the first step")
        after = JobManager(tmp_path / "runs")  # a new server process would build a new manager
        adopted = after.current()
        assert adopted is not None and adopted.active and adopted.run.id == job.run.id
        assert adopted.pid == job.pid
        waiting = after.start(small_config(tiny_bert, name="second"))  # queued behind the adopted run
        assert waiting.state == "queued" and after.position(waiting) == 1
        after.stop(waiting)
        after.stop()
        assert adopted.wait(60) and job.wait(60)
    finally:
        before.stop()
        job.wait(60)
    assert job.run.summary()["status"] == "stopped"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [job.run.id]


def test_a_run_trained_inside_another_server_is_shown_but_never_signalled(tmp_path):
    """Only a CLI trainer says that SIGTERM stops it; another server's process must not get one."""
    from core.runs import RunStore

    run = tmp_path / "runs" / "20250101-120000-in-a-server"
    run.mkdir(parents=True)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "summary.json").write_text(json.dumps({
            "run_id": run.name, "status": "running", "started_at": time.time(), "pid": server.pid,
            "host": __import__("socket").gethostname()}))
        adopted = JobManager(tmp_path / "runs").current()
        assert adopted.run.id == run.name and adopted.active and adopted.pid is None
        adopted.stop()
        time.sleep(0.5)
        assert server.poll() is None  # still alive: no signal was sent
        assert adopted.run.stop_requested()  # the stop file, which a trainer in any process reads
        assert RunStore(tmp_path / "runs").get(run.name).status == "running"
    finally:
        server.kill()
        server.wait()
    assert adopted.wait(10) and adopted.state == "done"
    assert RunStore(tmp_path / "runs").get(run.name).status == "interrupted"  # its process ended mid-run


@pytest.mark.skipif(os.name == "nt", reason="Windows sends Ctrl-C to a console, not to one child")
def test_ctrl_c_stops_a_cli_run_after_its_step_and_keeps_it(long_config, tmp_path):
    process = subprocess.Popen(core_command("train", "--config", "-", "--runs-dir", str(tmp_path / "runs"),
                                            "--quiet"), cwd=ROOT, env=child_env(), text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(yaml.safe_dump(long_config.to_dict()))
    process.stdin.close()
    for line in process.stderr:
        if line.startswith(RUN_FOLDER):
            run_dir = line[len(RUN_FOLDER):].strip()
            break
    else:
        pytest.fail(f"no run folder line; exit code {process.wait()}")
    wait_until(lambda: os.path.exists(os.path.join(run_dir, "metrics.jsonl")), what="the first event")
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(60) == 1  # not finished, so not 0; and not a traceback
    assert "stopping after the current step" in rest and "Traceback" not in rest
    summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
    assert summary["status"] == "stopped" and summary["message"].startswith("stopped at step")
    assert process.stdout.read().strip().splitlines()[-1] == run_dir


def test_describe_and_device_in_a_child_match_this_process(tiny_bert):
    from core.anatomy import describe, describe_in_child

    assert describe_in_child(tiny_bert, "cls") == describe(tiny_bert, "cls")
    label = run_core("device").strip()
    assert re.fullmatch(r"(cuda \(.+\)|mps \(Apple GPU\)|cpu \(\d+ threads\))", label), label
    with pytest.raises(ValueError, match=r"^'.*missing' is not a model folder|does not exist"):
        describe_in_child(str(ROOT / "missing"), "mean")


def test_the_config_can_come_from_stdin_and_its_errors_name_stdin(tmp_path):
    done = subprocess.run([sys.executable, "-m", "core", "train", "--config", "-", "--runs-dir", str(tmp_path)],
                          input="training: {epochs: [}\n", cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: stdin: YAML syntax error at line 1")


def test_descriptions_of_local_folders_are_remembered_until_the_folder_changes(tiny_backbone_factory, tmp_path,
                                                                               monkeypatch):
    import shutil

    from core import anatomy

    folder = tmp_path / "model"
    shutil.copytree(tiny_backbone_factory("bert"), folder)
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = anatomy.describe_in_child

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(anatomy, "describe_in_child", counting)
    first = anatomy.describe_cached(str(folder), "mean")
    assert anatomy.describe_cached(str(folder), "mean") == first and len(calls) == 1  # the second is remembered
    assert anatomy.describe_cached(str(folder), "cls") != first and len(calls) == 2  # cls adds the pooler
    os.utime(folder / "config.json", ns=(1, 1))  # the folder changed: describe it again
    assert anatomy.describe_cached(str(folder), "mean") == first and len(calls) == 3
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(blocker / "cache"))  # an unusable cache is not an error
    assert anatomy.describe_cached(str(folder), "mean") == first and len(calls) == 4
    assert anatomy.describe_cached(str(folder), "mean") == first and len(calls) == 5  # nothing was remembered


def test_the_device_label_is_remembered_until_what_decides_the_device_changes(tmp_path, monkeypatch):
    from core import child

    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = []
    monkeypatch.setattr(child, "run_core", lambda *args, **kw: calls.append(args) or "cpu (2 threads)\n")
    assert child.remembered_device_label() is None
    assert child.device_label() == "cpu (2 threads)" and calls == [("device",)]
    assert child.device_label() == "cpu (2 threads)" and len(calls) == 1  # a restarted page: no torch import
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the GPUs on show changed: ask again
    assert child.remembered_device_label() is None
    assert child.device_label() == "cpu (2 threads)" and len(calls) == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(blocker / "cache"))
    assert child.device_label() == "cpu (2 threads)" and len(calls) == 3  # an unusable cache is not an error


def test_the_page_runs_a_sweep_as_one_child_and_follows_each_member(small_config, tiny_bert, tmp_path):
    """A sweep from the page is one ``python -m core sweep`` child: the job learns the sweep folder, then each
    member's run folder as it starts (its live view follows it), and every member records who started it."""
    manager = JobManager(tmp_path / "runs")
    job = manager.start(small_config(tiny_bert, name="page sweep"), owner="visitor-a",
                        sweep={"depths": "1,3", "seeds": 1})
    seen = set()
    deadline = time.time() + 240
    while job.active and time.time() < deadline:
        if job.run is not None:
            seen.add(job.run.id)
        time.sleep(0.05)
    assert job.wait(60) and job.state == "done" and not job.error
    record = json.loads((job.sweep_folder / "sweep.json").read_text(encoding="utf-8"))
    assert [(m["variant"], m["status"]) for m in record["members"]] == [("depth 1", "finished"),
                                                                         ("depth 3", "finished")]
    member_ids = [m["run_id"] for m in record["members"]]
    assert job.run.id == member_ids[-1] and set(member_ids) >= seen and len(seen) >= 1
    for run_id in member_ids:
        summary = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text(encoding="utf-8"))
        assert summary["owner"] == "visitor-a" and summary["sweep"] == record["sweep_id"]


def test_stop_ends_a_page_sweep_after_its_member_by_the_stop_file_alone(long_config, tmp_path, monkeypatch):
    """Where Stop cannot signal (Windows), the stop file ends the member that trains as 'stopped' with its
    weights, and no further member starts."""
    monkeypatch.setattr(core.jobs, "SIGTERM_STOPS", False)
    manager = JobManager(tmp_path / "runs")
    job = manager.start(long_config, sweep={"depths": "1,3", "seeds": 1})
    wait_until(lambda: job.run is not None and steps_written(job.run) >= 2, timeout=180, what="the first member")
    manager.stop()
    assert job.wait(90) and job.state == "done"
    record = json.loads((job.sweep_folder / "sweep.json").read_text(encoding="utf-8"))
    assert [(m["variant"], m["status"]) for m in record["members"]] == [("depth 1", "stopped"),
                                                                         ("depth 3", "not started")]
    assert record["status"] == "stopped" and job.run.has_weights()
