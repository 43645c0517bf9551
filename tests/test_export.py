"""A finished run exports as a zip that loads with transformers and safetensors alone."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import torch

from core.__main__ import main
from core.export import export_to_file
from core.runs import RunError, RunStore
from core.training import run_experiment

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, small_data):
    """One full and one changed-storage run of the same setup (lower 2 layers frozen), in one store."""
    from core.config import parse_config

    folder = tmp_path_factory.mktemp("export-runs")
    made = {}
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: before the per-test lock folder exists
        patch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path_factory.mktemp("export-locks")))
        for save in ("full", "changed"):
            config = parse_config({
                "name": f"export {save}", "backbone": tiny_bert, "freeze": {"preset": "lower_k", "k": 2},
                "tasks": {t: {**small_data, "label_column": t} for t in ("topic", "sentiment")},
                "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "eval_every": 0, "save": save}})
            made[save] = run_experiment(config, folder)
    return made


def extract(zip_path: Path, into: Path) -> Path:
    """Extract and return the zip's one top folder."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)
    (top,) = into.iterdir()
    return top


def backbone_output(folder) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    batch = AutoTokenizer.from_pretrained(folder)(["a short sentence"], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_the_zip_loads_with_automodel_and_holds_a_model_card_and_the_heads(runs, tmp_path):
    from safetensors.torch import load_file

    run = runs["full"]
    run.annotate("shared with a colleague", add=["baseline"])
    top = extract(export_to_file(run, tmp_path / "run.zip"), tmp_path / "out")
    assert top.name == run.id
    assert torch.equal(backbone_output(top / "model"), backbone_output(run.backbone_dir))
    heads, meta = load_file(str(top / "heads.safetensors")), json.loads((top / "heads.json").read_text())
    assert meta["labels"]["sentiment"] == ["negative", "neutral", "positive"]
    for task, labels in meta["labels"].items():
        assert heads[f"{task}.classifier.weight"].shape[0] == len(labels)
    for name in ("config.yaml", "summary.json", "metrics.jsonl"):
        assert (top / name).is_file()
    assert json.loads((top / "notes.json").read_text()) == {"note": "shared with a colleague", "tags": ["baseline"]}
    card = (top / "README.md").read_text(encoding="utf-8")
    assert "## What was frozen" in card and "`embeddings`" in card and "`layer.1`" in card
    assert "## Data" in card and "## Metrics" in card and "negative, neutral, positive" in card
    accuracy = run.summary()["tasks"]["topic"]["accuracy"]
    assert f"| topic | {accuracy:.3f} |" in card
    assert 'AutoModel.from_pretrained("model", trust_remote_code=False)' in card and 'load_file("heads.safetensors")' in card


def test_the_zip_holds_no_pickle_and_no_path_outside_its_folder(runs, tmp_path):
    with zipfile.ZipFile(export_to_file(runs["full"], tmp_path / "run.zip")) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
    for name in names:
        path = PurePosixPath(name)
        assert not path.is_absolute() and ".." not in path.parts and path.parts[0] == runs["full"].id
    assert {PurePosixPath(n).suffix for n in names} <= {".md", ".safetensors", ".json", ".jsonl", ".yaml", ".txt"}


def test_a_symbolic_link_in_the_run_is_refused_not_followed(runs, tmp_path):
    import shutil

    copy = tmp_path / "runs" / "linked"
    shutil.copytree(runs["full"].path, copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's", encoding="utf-8")
    (copy / "backbone" / "added_tokens.txt").symlink_to(secret)
    with pytest.raises(RunError, match="added_tokens.txt is a symbolic link"):
        export_to_file(RunStore(tmp_path / "runs").get("linked"), tmp_path / "run.zip")
    (copy / "backbone" / "added_tokens.txt").unlink()
    (copy / "predictions.json").unlink()
    (copy / "predictions.json").symlink_to(secret)  # a record file too
    with pytest.raises(RunError, match="predictions.json is a symbolic link"):
        export_to_file(RunStore(tmp_path / "runs").get("linked"), tmp_path / "run.zip")
    assert not (tmp_path / "run.zip").exists()


def test_a_changed_run_exports_a_full_model_folder_and_stays_small(runs, tmp_path):
    full, changed = runs["full"], runs["changed"]
    top = extract(export_to_file(changed, tmp_path / "run.zip"), tmp_path / "out")
    assert (top / "model" / "model.safetensors").is_file() and (top / "model" / "tokenizer.json").is_file()
    assert torch.equal(backbone_output(top / "model"), backbone_output(full.backbone_dir))  # same seed, same data
    assert not changed.backbone_dir.exists()  # rebuilt for the zip only
    assert "rebuilt on its base" in (top / "README.md").read_text(encoding="utf-8")


def test_a_run_without_weights_is_refused_in_one_line(runs, tmp_path, capsys):
    import shutil

    store = RunStore(tmp_path / "runs")
    shutil.copytree(runs["full"].path, store.root / "gone")
    store.delete_weights("gone")
    code = main(["export", "gone", "--out", str(tmp_path / "gone.zip"), "--runs-dir", str(store.root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: run gone has no weights to export (weights: deleted)")
    assert not (tmp_path / "gone.zip").exists()


def test_the_cli_writes_the_zip_and_says_where(runs, tmp_path, capsys):
    run = runs["full"]
    out = tmp_path / "exported.zip"
    assert main(["export", str(run.path), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert zipfile.ZipFile(out).testzip() is None
    code = main(["export", str(run.path), "--out", str(tmp_path / "no" / "such" / "folder.zip")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: cannot export run {run.id} to ") and err.count("\n") == 1


def test_the_page_offers_a_finished_run_as_a_zip(runs, tmp_path, monkeypatch, tiny_bert):
    import shutil

    from page_helpers import new_app, open_tab

    store = tmp_path / "runs"
    shutil.copytree(runs["full"].path, store / runs["full"].id)
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(store))
    built = []
    monkeypatch.setattr("core.export.export_bytes", lambda run: built.append(run.id) or b"")
    at = open_tab(new_app(tiny_bert), "Compare runs")
    assert not at.exception
    (button,) = [b for b in at.get("download_button") if b.proto.label == "Download run (.zip)"]
    assert not button.proto.disabled
    assert built == []  # listing the runs builds no zip: Streamlit calls export_bytes only on a click
