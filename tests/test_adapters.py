"""LoRA at a freeze plan's budget (core.adapters, peft): what trains, what is saved, r: auto, bad input."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
import yaml
from safetensors.torch import load_file

from core.__main__ import main
from core.config import ConfigError, parse_config
from core.runs import RunStore
from core.training import prepare, run_experiment

TARGETED = ("attention.self.query.weight", "attention.self.value.weight")


def lora_config(backbone: str, small_config, adapter: dict, freeze: dict | None = None, **training):
    """A fast run on the small data with an adapter section; a high learning rate, so the adapters move."""
    return small_config(backbone, freeze=freeze or {"preset": "scenario2"}, adapter=adapter,
                        training={"learning_rate": 1e-2, **training})


def base_state(backbone: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    return AutoModel.from_pretrained(backbone, trust_remote_code=False).state_dict()


@pytest.fixture(scope="module")
def lora_run(tiny_bert, small_config, tmp_path_factory):
    """One finished LoRA run: the backbone frozen, rank-4 adapters on query and value of every layer."""
    runs = tmp_path_factory.mktemp("lora-runs")
    run = run_experiment(lora_config(tiny_bert, small_config, {"r": 4, "layers": "all"}), runs)
    assert run.summary()["status"] == "finished", run.summary()["message"]
    return run


def test_a_lora_run_trains_exactly_its_adapter_and_head_tensors(lora_run):
    summary = lora_run.summary()
    adapter = load_file(str(lora_run.adapter_dir / "adapter_model.safetensors"))
    heads = load_file(str(lora_run.heads_path))
    assert adapter and all("lora_A" in name or "lora_B" in name for name in adapter)
    assert summary["params"]["trainable"] == sum(t.numel() for t in [*adapter.values(), *heads.values()])
    assert summary["adapter"]["adapter_parameters"] == sum(t.numel() for t in adapter.values()) == 3 * 2 * 4 * 64
    for i in range(3):  # each layer's adapters count in its own part: 2 projections x rank 4 x (32 in + 32 out)
        assert summary["params"]["by_part"][f"layer.{i}"]["trainable"] == 2 * 4 * 64
    assert summary["params"]["by_part"]["embeddings"]["trainable"] == 0
    assert summary["frozen"] == ["embeddings"]  # a layer with adapters trains in part
    config = json.loads((lora_run.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4


def test_the_merged_backbone_loads_as_a_plain_model_and_differs_only_in_the_targeted_projections(lora_run,
                                                                                                  tiny_bert):
    from peft import PeftModel
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(lora_run.backbone_dir, trust_remote_code=False)
    assert type(loaded).__name__ == "BertModel"
    assert not any("lora" in name or "base_layer" in name for name in loaded.state_dict())
    merged = load_file(str(lora_run.backbone_dir / "model.safetensors"))
    base = {name: t for name, t in base_state(tiny_bert).items() if not name.startswith("pooler.")}
    assert set(merged) == set(base)  # every tensor of the base (mean pooling drops the pooler), no other
    changed = {name for name in base if not torch.equal(merged[name], base[name])}
    assert changed == {f"encoder.layer.{i}.{t}" for i in range(3) for t in TARGETED}
    # every other tensor of the adapted layers (biases, key, FFN, LayerNorm) stayed bit-identical: frozen
    # the merge is peft's: the saved adapter on the base, merged, gives the saved backbone
    again = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), str(lora_run.adapter_dir))
    again = again.merge_and_unload().state_dict()
    for name in changed:
        torch.testing.assert_close(again[name], merged[name])


def test_lora_on_the_trainable_layers_keeps_the_frozen_prefix_cached(tiny_bert, small_config, tmp_path):
    config = lora_config(tiny_bert, small_config, {"r": 2, "layers": "trainable"}, {"preset": "lower_k", "k": 2},
                         epochs=2)
    run = run_experiment(config, tmp_path)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    assert summary["adapter"]["layers"] == [2]
    assert summary["cache"]["used"] and summary["cache"]["depth"] == 2  # passed its self-check on the replay
    assert summary["cache"]["hit_examples"] > 0  # the second epoch replayed the stored layer-2 inputs
    by_part = summary["params"]["by_part"]
    assert by_part["layer.2"]["trainable"] == 2 * 2 * 64  # only the adapters of layer 2
    assert by_part["layer.1"]["trainable"] == 0 and by_part["layer.1"]["total"] > 0
    base = base_state(tiny_bert)
    changed = {name for name, tensor in load_file(str(next(run.backbone_dir.glob("*.safetensors")))).items()
               if not torch.equal(tensor, base[name])}
    assert changed == {f"encoder.layer.2.{t}" for t in TARGETED}


def test_save_changed_keeps_the_merged_projections_and_the_adapter_and_exports_both(tiny_bert, small_config,
                                                                                    tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    from core.checkpoints import load_run_model
    from core.export import export_bytes

    config = lora_config(tiny_bert, small_config, {"r": 2, "layers": "all"}, save="changed")
    run = run_experiment(config, tmp_path)
    assert run.summary()["weights"] == "changed"
    assert not run.backbone_dir.exists()
    stored = load_file(str(run.changed_dir / "tensors.safetensors"))
    assert set(stored) == {f"encoder.layer.{i}.{t}" for i in range(3) for t in TARGETED}
    rebuilt = load_run_model(run)[0].backbone.state_dict()  # on its checked base
    merged = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), str(run.adapter_dir)).merge_and_unload()
    merged = merged.state_dict()
    assert set(rebuilt) == {name for name in merged if not name.startswith("pooler.")}  # mean pooling: no pooler
    for name, tensor in rebuilt.items():
        torch.testing.assert_close(tensor, merged[name])
    with zipfile.ZipFile(io.BytesIO(export_bytes(run))) as archive:
        names = archive.namelist()
        card = archive.read(f"{run.id}/README.md").decode()
    assert f"{run.id}/adapter/adapter_model.safetensors" in names and f"{run.id}/adapter/adapter_config.json" in names
    assert any(n.startswith(f"{run.id}/model/") and n.endswith(".safetensors") for n in names)
    assert "LoRA rank 2" in card


@pytest.mark.parametrize("match", [{"preset": "lower_k", "k": 1}, {"preset": "lower_k", "k": 2},
                                   {"preset": "top_quarter"}, {"parts": ["embeddings", "layer.1"]}])
def test_r_auto_lands_within_15_percent_of_the_matched_plan(tiny_bert, small_config, tmp_path, match):
    from core.freezing import apply_plan
    from core.presets import plan_from_config

    experiment = prepare(lora_config(tiny_bert, small_config, {"r": "auto", "layers": "all", "match": match}),
                         tmp_path)
    report = experiment.adapter.report
    matched = report["matched"]["trainable"]
    twin = prepare(small_config(tiny_bert, freeze=match), tmp_path)  # the matched plan, trained as itself
    assert matched == apply_plan(twin.model, plan_from_config(twin.config.freeze, list(twin.model.parts())))[
        "trainable"] == twin.params["trainable"]
    trainable = experiment.params["trainable"]
    assert report["trainable"] == trainable and report["r_auto"]
    assert abs(trainable - matched) <= 0.15 * matched, (trainable, matched, report["r"])
    per_rank = 3 * 2 * 64  # one more unit of rank: in + out of each of the six projections
    assert all(abs(trainable - matched) <= abs(trainable + step * per_rank - matched) for step in (-1, 1)
               if report["r"] + step >= 1)  # the closest rank, not just a close one


def test_r_auto_matches_lower_k_4_on_minilm_with_a_rank_near_its_hidden_size(small_config, tmp_path):
    experiment = prepare(small_config("minilm", freeze={"preset": "scenario2"},
                                      adapter={"r": "auto", "layers": "all", "match": {"preset": "lower_k", "k": 4}}),
                         tmp_path)
    report = experiment.adapter.report
    assert abs(report["trainable"] / report["matched"]["trainable"] - 1) < 0.01
    assert 300 < report["r"] < 450, report["r"]  # two whole layers' worth of rank on all six: about 384


# ---- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, expected", [
    ({"r": "auto"}, "invalid config: adapter: r: auto needs match, the freeze section whose trainable count"),
    ({"r": 4, "match": {"preset": "scenario2"}}, "adapter: match is used only with r: auto (r is 4)"),
    ({"r": 0}, "adapter.r: the rank must be a whole number of 1 or more, or auto, not 0"),
    ({"r": 2.5}, "adapter.r: the rank must be a whole number of 1 or more, or auto, not 2.5"),
    ({"r": "big"}, "adapter.r: the rank must be a whole number of 1 or more, or auto, not 'big'"),
    ({"targets": []}, "adapter.targets: List should have at least 1 item"),
    ({"targets": ["query", " "]}, "adapter.targets: a target is empty"),
    ({"kind": "ia3"}, "adapter.kind: Input should be 'lora'"),
    ({"rank": 8}, "adapter.rank: unknown key"),
    ({"layers": "top"}, "adapter.layers: Input should be 'trainable' or 'all'"),
    ({"r": "auto", "match": {"preset": "lower_k"}}, "adapter.match: preset lower_k needs k"),
])
def test_a_bad_adapter_section_is_one_line_naming_the_key(adapter, expected):
    with pytest.raises(ConfigError) as error:
        parse_config({"adapter": adapter})
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_an_adapter_with_a_freeze_schedule_is_refused_in_one_line():
    with pytest.raises(ConfigError) as error:
        parse_config({"freeze": {"preset": "scenario2", "schedule": {"kind": "gradual_unfreeze"}}, "adapter": {}})
    assert str(error.value) == ("invalid config: adapter: a LoRA run cannot follow freeze.schedule; "
                                "drop the schedule or the adapter")


@pytest.mark.parametrize("freeze, adapter, expected", [
    ({}, {"targets": ["query", "q_proj"]},
     "adapter.targets: the backbone's layers have no linear module named 'q_proj'; they have attention.self.query, "
     "attention.self.key, attention.self.value, attention.output.dense, intermediate.dense, output.dense"),
    ({"preset": "scenario2"}, {"layers": "trainable"},
     "adapter.layers: trainable, but the freeze plan leaves no layer trainable; use layers: all"),
    ({"preset": "scenario2"}, {"r": "auto", "layers": "all", "match": {"preset": "scenario1"}},
     "adapter.match: that freeze section trains nothing (0 parameters)"),
])
def test_an_adapter_the_model_cannot_take_is_refused_before_any_run_exists(tiny_bert, small_config, tmp_path,
                                                                           capsys, freeze, adapter, expected):
    config = small_config(tiny_bert, freeze=freeze, adapter=adapter)
    with pytest.raises(ConfigError) as error:
        run_experiment(config, tmp_path / "runs")
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)
    assert RunStore(tmp_path / "runs").list() == []
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    assert main(["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {error.value}"


def test_train_prints_the_rank_and_both_counts(tiny_bert, small_config, tmp_path, capsys):
    config = small_config(tiny_bert, freeze={"preset": "scenario2"},
                          adapter={"r": "auto", "layers": "all", "match": {"preset": "lower_k", "k": 2}})
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    assert main(["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    summary = RunStore(tmp_path / "runs").list()[0].summary()
    report = summary["adapter"]
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("LoRA rank"))
    assert line.startswith(f"LoRA rank {report['r']} on query, value of layers 0-2")
    assert f"rank chosen to match lower_k 2: {report['trainable']:,} trainable against its " \
           f"{report['matched']['trainable']:,}" in line
    assert report["trainable"] == summary["params"]["trainable"]


def test_the_pages_lora_twin_freezes_the_backbone_and_the_plans_heads_and_matches_its_freeze_section():
    from core.adapters import matched_lora_config

    plan = parse_config({"freeze": {"preset": "scenario3", "head": "topic", "parts": ["layer.0"]}})
    twin = matched_lora_config(plan)
    assert twin.freeze.preset == "scenario2" and twin.freeze.parts == ["head.topic"]
    assert twin.adapter.r == "auto" and twin.adapter.layers == "all"
    assert twin.adapter.match == plan.freeze
    assert twin.adapter.learning_rate == pytest.approx(10 * plan.training.learning_rate)  # LoRA's usual tenfold
    assert twin.training == plan.training and twin.name == "LoRA at the budget of scenario3 topic"


@pytest.mark.parametrize("own_rate", [None, 3e-3])
def test_the_adapters_learn_at_their_own_rate_and_everything_else_at_its_parts(tiny_bert, small_config, tmp_path,
                                                                                own_rate):
    import threading

    from core import events
    from core.training import Trainer

    config = lora_config(tiny_bert, small_config, {"r": 2, "layers": "trainable", "learning_rate": own_rate},
                         freeze={"parts": ["layer.0"]}, learning_rate=1e-4, head_learning_rate=2e-3)
    experiment = prepare(config, tmp_path)
    trainer = Trainer(experiment, RunStore(tmp_path).create(config), events.EventBus(), threading.Event())
    adapters = {id(p) for p in experiment.adapter.tensors()}
    assert adapters  # the tensors of layers 1 and up: layer.0 is frozen, so it carries none
    for group in trainer.make_optimizer().param_groups:
        in_adapters = {id(p) in adapters for p in group["params"]}
        assert len(in_adapters) == 1  # a group holds adapter tensors only, or none
        expected = 2e-3 if group["part"].startswith("head.") else 1e-4
        assert group["lr"] == (own_rate if own_rate and in_adapters == {True} else expected)
