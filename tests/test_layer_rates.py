"""Layer-wise learning rates: the top layer at learning_rate, each layer below times the decay once more."""

from __future__ import annotations

import threading

import pytest

from core import events as ev
from core.config import ConfigError, parse_config
from core.layer_rates import part_rates
from core.runs import RunStore
from core.training import Trainer, prepare

PARTS = ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "head.topic", "head.sentiment"]


def test_each_layer_below_the_top_gets_the_decay_once_more():
    rates = part_rates(PARTS, 1e-4, 1e-3, 0.5)
    assert rates == pytest.approx({"embeddings": 1.25e-5, "layer.0": 2.5e-5, "layer.1": 5e-5, "layer.2": 1e-4,
                                   "pooler": 1e-4, "head.topic": 1e-3, "head.sentiment": 1e-3})
    assert set(part_rates(PARTS, 1e-4, 1e-3, 1.0).values()) == {1e-4, 1e-3}  # no decay: one backbone rate


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_a_decay_outside_zero_to_one_is_named(value):
    with pytest.raises(ConfigError) as caught:
        parse_config({"training": {"layer_lr_decay": value}})
    assert str(caught.value) == (f"invalid config: training.layer_lr_decay: must be in (0, 1] (1: one rate for the "
                                 f"whole backbone), not {value}")


def test_the_default_is_no_decay():
    assert parse_config({}).training.layer_lr_decay == 1.0


def trainer_for(config, tmp_path) -> Trainer:
    experiment = prepare(config, tmp_path)
    return Trainer(experiment, RunStore(tmp_path).create(config), ev.EventBus(), threading.Event())


def test_the_optimizer_has_one_group_pair_per_part_at_its_rate(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, pooling="cls", freeze={"parts": ["layer.0"]},
                          training={"learning_rate": 1e-4, "head_learning_rate": 2e-3, "weight_decay": 0.05,
                                    "layer_lr_decay": 0.5, "device": "cpu"})
    trainer = trainer_for(config, tmp_path)
    model = trainer.experiment.model
    groups = trainer.make_optimizer().param_groups
    rates = part_rates(list(model.parts()), 1e-4, 2e-3, 0.5)
    assert [g["part"] for g in groups[::2]] == ["embeddings", "layer.1", "layer.2", "pooler", "head.topic",
                                               "head.sentiment"]  # layer.0 is frozen: not in the optimizer
    for group in groups:
        assert group["lr"] == rates[group["part"]]
        members = {id(p) for m in model.parts()[group["part"]] for p in m.parameters()}
        assert {id(p) for p in group["params"]} <= members
        assert group["weight_decay"] == (0.05 if group["params"][0].dim() >= 2 else 0.0)
        assert all((p.dim() >= 2) == (group["weight_decay"] > 0) for p in group["params"])
    assert groups[0]["lr"] == pytest.approx(1e-4 * 0.5 ** 3)  # the embeddings: the lowest rate
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_the_warm_up_scales_every_part_alike(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, training={"layer_lr_decay": 0.8, "device": "cpu", "warmup_ratio": 0.5})
    trainer = trainer_for(config, tmp_path)
    trainer.setup()
    trainer.train_step("topic", [0, 1, 2, 3], 1.0)
    rates = part_rates(list(trainer.experiment.model.parts()), 5e-5, 1e-3, 0.8)
    factor = 1 / 6  # step 1 of a 6-step warm-up (12 steps, warmup_ratio 0.5)
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(rates[group["part"]] * factor)
