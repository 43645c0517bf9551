"""Runs keep only what changed (training.save: changed), rebuild on a checked base, materialize on demand,
and can drop their weights while their record stays."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.checkpoints import load_run_model, materialize
from core.runs import CHANGED_TENSORS, RunError, RunStore
from core.training import run_experiment


def train(small_config, backbone: str, runs, **training):
    config = small_config(backbone, freeze={"preset": "lower_k", "k": 2}, training=training)
    return run_experiment(config, runs)


def backbone_outputs(folder, texts=("a short sentence", "another one, longer than the first")):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_a_changed_run_stores_no_frozen_tensor_and_rebuilds_to_the_trained_model(small_config, tiny_bert, tmp_path):
    full = train(small_config, tiny_bert, tmp_path / "runs", save="full")
    changed = train(small_config, tiny_bert, tmp_path / "runs", save="changed")
    stored = load_file(str(changed.changed_dir / CHANGED_TENSORS))
    assert stored and not changed.backbone_dir.exists()
    frozen_prefixes = ("embeddings.", "encoder.layer.0.", "encoder.layer.1.")
    assert not [k for k in stored if k.startswith(frozen_prefixes)]  # embeddings and layers 0-1 are reused
    assert any(k.startswith("encoder.layer.2.") for k in stored)
    assert changed.summary()["weights"] == "changed" and full.summary()["weights"] == "full"
    assert changed.summary()["disk_mb"] < full.summary()["disk_mb"] / 2

    rebuilt, _ = load_run_model(changed)  # without materializing: the same model as the full twin's
    twin, tokenizer = load_run_model(full)
    batch = tokenizer(["a short sentence"], return_tensors="pt")
    rebuilt.eval(), twin.eval()
    with torch.no_grad():
        for task in ("topic", "sentiment"):
            assert torch.equal(rebuilt(task, batch["input_ids"], batch["attention_mask"]),
                               twin(task, batch["input_ids"], batch["attention_mask"]))

    folder = materialize(changed)  # a plain AutoModel folder, giving the trained model's outputs
    assert folder == changed.backbone_dir and changed.has_weights()
    assert torch.equal(backbone_outputs(folder), backbone_outputs(full.backbone_dir))


def test_a_changed_base_is_refused_naming_the_base_and_the_part(small_config, tiny_bert, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_bert, base)
    run = train(small_config, str(base), tmp_path / "runs", save="changed")
    weights = base / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if "word_embeddings" in k)
    tensors[name][0, 0] += 1.0  # one number of one frozen tensor
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(RunError) as refused:
        load_run_model(run)
    assert str(refused.value) == (f"run {run.id}: its base {base.resolve()} has changed (part embeddings); "
                                  "its weights are not rebuilt on another base")
    with pytest.raises(RunError, match="has changed"):
        materialize(run)
    assert not run.backbone_dir.exists()


def test_deleting_the_weights_keeps_the_record_and_a_warm_start_says_they_are_gone(small_config, tiny_bert,
                                                                                   tmp_path):
    from core.compare import compare
    from core.data import DataError
    from core.training import prepare

    runs = tmp_path / "runs"
    first = train(small_config, tiny_bert, runs, save="changed")
    second = train(small_config, tiny_bert, runs, save="full", seed=1)
    store = RunStore(runs)
    store.delete_weights(first.id)
    assert not first.has_weights() and first.summary()["weights"] == "deleted"
    assert first.id in [r.id for r in store.list()]  # still in the history
    assert set(compare(store, first.id, second.id)["tasks"]) == {"topic", "sentiment"}  # and in comparisons
    with pytest.raises(DataError) as refused:
        prepare(small_config(tiny_bert, init_from=first.id), runs)
    assert str(refused.value) == (f"init_from: run {first.id}'s weights were deleted (its record is kept); "
                                  "start from the pretrained backbone or from another run")


def test_sweep_members_keep_only_what_changed_and_the_table_says_their_disk_use(small_config, tiny_bert, tmp_path,
                                                                                 capsys):
    from core.__main__ import main
    from core.sweep import run_sweep

    record = run_sweep(small_config(tiny_bert, name="disk"), [0, 3], runs_dir=tmp_path / "runs")
    store = RunStore(tmp_path / "runs")
    members = [store.get(m["run_id"]) for m in record["members"]]
    assert all(m.summary()["weights"] == "changed" and not m.backbone_dir.exists() for m in members)
    assert all(row["disk_mb"] > 0 for row in record["table"])
    deepest = members[1]  # depth 3: the whole encoder frozen, nothing of the backbone stored
    assert load_file(str(deepest.changed_dir / CHANGED_TENSORS)) == {}
    assert main(["materialize", deepest.id, "--runs-dir", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.startswith(str(deepest.backbone_dir))
    assert torch.equal(backbone_outputs(deepest.backbone_dir), backbone_outputs(tiny_bert))  # frozen: the base
