"""Freeze plans and presets: what each freezes, and that training leaves frozen tensors bit-identical."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from core.backbones import load_backbone
from core.freezing import (FreezeError, FreezePlan, apply_plan, check_plan, count_parameters, freeze, frozen_parts,
                           frozen_prefix_depth, share_text, trainable_parameters, unfreeze)
from core.model import MultiTaskModel
from core.presets import PRESETS, plan_from_config, preset_plan

LABELS = {"topic": ["a", "b", "c", "d"], "sentiment": ["neg", "neu", "pos"]}
BACKBONE = ["embeddings", "layer.0", "layer.1", "layer.2"]


@pytest.fixture
def model(tiny_bert):
    backbone, _ = load_backbone(tiny_bert, pooling="cls")
    return MultiTaskModel(backbone, LABELS, "cls", 0.1)


def test_presets_build_the_documented_plans(model):
    names = list(model.parts())
    assert names == [*BACKBONE, "pooler", "head.topic", "head.sentiment"]
    assert preset_plan("none", names).frozen == ()
    assert preset_plan("scenario1", names).frozen == tuple(names)
    assert preset_plan("scenario2", names).frozen == (*BACKBONE, "pooler")
    assert preset_plan("scenario3", names, head="sentiment").frozen == ("head.sentiment",)
    assert preset_plan("lower_k", names, k=1).frozen == ("embeddings", "layer.0")
    assert preset_plan("lower_k", names, k=0).frozen == ("embeddings",)
    assert preset_plan("top_quarter", names).frozen == ("embeddings", "layer.0", "layer.1")
    assert set(PRESETS) == {"none", "scenario1", "scenario2", "scenario3", "lower_k", "top_quarter", "bitfit",
                            "norms_only"}


def test_top_quarter_keeps_a_quarter_of_the_layers():
    for depth, trained in [(4, 1), (6, 2), (12, 3), (24, 6), (1, 1)]:
        names = ["embeddings", *(f"layer.{i}" for i in range(depth)), "head.t"]
        frozen = preset_plan("top_quarter", names).frozen
        assert frozen == ("embeddings", *(f"layer.{i}" for i in range(depth - trained)))


def test_preset_argument_errors(model):
    names = list(model.parts())
    with pytest.raises(FreezeError, match="lower_k needs k between 0 and 3"):
        preset_plan("lower_k", names, k=4)
    with pytest.raises(FreezeError, match="scenario3 needs one of the heads topic, sentiment, not 'style'"):
        preset_plan("scenario3", names, head="style")
    with pytest.raises(FreezeError, match="unknown preset"):
        preset_plan("scenario9", names)


def test_unknown_part_names_list_the_valid_parts(model):
    with pytest.raises(FreezeError) as caught:
        apply_plan(model, FreezePlan.of(["embeddings", "layer.7", "head.style"]))
    message = str(caught.value)
    assert message.startswith("unknown part(s) layer.7, head.style; valid parts: ")
    assert "embeddings, layer.0, layer.1, layer.2, pooler, head.topic, head.sentiment" in message
    with pytest.raises(FreezeError, match="valid parts"):
        freeze(model, "encoder")
    # nothing was frozen by the refused calls
    assert count_parameters(model)["trainable"] == count_parameters(model)["total"]


def test_freeze_unfreeze_and_frozen_parts(model):
    freeze(model, "embeddings", "head.topic")
    assert frozen_parts(model) == ["embeddings", "head.topic"]
    assert all(not p.requires_grad for p in model.backbone.embeddings.parameters())
    assert all(p.requires_grad for p in model.backbone.encoder.parameters())
    unfreeze(model, "embeddings")
    assert frozen_parts(model) == ["head.topic"]
    counts = count_parameters(model)
    assert counts["total"] - counts["trainable"] == counts["by_part"]["head.topic"]["total"] == 32 * 4 + 4


def test_config_parts_are_added_to_the_preset(model):
    from core.config import FreezeConfig

    plan = plan_from_config(FreezeConfig(preset="lower_k", k=1, parts=["head.topic", "layer.0"]), list(model.parts()))
    assert plan.frozen == ("embeddings", "layer.0", "head.topic")  # model order, no duplicates


def test_frozen_prefix_depth():
    assert frozen_prefix_depth(FreezePlan.of(["layer.0"]), 3) == -1
    assert frozen_prefix_depth(FreezePlan.of(["embeddings"]), 3) == 0
    assert frozen_prefix_depth(FreezePlan.of(["embeddings", "layer.0", "layer.2"]), 3) == 1
    assert frozen_prefix_depth(FreezePlan.of(["embeddings", "layer.0", "layer.1", "layer.2"]), 3) == 3
    assert frozen_prefix_depth(FreezePlan.of(["embeddings", "layer.0", "layer.1"]), 1) == 1  # never past the stack


# ---- accounting on random plans -----------------------------------------------------------

PARTS = [*BACKBONE, "pooler", "head.topic", "head.sentiment"]


@pytest.fixture(scope="module")
def shared_model(tiny_bert):
    """One model for every example: apply_plan sets every part, so no example sees the last one's state."""
    backbone, _ = load_backbone(tiny_bert, pooling="cls")
    return MultiTaskModel(backbone, LABELS, "cls", 0.1)


@given(st.lists(st.sampled_from(PARTS), max_size=10))
def test_trainable_plus_frozen_is_the_total_for_any_plan(shared_model, parts):
    model = shared_model
    counts = apply_plan(model, FreezePlan.of(parts))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trainable"] + frozen == counts["total"] == sum(p.numel() for p in model.parameters())
    assert sum(v["total"] for v in counts["by_part"].values()) == counts["total"]
    for part, row in counts["by_part"].items():
        assert row["total"] > 0
        assert row["trainable"] == (0 if part in parts else row["total"]), part
    assert frozen_parts(model) == [p for p in PARTS if p in parts]  # model order, each once


@given(st.sampled_from(["none", "scenario1", "scenario2", "scenario3", "lower_k", "top_quarter"]),
       st.integers(0, 3), st.sampled_from(["topic", "sentiment"]), st.lists(st.sampled_from(PARTS), max_size=4))
def test_a_config_plan_is_its_preset_plus_its_parts_in_model_order(preset, k, head, parts):
    from core.config import FreezeConfig

    config = FreezeConfig(preset=preset, k=k, head=head, parts=parts)
    plan = plan_from_config(config, PARTS)
    expected = set(preset_plan(preset, PARTS, k=k, head=head).frozen) | set(parts)
    assert plan.frozen == tuple(p for p in PARTS if p in expected)


def test_parts_the_model_lacks_stay_in_the_plan_so_the_check_can_name_them():
    from core.config import FreezeConfig

    plan = plan_from_config(FreezeConfig(parts=["layer.9", "embeddings", "layer.9"]), PARTS)
    assert plan.frozen == ("embeddings", "layer.9")
    with pytest.raises(FreezeError, match=r"unknown part\(s\) layer.9;"):
        check_plan(plan, PARTS)


def test_a_plan_lists_each_part_once_in_first_seen_order():
    assert FreezePlan.of(["layer.1", "embeddings", "layer.1"]).frozen == ("layer.1", "embeddings")
    assert FreezePlan.of(["a"]).union(FreezePlan.of(["b", "a"])).frozen == ("a", "b")


def test_freezing_one_part_leaves_the_others_as_they_were(model):
    freeze(model, "layer.1")
    freeze(model, "head.sentiment")
    assert frozen_parts(model) == ["layer.1", "head.sentiment"]
    unfreeze(model, "layer.1")
    assert frozen_parts(model) == ["head.sentiment"]
    assert trainable_parameters(model) == [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(FreezeError):
        unfreeze(model, "layer.5")


# ---- training with each preset -----------------------------------------------------------

CASES = [
    # (preset, extra freeze keys, pooling, expected frozen parts)
    ("none", {}, "cls", []),
    ("scenario1", {}, "mean", [*BACKBONE, "head.topic", "head.sentiment"]),
    ("scenario2", {}, "cls", [*BACKBONE, "pooler"]),
    ("scenario3", {"head": "topic"}, "mean", ["head.topic"]),
    ("lower_k", {"k": 1}, "mean", ["embeddings", "layer.0"]),
    ("top_quarter", {}, "mean", ["embeddings", "layer.0", "layer.1"]),
]


def part_of(name: str) -> str:
    """The part a model parameter belongs to, from its name (tiny BERT)."""
    if name.startswith("heads."):
        return "head." + name.split(".")[1]
    if name.startswith("backbone.encoder.layer."):
        return "layer." + name.split(".")[3]
    if name.startswith("backbone.pooler."):
        return "pooler"
    assert name.startswith("backbone.embeddings."), name
    return "embeddings"


@pytest.mark.parametrize("preset,extra,pooling,expected", CASES, ids=[c[0] for c in CASES])
def test_training_changes_exactly_the_trainable_tensors(preset, extra, pooling, expected, tiny_bert, small_config,
                                                        tmp_path, monkeypatch):
    from core.training import Trainer, prepare, run_experiment

    config = small_config(tiny_bert, pooling=pooling, freeze={"preset": preset, **extra})
    experiment = prepare(config, tmp_path)
    assert list(experiment.plan.frozen) == expected
    model = experiment.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name in before if part_of(name) in expected}
    assert experiment.params["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)

    made_optimizer = []
    original = Trainer.make_optimizer
    monkeypatch.setattr(Trainer, "make_optimizer", lambda self: made_optimizer.append(1) or original(self))
    run = run_experiment(config, tmp_path, experiment=experiment)
    summary = run.summary()

    after = dict(model.named_parameters())
    for name, tensor in before.items():
        if name in frozen:
            assert torch.equal(after[name], tensor), f"{preset}: frozen {name} changed"
            assert not after[name].requires_grad
        else:
            assert not torch.equal(after[name], tensor), f"{preset}: trainable {name} did not change"
    assert summary["frozen"] == expected
    assert summary["params"]["trainable"] == experiment.params["trainable"]
    if preset == "scenario1":
        assert summary["status"] == "evaluated" and not made_optimizer
        assert summary["steps"] == 0 and summary["params"]["trainable"] == 0
        assert set(summary["tasks"]) == {"topic", "sentiment"}  # it still evaluates
    else:
        assert summary["status"] == "finished", summary["message"]
        assert made_optimizer == [1] and summary["steps"] == summary["total_steps"] == 12


def test_unknown_part_in_config_is_refused_before_a_run_exists(tiny_bert, small_config, tmp_path):
    from core.training import prepare

    config = small_config(tiny_bert, freeze={"parts": ["layer.9"]})
    with pytest.raises(FreezeError, match=r"unknown part\(s\) layer.9; valid parts: embeddings, layer.0"):
        prepare(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


# ---- what the user reads when a plan is wrong ------------------------------------------------

def freeze_error(call, *args, **kwargs) -> str:
    with pytest.raises(FreezeError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_preset_errors_say_exactly_what_is_allowed():
    assert freeze_error(preset_plan, "lower_k", PARTS, k=4) == (
        "lower_k needs k between 0 and 3 (the number of layers), not 4")
    assert freeze_error(preset_plan, "lower_k", PARTS, k=-1).endswith("not -1")
    assert freeze_error(preset_plan, "lower_k", PARTS) == "lower_k needs k between 0 and 3 (the number of layers), not None"
    assert preset_plan("lower_k", PARTS, k=3).frozen == ("embeddings", "layer.0", "layer.1", "layer.2")
    assert freeze_error(preset_plan, "scenario3", PARTS, head="style") == (
        "scenario3 needs one of the heads topic, sentiment, not 'style'")
    assert freeze_error(preset_plan, "scenario3", PARTS) == "scenario3 needs one of the heads topic, sentiment, not None"
    assert freeze_error(preset_plan, "Scenario1", PARTS) == (
        "unknown preset 'Scenario1'; presets: scenario1, scenario2, scenario3, lower_k, top_quarter, bitfit, "
        "norms_only, none")


def test_check_plan_names_every_unknown_part_and_all_valid_ones():
    assert freeze_error(check_plan, FreezePlan.of(["layer.7", "embeddings", "pooler2"]), ["embeddings", "layer.0"]) == (
        "unknown part(s) layer.7, pooler2; valid parts: embeddings, layer.0")
    check_plan(FreezePlan.of(["layer.0"]), ["embeddings", "layer.0"])  # a known part: no error


def test_scenario2_keeps_the_pooler_with_the_backbone_when_there_is_one():
    no_pooler = ["embeddings", "layer.0", "layer.1", "head.a", "head.b"]
    assert preset_plan("scenario2", no_pooler).frozen == ("embeddings", "layer.0", "layer.1")
    assert preset_plan("scenario1", no_pooler).frozen == tuple(no_pooler)
    assert preset_plan("top_quarter", no_pooler).frozen == ("embeddings", "layer.0")


def test_a_tensor_reachable_from_two_parts_is_counted_once_in_the_first():
    shared, own = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)  # 8 and 3 parameters

    class TwoParts:
        def parts(self):
            return {"first": [shared], "second": [shared, own]}

    own.weight.requires_grad_(False)
    counts = count_parameters(TwoParts())
    assert counts == {"total": 11, "trainable": 9, "by_part": {"first": {"total": 8, "trainable": 8},
                                                                "second": {"total": 3, "trainable": 1}}}


@pytest.mark.parametrize("trainable, total, text", [
    (2_695, 22_600_000, "0.012%"),  # MiniLM with only the two heads training
    (0, 100, "0%"), (100, 100, "100%"), (1, 10**9, "<0.001%"), (5, 1_000, "0.5%"), (125, 1_000, "12.5%"),
    (999, 1_000, "99.9%"), (99_960, 100_000, ">99.9%"),
])
def test_a_trainable_share_reads_as_what_it_is(trainable, total, text):
    assert share_text(trainable / total) == text


def test_no_share_without_a_total():
    assert share_text(None) is None


@given(total=st.integers(1, 10**10), data=st.data())
def test_a_share_reads_0_or_100_only_when_it_is(total, data):
    trainable = data.draw(st.integers(0, total))
    text = share_text(trainable / total)
    assert (text == "0%") == (trainable == 0)
    assert (text == "100%") == (trainable == total)
    assert text.endswith("%") and "e" not in text  # never scientific notation
