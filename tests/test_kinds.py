"""Freezing by kind of tensor: the part:kind spelling, the bitfit and norms_only presets, exact accounting,
and what the cache, the change map and the page's readout make of a partly frozen part."""

from __future__ import annotations

import pytest
import torch

from core import parts
from core.backbones import load_backbone
from core.freezing import FreezeError, FreezePlan, apply_plan, check_plan, freeze, frozen_parts, partly_frozen_parts
from core.model import MultiTaskModel
from core.presets import PRESETS, plan_from_config, preset_plan

LABELS = {"topic": ["a", "b", "c", "d"], "sentiment": ["neg", "neu", "pos"]}
PARTS = ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "head.topic", "head.sentiment"]


@pytest.fixture
def model(tiny_bert):
    backbone, _ = load_backbone(tiny_bert, pooling="cls")
    return MultiTaskModel(backbone, LABELS, "cls", 0.1)


def is_norm_name(name: str) -> bool:
    return "LayerNorm" in name  # tiny BERT's LayerNorm modules are all called LayerNorm


def test_a_part_with_a_kind_is_spelled_and_read_back_in_one_place():
    assert parts.with_kind("layer.3", parts.BIAS) == "layer.3:bias"
    assert parts.split_kind("layer.3:bias") == ("layer.3", "bias")
    assert parts.split_kind("head.topic") == ("head.topic", None)
    assert not parts.is_layer("layer.3:bias")  # a kinded name is never taken for the whole part
    assert parts.kinds_in_words({parts.NORM, parts.BIAS}) == "biases and LayerNorms"


def test_what_a_plan_leaves_trainable_per_part():
    plan = FreezePlan.of(["embeddings", "layer.0:bias", "layer.1:bias", "layer.1:norm", "layer.2", "layer.2:bias"])
    assert plan.trainable_kinds("embeddings") == frozenset()
    assert plan.trainable_kinds("layer.0") == {"bias"}
    assert plan.trainable_kinds("layer.1") == {"bias", "norm"}  # two kinds: both train
    assert plan.trainable_kinds("layer.2") == frozenset()  # named plainly too: frozen whole
    assert plan.trainable_kinds("head.topic") is None


def test_bitfit_and_norms_only_plans_and_reasoning():
    assert preset_plan("bitfit", PARTS).frozen == tuple(f"{p}:bias" for p in PARTS[:5])
    assert preset_plan("norms_only", PARTS).frozen == tuple(f"{p}:norm" for p in PARTS[:5])
    assert "Ben Zaken" in PRESETS["bitfit"].benefit
    for name in ("bitfit", "norms_only"):
        assert all([PRESETS[name].what, PRESETS[name].effect, PRESETS[name].when])


def test_bitfit_trains_exactly_the_biases_of_the_backbone_and_the_whole_heads(model):
    counts = apply_plan(model, preset_plan("bitfit", list(model.parts())))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if n.endswith(".bias") or n.startswith("heads.")}
    assert trainable == expected
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    for part, row in counts["by_part"].items():
        tensors = [p for m in model.parts()[part] for p in m.parameters()]
        assert row["trainable"] == sum(p.numel() for p in tensors if p.requires_grad), part
        assert 0 < row["trainable"] < row["total"] or parts.is_head(part)
    assert frozen_parts(model) == []
    assert partly_frozen_parts(model) == PARTS[:5]


def test_norms_only_trains_the_layernorms_and_the_heads(model):
    apply_plan(model, preset_plan("norms_only", list(model.parts())))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = {n for n, _ in model.named_parameters() if is_norm_name(n)}
    assert norms and trainable == norms | {n for n, _ in model.named_parameters() if n.startswith("heads.")}
    assert partly_frozen_parts(model) == ["embeddings", "layer.0", "layer.1", "layer.2"]  # the pooler has none
    assert frozen_parts(model) == ["pooler"]


def test_an_explicit_plan_mixes_whole_parts_and_kinds(model):
    from core.config import FreezeConfig

    plan = plan_from_config(FreezeConfig(preset="lower_k", k=1, parts=["layer.1:norm", "layer.1:bias"]),
                            list(model.parts()))
    assert plan.frozen == ("embeddings", "layer.0", "layer.1:norm", "layer.1:bias")  # model order
    apply_plan(model, plan)
    layer1 = {n for n, p in model.named_parameters() if n.startswith("backbone.encoder.layer.1.") and p.requires_grad}
    assert layer1 == {n for n, _ in model.named_parameters()
                      if n.startswith("backbone.encoder.layer.1.") and (n.endswith(".bias") or is_norm_name(n))}
    assert frozen_parts(model) == ["embeddings", "layer.0"] and partly_frozen_parts(model) == ["layer.1"]


def test_unknown_kinds_and_parts_with_kinds_are_named(model):
    names = list(model.parts())
    with pytest.raises(FreezeError, match=r"^unknown kind in layer.1:biases, layer.2:; write <part>:<kind> with a "
                                          r"kind of bias \(biases\), norm \(LayerNorms\)$"):
        check_plan(FreezePlan.of(["layer.1:biases", "layer.2:", "layer.0:bias"]), names)
    with pytest.raises(FreezeError, match=r"^unknown part\(s\) layer.9:bias; valid parts: embeddings"):
        apply_plan(model, FreezePlan.of(["layer.9:bias"]))
    with pytest.raises(FreezeError, match="take whole parts"):
        freeze(model, "layer.0:bias")
    assert all(p.requires_grad for p in model.parameters())  # nothing changed by the refused calls


def test_the_page_readout_counts_a_partly_trainable_part_exactly(tiny_bert, model):
    from core.anatomy import describe, head_kinds, head_parameters, readout

    info = describe(tiny_bert, "cls")
    counts = {**info["parts"], **{parts.head(t): head_parameters(32, len(v)) for t, v in LABELS.items()}}
    kinds = {**info["kinds"], **{parts.head(t): head_kinds(len(v)) for t, v in LABELS.items()}}
    for plan in (preset_plan("bitfit", PARTS), preset_plan("norms_only", PARTS),
                 FreezePlan.of(["embeddings", "layer.0:bias", "layer.0:norm", "head.topic:bias"])):
        figures = readout(counts, set(plan.frozen), kinds)
        exact = apply_plan(model, plan)
        assert figures["trainable"] == exact["trainable"]
        assert {p: v["trainable"] for p, v in figures["by_part"].items()} == {
            p: v["trainable"] for p, v in exact["by_part"].items()}
    figures = readout(counts, {"embeddings", "layer.0:bias", "layer.0:norm"}, kinds)["by_part"]
    assert (figures["embeddings"]["state"], figures["layer.0"]["state"], figures["layer.1"]["state"]) == (
        "frozen", "partly", "trains")
    assert figures["layer.0"]["keeps"] == "biases and LayerNorms"


def test_a_partly_frozen_layer_ends_the_cached_prefix(tiny_bert):
    from core.cache import decide

    backbone, _ = load_backbone(tiny_bert, pooling="mean")
    model = MultiTaskModel(backbone, LABELS, "mean", 0.0)
    apply_plan(model, FreezePlan.of(["embeddings", "layer.0", "layer.1:bias"]))
    assert decide(model)["depth"] == 1 and decide(model)["kind"] == "hidden"
    apply_plan(model, preset_plan("bitfit", list(model.parts())))
    decision = decide(model)
    assert decision["kind"] is None and "only partly frozen" in decision["reason"]


def test_bitfit_training_changes_the_biases_and_nothing_else_of_the_backbone(tiny_bert, small_config, tmp_path):
    from core.training import prepare, run_experiment

    config = small_config(tiny_bert, freeze={"preset": "bitfit"}, training={"device": "cpu"})
    experiment = prepare(config, tmp_path)
    model = experiment.model
    before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    run = run_experiment(config, tmp_path, experiment=experiment)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    after = dict(model.backbone.named_parameters())
    for name, tensor in before.items():
        if name.endswith(".bias"):
            assert not torch.equal(after[name], tensor), f"bias {name} did not change"
        else:
            assert torch.equal(after[name], tensor), f"non-bias {name} changed"
    assert summary["frozen"] == [] and summary["partly_frozen"] == ["embeddings", "layer.0", "layer.1", "layer.2"]
    assert summary["params"]["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(summary["change"][p]["relative_change"] > 0 for p in summary["partly_frozen"])  # the biases moved
    assert not summary["cache"]["used"] and "partly frozen" in summary["cache"]["reason"]
