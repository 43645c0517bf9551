"""Where learning happened, on the page (AppTest, tiny backbone): a finished lower_k run draws the change
heatmap and the moved-per-part picture in Inspect and in the live view, frozen parts marked in words and
the trainable ones above zero; a run from before the change map says so."""

from __future__ import annotations

import json
import shutil

import pytest

from page_helpers import live_chart_data, new_app, open_tab

FROZEN = ["embeddings", "layer.0", "layer.1"]  # lower_k, k=2
TRAINABLE = ["layer.2", "head.topic", "head.sentiment"]  # tiny_bert: 3 layers, mean pooling, no pooler


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, small_config):
    """A lower_k run evaluated every 2 steps, in its own runs folder."""
    from core.training import run_experiment

    runs = tmp_path_factory.mktemp("changes") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path_factory.mktemp("changes-locks")))  # before the autouse one
        run = run_experiment(small_config(tiny_bert, freeze={"preset": "lower_k", "k": 2},
                                          training={"device": "cpu", "eval_every": 2}), runs)
    assert run.summary()["status"] == "finished"
    return run


@pytest.fixture
def page_env(monkeypatch, tiny_bert):
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", tiny_bert)
    yield monkeypatch


def change_steps(run) -> list[int]:
    return [e.step for e in run.events() if e.kind == "change"]


def heatmap_traces(at, key: str) -> dict:
    spec = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if c.key == key))
    return {trace["name"]: trace for trace in spec["data"]}


def assert_marked(traces: dict, steps: list[int]) -> None:
    frozen, trains = traces["frozen"], traces["trains"]
    rows = dict(zip(trains["y"], zip(trains["z"], frozen["z"], frozen["text"])))
    assert list(rows) == [f"{part} (frozen)" for part in FROZEN] + TRAINABLE and trains["x"] == steps
    assert len(steps) >= 3
    for part in FROZEN:  # grey, with the word, and nothing in the colour trace
        colour, grey, text = rows[f"{part} (frozen)"]
        assert all(v is None for v in colour) and grey == [0.0] * len(steps) and "frozen" in text
    for part in TRAINABLE:  # above zero by the end (a head may wait a few steps for its task's batch)
        colour, grey, text = rows[part]
        assert colour[-1] > 0 and all(v >= 0 for v in colour) and all(v is None for v in grey)
        assert "frozen" not in text


def test_inspect_draws_where_learning_happened_with_frozen_parts_marked(page_env, finished, tiny_bert):
    page_env.setenv("FREEZE_LAB_RUNS_DIR", str(finished.path.parent))
    at = open_tab(new_app(tiny_bert), "Inspect a run")
    assert not at.exception
    assert_marked(heatmap_traces(at, "inspect:change"), change_steps(finished))
    picture = next(h.proto.body for h in at.get("html") if "moved" in h.proto.body)
    assert picture.count("frozen: 0 exactly") == len(FROZEN) and picture.count("moved ") == len(TRAINABLE)


def live_script(run_path: str) -> None:
    import streamlit as st

    from core.runs import Run
    from dashboard.live import draw_run

    st.session_state.setdefault("x_axis", "step")
    st.session_state.setdefault("smoothing", 0.0)
    draw_run(Run(run_path))


def test_the_live_view_draws_the_same_heatmap_below_the_task_charts(finished):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(live_script, args=(str(finished.path),), default_timeout=60).run()
    assert not at.exception
    assert [c.key for c in at.get("plotly_chart")] == ["live:change"]
    assert live_chart_data(at)["tasks"] == ["topic", "sentiment"]  # the task charts, above it
    assert_marked(heatmap_traces(at, "live:change"), change_steps(finished))


def test_a_run_from_before_the_change_map_says_so(page_env, finished, tiny_bert, tmp_path):
    from core.change_history import NO_CHANGE_MAP
    from core.runs import Run

    old = Run(shutil.copytree(finished.path, tmp_path / "runs" / finished.id))
    lines = old.metrics_path.read_text(encoding="utf-8").splitlines()
    old.metrics_path.write_text("".join(line + "\n" for line in lines if '"kind": "change"' not in line))
    summary = old.summary()
    del summary["change"], summary["change_map"]
    old.write_summary(summary)
    page_env.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    at = open_tab(new_app(tiny_bert), "Inspect a run")
    assert not at.exception
    assert NO_CHANGE_MAP in [i.value for i in at.info]
    assert not [c for c in at.get("plotly_chart") if c.key == "inspect:change"]
