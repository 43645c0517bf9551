"""Hardening, page side (AppTest, tiny backbone): bad data, bad backbones, faults and safe defaults.

Whatever is typed or pressed, the page keeps rendering (no exception), says what went wrong in one
sentence, and keeps every stored run. AppTest cannot upload files, so data is given as a local path
in an allowed temporary folder; the upload helper is tested directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import mkdir_error
from page_helpers import APP, new_app, open_tab, rerun_until
from test_hardening import ROWS, png_bytes, save_config_folder


@pytest.fixture
def page_env(tmp_path, monkeypatch, tiny_bert):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(allowed), tiny_bert]))
    yield SimpleNamespace(root=tmp_path, allowed=allowed, runs=tmp_path / "runs", backbone=tiny_bert)
    from dashboard.resources import job_manager

    job_manager().stop()
    job = job_manager().current()
    if job is not None:
        job.wait(60)


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def still_works(at) -> None:
    """No exception, and the sections after the problem still render."""
    assert not at.exception, at.exception
    headers = [h.value for h in at.subheader]
    assert "4. Settings" in headers and "5. Train and watch" in headers
    assert at.button(key="train").label == "Train"


def outside_message(typed: str) -> str:
    return (f"{typed}: outside the folders this page may read (the project, the uploads folder and "
            "FREEZE_LAB_ALLOWED_DIRS); the teacher can allow more with FREEZE_LAB_ALLOWED_DIRS")


def with_data(env, path: str, **columns):
    """The page with 'My own data': the topic task read from a typed local path."""
    at = new_app(env.backbone)
    at.session_state["data_mode"] = "My own data"
    at.session_state["use:sentiment"] = False
    at.session_state["source_kind:topic"] = "Local path"
    at.session_state["path:topic"] = path
    at.run()
    for key, value in columns.items():  # pick columns, as a user would in the selectboxes
        at.selectbox(key=f"{key}:topic").set_value(value).run()
    return at


# ---- bad data -------------------------------------------------------------------------------------

PAGE_DATA = [
    ("empty-file", "empty.csv", b"", {}, "{path}: the file is empty"),
    ("image-renamed-csv", "photo.csv", png_bytes(), {}, "{path}: this is not a text file (it holds binary data)"),
    ("not-utf8", "neither.csv", b"text,label\ncaf\x81 au lait,drink\n", {},
     "{path}: the text is not UTF-8 (byte 0x81 at offset 14); save it as UTF-8"),
    ("utf16-text", "excel.csv", ROWS.encode("utf-16"), {}, "{path}: the text is UTF-16, not UTF-8; save it as UTF-8"),
    ("ragged-row", "ragged.csv", "text,label\nfine row,a\nbad row,b,extra\nok,a\n", {},
     "{path}: line 3 has 3 fields but the header has 2; check that row's separators and quotes"),
    ("text-all-numbers", "numbers.csv", "text,label\n1,a\n2,b\n3,a\n4,b\n5,a\n6,b\n", {},
     "{path}: the text column holds only numbers; did you pick the wrong column?"),
    ("text-all-empty", "notext.csv", "text,label\n,a\n,b\n,a\n,b\n,a\n", {},
     "{path}: the text column is empty in every row"),
    ("only-one-class", "oneclass.csv", ROWS.replace(",tech", ",sports"), {},
     "{path}: only one class ('sports') in task 'topic'; a classifier needs two or more"),
    ("numbers-picked-as-text", "ids.csv", "id,text,label\n" + "".join(f"{i},sentence {i},{'ab'[i % 2]}\n"
                                                                     for i in range(1200)),
     {"text_col": "id"}, "{path}: the text column holds only numbers; did you pick the wrong column?"),
    ("text-picked-as-label", "ids.csv", "id,text,label\n" + "".join(f"{i},sentence {i},{'ab'[i % 2]}\n"
                                                                   for i in range(1200)),
     {"label_col": "text"},
     "{path}: 1200 distinct labels (over 1000); did you pick the text column as the label column?"),
]


@pytest.mark.parametrize("name, content, columns, expected", [c[1:] for c in PAGE_DATA], ids=[c[0] for c in PAGE_DATA])
def test_bad_data_file_shows_one_line(name, content, columns, expected, page_env):
    path = page_env.allowed / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    at = with_data(page_env, str(path), **columns)
    assert expected.format(path=path) in errors(at)
    still_works(at)


def test_blank_labels_and_a_file_over_the_limit(page_env):
    from core.data import MAX_FILE_MB

    blank = page_env.allowed / "blank.csv"
    blank.write_text("text,label\n" + "".join(f"sentence {i},{'' if i == 3 else 'ab'[i % 2]}\n" for i in range(10)))
    at = with_data(page_env, str(blank))
    assert any(e.startswith(f"{blank}: 1 row(s) have an empty label (first at data row ") and
               e.endswith("); fill them in or remove them") for e in errors(at)), errors(at)
    big = page_env.allowed / "big.csv"
    with open(big, "wb") as handle:
        handle.truncate((MAX_FILE_MB + 1) * 2**20)  # sparse
    at.session_state["path:topic"] = str(big)
    at.run()
    assert errors(at) == [f"{big}: the file is {MAX_FILE_MB + 1} MB, over the {MAX_FILE_MB} MB limit"]
    still_works(at)


def test_pressing_train_with_bad_data_starts_nothing(page_env):
    path = page_env.allowed / "ragged.csv"
    path.write_text("text,label\nfine row,a\nbad row,b,extra\n")
    at = with_data(page_env, str(path))
    at.button(key="train").click().run()
    assert (f"task topic: {path}: line 3 has 3 fields but the header has 2; check that row's separators and quotes"
            in errors(at))
    from dashboard.resources import job_manager

    assert job_manager().current() is None and not page_env.runs.exists()
    still_works(at)


def test_a_very_long_line_is_read(page_env):
    path = page_env.allowed / "long.csv"
    path.write_text(ROWS + "word " * 200_000 + ",sports\n")
    at = with_data(page_env, str(path))
    assert not errors(at)
    assert any(c.value.startswith("6 training and 1 validation examples") for c in at.caption), \
        [c.value for c in at.caption]
    still_works(at)


# ---- local paths: only allowed folders ------------------------------------------------------------

def test_paths_outside_the_allowed_folders_are_refused(page_env):
    elsewhere = page_env.root / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "secret.csv"
    secret.write_text(ROWS)
    link = page_env.allowed / "innocent.csv"
    link.symlink_to(secret)  # inside an allowed folder, pointing outside
    at = with_data(page_env, "/etc/passwd")
    assert errors(at) == [outside_message("/etc/passwd")]
    for typed in (str(secret), str(link), "../" * 12 + "etc/passwd"):
        at.session_state["path:topic"] = typed
        at.run()
        assert errors(at) == [outside_message(typed)]
        assert not any("training and" in c.value for c in at.caption)  # nothing was read
        still_works(at)
    at.session_state["path:topic"] = str(page_env.allowed / "fine.csv")
    (page_env.allowed / "fine.csv").write_text(ROWS)
    at.run()
    assert not errors(at)  # an allowed file is read


def test_check_local_path_defaults_and_environment(tmp_path, monkeypatch):
    from dashboard.settings import PROJECT, check_local_path

    monkeypatch.delenv("FREEZE_LAB_ALLOWED_DIRS", raising=False)
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    assert check_local_path(str(PROJECT / "examples" / "x.csv")) == PROJECT / "examples" / "x.csv"
    assert check_local_path(str(tmp_path / "uploads" / "ab12" / "x.tsv")) == tmp_path / "uploads" / "ab12" / "x.tsv"
    for outside in (str(tmp_path / "x.csv"), "~/x.csv"):  # a temporary folder, the home folder: not by default
        with pytest.raises(ValueError, match="outside the folders this page may read"):
            check_local_path(outside)
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", str(tmp_path))
    assert check_local_path(str(tmp_path / "x.csv")) == tmp_path / "x.csv"
    with pytest.raises(ValueError, match="outside the folders"):
        check_local_path(str(tmp_path) + "-sibling/x.csv")  # a prefix of the name is not a parent folder


# ---- bad backbones --------------------------------------------------------------------------------

def backbone_error(at) -> str:
    at = rerun_until(at, lambda a: any(e.startswith("This backbone cannot be used: ") for e in errors(a)))
    (message,) = [e for e in errors(at) if e.startswith("This backbone cannot be used: ")]
    still_works(at)
    return message.removeprefix("This backbone cannot be used: ")


@pytest.mark.parametrize("kind, config, expected", [
    ("empty", None, "'{folder}' is not a model folder: it has no config.json"),
    ("t5", {"model_type": "t5", "d_model": 32, "num_layers": 1, "is_encoder_decoder": True},
     "'{folder}' is an encoder-decoder model (t5); Freeze Lab needs an encoder such as BERT"),
    ("gpt2", {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
     "'{folder}' is a decoder-only model (gpt2); Freeze Lab needs an encoder such as BERT"),
    ("remote", {"model_type": "magic-encoder", "auto_map": {"AutoModel": "magic.MagicModel",
                                                             "AutoConfig": "magic.MagicConfig"}},
     "'{folder}' needs its own remote code to load, which Freeze Lab never runs; pick a standard encoder"),
], ids=["not-a-model-folder", "encoder-decoder", "decoder-only", "remote-code"])
def test_unusable_backbone_folder(kind, config, expected, page_env):
    folder = page_env.allowed / kind
    if config is None:
        folder.mkdir()
    else:
        save_config_folder(folder, config)
    assert backbone_error(new_app(str(folder))) == expected.format(folder=folder)


def test_unknown_hub_id_and_outside_folders(page_env, tiny_bert):
    assert backbone_error(new_app("nobody/no-such-encoder")) == (
        "cannot load backbone 'nobody/no-such-encoder': it is not in the local cache and the hub cannot be reached "
        "(offline); use 'minilm' or a local model folder")
    assert backbone_error(new_app("/etc")) == outside_message("/etc")
    outside = page_env.root / "outside-model"
    shutil.copytree(tiny_bert, outside)
    link = page_env.allowed / "model"
    link.symlink_to(outside)  # a link in an allowed folder to a model outside
    assert backbone_error(new_app(str(link))) == outside_message(str(link))


def test_remote_code_backbone_refused_on_train_too(page_env):
    folder = save_config_folder(page_env.allowed / "remote", {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "auto_map": {"AutoModel": "magic.MagicModel"}})
    message = f"'{folder}' ships its own model code, which Freeze Lab never runs; pick a standard encoder"
    at = new_app(folder)
    assert backbone_error(at) == message
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: f"The run could not start: {message}" in errors(a))
    still_works(at)
    assert not at.button(key="train").disabled  # the next run can be started
    assert not page_env.runs.exists() or not list(page_env.runs.iterdir())


# ---- settings -------------------------------------------------------------------------------------

def test_settings_widgets_bound_absurd_values_with_the_configs_own_bounds(page_env):
    import math

    at = new_app(page_env.backbone)
    bounds = {key: (at.number_input(key=key).min, at.number_input(key=key).max)
              for key in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "max_length")}
    tiny = math.nextafter(0, 1)  # the config's gt=0: any positive rate
    assert bounds == {"epochs": (1, 100), "batch_size": (1, 1024), "learning_rate": (tiny, 1e-2),
                      "head_learning_rate": (tiny, 1e-1), "max_length": (8, 4096)}  # as core/config.py says
    at.number_input(key="batch_size").set_value(0).run()
    at.number_input(key="max_length").set_value(100_000).run()
    assert at.session_state["batch_size"] == 1  # out of bounds: never passed on
    assert 8 <= at.session_state["max_length"] <= 4096
    still_works(at)


# ---- faults ---------------------------------------------------------------------------------------

def status_texts(at) -> list[str]:
    return [*errors(at), *(w.value for w in at.warning), *(i.value for i in at.info), *(s.value for s in at.success)]


def test_training_error_is_shown_and_the_next_run_starts(page_env, monkeypatch):
    from core.training import Trainer

    original = Trainer.train_step

    def explode(self, *args):
        raise RuntimeError("the loss exploded")

    monkeypatch.setattr(Trainer, "train_step", explode)
    monkeypatch.setenv("FREEZE_LAB_TRAIN_IN_PROCESS", "1")  # the patch lives in this process
    at = new_app(page_env.backbone)
    at.session_state["epochs"] = 1
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: any("failed — RuntimeError: the loss exploded" in e for e in errors(a)))
    still_works(at)
    (failed,) = page_env.runs.iterdir()
    summary = json.loads((failed / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"] == "RuntimeError: the loss exploded"
    assert not at.button(key="train").disabled

    monkeypatch.setattr(Trainer, "train_step", original)
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: len(list(page_env.runs.iterdir())) == 2 and any(
        "running" in t or "finished" in t for t in status_texts(a) if "Run **" in t))
    from dashboard.resources import job_manager

    assert job_manager().current().run.path != failed
    assert json.loads((failed / "summary.json").read_text())["status"] == "failed"  # the failed run is kept


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_left_running_by_a_dead_server_shows_as_interrupted(page_env):
    run = page_env.runs / "20250101-120000-before-restart"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: before restart\n")
    (run / "summary.json").write_text(json.dumps({
        "run_id": run.name, "name": "before restart", "status": "running", "started_at": time.time() - 60,
        "pid": dead_pid(), "host": __import__("socket").gethostname()}))
    steps = [{"kind": "step", "step": i, "epoch": i / 10, "task": "topic", "loss": 1.0 / i, "lr": 1e-4,
              "time": time.time()} for i in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    at = new_app(page_env.backbone)
    still_works(at)
    at = open_tab(at, "Compare runs")
    history = next(d.value for d in at.dataframe if "run" in d.value.columns)
    row = history[history["run"] == run.name].iloc[0]
    assert row["status"] == "interrupted"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["message"] == "the process that ran it ended before it finished"
    assert (run / "metrics.jsonl").read_text().count('"kind": "step"') == 3  # its metrics so far are kept


@pytest.mark.parametrize("fault", ["runs-folder-under-a-file", "disk-full"])
def test_unusable_runs_folder_is_reported_on_train(fault, page_env, monkeypatch):
    if fault == "disk-full":
        usage = shutil.disk_usage(page_env.root)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=50 * 2**20))
        expected = f"only 50 MB free under {page_env.runs}; a run needs at least 200 MB"
    else:
        blocker = page_env.root / "a-file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(blocker / "runs"))
        expected = f"cannot write to the runs folder {blocker / 'runs'}: {mkdir_error(blocker / 'runs')}"
    at = new_app(page_env.backbone)
    still_works(at)
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: f"The run could not start: {expected}" in errors(a))
    still_works(at)
    assert not page_env.runs.exists() or not list(page_env.runs.iterdir())


def test_train_pressed_while_the_parts_are_counted_is_not_lost(page_env, monkeypatch):
    """The part count finishing during the click's page run used to rerun the page and drop the click."""
    from dashboard import freeze_panel, resources

    counted, clicking = threading.Event(), threading.Event()
    real_describe, real_outline = resources.describe_cached, freeze_panel.outline

    def slow_describe(*args):
        assert counted.wait(60)
        return real_describe(*args)

    def outline_then_finish_counting(*args):  # the count ends in the middle of the click's page run
        if clicking.is_set():
            counted.set()
            resources.backbone_description(page_env.backbone, "mean").wait(60)
        return real_outline(*args)

    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(page_env.root / "cache"))  # nothing remembered: it must count
    monkeypatch.setattr(resources, "describe_cached", slow_describe)
    monkeypatch.setattr(freeze_panel, "outline", outline_then_finish_counting)
    at = new_app(page_env.backbone)
    assert any(c.value == "Loading the backbone to count its parameters..." for c in at.caption)
    at.session_state["epochs"] = 1
    clicking.set()
    at.button(key="train").click().run()
    assert resources.job_manager().current() is not None, "the click on Train was dropped"
    still_works(at)


def test_a_second_tab_reattaches_and_its_train_waits_in_the_queue(page_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.training import Trainer
    from dashboard.resources import job_manager

    original, gate = Trainer.train_step, threading.Event()

    def gated(self, *args):
        gate.wait(60)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", gated)
    monkeypatch.setenv("FREEZE_LAB_TRAIN_IN_PROCESS", "1")  # the gate lives in this process
    first = new_app(page_env.backbone)
    second = AppTest.from_file(APP, default_timeout=120)  # same process, same job manager: another tab
    second.session_state["backbone"] = page_env.backbone
    second.run()
    assert not second.button(key="train").disabled
    first.button(key="train").click().run()
    try:
        rerun_until(first, lambda a: getattr(job_manager().current(), "state", None) == "running")
        run_id = job_manager().current().run.id
        second.button(key="train").click().run()  # pressed in a tab drawn before the first run began
        still_works(second)
        assert second.button(key="train").disabled  # its run waits: one waiting run per visitor
        assert any(f"Run **{run_id}**: running" in t for t in status_texts(second))
        assert any(t.startswith("Your run waits in the queue: position 1 of 1.") for t in status_texts(second))
        assert any(c.value == "1 run(s) wait in the queue." for c in first.run().caption)  # the other tab sees it
        assert [p.name for p in page_env.runs.iterdir()] == [run_id]
        second.button(key="cancel_queued").click().run()
        assert not job_manager().waiting() and not second.button(key="train").disabled
    finally:
        for job in job_manager().waiting():
            job_manager().stop(job)
        job_manager().stop()
        gate.set()
        job_manager().current().wait(60)
    assert json.loads((page_env.runs / run_id / "summary.json").read_text())["status"] == "stopped"
    assert [p.name for p in page_env.runs.iterdir()] == [run_id]


def test_a_run_whose_weights_were_replaced_by_a_pickle_is_not_loaded(page_env):
    import torch

    run = page_env.runs / "20250101-120000-tampered"
    shutil.copytree(page_env.backbone, run / "backbone")
    (run / "backbone" / "model.safetensors").unlink()
    marker = page_env.root / "PWNED"
    torch.save({"weights": "replaced"}, run / "backbone" / "pytorch_model.bin")
    (run / "heads.safetensors").write_bytes(b"not used")
    (run / "heads.json").write_text(json.dumps({"pooling": "mean", "labels": {"topic": ["a", "b"]}}))
    (run / "summary.json").write_text(json.dumps({"run_id": run.name, "status": "finished", "started_at": 1.0,
                                                  "tasks": {}}))
    at = open_tab(new_app(page_env.backbone), "Inspect a run")
    at.text_input(key="try_text").input("the match went to extra time").run()
    at.button(key="predict").click().run()
    assert errors(at) == [f"This run's model cannot be loaded: run {run.name}: its weights are not safetensors (it "
                          "holds pytorch_model.bin); Freeze Lab never loads pickle files, which can run code"]
    still_works(at)
    assert not marker.exists() and (run / "backbone" / "pytorch_model.bin").exists()


# ---- uploads --------------------------------------------------------------------------------------

class FakeUpload:
    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


@pytest.mark.parametrize("name, stored", [
    ("../../evil.csv", "evil.csv"), ("/etc/cron.d/evil.csv", "evil.csv"), ("..", "upload.csv"),
    ("..\\..\\evil.csv", "_.._evil.csv"), (".bashrc.csv", "bashrc.csv"), ("my data (1).csv", "my_data__1_.csv"),
], ids=["dotdot", "absolute", "bare-dotdot", "backslashes", "hidden", "spaces"])
def test_uploads_land_inside_the_uploads_folder(name, stored, tmp_path, monkeypatch):
    from dashboard.form import save_upload

    uploads = tmp_path / "uploads"
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(uploads))
    path = Path(save_upload(FakeUpload(name, ROWS.encode())))
    assert path.name == stored
    assert path.resolve().parent.parent == uploads.resolve()  # uploads/<content hash>/<name>
    assert path.read_text() == ROWS and not path.stat().st_mode & 0o111  # stored as data, never executable
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [stored]


def test_upload_to_an_unusable_folder_is_a_message(tmp_path, monkeypatch):
    from dashboard.form import save_upload

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(blocker / "uploads"))
    with pytest.raises(ValueError) as caught:
        save_upload(FakeUpload("data.csv", ROWS.encode()))
    reason = mkdir_error(blocker / "uploads")
    assert str(caught.value) == f"cannot store the upload in {blocker / 'uploads'}: {reason}"
