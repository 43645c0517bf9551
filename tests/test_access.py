"""Serving a classroom: which typed paths are read, who may change a run, names, limits, the served page.

The rules are plain functions (dashboard/settings.py, dashboard/access.py), tested here directly; the page
tests at the end (AppTest) check that the page applies them. The real-browser cases are in test_browser.py.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from page_helpers import new_app, served_page, stop_every_job

SECRET = "aws_secret_key,password\nAKIAEXAMPLE,hunter2\n"


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An allowed folder, an uploads folder, and a home folder that is not allowed."""
    allowed, uploads, home = tmp_path / "allowed", tmp_path / "uploads", tmp_path / "home"
    for folder in (allowed, uploads, home):
        folder.mkdir()
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", str(allowed))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(uploads))
    monkeypatch.setenv("HOME", str(home))
    return SimpleNamespace(allowed=allowed, uploads=uploads, home=home)


# ---- what a visitor may read ---------------------------------------------------------------------

def test_data_files_in_allowed_folders_are_read(roots):
    from dashboard.settings import PROJECT, check_local_path

    for path in (roots.allowed / "a.csv", roots.allowed / "sub" / "b.JSONL", roots.uploads / "ab" / "c.parquet",
                 PROJECT / "examples" / "d.tsv"):
        assert check_local_path(str(path)) == path
    assert check_local_path("examples/d.json") == PROJECT / "examples" / "d.json"  # relative: to the project


def test_the_home_folder_is_not_allowed_unless_listed(roots, monkeypatch):
    from dashboard.settings import check_local_path

    (roots.home / "notes.csv").write_text(SECRET, encoding="utf-8")
    with pytest.raises(ValueError) as refused:
        check_local_path("~/notes.csv")
    assert str(refused.value).startswith("~/notes.csv: outside the folders this page may read")
    assert str(roots.home) not in str(refused.value) and "hunter2" not in str(refused.value)
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(roots.allowed), "~"]))
    assert check_local_path("~/notes.csv") == roots.home / "notes.csv"


@pytest.mark.parametrize("typed", ["~/.aws/credentials.csv", "{allowed}/.hidden.csv", "{allowed}/.git/x.csv",
                                   "{allowed}/sub/../.secret/x.csv"])
def test_hidden_files_and_folders_are_never_read(typed, roots, monkeypatch):
    from dashboard.settings import check_local_path

    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(roots.allowed), "~"]))
    typed = typed.format(allowed=roots.allowed)
    with pytest.raises(ValueError, match=r"hidden files and folders \(names starting with '.'\) are never read"):
        check_local_path(typed)


def test_a_link_to_a_hidden_file_is_refused_after_resolving(roots, monkeypatch):
    from dashboard.settings import check_local_path

    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(roots.allowed), str(roots.home)]))
    (roots.home / ".aws").mkdir()
    (roots.home / ".aws" / "credentials").write_text(SECRET, encoding="utf-8")
    link = roots.allowed / "innocent.csv"
    link.symlink_to(roots.home / ".aws" / "credentials")
    with pytest.raises(ValueError, match="hidden files"):
        check_local_path(str(link))


def test_a_link_out_of_the_allowed_folders_is_refused(roots, tmp_path):
    from dashboard.settings import check_local_path

    outside = tmp_path / "outside.csv"
    outside.write_text(SECRET, encoding="utf-8")
    link = roots.allowed / "data.csv"
    link.symlink_to(outside)
    with pytest.raises(ValueError) as refused:
        check_local_path(str(link))
    assert str(refused.value).startswith(f"{link}: outside the folders")
    assert str(outside) not in str(refused.value)  # never where the link leads


def test_run_records_and_unknown_home_folders_are_not_read(roots, monkeypatch, tmp_path):
    from dashboard.settings import check_local_path

    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(roots.allowed / "runs"))
    with pytest.raises(ValueError, match="inside the runs folder; run records are not data"):
        check_local_path(str(roots.allowed / "runs" / "20260101-x" / "predictions.json"))
    with pytest.raises(ValueError, match=r"^~nosuchuser-freeze-lab/x.csv: no such home folder$"):
        check_local_path("~nosuchuser-freeze-lab/x.csv")


@pytest.mark.parametrize("name", ["README.md", "requirements.txt", "core/runs.py", "examples/demo.yaml", "notes"])
def test_only_data_extensions_are_read(name, roots):
    from dashboard.settings import PROJECT, check_local_path

    with pytest.raises(ValueError, match=r"not a data file; the page reads only \.csv, \.tsv, \.json, \.jsonl, "):
        check_local_path(str(PROJECT / name))


def test_a_link_named_csv_to_a_non_data_file_is_refused(roots):
    from dashboard.settings import PROJECT, check_local_path

    link = roots.allowed / "table.csv"
    link.symlink_to(PROJECT / "README.md")  # the extension is judged after resolving links
    with pytest.raises(ValueError, match="not a data file"):
        check_local_path(str(link))


# ---- names, the served page, who may change what ---------------------------------------------------

@pytest.mark.parametrize("address, served", [("localhost", False), ("127.0.0.1", False), ("::1", False),
                                             ("[::1]", False), ("0.0.0.0", True), ("127.0.0.2", True),
                                             ("192.168.1.20", True), ("", True), (None, True)])
def test_anything_but_loopback_is_served(address, served):
    from dashboard.access import is_served

    assert is_served(address) is served


@pytest.mark.parametrize("name", ["ag_news", "SetFit/sst2", "bert-base-uncased", "owner/name.v2"])
def test_hub_names_are_names(name):
    from dashboard.access import check_hub_name

    assert check_hub_name(name, "hub data set") == name


@pytest.mark.parametrize("name", ["csv", "JSON", "text", "parquet"])
def test_file_format_builders_are_not_hub_data_sets(name):
    """datasets.load_dataset('csv') with no files reads matching files of the working folder."""
    from core.data import is_builder_name

    assert is_builder_name(name) and not is_builder_name("ag_news") and not is_builder_name("SetFit/sst2")


@pytest.mark.parametrize("name", ["/etc/passwd", "~/.aws/credentials", "../data", "a/b/c", ".hidden", "a/..",
                                  "C:\\Users\\x", "name with space", ""])
def test_paths_are_not_hub_names(name):
    from dashboard.access import check_hub_name

    with pytest.raises(ValueError, match="on a shared page, give a hub name such as 'owner/name'; paths are not read"):
        check_hub_name(name, "backbone")


OWNER, OTHER = "visitor-a", "visitor-b"


@pytest.mark.parametrize("action", ["stop", "rename", "reevaluate", "delete"])
def test_a_one_person_page_without_passcode_lets_anyone_do_anything(action):
    from dashboard.access import may

    assert may(action, None, OTHER, teacher=False, passcode_set=False, served_page=False)
    assert may(action, OWNER, OTHER, teacher=False, passcode_set=False, served_page=False)


@pytest.mark.parametrize("served_page", [True, False])
def test_with_a_passcode_only_the_starter_or_the_teacher_changes_a_run(served_page):
    from dashboard.access import may

    for action in ("stop", "rename", "reevaluate", "delete"):
        assert may(action, OWNER, OWNER, teacher=False, passcode_set=True, served_page=served_page)
        assert not may(action, OWNER, OTHER, teacher=False, passcode_set=True, served_page=served_page)
        assert not may(action, None, OTHER, teacher=False, passcode_set=True, served_page=served_page)  # CLI run
        assert may(action, OWNER, OTHER, teacher=True, passcode_set=True, served_page=served_page)


def test_a_served_page_without_passcode_lets_the_starter_stop_and_nobody_delete():
    from dashboard.access import may

    served = dict(teacher=False, passcode_set=False, served_page=True)
    assert may("stop", OWNER, OWNER, **served) and not may("stop", OWNER, OTHER, **served)
    assert may("rename", OWNER, OWNER, **served) and not may("rename", OWNER, OTHER, **served)
    assert may("reevaluate", OWNER, OWNER, **served) and not may("reevaluate", OWNER, OTHER, **served)
    assert not may("delete", OWNER, OWNER, **served) and not may("delete", OWNER, OTHER, **served)


def test_the_passcode_is_compared_whole():
    from dashboard.access import passcode_matches

    assert passcode_matches("owl-42", "owl-42")
    assert not passcode_matches("owl-4", "owl-42") and not passcode_matches("owl-420", "owl-42")
    assert not passcode_matches("", "owl-42")


# ---- limits ----------------------------------------------------------------------------------------

def test_limits_come_from_the_environment_and_default_to_minilm_when_served():
    from dashboard.access import Limits, read_limits

    assert read_limits({}, served_page=False) == Limits()
    assert read_limits({}, served_page=True) == Limits(backbones=("minilm",), sweep_runs=8)
    assert read_limits({"FREEZE_LAB_ALLOWED_BACKBONES": "*"}, served_page=True).backbones is None
    limits = read_limits({"FREEZE_LAB_MAX_EPOCHS": "3", "FREEZE_LAB_MAX_TRAIN_EXAMPLES": "500",
                          "FREEZE_LAB_MAX_LENGTH": "64", "FREEZE_LAB_ALLOWED_BACKBONES": "minilm, bert-base-uncased"},
                         served_page=False)
    assert limits == Limits(epochs=3, train_examples=500, max_length=64, backbones=("minilm", "bert-base-uncased"))
    assert read_limits({"FREEZE_LAB_MAX_SWEEP_RUNS": "21"}, served_page=True).sweep_runs == 21
    bad = read_limits({"FREEZE_LAB_MAX_EPOCHS": "three"}, served_page=False)
    assert bad.epochs is None and "FREEZE_LAB_MAX_EPOCHS='three' is not a whole number" in bad.problem


@pytest.mark.parametrize("training, counts, expected", [
    ({"epochs": 4}, {}, "epochs 4 is over this page's limit of 3 (FREEZE_LAB_MAX_EPOCHS)"),
    ({"max_length": 128}, {}, "max length 128 is over this page's limit of 64 (FREEZE_LAB_MAX_LENGTH)"),
    ({}, {"topic": 501}, "task topic has 501 training examples, over this page's limit of 500; set 'Max training "
                         "examples' to 500 or fewer"),
])
def test_a_setup_over_the_limits_is_refused_in_one_line(training, counts, expected):
    from core.config import parse_config
    from dashboard.access import Limits, check_limits

    limits = Limits(epochs=3, train_examples=500, max_length=64)
    check_limits(limits, parse_config({"training": {"epochs": 3, "max_length": 64}}), {"topic": 500})  # at the limit
    with pytest.raises(ValueError) as refused:
        check_limits(limits, parse_config({"training": training}), counts)
    assert str(refused.value) == expected


def test_sweeps_repeats_and_backbones_are_limited_too():
    from core.config import parse_config
    from dashboard.access import Limits, check_limits

    limits, config = Limits(train_examples=500, backbones=("minilm",), sweep_runs=8), parse_config({})
    check_limits(limits, config, {}, "minilm", runs=8)
    with pytest.raises(ValueError, match=r"^9 runs in one go is over this page's limit of 8 \(FREEZE_LAB_MAX_SWEEP_RUNS\)"):
        check_limits(limits, config, {}, "minilm", runs=9)
    with pytest.raises(ValueError, match=r"^backbone 'roberta-large' is not offered on this page; choose one of minilm$"):
        check_limits(limits, config, {}, "roberta-large")
    with pytest.raises(ValueError, match="this run does not say how many training examples it used"):
        check_limits(limits, config, {"topic": None}, "minilm")


# ---- the page applies them (AppTest) ---------------------------------------------------------------

@pytest.fixture
def page_env(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.delenv("FREEZE_LAB_ALLOWED_DIRS", raising=False)
    monkeypatch.delenv("FREEZE_LAB_TEACHER_PASSCODE", raising=False)
    for variable in ("FREEZE_LAB_MAX_EPOCHS", "FREEZE_LAB_MAX_TRAIN_EXAMPLES", "FREEZE_LAB_MAX_LENGTH",
                     "FREEZE_LAB_ALLOWED_BACKBONES"):
        monkeypatch.delenv(variable, raising=False)
    yield SimpleNamespace(root=tmp_path, runs=tmp_path / "runs", backbone=tiny_bert)
    stop_every_job()


def own_data(at):
    at.session_state["data_mode"] = "My own data"
    return at.run()


def test_a_served_page_offers_no_local_path_and_says_so(page_env, monkeypatch):
    with served_page():
        at = own_data(new_app("minilm"))
        assert not at.exception
        kinds = at.radio(key="source_kind:topic").options
        assert kinds == ["Upload a file", "Hub data set"]
        assert any(c.value.startswith("Served to the network: visitors upload their data files (typed paths are off)")
                   for c in at.caption)
        assert at.selectbox(key="backbone").options == ["minilm"]  # the packaged MiniLM only, by default
        monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", str(page_env.root))
        at.run()
        assert at.radio(key="source_kind:topic").options == ["Upload a file", "Local path", "Hub data set"]
        assert any(c.value.startswith("Served to the network: visitors upload data files or type paths inside the "
                                      "project, uploads and FREEZE_LAB_ALLOWED_DIRS folders") for c in at.caption)
    at = new_app("minilm")
    assert any(c.value.startswith("On this computer only (localhost)") for c in at.caption)


def test_a_served_page_reads_hub_names_as_names_never_as_paths(page_env, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_BACKBONES", "*")
    secret = page_env.root / "creds.csv"
    secret.write_text(SECRET, encoding="utf-8")
    with served_page():
        at = own_data(new_app("minilm"))
        at.session_state["source_kind:topic"] = "Hub data set"
        at.session_state["hub:topic"] = "csv"  # a file-format builder would read the server's working folder
        at.run()
        assert [e.value for e in at.error] == ["hub data set 'csv': that is a file format, not a data set; use "
                                               "'Upload a file'"]
        for typed in (str(secret), "~/.aws/credentials", "../creds.csv"):
            at.session_state["hub:topic"] = typed
            at.run()
            assert [e.value for e in at.error] == [f"hub data set {typed!r}: on a shared page, give a hub name "
                                                   "such as 'owner/name'; paths are not read"]
            assert "hunter2" not in str([e.value for e in at.error] + [m.value for m in at.markdown])
        at.session_state["backbone"] = page_env.backbone  # a local folder typed as the backbone
        at.run()
        assert any(e.value.startswith("This backbone cannot be used: backbone ") and
                   e.value.endswith("paths are not read") for e in at.error)


def test_limits_refuse_an_over_limit_setup_with_their_message(page_env, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", page_env.backbone)
    monkeypatch.setenv("FREEZE_LAB_MAX_EPOCHS", "1")
    at = new_app(page_env.backbone)
    assert any(c.value == "Limits on this page: at most 1 epoch(s)." for c in at.caption)
    at.session_state["epochs"] = 2
    at.button(key="train").click().run()
    assert [e.value for e in at.error] == ["epochs 2 is over this page's limit of 1 (FREEZE_LAB_MAX_EPOCHS)"]
    assert not page_env.runs.exists()


def test_the_teachers_passcode_unlocks_once_per_session_and_is_not_kept(page_env, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", page_env.backbone)
    monkeypatch.setenv("FREEZE_LAB_TEACHER_PASSCODE", "owl-42")
    monkeypatch.setenv("FREEZE_LAB_MAX_EPOCHS", "1")
    at = new_app(page_env.backbone)
    at.text_input(key="teacher_passcode_input").input("owl-4").run()
    at.button(key="teacher_unlock").click().run()
    assert any(c.value == "Wrong passcode." for c in at.sidebar.caption)
    at.text_input(key="teacher_passcode_input").input("owl-42").run()
    at.button(key="teacher_unlock").click().run()
    assert any(c.value.startswith("Teacher mode") for c in at.sidebar.caption)
    assert "owl-42" not in json.dumps({k: str(at.session_state[k]) for k in at.session_state})
    assert not any(c.value.startswith("Limits on this page") for c in at.caption)  # the teacher has none


def test_a_served_page_without_passcode_lets_nobody_delete_or_rename_anothers_run(page_env):
    from core.config import parse_config
    from core.runs import RunStore

    run = RunStore(page_env.runs).create(parse_config({"name": "someone's run"}))
    run.update_summary(status="finished", owner="someone-else")
    with served_page():
        at = new_app("minilm")
        at.session_state["tab"] = "Compare runs"
        at.run()
        assert not at.exception
        assert at.text_input(key="rename_to").disabled and at.button(key="delete").disabled
        assert at.checkbox(key="delete_sure").disabled
        captions = [c.value for c in at.caption]
        assert "Only the person who started this run, or the teacher with the passcode, can rename it." in captions
        assert "On a shared page without a teacher's passcode, runs cannot be deleted." in captions
    at = new_app("minilm")  # the same run on a one-person page: anyone may
    at.session_state["tab"] = "Compare runs"
    at.run()
    assert not at.text_input(key="rename_to").disabled and not at.checkbox(key="delete_sure").disabled
    assert run.path.exists()


def test_the_engine_refuses_a_file_format_as_a_hub_data_set(tmp_path, monkeypatch):
    from core.config import TaskConfig
    from core.data import DataError, read_table

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text(SECRET, encoding="utf-8")  # what load_dataset("csv") would pick up
    with pytest.raises(DataError) as refused:
        read_table("csv", TaskConfig(train="csv"), "train")
    assert str(refused.value) == "hub data set 'csv': that is a file format, not a data set; give the file's path"
