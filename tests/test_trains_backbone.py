"""tasks.<name>.trains_backbone: false keeps a task's loss out of the shared backbone; 'train: demo'
names the built-in data so a demo config can still set it."""

from __future__ import annotations

import threading

import pytest
import torch

from core import events as ev
from core.config import parse_config
from core.data import DataError, load_tasks
from core.runs import RunStore
from core.training import Trainer, prepare, run_experiment


def tasks_section(small_data, topic: bool, sentiment: bool) -> dict:
    return {"topic": {**small_data, "label_column": "topic", "trains_backbone": topic},
            "sentiment": {**small_data, "label_column": "sentiment", "trains_backbone": sentiment}}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def moved(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}


def staged(config, tmp_path) -> Trainer:
    experiment = prepare(config, tmp_path)
    trainer = Trainer(experiment, RunStore(tmp_path).create(config), ev.EventBus([]), threading.Event())
    trainer.setup()
    return trainer


@pytest.mark.parametrize("cached", [False, True], ids=["full-model", "cached-prefix"])
def test_a_task_that_does_not_train_the_backbone_moves_only_its_head(cached, tiny_bert, small_config, small_data,
                                                                      tmp_path):
    freeze = {"parts": ["embeddings", "layer.0"]} if cached else {}
    config = small_config(tiny_bert, tasks=tasks_section(small_data, topic=False, sentiment=True), freeze=freeze,
                          training={"device": "cpu", "warmup_ratio": 0.0})
    trainer = staged(config, tmp_path)
    assert trainer.prefix_cache.active == cached
    model = trainer.experiment.model
    before = snapshot(model)
    trainer.train_step("topic", [0, 1, 2, 3], 1.0)
    assert moved(model, before) and all(name.startswith("heads.topic.") for name in moved(model, before))
    before = snapshot(model)
    trainer.train_step("sentiment", [0, 1, 2, 3], 1.0)  # the other task still trains the backbone
    assert any(name.startswith("backbone.") for name in moved(model, before))


def test_no_task_training_the_backbone_leaves_it_bit_identical(tiny_bert, small_config, small_data, tmp_path):
    config = small_config(tiny_bert, tasks=tasks_section(small_data, topic=False, sentiment=False),
                          training={"device": "cpu", "save": "full"})
    pristine = snapshot(prepare(config, tmp_path).model.backbone)
    run = run_experiment(config, tmp_path / "runs")
    summary = run.summary()
    assert summary["status"] == "finished"
    from core.checkpoints import load_run_model

    trained, _ = load_run_model(run)
    assert not moved(trained.backbone, pristine)  # every backbone tensor is the pretrained one, bit for bit
    assert set(summary["tasks"]) == {"topic", "sentiment"}  # both tasks are still evaluated


def test_a_frozen_head_that_does_not_train_the_backbone_makes_its_steps_no_ops(tiny_bert, small_config, small_data,
                                                                               tmp_path):
    config = small_config(tiny_bert, tasks=tasks_section(small_data, topic=False, sentiment=True),
                          freeze={"parts": ["head.topic"]}, training={"device": "cpu"})
    trainer = staged(config, tmp_path)
    before = snapshot(trainer.experiment.model)
    loss = trainer.train_step("topic", [0, 1, 2, 3], 1.0)
    assert loss > 0 and not moved(trainer.experiment.model, before)


def test_train_demo_names_the_built_in_data(tiny_bert):
    config = parse_config({"backbone": tiny_bert, "tasks": {"topic": {"train": "demo", "trains_backbone": False},
                                                            "sentiment": {"train": "demo"}}})
    assert config.trains_backbone("topic") is False and config.trains_backbone("sentiment") is True
    demo = load_tasks(parse_config({"backbone": tiny_bert}))
    named = load_tasks(config)
    assert {n: (t.labels, t.train_texts, t.val_labels) for n, t in named.items()} == {
        n: (t.labels, t.train_texts, t.val_labels) for n, t in demo.items()}
    with pytest.raises(DataError, match="'mood'.*topic and sentiment"):
        load_tasks(parse_config({"backbone": tiny_bert, "tasks": {"mood": {"train": "demo"}}}))
