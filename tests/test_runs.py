"""The run store: ids, listing, renaming, deleting, interrupted runs, atomic files, and warm starts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file

from core.config import parse_config
from core.data import DataError
from core.runs import Run, RunError, RunStore, atomic_write_json


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_create_list_rename_delete(tmp_path):
    store = RunStore(tmp_path / "runs")
    assert store.list() == []
    first = store.create(parse_config({"name": "Baseline run", "freeze": {"preset": "scenario2"}}))
    second = store.create(parse_config({"freeze": {"preset": "scenario2"}}))
    assert first.id.endswith("-baseline-run") and second.id.endswith("-scenario2")
    assert first.id != second.id
    assert first.status == "running" and first.config().name == "Baseline run"
    first.update_summary(started_at=1.0, status="finished")
    assert [r.id for r in store.list()] == [second.id, first.id]  # newest first

    store.rename(first.id, "  Renamed  ")
    assert store.get(first.id).name == "Renamed"
    with pytest.raises(RunError, match="1 to 80 characters"):
        store.rename(first.id, "   ")
    with pytest.raises(RunError, match="still training"):  # this process is alive, so the run is live
        store.delete(second.id)
    store.delete(first.id)
    assert not first.path.exists()
    assert [r.id for r in store.list()] == [second.id]
    with pytest.raises(RunError, match="no run"):
        store.get(first.id)


def test_same_second_ids_do_not_collide(tmp_path):
    store = RunStore(tmp_path)
    config = parse_config({"name": "same"})
    ids = {store.create(config).id for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("bad", ["../x", "..", "a/../../x", ".hidden", "", "x" * 121, "a b", "run;rm", "run\n"])
def test_run_ids_are_validated(bad, tmp_path):
    store = RunStore(tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    with pytest.raises(RunError):
        store.get(bad)
    with pytest.raises(RunError):
        store.rename(bad, "new name")
    with pytest.raises(RunError):
        store.delete(bad)


def test_delete_and_rename_never_leave_the_store(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    outside = store.create(parse_config({"name": "outside"}))  # a real run folder, but addressed by path
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (victim / "summary.json").write_text('{"status": "finished"}')
    monkeypatch.chdir(store.root)
    for target in ["../victim", str(victim), str(outside.path)]:
        with pytest.raises(RunError):
            store.delete(target)
        with pytest.raises(RunError):
            store.rename(target, "pwned")
    assert (victim / "keep.txt").read_text() == "precious"
    assert json.loads((victim / "summary.json").read_text()) == {"status": "finished"}
    assert outside.path.exists()
    # reading a run by its folder stays possible (init_from accepts a folder), but only a run folder
    assert store.get(str(outside.path)).id == outside.id
    with pytest.raises(RunError, match="not a run folder"):
        store.get(str(tmp_path))


def test_a_run_left_running_by_a_dead_process_is_interrupted(tmp_path):
    store = RunStore(tmp_path)
    orphan = store.create(parse_config({"name": "orphan"}))
    live = store.create(parse_config({"name": "live"}))
    orphan.update_summary(pid=dead_pid())
    statuses = {r.id: r.status for r in store.list()}
    assert statuses == {orphan.id: "interrupted", live.id: "running"}
    assert "ended before it finished" in orphan.summary()["message"]
    store.delete(orphan.id)  # an interrupted run can be deleted
    assert not orphan.path.exists()


def test_summary_writes_are_atomic_even_from_two_threads(tmp_path):
    run = Run(tmp_path)
    run.write_summary({"status": "running"})
    errors = []

    def writer(key):
        try:
            for n in range(200):
                run.update_summary(**{key: n})
        except Exception as error:  # noqa: BLE001 - any error is the failure
            errors.append(repr(error))

    threads = [threading.Thread(target=writer, args=(f"k{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(run.summary_path.read_text())["status"] == "running"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "data.json"
    atomic_write_json(path, {"a": 1, "long": "x" * 10_000})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    from core.events import StateEvent, StepEvent

    run = Run(tmp_path)
    run.append_event(StateEvent("started"))
    run.append_event(StepEvent(1, 0.1, "topic", 1.2, 1e-4))
    with open(run.metrics_path, "a") as handle:
        handle.write('{"kind": "step", "step": 2, "ep')
    assert [e.kind for e in run.events()] == ["state", "step"]
    assert run.events()[1].loss == 1.2


def test_no_temporary_files_after_a_run(tiny_bert, small_config, tmp_path):
    from core.training import run_experiment

    run = run_experiment(small_config(tiny_bert), tmp_path)
    assert run.status == "finished"
    leftovers = [p for p in run.path.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert leftovers == []
    names = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "backbone", "heads.safetensors", "heads.json"} <= names
    assert run.config() == small_config(tiny_bert)  # config.yaml is a complete record


def test_init_from_warm_start(tiny_bert, small_config, tmp_path):
    from core.training import prepare, run_experiment

    run_a = run_experiment(small_config(tiny_bert), tmp_path)
    assert run_a.status == "finished"
    heads_a = load_file(str(run_a.heads_path))
    labels_a = json.loads((run_a.path / "heads.json").read_text())["labels"]
    assert labels_a["topic"] == ["Food", "Sports", "Technology", "Travel"]

    # B sees only two topics, so on its own it would number them Sports=0, Travel=1
    two = tmp_path / "two_topics.csv"
    source = small_config(tiny_bert).tasks["topic"]
    with open(source.train, encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["topic"] in ("Sports", "Travel")]
    with open(two, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "topic", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)
    tasks = {"topic": {"train": str(two), "label_column": "topic"},
             "sentiment": {"train": str(two), "label_column": "sentiment"}}
    config_b = small_config(tiny_bert, tasks=tasks, init_from=run_a.id,
                            freeze={"preset": "scenario3", "head": "topic"})
    experiment = prepare(config_b, tmp_path)
    topic = experiment.tasks["topic"]
    assert topic.labels == labels_a["topic"]  # A's order, all four labels
    assert {topic.labels[i] for i in topic.train_labels + topic.val_labels} <= {"Sports", "Travel"}
    texts = {r["text"]: r["topic"] for r in rows}
    assert all(texts[t] == topic.labels[i] for t, i in zip(topic.train_texts, topic.train_labels))

    run_b = run_experiment(config_b, tmp_path, experiment=experiment)
    summary_b = run_b.summary()
    assert summary_b["status"] == "finished", summary_b["message"]
    assert summary_b["init_from"] == run_a.id and summary_b["frozen"] == ["head.topic"]
    assert summary_b["tasks"]["topic"]["labels"] == labels_a["topic"]
    heads_b = load_file(str(run_b.heads_path))
    for key in ("topic.classifier.weight", "topic.classifier.bias"):
        assert torch.equal(heads_b[key], heads_a[key]), key  # the frozen head is A's, bit for bit
    assert not torch.equal(heads_b["sentiment.classifier.weight"], heads_a["sentiment.classifier.weight"])
    backbone_a = load_file(str(run_a.backbone_dir / "model.safetensors"))
    backbone_b = load_file(str(run_b.backbone_dir / "model.safetensors"))
    assert any(not torch.equal(backbone_a[k], backbone_b[k]) for k in backbone_a)  # B's backbone trained on

    # a label A's head never saw cannot be mapped onto it
    odd = tmp_path / "odd.csv"
    odd.write_text("text,topic\nrain all day,Weather\nsun again,Weather\nthe match,Sports\nanother match,Sports\n")
    bad = small_config(tiny_bert, tasks={"topic": {"train": str(odd), "validation": str(odd), "label_column": "topic"}},
                       init_from=run_a.id)
    with pytest.raises(DataError, match="labels Weather are unknown to run .*, which knows Food, Sports, Tech"):
        prepare(bad, tmp_path)


def test_init_from_refuses_unusable_sources(tiny_bert, small_config, tmp_path):
    from core.training import prepare

    store = RunStore(tmp_path)
    empty = store.create(parse_config({}))
    empty.update_summary(status="failed")
    with pytest.raises(DataError, match=f"run {empty.id} has no saved weights"):
        prepare(small_config(tiny_bert, init_from=empty.id), tmp_path)
    with pytest.raises(RunError, match="no run"):
        prepare(small_config(tiny_bert, init_from="20990101-000000-none"), tmp_path)


# ---- statuses and atomic writes, exactly ----------------------------------------------------

import os  # noqa: E402
import socket  # noqa: E402

from core import runs as runs_module  # noqa: E402
from core.runs import atomic_write_text, pid_alive  # noqa: E402


def test_the_temporary_file_is_hidden_beside_the_target_and_per_thread(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((src, dst)) or real_replace(src, dst))
    target = tmp_path / "summary.json"
    atomic_write_text(target, "one")
    thread = threading.Thread(target=atomic_write_text, args=(target, "two"))
    thread.start()
    thread.join()
    (first, dst), (second, _) = renames
    assert dst == target and first.parent == target.parent  # a rename within one folder is atomic
    assert first.name == f".summary.json.{os.getpid()}.{threading.get_ident()}.tmp"
    assert second.name.startswith(".summary.json.") and second != first  # another thread, another name
    assert target.read_text(encoding="utf-8") == "two"


def test_a_failed_write_raises_its_own_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old ✓")

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs_module, "open", no_room, raising=False)  # before the temporary exists
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == "old ✓" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_summaries_are_indented_json_in_the_order_given(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"status": "finished", "b": [1, 2], "a": {"x": 1}})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "status": "finished",\n  "b": [\n    1,\n    2\n  ],\n  "a": {\n    "x": 1\n  }\n}'
    assert list(json.loads(text)) == ["status", "b", "a"]


def test_whether_a_run_process_is_alive(monkeypatch):
    here = socket.gethostname()
    assert pid_alive(os.getpid()) and pid_alive(os.getpid(), here)
    assert not pid_alive(None) and not pid_alive(0) and not pid_alive(os.getpid(), "another-host")
    assert not pid_alive(dead_pid(), here)

    if os.name == "posix":
        assert pid_alive(1, here)  # it exists, owned by another user (or by root): alive


def test_an_unreadable_summary_reads_as_status_unknown(tmp_path):
    run = Run(tmp_path / "r1")
    assert run.summary() == {"run_id": "r1", "status": "unknown"} and run.status == "unknown"
    run.path.mkdir()
    run.summary_path.write_text("{not json", encoding="utf-8")
    assert run.summary() == {"run_id": "r1", "status": "unknown"}
    assert run.update_summary(status="finished") == {"run_id": "r1", "status": "finished"}
    assert run.update_summary(name="x") == {"run_id": "r1", "status": "finished", "name": "x"}
    assert run.summary()["name"] == "x"


def test_events_skip_lines_that_are_not_events(tmp_path):
    from core.events import StepEvent

    run = Run(tmp_path)
    assert run.events() == []  # no metrics file yet
    run.append_event(StepEvent(1, 0.1, "topic", 1.5, 1e-4))
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write('{"kind": "nonsense"}\n[1, 2]\n{"kind": "step", "step": 2}\n')
    run.append_event(StepEvent(3, 0.3, "topic", 1.1, 1e-4))
    assert [e.step for e in run.events()] == [1, 3]


def test_only_a_running_run_of_a_dead_process_is_marked_interrupted(tmp_path):
    store = RunStore(tmp_path)
    finished = store.create(parse_config({"name": "done"}))
    finished.update_summary(status="finished", pid=dead_pid())
    orphan = store.create(parse_config({"name": "orphan"}))
    orphan.update_summary(pid=dead_pid())
    elsewhere = store.create(parse_config({"name": "elsewhere"}))
    elsewhere.update_summary(host="another-host")  # its process cannot be checked from here
    store.list()
    assert finished.summary()["status"] == "finished" and "message" not in finished.summary()
    assert orphan.summary()["status"] == elsewhere.summary()["status"] == "interrupted"
    assert orphan.summary()["message"] == "the process that ran it ended before it finished"
    assert orphan.summary()["name"] == "orphan"  # the rest of the summary is kept


def test_delete_refuses_only_a_run_that_is_still_training(tmp_path):
    store = RunStore(tmp_path)
    live = store.create(parse_config({"name": "live"}))
    with pytest.raises(RunError) as caught:
        store.delete(live.id)
    assert str(caught.value) == f"run {live.id} is still training; stop it first"
    assert live.path.is_dir()
    live.update_summary(status="failed")  # its process is alive, but the run is over
    store.delete(live.id)
    assert not live.path.exists()
    elsewhere = store.create(parse_config({"name": "elsewhere"}))
    elsewhere.update_summary(host="another-host")  # our pid, but on another machine: not ours to wait for
    store.delete(elsewhere.id)
    assert not elsewhere.path.exists()


def test_events_since_returns_each_event_once_across_ticks_even_when_a_line_is_torn(tmp_path):
    """The live view's reader: what the trainer appends between two ticks comes back once, at the tick
    after it is whole; a line half-written at a tick is neither returned nor skipped for good."""
    from core.events import StepEvent, to_dict

    run = Run(tmp_path)
    assert run.events_since(0) == ([], 0)  # no metrics file yet
    seen, offset = [], 0
    run.append_event(StepEvent(1, 0.1, "topic", 1.5, 1e-4))
    run.append_event(StepEvent(2, 0.2, "topic", 1.4, 1e-4))
    new, offset = run.events_since(offset)
    seen += new
    line = json.dumps(to_dict(StepEvent(3, 0.3, "topic", 1.3, 1e-4))) + "\n"
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write(line[:20])  # torn: the writer is mid-line at this tick
    new, torn_offset = run.events_since(offset)
    assert new == [] and torn_offset == offset  # not consumed
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write(line[20:])  # completed
    new, offset = run.events_since(torn_offset)
    seen += new
    assert run.events_since(offset) == ([], offset)  # nothing new: nothing returned twice
    run.append_event(StepEvent(4, 0.4, "topic", 1.2, 1e-4))
    new, offset = run.events_since(offset)
    seen += new
    assert [e.step for e in seen] == [1, 2, 3, 4]
    assert seen == run.events() and offset == run.metrics_path.stat().st_size
    with pytest.raises(RunError, match="negative"):
        run.events_since(-1)


def test_the_event_log_grows_by_what_was_appended(tmp_path, monkeypatch):
    from core.events import StepEvent
    from core.runs import EventLog

    run = Run(tmp_path)
    log = EventLog(run)
    run.append_event(StepEvent(1, 0.1, "topic", 1.5, 1e-4))
    assert [e.step for e in log.update()] == [1] and log.offset == run.metrics_path.stat().st_size
    run.append_event(StepEvent(2, 0.2, "topic", 1.4, 1e-4))
    asked = []
    original = Run.events_since
    monkeypatch.setattr(Run, "events_since", lambda self, offset: asked.append(offset) or original(self, offset))
    assert [e.step for e in log.update()] == [1, 2]
    assert asked and asked[0] > 0  # it read from where the last update stopped, not from the start
