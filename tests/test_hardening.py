"""Hardening, engine and CLI side: bad input gets one clear line, faults keep the record, defaults stay safe.

Every bad-input case is checked through the command line (``python -m core``, run in-process), so the
message asserted here is exactly what a user sees: one ``error: ...`` line on stderr and exit code 2.
The page shows the same messages (tests/test_page_errors.py).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import ROOT, mkdir_error
from core.__main__ import main
from core.config import ConfigError, load_config, parse_config
from core.locks import BusyError, lock_path, training_lock
from core.runs import Run, RunError, RunStore, atomic_write_json
from core.training import OOM_HINT, Trainer, run_experiment

ROWS = ("text,label\nthe match went to extra time,sports\na new phone with a bigger screen,tech\n"
        "the striker scored twice,sports\nthe laptop boots in seconds,tech\nthe team lost at home,sports\n"
        "this app drains the battery,tech\n")


# ---- helpers --------------------------------------------------------------------------------------

def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``python -m core ARGS`` in this process; (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_yaml(path: Path, data) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def cli_error(capsys, tmp_path, config) -> str:
    """Train from ``config`` (a mapping or YAML text); assert exit 2, one stderr line, no run; return it."""
    path = write_yaml(tmp_path / "experiment.yaml", config)
    runs = tmp_path / "runs"
    code, out, err = cli(capsys, "train", "--config", path, "--runs-dir", str(runs), "--quiet")
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()], "a run folder was left behind"
    return lines[0]


def png_bytes() -> bytes:
    """A real 1x1 PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def run_files_ok(run_dir: Path) -> dict:
    """The run's record parses completely; returns its summary."""
    summary = json.loads((run_dir / "summary.json").read_text())
    load_config(run_dir / "config.yaml")
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)), "step events are missing, repeated or interleaved"
    assert not list(run_dir.glob(".*.tmp")), "a temporary file was left behind"
    return {**summary, "_steps": len(steps), "_events": events}


@pytest.fixture
def quick(small_config, tiny_bert):
    """``quick(**sections)``: the tiny backbone on the small data, 6 steps of 16 examples."""
    def make(**overrides):
        training = {"batch_size": 16, "max_length": 16, **overrides.pop("training", {})}
        return small_config(tiny_bert, training=training, **overrides)

    return make


# ---- bad input: data files and columns ------------------------------------------------------------

# id, file name, content, task options ("SELF": the file is its own validation set), expected message
DATA_CASES = [
    ("empty-file", "empty.csv", b"", {}, "{train}: the file is empty"),
    ("whitespace-only", "blank.csv", b"\n   \n\t\n", {}, "{train}: the file is empty"),
    ("binary-file", "data.csv", bytes(range(256)) * 8, {}, "{train}: this is not a text file (it holds binary data)"),
    ("image-renamed-csv", "photo.csv", png_bytes(), {}, "{train}: this is not a text file (it holds binary data)"),
    ("not-utf8", "neither.csv", b"text,label\ncaf\x81 au lait,drink\n", {},
     "{train}: the text is not UTF-8 (byte 0x81 at offset 14); save it as UTF-8"),
    ("utf16-text", "excel.csv", ROWS.encode("utf-16"), {}, "{train}: the text is UTF-16, not UTF-8; save it as UTF-8"),
    ("ragged-row-too-many-fields", "ragged.csv", "text,label\nfine row,a\nbad row,b,extra\nok,a\n", {},
     "{train}: line 3 has 3 fields but the header has 2; check that row's separators and quotes"),
    ("ragged-row-too-few-fields", "short.csv", ROWS.replace("a new phone with a bigger screen,tech",
                                                            "a new phone with a bigger screen"), {"validation": "SELF"},
     "{train}: 1 row(s) have an empty label (first at data row 2); fill them in or remove them"),
    ("unterminated-quote", "quote.csv", 'text,label\n"never closed,a\nnext,b\n', {},
     "{train}: cannot read it as csv: Error tokenizing data. C error: EOF inside string starting at row 1"),
    ("missing-header", "noheader.csv", "I loved this film,positive\nDull and too long,negative\nFine,neutral\n", {},
     "{train}: no text column 'text'; columns are: I loved this film, positive "
     "(the first line is read as the header; does the file have one?)"),
    ("header-only", "header.csv", "text,label\n", {}, "{train}: the file has a header but no rows"),
    ("one-huge-line", "oneline.csv", "word " * 300_000, {}, "{train}: the file has a header but no rows"),
    ("huge-first-line", "hugeheader.csv", "word " * 300_000 + "\nsecond\nthird\n", {},
     "{train}: no text column 'text'; columns are: " + "word " * 8 + "... "
     "(the first line is read as the header; does the file have one?)"),
    ("text-column-missing", "rows.csv", ROWS, {"text_column": "sentence"},
     "{train}: no text column 'sentence'; columns are: text, label"),
    ("label-column-missing", "rows.csv", ROWS, {"label_column": "topic"},
     "{train}: no label column 'topic'; columns are: text, label"),
    ("text-all-numbers", "numbers.csv", "text,label\n1,a\n2,b\n3.5,a\n-4,b\n5,a\n", {},
     "{train}: the text column holds only numbers; did you pick the wrong column?"),
    ("text-all-empty", "notext.csv", "text,label\n,a\n  ,b\n,a\n,b\n", {},
     "{train}: the text column is empty in every row"),
    ("label-blank", "blanklabel.csv", ROWS.replace("tech\nthe striker", "\nthe striker"), {"validation": "SELF"},
     "{train}: 1 row(s) have an empty label (first at data row 2); fill them in or remove them"),
    ("label-null-jsonl", "null.jsonl", '{"text": "one", "label": "a"}\n{"text": "two", "label": null}\n'
                                       '{"text": "three", "label": "b"}\n', {"validation": "SELF"},
     "{train}: 1 row(s) have an empty label (first at data row 2); fill them in or remove them"),
    ("label-nan-number", "nan.jsonl", '{"text": "one", "label": 1}\n{"text": "two", "label": NaN}\n'
                                      '{"text": "three", "label": 2}\n', {"validation": "SELF"},
     "{train}: 1 row(s) have an empty label (first at data row 2); fill them in or remove them"),
    ("label-nan-text", "nantext.csv", ROWS.replace("tech\nthe striker", "NaN\nthe striker"), {"validation": "SELF"},
     "{train}: 1 row(s) have an empty or NaN label (first at data row 2); fill them in or remove them"),
    ("only-one-class", "oneclass.csv", ROWS.replace(",tech", ",sports"), {"validation": "SELF"},
     "{train}: only one class ('sports') in task 'topic'; a classifier needs two or more"),
    ("over-1000-labels", "ids.csv", "text,label\n" + "".join(f"sentence {i},id{i}\n" for i in range(1500)),
     {"validation": "SELF"},
     "{train}: 1500 distinct labels (over 1000); did you pick the text column as the label column?"),
    ("text-column-as-label", "unique.csv",
     "text,label\n" + "".join(f"sentence {i},{'ab'[i % 2]}\n" for i in range(1200)),
     {"label_column": "text"},  # 960 + 240 after the split: each under the limit, together over it
     "{train}: 1200 distinct labels (over 1000); did you pick the text column as the label column?"),
    ("validation-labels-unseen", "train.csv", ROWS,
     {"validation": ("val.csv", "text,label\na cooking show,food\nthe derby,sports\nrain all day,weather\n")},
     "{val}: validation labels never seen in training: food, weather"),
    ("unsupported-type", "table.xlsx", b"PK\x03\x04 spreadsheet", {},
     "{train}: unsupported file type .xlsx; use .csv, .tsv, .tab, .json, .jsonl, .parquet"),
    ("folder-not-file", "folder.csv", None, {}, "{train}: is a folder, not a data file"),
    ("file-not-found", "missing.csv", "MISSING", {}, "{train}: file not found"),
]


@pytest.mark.parametrize("name, content, options, expected", [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_bad_data_gives_one_line(name, content, options, expected, tmp_path, capsys):
    train = tmp_path / name
    if content is None:
        train.mkdir()
    elif content != "MISSING":
        train.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    task = {key: value for key, value in options.items() if key != "validation"}
    val = options.get("validation")
    if val == "SELF":
        task["validation"] = str(train)
    elif val:
        (tmp_path / val[0]).write_text(val[1], encoding="utf-8")
        task["validation"] = val = str(tmp_path / val[0])
    line = cli_error(capsys, tmp_path, {"tasks": {"topic": {"train": str(train), **task}},
                                        "training": {"device": "cpu"}})
    assert line == "error: " + expected.format(train=train, val=val)


def test_file_over_the_size_limit(tmp_path, capsys):
    from core.data import MAX_FILE_MB

    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:  # sparse: no real disk use, and refused before it is read
        handle.truncate((MAX_FILE_MB + 1) * 2**20)
    line = cli_error(capsys, tmp_path, {"tasks": {"topic": {"train": str(big)}}})
    assert line == f"error: {big}: the file is {MAX_FILE_MB + 1} MB, over the {MAX_FILE_MB} MB limit"


def test_very_long_text_is_kept_and_cut_to_max_length(tmp_path, tiny_bert):
    """A 1 MB sentence is not an error: it is read whole and cut to max_length tokens when encoded."""
    from transformers import AutoTokenizer

    from core.batching import encode
    from core.config import TaskConfig
    from core.data import load_task

    long_text = "word " * 200_000
    path = tmp_path / "long.csv"
    path.write_text(ROWS + f"{long_text},sports\n", encoding="utf-8")
    data = load_task("topic", TaskConfig(train=str(path), validation=str(path)))
    assert data.train_texts[-1] == long_text  # read whole
    ids = encode(AutoTokenizer.from_pretrained(tiny_bert), [long_text], 32)
    assert 0 < len(ids[0]) <= 32


def test_uploaded_file_cap_matches_the_engine_limit():
    """Uploads are capped by Streamlit (50 MB) far below what the engine accepts from disk."""
    import tomllib

    from core.data import MAX_FILE_MB

    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["maxUploadSize"] == 50 and server["maxUploadSize"] <= MAX_FILE_MB


# ---- bad input: backbones -------------------------------------------------------------------------

def describe_error(capsys, backbone: str) -> str:
    code, out, err = cli(capsys, "describe", "--backbone", backbone)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def save_config_folder(folder: Path, config: dict) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(folder)


def test_unknown_hub_id_offline(capsys):
    assert describe_error(capsys, "nobody/no-such-encoder") == (
        "error: cannot load backbone 'nobody/no-such-encoder': it is not in the local cache and the hub cannot be "
        "reached (offline); use 'minilm' or a local model folder")


@pytest.mark.parametrize("hub_says, expected", [
    ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.",
     "it is not in the local cache and the hub cannot be reached (offline); use 'minilm' or a local model folder"),
    ("nobody/typo is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
     "no such model on the hub or on disk"),
], ids=["no-network", "unknown-hub-id-online"])
def test_hub_failures_without_offline_mode(hub_says, expected, monkeypatch, capsys):
    """Offline mode off: what the hub library says (simulated; the tests never reach the network) is explained."""
    import transformers

    def unreachable(*args, **kwargs):
        raise OSError(hub_says)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    assert describe_error(capsys, "nobody/typo") == f"error: cannot load backbone 'nobody/typo': {expected}"


def test_local_folder_that_is_not_a_model(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert describe_error(capsys, str(empty)) == f"error: '{empty}' is not a model folder: it has no config.json"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{this is not json")
    assert describe_error(capsys, str(broken)) == (
        f"error: cannot load backbone '{broken}' from its folder: It looks like the config file at "
        f"'{broken / 'config.json'}' is not a valid JSON file.")
    missing = tmp_path / "nowhere"
    assert describe_error(capsys, str(missing)) == f"error: backbone folder '{missing}' does not exist"


@pytest.mark.parametrize("kind, config, expected", [
    ("encoder-decoder", {"model_type": "t5", "d_model": 32, "num_layers": 1, "is_encoder_decoder": True},
     "is an encoder-decoder model (t5); Freeze Lab needs an encoder such as BERT"),
    ("encoder-decoder", {"model_type": "bart", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1},
     "is an encoder-decoder model (bart); Freeze Lab needs an encoder such as BERT"),
    ("decoder-only", {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
     "is a decoder-only model (gpt2); Freeze Lab needs an encoder such as BERT"),
    ("remote-code", {"model_type": "magic-encoder", "auto_map": {"AutoConfig": "magic.MagicConfig",
                                                                 "AutoModel": "magic.MagicModel"}},
     "needs its own remote code to load, which Freeze Lab never runs; pick a standard encoder"),
    ("remote-code", {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "auto_map": {"AutoModel": "magic.MagicModel"}},
     "ships its own model code, which Freeze Lab never runs; pick a standard encoder"),
], ids=["t5", "bart", "gpt2", "auto-map-custom-type", "auto-map-on-bert"])
def test_unusable_model_kinds(kind, config, expected, tmp_path, capsys):
    folder = save_config_folder(tmp_path / kind, config)
    (Path(folder) / "magic.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('remote code ran')\n")
    assert describe_error(capsys, folder) == f"error: '{folder}' {expected}"
    assert not (tmp_path / "RAN").exists()


# ---- bad input: settings and config files ---------------------------------------------------------

@pytest.mark.parametrize("training, expected", [
    ({"batch_size": 0}, "training.batch_size: Input should be greater than or equal to 1"),
    ({"batch_size": -8}, "training.batch_size: Input should be greater than or equal to 1"),
    ({"batch_size": 100_000}, "training.batch_size: Input should be less than or equal to 1024"),
    ({"learning_rate": 10}, "training.learning_rate: Input should be less than or equal to 0.01"),
    ({"learning_rate": 0}, "training.learning_rate: Input should be greater than 0"),
    ({"head_learning_rate": -1e-3}, "training.head_learning_rate: Input should be greater than 0"),
    ({"max_length": 100_000}, "training.max_length: Input should be less than or equal to 4096"),
    ({"max_length": 0}, "training.max_length: Input should be greater than or equal to 8"),
    ({"epochs": 0}, "training.epochs: Input should be greater than or equal to 1"),
    ({"epochs": 10_000}, "training.epochs: Input should be less than or equal to 100"),
    ({"warmup_ratio": 1.5}, "training.warmup_ratio: Input should be less than 1"),
    ({"device": "tpu"}, "training.device: Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
], ids=["batch-0", "batch-negative", "batch-100000", "lr-10", "lr-0", "head-lr-negative", "max-length-100000",
        "max-length-0", "epochs-0", "epochs-10000", "warmup-1.5", "device-tpu"])
def test_absurd_settings_are_refused(training, expected, tmp_path, capsys):
    with pytest.raises(ConfigError) as caught:
        parse_config({"training": training})
    assert str(caught.value) == f"invalid config: {expected}"
    assert cli_error(capsys, tmp_path, {"training": training}) == f"error: invalid config: {expected}"


def test_several_bad_settings_are_named_in_one_line(tmp_path, capsys):
    line = cli_error(capsys, tmp_path, {"training": {"batch_size": 0, "learning_rate": 10, "max_length": 100_000}})
    assert line == ("error: invalid config: training.batch_size: Input should be greater than or equal to 1; "
                    "training.learning_rate: Input should be less than or equal to 0.01; "
                    "training.max_length: Input should be less than or equal to 4096")


@pytest.mark.parametrize("text, expected", [
    ("training:\n  epochs: 1\n batch_size: 4\n",
     "{path}: YAML syntax error at line 3, column 2: expected <block end>, but found '<block mapping start>'"),
    ("training: {epochs: 1\n",
     "{path}: YAML syntax error at line 2, column 1: expected ',' or '}}', but got '<stream end>'"),
    ("trainig:\n  epochs: 1\n", "invalid config: trainig: unknown key"),
    ("training:\n  batchsize: 8\n", "invalid config: training.batchsize: unknown key"),
    ("tasks:\n  topic:\n    train: a.csv\n    txt_column: sentence\n",
     "invalid config: tasks.topic.txt_column: unknown key"),
    ("training:\n  epochs: three\n", "invalid config: training.epochs: Input should be a valid integer, "
                                     "unable to parse string as an integer"),
    ("training:\n  cache_frozen_prefix: maybe\n", "invalid config: training.cache_frozen_prefix: Input should be a "
                                                  "valid boolean, unable to interpret input"),
    ("training: 5\n", "invalid config: training: Input should be a valid dictionary or instance of TrainingConfig"),
    ("freeze:\n  parts: layer.0\n", "invalid config: freeze.parts: Input should be a valid list"),
    ("freeze:\n  preset: everything\n", "invalid config: freeze.preset: Input should be 'none', 'scenario1', "
                                        "'scenario2', 'scenario3', 'lower_k', 'top_quarter', 'bitfit' or 'norms_only'"),
    ("freeze:\n  preset: lower_k\n", "invalid config: freeze: preset lower_k needs k (the number of lower layers to "
                                     "freeze)"),
    ("- a list\n- not a mapping\n", "invalid config: the top level must be a mapping of keys to values"),
    ("training:\n  epochs: 1\n  epochs: 2\n", "{path}: YAML syntax error at line 3, column 3: the key 'epochs' is "
                                              "given twice"),
], ids=["indentation", "unclosed-brace", "unknown-top-key", "unknown-training-key", "unknown-task-key",
        "int-as-word", "bool-as-word", "section-as-number", "list-as-string", "unknown-preset", "preset-missing-k",
        "top-level-list", "duplicate-key"])
def test_bad_config_files(text, expected, tmp_path, capsys):
    path = tmp_path / "experiment.yaml"
    assert cli_error(capsys, tmp_path, text) == "error: " + expected.format(path=path)


def test_config_file_not_utf8_or_missing(tmp_path, capsys):
    path = tmp_path / "experiment.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = cli(capsys, "train", "--config", str(path))
    assert code == 2
    assert err.strip() == f"error: {path}: the config is not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"
    code, _, err = cli(capsys, "train", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.yaml'}: config file not found"


def test_yaml_python_tags_are_never_executed(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    text = f'name: !!python/object/apply:os.system ["touch {marker}"]\n'
    line = cli_error(capsys, tmp_path, text)
    assert line.startswith(f"error: {tmp_path / 'experiment.yaml'}: YAML syntax error at line 1, column 7: could not "
                           "determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'")
    assert not marker.exists()


def test_freeze_plan_naming_missing_parts(tiny_bert, tmp_path, capsys):
    base = {"backbone": tiny_bert, "training": {"device": "cpu"}}
    line = cli_error(capsys, tmp_path, {**base, "freeze": {"parts": ["layer.99", "decoder"]}})
    assert line == ("error: unknown part(s) layer.99, decoder; valid parts: embeddings, layer.0, layer.1, layer.2, "
                    "head.topic, head.sentiment")
    line = cli_error(capsys, tmp_path, {**base, "freeze": {"preset": "lower_k", "k": 50}})
    assert line == "error: lower_k needs k between 0 and 3 (the number of layers), not 50"
    line = cli_error(capsys, tmp_path, {**base, "freeze": {"preset": "scenario3", "head": "weather"}})
    assert line == "error: scenario3 needs one of the heads topic, sentiment, not 'weather'"


# ---- faults during a run --------------------------------------------------------------------------

def test_stop_mid_run_keeps_a_stopped_run_with_its_metrics(quick, tmp_path):
    stop = threading.Event()

    def stop_at_step_3(event):
        if event.kind == "step" and event.step == 3:
            stop.set()

    config = quick(training={"eval_every": 2})
    run = run_experiment(config, tmp_path / "runs", [stop_at_step_3], stop)
    summary = run_files_ok(run.path)
    assert summary["status"] == "stopped"
    assert summary["message"] == f"stopped at step 3 of {summary['total_steps']}" and summary["total_steps"] > 3
    assert summary["steps"] == summary["_steps"] == 3
    assert set(summary["tasks"]) == {"topic", "sentiment"}  # the evaluation at step 2, kept
    assert 0 <= summary["tasks"]["topic"]["accuracy"] <= 1
    assert [e["state"] for e in summary["_events"] if e["kind"] == "state"] == ["started", "stopped"]
    assert run.has_weights()  # a stopped run keeps what it learned


def test_training_error_is_stored_as_failed_and_the_next_run_starts(quick, tmp_path, monkeypatch,
                                                                    capsys):
    def explode(self, task, rows, weight):
        if self.step == 2:
            raise RuntimeError("the loss exploded\nsecond line of the traceback text")
        return original(self, task, rows, weight)

    original = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", explode)
    config_path = write_yaml(tmp_path / "experiment.yaml", quick().to_dict())
    code, out, _ = cli(capsys, "train", "--config", config_path, "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert code == 1
    assert "status failed: RuntimeError: the loss exploded;" in out
    failed = Run(Path(out.strip().splitlines()[-1]))
    summary = run_files_ok(failed.path)
    assert summary["status"] == "failed" and summary["message"] == "RuntimeError: the loss exploded"
    assert summary["steps"] == summary["_steps"] == 2  # the steps before the error are kept
    assert not failed.has_weights()
    monkeypatch.setattr(Trainer, "train_step", original)
    again = run_experiment(quick(), tmp_path / "runs")  # the lock was released
    assert again.status == "finished" and again.path != failed.path


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 8.00 GiB total capacity)"),
    RuntimeError("CUDA error: out of memory"),
], ids=["OutOfMemoryError", "RuntimeError-out-of-memory"])
def test_out_of_memory_fails_the_run_and_frees_gpu_memory(error, quick, tmp_path, monkeypatch):
    emptied = []

    def oom(self, task, rows, weight):
        raise error

    monkeypatch.setattr(Trainer, "train_step", oom)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    run = run_experiment(quick(), tmp_path / "runs")
    summary = run_files_ok(run.path)
    assert summary["status"] == "failed"
    assert summary["message"] == OOM_HINT == "out of memory: try a smaller batch size or max length"
    assert emptied, "torch.cuda.empty_cache was not called"
    assert summary["_events"][-1] == {**summary["_events"][-1], "kind": "state", "state": "failed", "message": OOM_HINT}


def test_disk_full_while_saving_weights_fails_the_run_cleanly(quick, tmp_path, monkeypatch):
    from core import checkpoints

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_weights", no_space)
    run = run_experiment(quick(), tmp_path / "runs")
    summary = run_files_ok(run.path)
    assert summary["status"] == "failed"
    assert summary["message"] == "could not save the weights: No space left on device"
    assert set(summary["tasks"]) == {"topic", "sentiment"}  # the final metrics are kept


CRASH_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from core.config import parse_config
from core.training import run_experiment

def crash(event):
    if event.kind == "step" and event.step == 3:
        os._exit(9)  # the server dies mid-run: no handler, no cleanup (as a SIGKILL would, on any OS)

run_experiment(parse_config(json.loads(sys.argv[2])), sys.argv[3], [crash])
"""


def test_server_dies_mid_run_then_the_run_is_marked_interrupted(quick, tmp_path, capsys):
    runs = tmp_path / "runs"
    config = quick(training={"eval_every": 2})
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(ROOT), json.dumps(config.to_dict()), str(runs)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 9, result.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"  # as the crash left it

    (run,) = RunStore(runs).list()  # the next start of the page or the CLI looks at the runs
    summary = run_files_ok(run.path)
    assert summary["status"] == "interrupted"
    assert summary["message"] == "the process that ran it ended before it finished"
    assert summary["_steps"] == 3 and [e["step"] for e in summary["_events"] if e["kind"] == "eval"] == [2]
    code, out, _ = cli(capsys, "runs", "--runs-dir", str(runs))
    assert code == 0 and f"{run.id}" in out and "interrupted" in out
    with training_lock("cpu"):  # the dead process's lock went with it
        pass


def assert_refused_before_training(quick, runs, expected, tmp_path, monkeypatch, capsys) -> None:
    """Both the Python API and the CLI refuse with ``expected`` before loading anything."""
    import core.training

    monkeypatch.setattr(core.training, "prepare", lambda *a, **k: pytest.fail("prepared before checking the folder"))
    with pytest.raises(RunError) as caught:
        run_experiment(quick(), runs)
    assert str(caught.value) == expected
    config = write_yaml(tmp_path / "experiment.yaml", quick().to_dict())
    code, _, err = cli(capsys, "train", "--config", config, "--runs-dir", str(runs))
    assert code == 2 and err.strip() == f"error: {expected}"


def test_runs_folder_not_writable_fails_before_training(quick, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    runs = blocker / "runs"  # root can write anywhere, but not under a regular file
    expected = f"cannot write to the runs folder {runs}: {mkdir_error(runs)}"
    assert_refused_before_training(quick, runs, expected, tmp_path, monkeypatch, capsys)
    assert blocker.read_text() == "not a folder"


def test_disk_full_fails_before_training(quick, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=50 * 2**20))
    expected = f"only 50 MB free under {runs}; a run needs at least 200 MB"
    assert_refused_before_training(quick, runs, expected, tmp_path, monkeypatch, capsys)
    assert list(runs.iterdir()) == []  # no half-written run


def gate_training(monkeypatch) -> threading.Event:
    """Hold every training step until the returned event is set."""
    original, gate = Trainer.train_step, threading.Event()

    def gated(self, *args):
        assert gate.wait(60), "the gate was never opened"
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", gated)
    return gate


def test_a_second_start_waits_in_the_queue_and_trains_after_the_first(quick, tmp_path, monkeypatch):
    from core.jobs import JobManager

    gate = gate_training(monkeypatch)
    manager = JobManager(tmp_path / "runs", in_process=True)  # the gate patches this process's trainer
    first = manager.start(quick(), owner="visitor-a")
    try:
        deadline = time.time() + 60
        while first.state != "running" and time.time() < deadline:
            time.sleep(0.05)
        assert first.state == "running"
        second = manager.start(quick(name="second visitor"), owner="visitor-b")
        assert second.state == "queued" and manager.position(second) == 1
        with pytest.raises(BusyError) as caught:  # one waiting run per visitor
            manager.start(quick(name="again"), owner="visitor-b")
        assert str(caught.value) == ("your run is already waiting in the queue (position 1); "
                                     "wait for it or cancel it")
        third = manager.start(quick(name="third visitor"), owner="visitor-c")
        assert manager.position(third) == 2 and manager.waiting("visitor-c") == [third]
        manager.stop(third)  # a waiting run can be cancelled: it leaves the queue without a run
        assert third.state == "done" and manager.position(third) is None and manager.position(second) == 1
        assert manager.current() is first and [p.name for p in (tmp_path / "runs").iterdir()] == [first.run.id]
    finally:
        gate.set()
        first.wait(120)
    deadline = time.time() + 120
    while (second.state != "done" or second.watcher is None) and time.time() < deadline:
        time.sleep(0.05)
    assert second.wait(120) and second.state == "done"
    assert first.run.status == "finished" and second.run.status == "finished"
    assert second.run.summary()["started_at"] >= first.run.summary()["finished_at"]  # after, never beside
    assert second.run.summary()["owner"] == "visitor-b" and first.run.summary()["owner"] == "visitor-a"
    assert third.run is None and sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        [first.run.id, second.run.id])
    run_files_ok(second.run.path)


def test_two_threads_train_at_once_exactly_one_runs(quick, tmp_path, monkeypatch):
    from core.training import prepare

    runs = tmp_path / "runs"
    configs = [quick(name=f"tab {i}") for i in (1, 2)]
    experiments = [prepare(c, runs) for c in configs]
    gate = gate_training(monkeypatch)
    barrier, results = threading.Barrier(2), {}

    def press_train(i):
        barrier.wait()
        try:
            results[i] = run_experiment(configs[i], runs, experiment=experiments[i])
        except BusyError as error:
            results[i] = error
            gate.set()  # the loser answered: let the winner train

    threads = [threading.Thread(target=press_train, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    busy = [r for r in results.values() if isinstance(r, BusyError)]
    done = [r for r in results.values() if isinstance(r, Run)]
    assert len(busy) == 1 and len(done) == 1, results
    assert str(busy[0]) == "another run is already training in this process; wait for it or stop it"
    assert [p.name for p in runs.iterdir()] == [done[0].id]
    summary = run_files_ok(done[0].path)
    assert summary["status"] == "finished" and summary["_steps"] == summary["steps"] == summary["total_steps"]
    assert done[0].has_weights()


RACE_SCRIPT = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from core.backbones import load_backbone

errors = []

def load():
    try:
        load_backbone(sys.argv[2])
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=load) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""


def test_two_first_loads_at_once_in_a_fresh_process(tiny_bert):
    """The page counts parts in one thread while Train loads in another; transformers' first, lazy
    import used to fail in one of them ("cannot import name 'AutoModel'")."""
    result = subprocess.run([sys.executable, "-c", RACE_SCRIPT, str(ROOT), tiny_bert], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_run_in_another_process_holds_the_device(quick, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\n"
         "lock.acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n", str(lock_path("cpu"))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError) as caught:
            run_experiment(quick(), tmp_path / "runs", experiment=SimpleNamespace(device="cpu"))
        assert str(caught.value) == "another run is already training on cpu; wait for it or stop it"
        assert list((tmp_path / "runs").iterdir()) == []  # refused before a run folder existed
    finally:
        holder.kill()
        holder.wait()


def test_summary_writes_are_atomic(tmp_path, monkeypatch):
    run = RunStore(tmp_path / "runs").create(parse_config({"name": "atomic"}))
    before = run.summary_path.read_text()

    def crash(src, dst):
        raise OSError(errno.EIO, "crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        run.update_summary(status="finished", tasks={"topic": {"accuracy": 0.9}})
    monkeypatch.undo()
    assert run.summary_path.read_text() == before
    assert json.loads(before)["status"] == "running"
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "summary.json"]  # no stray temporary file

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_json(run.summary_path, {"status": "x" * 100_000})  # dies half way through the write
    monkeypatch.undo()
    assert run.summary_path.read_text() == before
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "summary.json"]


def test_a_torn_metrics_line_is_skipped(tmp_path):
    from core.events import StepEvent

    run = RunStore(tmp_path / "runs").create(parse_config({}))
    run.append_event(StepEvent(1, 0.1, "topic", 1.5, 1e-4))
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 2, "epoch": 0.2, "task": "top')  # the process died mid-line
    assert [e.step for e in run.events()] == [1]


# ---- safe defaults --------------------------------------------------------------------------------

def test_no_source_file_passes_trust_remote_code_true():
    sources = [*(ROOT / "core").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")]
    offenders = [str(p) for p in sources if re.search(r"trust_remote_code\s*=\s*(True|1\b)", p.read_text())]
    assert sources and not offenders
    calls = [line.strip() for p in sources for line in p.read_text().splitlines() if ".from_pretrained(" in line]
    assert len(calls) >= 5  # config, tokenizer and model of a backbone; model and tokenizer of a run
    assert all("trust_remote_code=False" in call for call in calls), calls  # said explicitly, every time


class _Payload:
    """Unpickling this runs code: what a hostile weights file would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle code ran"))


def test_weights_are_safetensors_and_pickles_are_refused(quick, tmp_path, monkeypatch, capsys):
    from core.checkpoints import load_run_model

    runs = tmp_path / "runs"
    run = run_experiment(quick(), runs)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert not [p.name for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert (run.backbone_dir / "model.safetensors").is_file() and run.heads_path.is_file()
    load_run_model(run)  # the untouched run loads

    marker = tmp_path / "PWNED"
    heads = run.heads_path.read_bytes()
    run.heads_path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(RunError) as caught:
        load_run_model(run)
    assert str(caught.value).startswith(f"run {run.id}: heads.safetensors is not a valid safetensors file (")
    run.heads_path.write_bytes(heads)

    (run.backbone_dir / "model.safetensors").unlink()
    torch.save({"payload": _Payload(str(marker))}, run.backbone_dir / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called on a run's weights"))
    with pytest.raises(RunError) as caught:
        load_run_model(run)
    expected = (f"run {run.id}: its weights are not safetensors (it holds pytorch_model.bin); Freeze Lab never loads "
                "pickle files, which can run code")
    assert str(caught.value) == expected
    config = write_yaml(tmp_path / "warm.yaml", {"init_from": run.id, "training": {"device": "cpu"}})
    code, _, err = cli(capsys, "train", "--config", config, "--runs-dir", str(runs))
    assert code == 2 and err.strip() == f"error: {expected}"
    assert not marker.exists()


def test_server_defaults_in_streamlit_config():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] in ("localhost", "127.0.0.1")
    assert server["enableXsrfProtection"] is True
    assert 0 < server["maxUploadSize"] <= 200
    assert config["browser"]["gatherUsageStats"] is False
    readme = (ROOT / "README.md").read_text()
    assert "streamlit run dashboard/app.py --server.address 0.0.0.0" in readme  # the classroom switch
    assert "FREEZE_LAB_ALLOWED_DIRS" in readme


@pytest.mark.parametrize("bad_id", ["../x", "..", ".", "x/../../y", "/etc", "run\n", "", "a" * 121, "-rf", ".hidden"],
                         ids=["dotdot-x", "dotdot", "dot", "nested-dotdot", "absolute", "newline", "empty", "too-long",
                              "dash", "hidden"])
def test_run_ids_never_escape_the_runs_folder(bad_id, tmp_path):
    root = tmp_path / "runs"
    store = RunStore(root)
    store.create(parse_config({"name": "inside"}))
    victim = tmp_path / "x"  # a run folder next to the store, which "../x" would reach
    victim.mkdir()
    (victim / "summary.json").write_text('{"status": "finished"}')
    with pytest.raises(RunError) as caught:
        store.get(bad_id, by_path=False)
    assert str(caught.value) == f"invalid run id {bad_id!r}: use letters, digits, '.', '-' and '_'"
    with pytest.raises(RunError):
        store.rename(bad_id, "renamed")
    with pytest.raises(RunError):
        store.delete(bad_id)
    assert (victim / "summary.json").read_text() == '{"status": "finished"}'
    assert len(store.list()) == 1 and root.exists()


def test_run_path_lookup_needs_a_real_run_folder(tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(RunError) as caught:
        store.get("../x")
    assert str(caught.value) == "../x is not a run folder (it has no summary.json)"
    with pytest.raises(RunError) as caught:
        store.get("/etc")
    assert str(caught.value) == "/etc is not a run folder (it has no summary.json)"
