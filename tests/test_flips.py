"""Prediction flips between two runs (core.flips), the flips and reevaluate commands, and the page's view."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from core.__main__ import main
from core.compare import CompareError
from core.data import load_tasks
from core.flips import NoPredictions, cells, flips
from core.runs import Run, RunStore, atomic_write_json


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, small_config) -> dict[str, Run]:
    """Two real runs on the same small data, with other seeds (so other heads, other predictions)."""
    from core.training import run_experiment

    root = tmp_path_factory.mktemp("flips-runs")
    with pytest.MonkeyPatch.context() as patch:  # the per-test lock folder is not made yet for a module fixture
        patch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path_factory.mktemp("flips-locks")))
        return {name: run_experiment(small_config(tiny_bert, name=name, training={"seed": seed}), root)
                for name, seed in (("a", 0), ("b", 1))}


def copy_runs(trained: dict[str, Run], root) -> RunStore:
    """Both runs in a store of their own, as ``a`` and ``b``, for a test to change."""
    for name, run in trained.items():
        shutil.copytree(run.path, root / name)
    return RunStore(root)


def summary_confusion(run: Run, task: str) -> list[list[int]]:
    return run.summary()["tasks"][task]["confusion"]


def trace(matrix: list[list[int]]) -> int:
    return sum(matrix[i][i] for i in range(len(matrix)))


def test_a_run_against_itself_has_no_flips(trained):
    run = trained["a"]
    result = flips(RunStore(run.path.parent), run.id, run.id)
    for task, r in result["tasks"].items():
        assert r["flips"] == [] and r["n_flips"] == 0 and r["only_a"] == r["only_b"] == 0
        assert r["both_right"] == trace(summary_confusion(run, task))
        assert r["both_right"] + r["both_wrong"] == r["n_examples"]
        assert all(d == 0 for row in r["confusion_difference"] for d in row)


def test_two_runs_flips_add_up_to_their_confusion_matrices(trained, small_config, tiny_bert):
    a, b = trained["a"], trained["b"]
    result = flips(RunStore(a.path.parent), a.id, b.id)
    data = load_tasks(small_config(tiny_bert))
    assert sum(r["n_flips"] for r in result["tasks"].values()) > 0  # other seeds: the check below is not vacuous
    for task, r in result["tasks"].items():
        ca, cb = summary_confusion(a, task), summary_confusion(b, task)
        assert r["both_right"] + r["both_wrong"] + r["only_a"] + r["only_b"] == r["n_examples"] == len(
            data[task].val_texts) == sum(map(sum, ca))
        assert r["both_right"] + r["only_a"] == trace(ca) and r["both_right"] + r["only_b"] == trace(cb)
        assert r["confusion_difference"] == [[y - x for x, y in zip(ra, rb)] for ra, rb in zip(ca, cb)]
        assert r["note"] is None and len(r["flips"]) == r["n_flips"]
        for f in r["flips"]:
            assert f["a"] != f["b"]
            assert f["text"] == data[task].val_texts[f["index"]]
            assert f["true"] == data[task].labels[data[task].val_labels[f["index"]]]
            assert 0 < f["confidence_a"] <= 1 and 0 < f["confidence_b"] <= 1


def test_the_four_cells_tell_right_from_wrong():
    assert cells([0, 0, 1, 1, 2], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]) == {
        "both_right": 1, "both_wrong": 1, "only_a": 1, "only_b": 2}


def test_cli_json_shape_and_limit(trained, tmp_path, capsys):
    store = copy_runs(trained, tmp_path)
    assert main(["flips", "a", "b", "--json", "--limit", "1", "--runs-dir", str(store.root)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["tasks"]) == {"topic", "sentiment"}
    for task, r in printed["tasks"].items():
        assert {"both_right", "both_wrong", "only_a", "only_b", "flips"} <= set(r)
        assert len(r["flips"]) == min(1, r["n_flips"])
        for f in r["flips"]:
            assert set(f) == {"index", "text", "true", "a", "b", "confidence_a", "confidence_b"}
            assert {f["true"], f["a"], f["b"]} <= set(r["labels"])  # label names, not indices
    assert main(["flips", "a", "b", "--runs-dir", str(store.root)]) == 0
    text = capsys.readouterr().out
    assert "only A right" in text and "confusion B - A" in text


def test_other_validation_data_is_refused_in_one_line(trained, tmp_path, capsys):
    store = copy_runs(trained, tmp_path)
    summary = store.get("b").summary()
    summary["validation_fingerprint"]["topic"] = "another data set"
    store.get("b").write_summary(summary)
    with pytest.raises(CompareError, match="cannot compare: the runs were validated on different topic data"):
        flips(store, "a", "b")
    assert main(["flips", "a", "b", "--runs-dir", str(store.root)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: cannot compare: the runs were validated on different topic data\n"
    assert captured.out == ""


def test_other_true_labels_in_the_predictions_are_refused(trained, tmp_path):
    store = copy_runs(trained, tmp_path)
    stored = json.loads(store.get("b").predictions_path.read_text(encoding="utf-8"))
    stored["tasks"]["sentiment"]["true"].reverse()
    atomic_write_json(store.get("b").predictions_path, stored)
    with pytest.raises(CompareError, match="different sentiment data"):
        flips(store, "a", "b")


@pytest.mark.parametrize("damage,expected", [
    (lambda path: path.unlink(), "run b has no predictions.json (it was made before they were stored)"),
    (lambda path: path.write_text(path.read_text(encoding="utf-8")[:100], encoding="utf-8"),
     "run b has a predictions.json that cannot be read (torn or not JSON)"),
    (lambda path: path.write_text('{"tasks": {"topic": {"labels": []}}}', encoding="utf-8"),
     "run b has no usable topic, sentiment predictions in predictions.json"),
])
def test_missing_or_torn_predictions_are_named_and_the_run_still_opens(trained, tmp_path, capsys, damage, expected):
    store = copy_runs(trained, tmp_path)
    damage(store.get("b").predictions_path)
    with pytest.raises(NoPredictions) as caught:
        flips(store, "a", "b")
    assert caught.value.run_id == "b" and str(caught.value).startswith(expected)
    assert main(["flips", "a", "b", "--runs-dir", str(store.root)]) == 2
    assert capsys.readouterr().err == f"error: {expected}; re-evaluate it: python -m core reevaluate b\n"
    assert {r.id for r in store.list()} == {"a", "b"} and store.get("b").summary()["status"] == "finished"


def test_changed_data_gives_flips_without_texts(trained, tmp_path, small_data):
    """Both runs' config now points at a validation file with one text changed: the counts stay, the texts go."""
    store = copy_runs(trained, tmp_path / "runs")
    lines = open(small_data["validation"], encoding="utf-8").read().splitlines()
    lines[1] = "changed," + lines[1].split(",", 1)[1]
    changed = tmp_path / "val.csv"
    changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for run_id in ("a", "b"):
        path = store.get(run_id).config_path
        path.write_text(path.read_text(encoding="utf-8").replace(small_data["validation"], str(changed)),
                        encoding="utf-8")
    before = flips(RunStore(trained["a"].path.parent), trained["a"].id, trained["b"].id)
    after = flips(store, "a", "b")
    for task, r in after["tasks"].items():
        assert "validation data changed" in r["note"]
        assert all(f["text"] is None for f in r["flips"])
        assert [{**f, "text": None} for f in before["tasks"][task]["flips"]] == r["flips"]


def test_reevaluate_writes_the_predictions_the_run_made(trained, tmp_path, capsys):
    store = copy_runs(trained, tmp_path)
    original = json.loads(store.get("a").predictions_path.read_text(encoding="utf-8"))["tasks"]
    store.get("a").predictions_path.unlink()
    assert main(["reevaluate", "a", "--runs-dir", str(store.root)]) == 0
    assert "topic: accuracy" in capsys.readouterr().out
    again = json.loads(store.get("a").predictions_path.read_text(encoding="utf-8"))["tasks"]
    for task, p in original.items():
        assert again[task]["predicted"] == p["predicted"] and again[task]["true"] == p["true"]
        assert again[task]["confidence"] == pytest.approx(p["confidence"], abs=2e-4)
    assert flips(store, "a", "b")["tasks"] == flips(RunStore(trained["a"].path.parent), trained["a"].id,
                                                    trained["b"].id)["tasks"]


def test_reevaluate_refuses_a_run_without_weights(trained, tmp_path, capsys):
    store = copy_runs(trained, tmp_path)
    store.delete_weights("a")
    assert main(["reevaluate", "a", "--runs-dir", str(store.root)]) == 2
    assert capsys.readouterr().err == "error: cannot re-evaluate run a: it has no weights (weights deleted)\n"


def test_the_page_lists_the_flips_and_re_evaluates_a_run_without_predictions(trained, tmp_path, monkeypatch,
                                                                             tiny_bert):
    from page_helpers import new_app, open_tab

    store = copy_runs(trained, tmp_path / "runs")
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(store.root))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(tmp_path), tiny_bert]))
    expected = flips(store, "a", "b")["tasks"]

    def flip_tables(at) -> list:
        assert "Prediction flips" in [e.label for e in at.expander]
        return [d.value for d in at.dataframe if "A confidence" in d.value.columns]

    at = open_tab(new_app(tiny_bert), "Compare runs")
    tables = flip_tables(at)
    assert [len(t) for t in tables] == [r["n_flips"] for r in expected.values()]
    first = next(t for t in tables if len(t))
    assert first.iloc[0]["text"] and first.iloc[0]["A"] != first.iloc[0]["B"]

    store.get("b").predictions_path.unlink()
    at.run()
    assert not flip_tables(at)
    assert any("has no predictions.json" in w.value for w in at.warning)
    at.button(key="flips_reevaluate").click().run()
    assert [len(t) for t in flip_tables(at)] == [r["n_flips"] for r in expected.values()]

    shutil.copytree(store.get("a").path, store.root / "c")  # beyond two runs, the pair is picked
    store.rename("c", "c")  # the widgets tell runs apart by name
    at.run()
    at.multiselect(key="compare").set_value(["a", "b", "c"]).run()
    assert (at.selectbox(key="flips_a").value, at.selectbox(key="flips_b").value) == ("a", "b")
    at.selectbox(key="flips_b").set_value("c").run()
    assert not flip_tables(at)  # c is a copy of a
    assert [c.value for c in at.caption].count("No example flips: the two runs label every one alike.") == 2
    at.selectbox(key="flips_b").set_value("a").run()
    assert not flip_tables(at) and "Pick two different runs." in [c.value for c in at.caption]
    assert not at.exception
