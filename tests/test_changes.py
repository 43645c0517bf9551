"""The change map: frozen parts are exactly 0 at every record, trainable parts move, and gradient
norms are 0 where nothing can learn."""

from __future__ import annotations

import json

import pytest
import torch

from core.changes import ChangeMap
from core.runs import RunStore
from core.training import run_experiment


def change_events(run) -> list[dict]:
    lines = (run.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == "change"]


def test_lower_k_frozen_parts_are_exactly_zero_at_every_record(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, freeze={"preset": "lower_k", "k": 2},
                          training={"device": "cpu", "eval_every": 2, "epochs": 2})
    run = run_experiment(config, tmp_path)
    summary = run.summary()
    frozen, records = set(summary["frozen"]), change_events(run)
    assert frozen == {"embeddings", "layer.0", "layer.1"}
    assert len(records) >= 3 and records[-1]["step"] == summary["steps"]  # every evaluation and the end
    for record in records:
        for part in frozen:
            assert record["parts"][part] == {"relative_change": 0.0, "grad_norm": 0.0}
    final = summary["change"]
    assert final == records[-1]["parts"]
    trainable = set(final) - frozen
    assert trainable == {"layer.2", "head.topic", "head.sentiment"}  # tiny_bert: 3 layers, mean pooling
    assert all(final[part]["relative_change"] > 0 and final[part]["grad_norm"] > 0 for part in trainable)
    assert summary["change_map"]["storage"] == "cpu" and summary["change_map"]["mb"] > 0
    assert not (run.path / "change_start.bin").exists()


def test_relative_change_and_mean_gradient_norm_are_what_they_say(tiny_bert):
    from core.backbones import load_backbone
    from core.model import MultiTaskModel

    backbone, _ = load_backbone(tiny_bert, "mean")
    model = MultiTaskModel(backbone, {"topic": ["a", "b"]}, "mean", 0.0)
    changes = ChangeMap(model, torch.device("cpu"))
    weight, bias = model.heads["topic"].classifier.weight, model.heads["topic"].classifier.bias
    start = torch.cat([weight.detach().reshape(-1), bias.detach().reshape(-1)]).clone()
    for g in (3.0, 5.0):  # two steps with gradient norms 3 and 5 (on the weight only)
        weight.grad = torch.zeros_like(weight)
        weight.grad[0, 0] = g
        changes.add_gradients()
    with torch.no_grad():
        weight[0, 0] += 1.0
    record = changes.record()
    assert record["head.topic"]["relative_change"] == pytest.approx(1.0 / start.norm().item())
    assert record["head.topic"]["grad_norm"] == pytest.approx(4.0)
    assert record["layer.0"] == {"relative_change": 0.0, "grad_norm": 0.0}
    assert changes.record()["head.topic"]["grad_norm"] == 0.0  # summed since the last record only


def test_a_short_machine_keeps_the_start_in_a_memory_mapped_file(tiny_bert, tmp_path, monkeypatch):
    import psutil

    from core.backbones import load_backbone
    from core.model import MultiTaskModel

    backbone, _ = load_backbone(tiny_bert, "mean")
    model = MultiTaskModel(backbone, {"topic": ["a", "b"]}, "mean", 0.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1024})())
    changes = ChangeMap(model, torch.device("cpu"), tmp_path)
    assert changes.storage == "mmap" and (tmp_path / "change_start.bin").exists()
    with torch.no_grad():
        model.heads["topic"].classifier.bias += 1.0
    record = changes.record()
    assert record["head.topic"]["relative_change"] > 0 and record["embeddings"]["relative_change"] == 0.0
    changes.close()
    assert not (tmp_path / "change_start.bin").exists()


def test_an_everything_frozen_run_records_zeros(tiny_bert, small_config, tmp_path):
    run = run_experiment(small_config(tiny_bert, freeze={"preset": "scenario1"}), tmp_path)
    summary = RunStore(tmp_path).get(run.id).summary()
    assert summary["status"] == "evaluated"
    assert set(summary["change"]) == set(summary["frozen"])
    assert all(v == {"relative_change": 0.0, "grad_norm": 0.0} for v in summary["change"].values())


def test_cli_inspect_prints_the_change_per_part_with_frozen_parts_marked(tiny_bert, small_config, tmp_path, capsys):
    from core.__main__ import main

    run = run_experiment(small_config(tiny_bert, freeze={"preset": "lower_k", "k": 2}), tmp_path)
    assert main(["inspect", run.id, "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_part = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()[0] in run.summary()["change"]}
    assert set(by_part) == {"embeddings", "layer.0", "layer.1", "layer.2", "head.topic", "head.sentiment"}
    assert "frozen: exactly 0" in by_part["layer.1"] and "frozen" not in by_part["layer.2"]
    assert any(line.startswith("  topic: accuracy ") for line in lines)
    assert main(["inspect", run.id, "--json", "--runs-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["change"]["layer.0"]["relative_change"] == 0.0 and data["change"]["layer.2"]["relative_change"] > 0


def test_cli_inspect_refuses_a_missing_or_running_run(tiny_bert, small_config, tmp_path, capsys):
    import os

    from core.__main__ import main

    assert main(["inspect", "no-such-run", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: no run 'no-such-run' in {tmp_path}"
    run = RunStore(tmp_path).create(small_config(tiny_bert))
    run.update_summary(status="running", pid=os.getpid())
    assert main(["inspect", run.id, "--runs-dir", str(tmp_path)]) == 2
    assert "is still running" in capsys.readouterr().err


def test_cli_inspect_says_an_old_run_has_no_change_map(tiny_bert, small_config, tmp_path, capsys):
    from core.__main__ import main

    run = run_experiment(small_config(tiny_bert, freeze={"preset": "scenario2"}), tmp_path)
    summary = run.summary()
    del summary["change"]
    run.write_summary(summary)
    assert main(["inspect", run.id, "--runs-dir", str(tmp_path)]) == 0
    assert "from before the change map" in capsys.readouterr().out


def test_history_reads_either_figure_per_part_at_every_record():
    from core.change_history import history
    from core.events import ChangeEvent, StepEvent

    events = [ChangeEvent(2, {"embeddings": {"relative_change": 0.0, "grad_norm": 0.0},
                              "head.topic": {"relative_change": 0.1, "grad_norm": 3.0}}),
              StepEvent(step=3, epoch=0.5, task="topic", loss=1.0, lr=1e-4),
              ChangeEvent(4, {"embeddings": {"relative_change": 0.0, "grad_norm": 0.0},
                              "head.topic": {"relative_change": 0.2, "grad_norm": 1.5}})]
    assert history(events) == ([2, 4], {"embeddings": [0.0, 0.0], "head.topic": [0.1, 0.2]})
    assert history(events, "grad_norm") == ([2, 4], {"embeddings": [0.0, 0.0], "head.topic": [3.0, 1.5]})
    assert history(events[1:2]) == ([], {})
