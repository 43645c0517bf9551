"""The command line, run as users run it, and the example configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHARED_DATA
from core.__main__ import main
from core.config import ConfigError, ExperimentConfig, load_config

SUMMARY_KEYS = {"run_id", "status", "tasks", "params", "frozen", "examples_per_second", "wall_seconds",
                "peak_memory_mb", "device"}


def cli(*args, cwd=ROOT, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_config(path: Path, data) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return str(path)


def test_train_writes_a_complete_run(tiny_bert, small_data, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    config = write_config(tmp_path / "exp.yaml", {
        "name": "cli smoke", "backbone": tiny_bert,
        "tasks": {t: {**small_data, "label_column": t} for t in ("topic", "sentiment")},
        "freeze": {"preset": "lower_k", "k": 1},
        "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "device": "cpu"},
    })
    result = cli("train", "--config", config, "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" and run_dir.is_dir()
    assert "topic: accuracy" in result.stdout and "status finished" in result.stdout

    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["run_id"] == run_dir.name and summary["status"] == "finished"
    for task, labels in (("topic", 4), ("sentiment", 3)):
        metrics = summary["tasks"][task]
        assert {"accuracy", "macro_f1", "loss", "labels", "confusion"} <= set(metrics)
        assert len(metrics["labels"]) == labels and len(metrics["confusion"]) == labels
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1 and metrics["loss"] > 0
    params = summary["params"]
    assert params["total"] == sum(p["total"] for p in params["by_part"].values())
    assert params["trainable"] == params["total"] - sum(params["by_part"][p]["total"] for p in ("embeddings", "layer.0"))
    assert summary["frozen"] == ["embeddings", "layer.0"]
    assert summary["examples_per_second"] > 0 and summary["wall_seconds"] > 0 and summary["peak_memory_mb"] > 0
    assert summary["device"] == "cpu"

    # backbone/ is a plain transformers model folder, holding the trained weights
    backbone, info = AutoModel.from_pretrained(run_dir / "backbone", output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert all(key.startswith("pooler.") for key in info["missing_keys"])  # mean pooling dropped the unused pooler
    saved = load_file(str(run_dir / "backbone" / "model.safetensors"))
    original = load_file(str(Path(tiny_bert) / "model.safetensors"))
    frozen = [k for k in saved if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in saved if k.startswith("encoder.layer.2.")]
    assert frozen and all(torch.equal(saved[k], original[k]) for k in frozen)
    assert trained and all(not torch.equal(saved[k], original[k]) for k in trained)
    assert torch.equal(backbone.state_dict()["encoder.layer.2.output.dense.weight"],
                       saved["encoder.layer.2.output.dense.weight"])
    heads = load_file(str(run_dir / "heads.safetensors"))
    assert heads["topic.classifier.weight"].shape == (4, 32)

    # and the runs command lists it
    result = cli("runs", "--runs-dir", str(tmp_path / "runs"), "--json")
    assert result.returncode == 0
    rows = json.loads(result.stdout)
    assert [(r["run_id"], r["name"], r["status"]) for r in rows] == [(run_dir.name, "cli smoke", "finished")]
    assert rows[0]["accuracy"]["topic"] == summary["tasks"]["topic"]["accuracy"]


def test_a_bad_config_exits_2_in_a_real_process(tmp_path):
    result = cli("train", "--config", write_config(tmp_path / "bad.yaml", {"training": {"epochz": 2}}),
                 "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: invalid config: training.epochz: unknown key"
    assert "Traceback" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text,expected", [
    ("training:\n  epochs: [1,\n", "YAML syntax error at line"),
    ("backbone: minilm\nlearning_rate: 0.1\n", "invalid config: learning_rate: unknown key"),
    ("training:\n  epochs: many\n", "invalid config: training.epochs: Input should be a valid integer"),
    ("training:\n  batch_size: 0\n", "invalid config: training.batch_size: Input should be greater than or equal to 1"),
    ("freeze:\n  preset: lower_k\n", "invalid config: freeze: preset lower_k needs k"),
    ("freeze:\n  preset: scenario4\n", "invalid config: freeze.preset: Input should be 'none', 'scenario1'"),
    ("tasks:\n  topic: {}\n", "invalid config: tasks.topic.train: Field required"),
    ("tasks:\n  'bad name!': {train: x.csv}\n", "invalid config: tasks: task name 'bad name!' may hold only"),
    ("tasks: {}\n", "invalid config: tasks: tasks is empty"),
    ("training: 5\n", "invalid config: training: Input should be a valid dictionary"),
    ("- just\n- a list\n", "invalid config: the top level must be a mapping"),
])
def test_bad_configs_are_one_line_naming_the_key(text, expected, tmp_path, capsys):
    path = write_config(tmp_path / "bad.yaml", text)
    assert main(["train", "--config", path, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert not (tmp_path / "runs").exists()


def test_missing_config_file_and_bad_data_exit_2(tmp_path, tiny_bert, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    config = write_config(tmp_path / "c.yaml", {"backbone": tiny_bert, "tasks": {"topic": {"train": "nowhere.csv"}}})
    assert main(["train", "--config", config, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == "error: nowhere.csv: file not found"
    config = write_config(tmp_path / "c.yaml", {"backbone": str(tmp_path / "no-model")})
    assert main(["train", "--config", config, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_describe_json(tiny_bert, capsys):
    assert main(["describe", "--backbone", tiny_bert, "--pooling", "cls", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_type"] == "bert"
    assert list(data["by_part"]) == ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "head.topic",
                                     "head.sentiment"]
    assert data["total"] == data["trainable"] == sum(p["total"] for p in data["by_part"].values())
    assert data["by_part"]["pooler"]["total"] == 32 * 32 + 32
    assert data["by_part"]["head.topic"]["total"] == 32 * 4 + 4
    assert main(["describe", "--backbone", tiny_bert]) == 0  # the text table
    out = capsys.readouterr().out
    assert "layer.2" in out and "pooler" not in out  # mean pooling has no pooler


def test_presets_and_empty_runs(tmp_path, capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("scenario1", "scenario2", "scenario3", "lower_k", "top_quarter", "none"):
        assert f"\n{name} " in "\n" + out
    assert "(needs k)" in out and "(needs head)" in out
    assert main(["runs", "--runs-dir", str(tmp_path / "nothing")]) == 0
    assert "no runs in" in capsys.readouterr().out


# ---- the example configs ------------------------------------------------------------------

EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*") if p.is_file())  # the lessons/ too


def test_the_examples_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"demo.yaml", "agnews_sst2.yaml"} <= names
    assert {f"preset_{p}.yaml" for p in ("none", "scenario1", "scenario2", "scenario3", "lower_k", "top_quarter")} \
        <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    if path.name.startswith("preset_"):
        assert config.freeze.preset == path.stem.removeprefix("preset_") and config.tasks is None
    for task in (config.tasks or {}).values():
        for source in (task.train, task.validation):
            if source and source.startswith("../shared/") and SHARED_DATA.is_dir():
                assert Path(source).is_file(), source  # relative to the project root


def test_demo_example_is_the_defaults():
    config = load_config(ROOT / "examples" / "demo.yaml")
    assert config.model_copy(update={"name": None}) == ExperimentConfig()


def test_load_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == ExperimentConfig()
