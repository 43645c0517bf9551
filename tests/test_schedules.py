"""Freeze schedules: the plans they make, what the optimizer does when parameters join or leave mid-run,
the plan events, the cache, and the refusals before training."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from core import events as ev
from core.config import ConfigError, FreezeConfig, ScheduleConfig, parse_config
from core.freezing import FreezeError, FreezePlan
from core.layer_rates import part_rates
from core.runs import CHANGED_TENSORS, RunStore
from core.schedules import change_steps, next_plan, plan_changes
from core.training import Trainer, prepare, run_experiment

PARTS = ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "head.topic", "head.sentiment"]


# ---- the plans -------------------------------------------------------------------------------------

def test_gradual_unfreezing_unfreezes_the_highest_frozen_unit_and_leaves_the_heads():
    plan = FreezePlan.of([*PARTS[:5], "head.topic"])  # scenario2 with one head frozen too
    seen = []
    while plan is not None:
        seen.append(plan.frozen)
        plan = next_plan("gradual_unfreeze", plan, PARTS)
    assert seen == [(*PARTS[:5], "head.topic"), ("embeddings", "layer.0", "layer.1", "head.topic"),
                    ("embeddings", "layer.0", "head.topic"), ("embeddings", "head.topic"), ("head.topic",)]


def test_progressive_freezing_freezes_the_lowest_trainable_unit():
    plan, seen = FreezePlan.of(["layer.1:bias"]), []
    while plan is not None:
        seen.append(plan.frozen)
        plan = next_plan("progressive_freeze", plan, PARTS)
    assert seen == [("layer.1:bias",), ("embeddings", "layer.1:bias"), ("embeddings", "layer.0", "layer.1:bias"),
                    ("embeddings", "layer.0", "layer.1"), ("embeddings", "layer.0", "layer.1", "layer.2", "pooler")]


def test_a_partly_frozen_layer_counts_as_frozen_for_unfreezing():
    bitfit = FreezePlan.of([f"{p}:bias" for p in PARTS[:5]])
    assert next_plan("gradual_unfreeze", bitfit, PARTS).frozen == tuple(f"{p}:bias" for p in PARTS[:3])


def test_changes_come_every_n_units_before_the_run_ends():
    assert change_steps(1, "epoch", 6, 18) == [6, 12]
    assert change_steps(2, "step", 6, 9) == [2, 4, 6, 8]
    schedule = ScheduleConfig(kind="gradual_unfreeze", every=1, unit="epoch")
    changes = plan_changes(schedule, FreezePlan.of(PARTS[:5]), PARTS, 6, 60)
    assert [step for step, _ in changes] == [6, 12, 18, 24]  # then nothing is left to unfreeze


@pytest.mark.parametrize("kind,plan,every,unit,message", [
    ("gradual_unfreeze", [], 1, "epoch", "freeze.schedule: gradual_unfreeze has nothing to unfreeze: the plan freezes "
                                         "neither the embeddings nor any layer; start from a plan that freezes some, "
                                         "such as scenario2"),
    ("gradual_unfreeze", ["head.topic"], 1, "epoch", "freeze.schedule: gradual_unfreeze has nothing to unfreeze"),
    ("progressive_freeze", PARTS[:5], 1, "epoch", "freeze.schedule: progressive_freeze has nothing to freeze: the "
                                                  "plan already freezes the embeddings and every layer; start from a "
                                                  "plan that trains some, such as none or lower_k"),
    ("gradual_unfreeze", PARTS[:5], 2, "epoch", "freeze.schedule: every 2 epochs never comes in this 2-epoch run, so "
                                                "the plan would never change; choose a smaller every"),
    ("progressive_freeze", [], 12, "step", "freeze.schedule: every 12 steps never comes in this 12-step run"),
])
def test_a_schedule_that_would_change_nothing_says_so(kind, plan, every, unit, message):
    with pytest.raises(FreezeError) as caught:
        plan_changes(ScheduleConfig(kind=kind, every=every, unit=unit), FreezePlan.of(plan), PARTS, 6, 12)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_schedule_section_is_empty_by_default_and_checked():
    assert FreezeConfig().schedule is None
    config = parse_config({"freeze": {"preset": "scenario2", "schedule": {"kind": "gradual_unfreeze"}}})
    assert (config.freeze.schedule.every, config.freeze.schedule.unit) == (1, "epoch")
    with pytest.raises(ConfigError, match="^invalid config: freeze.schedule.kind: Input should be 'gradual_unfreeze' "
                                          "or 'progressive_freeze'$"):
        parse_config({"freeze": {"schedule": {"kind": "ulmfit"}}})
    with pytest.raises(ConfigError, match="freeze.schedule.every: Input should be greater than or equal to 1"):
        parse_config({"freeze": {"schedule": {"kind": "gradual_unfreeze", "every": 0}}})


def test_a_schedule_that_would_change_nothing_is_refused_before_a_run_exists(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, freeze={"preset": "none", "schedule": {"kind": "gradual_unfreeze"}},
                          training={"epochs": 2})
    with pytest.raises(FreezeError, match="gradual_unfreeze has nothing to unfreeze"):
        prepare(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_schedule_under_a_launcher_of_several_processes_is_refused(tiny_bert, small_config, tmp_path,
                                                                     monkeypatch):
    config = small_config(tiny_bert, freeze={"preset": "scenario2", "schedule": {"kind": "gradual_unfreeze"}},
                          training={"epochs": 2})
    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate launch sets in each process
    with pytest.raises(FreezeError, match="a run over several processes cannot change its plan"):
        prepare(config, tmp_path / "runs")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert prepare(config, tmp_path / "runs").plan_changes  # one process: the schedule stands


# ---- training under a schedule ---------------------------------------------------------------

def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def part_tensors(state: dict, part: str) -> dict[str, torch.Tensor]:
    prefix = {"embeddings": "backbone.embeddings.", "pooler": "backbone.pooler."}.get(
        part, f"backbone.encoder.layer.{part.split('.')[-1]}.")
    return {n: t for n, t in state.items() if n.startswith(prefix)}


def same(a: dict, b: dict, part: str) -> bool:
    assert part_tensors(a, part), part  # a part that matched no tensor would read as unchanged
    return all(torch.equal(t, part_tensors(b, part)[n]) for n, t in part_tensors(a, part).items())


def test_gradual_unfreezing_from_scenario2_moves_each_layer_only_from_its_mark(tiny_bert, small_config, tmp_path):
    """Over 3 epochs, every epoch: the top layer stays bit-identical through epoch 1 and has changed after
    epoch 2, the layer below moves only in epoch 3, the rest never."""
    config = small_config(tiny_bert, freeze={"preset": "scenario2",
                                             "schedule": {"kind": "gradual_unfreeze", "every": 1, "unit": "epoch"}},
                          training={"epochs": 3, "device": "cpu"})
    experiment = prepare(config, tmp_path)
    model = experiment.model
    states = {0: snapshot(model)}  # step -> weights when the plan changed (the end of an epoch)

    def at_plan(event) -> None:
        if event.kind == "plan" and event.step:
            states[event.step] = snapshot(model)  # emitted before the first step under the new plan

    run = run_experiment(config, tmp_path, [at_plan], experiment=experiment)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    end = snapshot(model)
    per_epoch = summary["total_steps"] // 3
    epoch1, epoch2 = states[per_epoch], states[2 * per_epoch]
    assert same(states[0], epoch1, "layer.2") and not same(epoch1, epoch2, "layer.2")
    assert same(states[0], epoch2, "layer.1") and not same(epoch2, end, "layer.1")
    assert same(states[0], end, "embeddings") and same(states[0], end, "layer.0")
    events = run.events()
    plans = [(e.step, e.frozen) for e in events if e.kind == "plan"]
    assert plans == [(0, ["embeddings", "layer.0", "layer.1", "layer.2"]),
                     (per_epoch, ["embeddings", "layer.0", "layer.1"]), (2 * per_epoch, ["embeddings", "layer.0"])]
    # the change map: each layer starts to move at its mark
    changes = {e.step: e.parts for e in events if e.kind == "change"}
    assert changes[per_epoch]["layer.2"]["relative_change"] == 0.0
    assert changes[2 * per_epoch]["layer.2"]["relative_change"] > 0.0
    assert changes[2 * per_epoch]["layer.1"]["relative_change"] == 0.0
    assert changes[3 * per_epoch]["layer.1"]["relative_change"] > 0.0
    assert changes[3 * per_epoch]["layer.0"]["relative_change"] == 0.0
    assert summary["frozen"] == ["embeddings", "layer.0"]
    layer = 4 * (32 * 32 + 32) + 2 * 32 * 48 + 48 + 32 + 2 * 2 * 32  # one tiny BERT layer's parameters
    assert [(c["step"], c["trainable"] - summary["params"]["trainable"]) for c in summary["plan_changes"]] == [
        (per_epoch, layer), (2 * per_epoch, 2 * layer)]
    assert summary["cache"]["used"] and summary["cache"]["depth"] == 1  # rebuilt as the prefix shrank


def staged(config, tmp_path) -> tuple[Trainer, list]:
    experiment = prepare(config, tmp_path)
    seen: list = []
    trainer = Trainer(experiment, RunStore(tmp_path).create(config), ev.EventBus([seen.append]), threading.Event())
    trainer.setup()
    return trainer, seen


def linear_warmup(step: int, warmup: int, total: int) -> float:
    """transformers' get_linear_schedule_with_warmup, written out."""
    return step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))


def test_a_joining_group_gets_the_schedules_rate_at_that_step_and_fresh_state(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, freeze={"preset": "scenario2",
                                             "schedule": {"kind": "gradual_unfreeze", "every": 5, "unit": "step"}},
                          training={"warmup_ratio": 0.5, "layer_lr_decay": 0.5, "learning_rate": 1e-3,
                                    "device": "cpu"})
    trainer, _ = staged(config, tmp_path)
    model = trainer.experiment.model
    rates = part_rates(list(model.parts()), 1e-3, 1e-3, 0.5)
    joined = {}
    original = trainer.change_plan

    def change_plan(plan):
        original(plan)
        for group in trainer.optimizer.param_groups:
            if group["params"][0].requires_grad and group["part"] not in joined and group["part"].startswith("layer"):
                joined[group["part"]] = (trainer.step, group["lr"], group["params"])

    trainer.change_plan = change_plan
    firsts = {}
    original_step = trainer.train_step

    def train_step(task, rows, weight):
        loss = original_step(task, rows, weight)
        for part, (step, _, params) in joined.items():
            if trainer.step == step:  # the first step under the new plan has just run
                firsts[part] = [trainer.optimizer.state[p]["step"].item() for p in params]
        return loss

    trainer.train_step = train_step
    trainer.train()
    total, warmup = trainer.total_steps, math.ceil(0.5 * trainer.total_steps)
    assert [(part, step) for part, (step, _, _) in joined.items()] == [("layer.2", 5), ("layer.1", 10)]
    for part, (step, lr, _) in joined.items():
        assert lr == pytest.approx(rates[part] * linear_warmup(step, warmup, total))
        assert firsts[part] == [1.0] * len(firsts[part])  # fresh optimizer state: its first AdamW step


def test_a_frozen_parameter_is_not_moved_by_momentum_or_weight_decay(tiny_bert, small_config, tmp_path):
    """progressive_freeze: the embeddings trained, have AdamW state (momentum), then freeze; with a large
    weight decay they stay bit-identical from their mark on (torch's AdamW skips a parameter whose grad is None)."""
    config = small_config(tiny_bert, freeze={"schedule": {"kind": "progressive_freeze", "every": 4, "unit": "step"}},
                          training={"weight_decay": 0.5, "warmup_ratio": 0.0, "device": "cpu", "save": "changed"})
    trainer, seen = staged(config, tmp_path)
    model = trainer.experiment.model
    marks = {}
    original = trainer.change_plan

    def change_plan(plan):
        original(plan)
        marks[trainer.step] = snapshot(model)

    trainer.change_plan = change_plan
    trainer.train()
    end = snapshot(model)
    assert sorted(marks) == [4, 8]
    embeddings = [p for p in model.backbone.embeddings.parameters()]
    assert all(trainer.optimizer.state[p]["exp_avg"].abs().sum() > 0 for p in embeddings)  # it has momentum
    assert same(marks[4], end, "embeddings") and not same(marks[4], end, "layer.1")
    assert same(marks[8], end, "layer.0") and not same(marks[4], marks[8], "layer.0")  # moved until its mark
    assert [e.frozen for e in seen if e.kind == "plan"] == [[], ["embeddings"], ["embeddings", "layer.0"]]


def test_progressive_freezing_grows_the_cached_prefix_and_saves_what_trained(tiny_bert, small_config, tmp_path):
    from safetensors import safe_open

    config = small_config(tiny_bert, freeze={"preset": "lower_k", "k": 1,
                                             "schedule": {"kind": "progressive_freeze"}},
                          training={"epochs": 3, "device": "cpu", "save": "changed"})
    run = run_experiment(config, tmp_path)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    assert summary["frozen"] == ["embeddings", "layer.0", "layer.1", "layer.2"]
    cache = summary["cache"]
    assert cache["used"] and cache["kind"] == "pooled" and cache["depth"] == 3 and cache["invalidations"] == 2
    with safe_open(str(run.changed_dir / CHANGED_TENSORS), "pt") as saved:
        names = set(saved.keys())
    assert any(n.startswith("encoder.layer.1.") for n in names)  # it trained in epoch 1, then froze
    assert not any(n.startswith(("encoder.layer.0.", "embeddings.")) for n in names)


# ---- the marks on the charts -------------------------------------------------------------------

def scheduled_events() -> list:
    steps = [ev.StepEvent(s, s / 4, "topic", 1.0, 1e-4) for s in range(1, 13)]
    evals = [ev.EvalEvent(s, s / 4, {"topic": {"loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4}}) for s in (4, 8, 12)]
    plans = [ev.PlanEvent(0, ["embeddings", "layer.0", "layer.1"]), ev.PlanEvent(4, ["embeddings", "layer.0"]),
             ev.PlanEvent(8, ["embeddings"])]
    return [plans[0], *steps[:4], evals[0], plans[1], *steps[4:8], evals[1], plans[2], *steps[8:], evals[2]]


def test_plan_changes_are_marked_where_they_happened_and_say_what_changed():
    from dashboard.charts import plan_change_words, plan_marks

    events = scheduled_events()
    assert plan_marks(events) == [(4, "layer.1 joins"), (8, "layer.0 joins")]
    assert plan_marks(events, "epoch") == [(1.0, "layer.1 joins"), (2.0, "layer.0 joins")]
    assert plan_change_words(["embeddings"], ["embeddings", "layer.0"]) == "layer.0 freezes"
    assert plan_change_words(["layer.0:bias"], ["layer.0"]) == "layer.0 freezes"
    assert plan_change_words(["layer.0:bias"], []) == "layer.0 joins"
    assert plan_marks(events[1:6]) == []  # a run without a schedule has no plan events: no marks


def test_compared_and_change_charts_draw_the_marks():
    """(The live chart draws them in the browser: tests/test_browser.py.)"""
    from dashboard.charts import change_heatmap, group_figure

    events = scheduled_events()
    compared = group_figure({"gradual": [events], "fixed": [events[1:6]]}, "topic", "accuracy")
    assert sorted(s.x0 for s in compared.layout.shapes) == [4, 8]
    heatmap = change_heatmap([4, 8, 12], {"layer.1": [0.0, 0.1, 0.2]}, set(), marks=[(4, "layer.1 joins")])
    assert [s.x0 for s in heatmap.layout.shapes] == [4]
    unscheduled = group_figure({"fixed": [events[1:6]]}, "topic", "accuracy")
    assert not unscheduled.layout.shapes
