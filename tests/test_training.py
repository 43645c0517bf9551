"""The training loop: it learns, it reports, it stops when asked, and it fails cleanly."""

from __future__ import annotations

import statistics
import threading

import pytest
import torch

from core import events as ev
from core.config import parse_config
from core.locks import BusyError, training_lock
from core.runs import RunStore
from core.training import OOM_HINT, Trainer, prepare, run_experiment


def kinds(events) -> list[str]:
    return [e.kind if e.kind != "state" else f"state:{e.state}" for e in events]


def test_loss_falls_on_the_demo_data(tiny_bert, tmp_path):
    config = parse_config({"backbone": tiny_bert, "training": {
        "epochs": 2, "batch_size": 64, "max_length": 32, "learning_rate": 2e-3, "head_learning_rate": 2e-2,
        "eval_every": 0, "warmup_ratio": 0.05}})
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    losses = [e.loss for e in seen if isinstance(e, ev.StepEvent)]
    assert len(losses) == summary["steps"] == 2 * (18 + 18)  # 1,115 rows per task, batches of 64
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    assert last < 0.85 * first, (first, last)  # seen: 1.29 -> 0.91
    # clearly better than chance (0.25) or one class on the validation data
    assert summary["tasks"]["topic"]["accuracy"] > 0.4
    assert sum(map(sum, summary["tasks"]["topic"]["confusion"])) == 276


def test_events_and_metrics_file(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, training={"eval_every": 5, "epochs": 2})
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    order = kinds(seen)
    assert order[0] == "state:started" and order[-1] == "state:finished"
    assert order[-2] == "eval" and seen[-2].final  # the final evaluation comes just before the end
    steps = [e for e in seen if isinstance(e, ev.StepEvent)]
    progress = [e for e in seen if isinstance(e, ev.ProgressEvent)]
    evals = [e for e in seen if isinstance(e, ev.EvalEvent)]
    assert [e.step for e in steps] == list(range(1, 25)) == [e.step for e in progress]
    assert {e.total_steps for e in progress} == {24} and progress[-1].eta_seconds == 0
    assert {e.task for e in steps} == {"topic", "sentiment"}
    assert all(e.loss > 0 and e.lr >= 0 for e in steps)
    assert [(e.step, e.final) for e in evals] == [(5, False), (10, False), (15, False), (20, False), (24, True)]
    assert steps[-1].epoch == 2.0
    for e in evals:
        assert set(e.tasks) == {"topic", "sentiment"}
        assert set(e.tasks["topic"]) == {"loss", "accuracy", "macro_f1", "confusion", "labels"}
        assert sum(map(sum, e.tasks["topic"]["confusion"])) == 24
    assert summary["tasks"]["topic"]["accuracy"] == evals[-1].tasks["topic"]["accuracy"]
    # metrics.jsonl holds the same events, in the same order, and reads back to the same objects
    stored = run.events()
    assert kinds(stored) == order
    assert [ev.to_dict(e) for e in stored] == [ev.to_dict(e) for e in seen]
    assert run.has_weights()


def test_stop_takes_effect_within_one_step(tiny_bert, small_config, tmp_path):
    stop = threading.Event()

    def stop_at_five(event):
        if isinstance(event, ev.StepEvent) and event.step == 5:
            stop.set()

    config = small_config(tiny_bert, training={"epochs": 3})
    seen = []
    run = run_experiment(config, tmp_path, [stop_at_five, seen.append], stop)
    summary = run.summary()
    assert summary["status"] == "stopped"
    assert summary["steps"] in (5, 6) and summary["total_steps"] == 36
    assert summary["message"] == f"stopped at step {summary['steps']} of 36"
    stored = run.events()
    assert len([e for e in stored if e.kind == "step"]) == summary["steps"]
    assert kinds(stored)[0] == "state:started" and kinds(stored)[-1] == "state:stopped"
    assert run.has_weights()  # a stopped run keeps what it learned


def test_a_stop_file_in_the_run_folder_stops_it_after_the_current_step(tiny_bert, small_config, tmp_path):
    """No event, no signal: what any process on any OS can do (the page's Stop, a restarted page)."""
    runs = []

    def stop_file_at_five(event):
        if isinstance(event, ev.StepEvent) and event.step == 5:
            runs[0].request_stop()
            runs[0].request_stop()  # pressed twice: still one request

    run = run_experiment(small_config(tiny_bert, training={"epochs": 3}), tmp_path, [stop_file_at_five],
                         on_run=runs.append)
    summary = run.summary()
    assert summary["status"] == "stopped" and summary["message"] == "stopped at step 5 of 36"
    assert summary["steps"] == 5 == len([e for e in run.events() if e.kind == "step"])
    assert run.has_weights()
    assert not run.stop_path.exists() and not run.stop_requested()  # the finished record keeps no request


def _failing_step(after: int, error: BaseException):
    original = Trainer.train_step
    calls = []

    def step(self, task, rows, weight):
        calls.append(1)
        if len(calls) > after:
            raise error
        return original(self, task, rows, weight)

    return step


def test_a_failing_step_is_stored_and_the_next_run_can_start(tiny_bert, small_config, tmp_path, monkeypatch):
    config = small_config(tiny_bert)
    monkeypatch.setattr(Trainer, "train_step", _failing_step(2, RuntimeError("the batch exploded\nsecond line")))
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["message"] == "RuntimeError: the batch exploded"
    assert summary["steps"] == 2
    assert kinds(seen)[-1] == "state:failed" and seen[-1].message == summary["message"]
    assert not run.has_weights()
    monkeypatch.undo()
    monkeypatch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path))
    again = run_experiment(config, tmp_path)  # the lock was released
    assert again.summary()["status"] == "finished"
    assert [r.status for r in RunStore(tmp_path).list()] == ["finished", "failed"]


def test_out_of_memory_suggests_a_smaller_batch(tiny_bert, small_config, tmp_path, monkeypatch):
    config = small_config(tiny_bert)
    monkeypatch.setattr(Trainer, "train_step", _failing_step(0, torch.OutOfMemoryError("CUDA out of memory.")))
    run = run_experiment(config, tmp_path)
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["message"] == OOM_HINT
    assert "smaller batch size" in OOM_HINT and "max length" in OOM_HINT


def test_a_second_run_is_refused_while_one_trains(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert)
    experiment = prepare(config, tmp_path)
    with training_lock("cpu"):
        with pytest.raises(BusyError, match="already training"):
            run_experiment(config, tmp_path, experiment=experiment)
    assert RunStore(tmp_path).list() == []  # no run folder was left behind


def test_a_short_real_minilm_run(small_config, tmp_path):
    """Frozen pretrained MiniLM with trained heads: the backbone stays exact and topic is learned."""
    config = small_config("minilm", freeze={"preset": "scenario2"},
                          training={"epochs": 3, "head_learning_rate": 2e-2})
    experiment = prepare(config, tmp_path)
    backbone_before = {k: v.clone() for k, v in experiment.model.backbone.state_dict().items()}
    run = run_experiment(config, tmp_path, experiment=experiment)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    assert summary["params"]["trainable"] == 384 * 4 + 4 + 384 * 3 + 3  # the two heads only
    for name, tensor in experiment.model.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), name
    # pretrained sentence features separate the four topics well above chance (0.25)
    assert summary["tasks"]["topic"]["accuracy"] >= 0.6, summary["tasks"]["topic"]
