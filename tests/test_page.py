"""The page, headless (AppTest) with a tiny backbone: render, toggles, presets, train, stop, compare."""

from __future__ import annotations

import json
import os

import pytest

from page_helpers import frozen_toggles, live_chart_data, new_app, open_tab, ready, rerun_until, trainable


@pytest.fixture
def page_env(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(tmp_path.parent), tiny_bert]))
    yield tmp_path
    from dashboard.resources import job_manager

    job_manager().stop()
    job = job_manager().current()
    if job is not None:
        job.wait(60)


def steps_logged(runs_root) -> int:
    """Training steps the one run under ``runs_root`` has written so far."""
    logs = list((runs_root / "runs").glob("*/metrics.jsonl"))
    return logs[0].read_text().count('"kind": "step"') if logs else 0


def test_default_page_renders_without_exceptions(page_env):
    at = new_app("minilm")
    assert not at.exception
    labels = [t.label for t in at.toggle]
    assert labels[:7] == ["embeddings", *(f"layer.{i}" for i in range(6))]
    assert "head.topic" in labels and "head.sentiment" in labels
    assert at.session_state["data_mode"] == "Built-in demo data"


def test_toggles_and_presets_change_the_readout(page_env, tiny_bert):
    at = rerun_until(new_app(tiny_bert), ready)
    total = trainable(at)
    assert frozen_toggles(at) == set()
    at.toggle(key="freeze:embeddings").set_value(True).run()
    after_embeddings = trainable(at)
    assert after_embeddings < total
    at.button(key="preset:scenario2").click().run()
    heads = 32 * 4 + 4 + 32 * 3 + 3  # tiny hidden size 32; topic has 4 labels, sentiment 3
    assert trainable(at) == heads
    assert frozen_toggles(at) == {"embeddings", "layer.0", "layer.1", "layer.2"}
    at.session_state["preset_k"] = 2
    at.button(key="preset:lower_k").click().run()
    assert frozen_toggles(at) == {"embeddings", "layer.0", "layer.1"}
    at.button(key="preset:scenario1").click().run()
    assert trainable(at) == 0
    assert any("only evaluate" in i.value for i in at.info)
    at.button(key="preset:none").click().run()
    assert trainable(at) == total


def test_train_draws_charts_and_stop_keeps_a_stopped_run(page_env, tiny_bert):
    at = rerun_until(new_app(tiny_bert), ready)
    at.session_state["epochs"] = 20
    at.session_state["eval_every"] = 5
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: live_chart_data(a) is not None)
    assert live_chart_data(at)["tasks"] == ["topic", "sentiment"]
    second_tab = rerun_until(new_app(tiny_bert, fresh_server=False), lambda a: live_chart_data(a) is not None)
    assert any("running" in i.value for i in second_tab.info)  # it found the live run
    assert not second_tab.button(key="stop").disabled  # a one-person page: any tab may stop it
    rerun_until(at, lambda a: steps_logged(page_env) > 0)  # the chart appears before the first step ends
    at.button(key="stop").click().run()
    at = rerun_until(at, lambda a: any("stopped" in w.value for w in a.warning))
    runs = list((page_env / "runs").iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert 0 < summary["steps"] < summary["total_steps"]
    assert (runs[0] / "metrics.jsonl").read_text().count('"kind": "step"') == summary["steps"]


def test_compare_view_shows_two_runs(page_env, tiny_bert):
    from core.config import parse_config
    from core.training import run_experiment

    base = {"backbone": tiny_bert, "training": {"epochs": 1, "eval_every": 0}}
    run_experiment(parse_config({**base, "name": "all trainable"}), page_env / "runs")
    run_experiment(parse_config({**base, "name": "backbone frozen", "freeze": {"preset": "scenario2"}}),
                   page_env / "runs")
    at = new_app(tiny_bert)
    assert "compare" not in [m.key for m in at.get("multiselect")]  # the closed tab's content is not computed
    at = open_tab(at, "Compare runs")
    assert len(at.multiselect(key="compare").value) == 2
    overlays = [c for c in at.get("plotly_chart") if "all trainable" in c.proto.spec and c.key.startswith("compare:")]
    assert len(overlays) == 2  # one overlay per task, each with a line per run
    assert all("backbone frozen" in c.proto.spec for c in overlays)
    differences = next(d.value for d in at.dataframe if "" in d.value.columns)  # metrics and settings side by side
    assert set(differences.columns) >= {"all trainable", "backbone frozen"}
    frozen_row = differences[differences[""] == "frozen parts"].iloc[0]
    assert frozen_row["all trainable"] == "nothing"
    assert "layer.0" in frozen_row["backbone frozen"]

    at.segmented_control(key="compare_metric").set_value("loss").run()
    at.toggle(key="freeze:layer.0").set_value(True).run()
    at = open_tab(open_tab(at, "Train"), "Compare runs")  # a visit to Train and back keeps the choices
    assert at.segmented_control(key="compare_metric").value == "loss"
    assert len(at.multiselect(key="compare").value) == 2
    assert at.toggle(key="freeze:layer.0").value  # the Train tab is drawn (hidden) all along


def test_warm_start_then_freeze_everything_evaluates_the_trained_model(page_env, tiny_bert):
    from core.config import parse_config
    from core.training import run_experiment

    first = run_experiment(parse_config({"backbone": tiny_bert, "name": "trained",
                                         "training": {"epochs": 1, "eval_every": 0}}), page_env / "runs")
    at = new_app("minilm")  # the typed backbone is ignored once a run is chosen
    at.selectbox(key="warm_start").set_value(first.id).run()
    at = rerun_until(at, ready)
    assert trainable(at) == first.summary()["params"]["total"]  # the run's tiny backbone, not MiniLM
    at.button(key="preset:scenario1").click().run()
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: any("evaluated" in s.value for s in a.success))
    second = max((page_env / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "evaluated" and summary["init_from"] == first.id
    assert summary["tasks"]["topic"]["accuracy"] == first.summary()["tasks"]["topic"]["accuracy"]


def test_model_picture_says_frozen_or_trains_in_words_and_escapes_names():
    import re

    from dashboard.freeze_panel import FROZEN_COLOR, TRAINABLE_COLOR, model_picture

    picture = model_picture(["embeddings", "layer.0", "head.<b>x</b>"], {"embeddings"}, "mean")
    blocks = re.findall(r'title="([^"]*)" style="background:(#[0-9a-f]{6})', picture)
    assert blocks == [("embeddings: frozen", FROZEN_COLOR), ("layer.0: trains", TRAINABLE_COLOR),
                      ("head.&lt;b&gt;x&lt;/b&gt;: trains", TRAINABLE_COLOR)]
    assert "<b>x</b>" not in picture and "mean pooling" in picture



def test_model_picture_with_the_change_says_how_far_each_block_moved():
    import re

    from dashboard.freeze_panel import model_picture

    picture = model_picture(["embeddings", "layer.0", "head.topic"], {"embeddings"}, "mean",
                            {"embeddings": 0.0, "layer.0": 0.01, "head.topic": 0.04})
    assert re.findall(r"frozen: 0 exactly|moved [0-9.]+%", picture) == ["frozen: 0 exactly", "moved 1%", "moved 4%"]
    assert re.findall(r"width:(\d+)%", picture) == ["50", "100"]  # square root of the share of the largest
    assert "moved" not in model_picture(["layer.0"], set(), "mean")

def test_long_loss_lines_are_thinned_to_real_points_ending_at_the_newest_step():
    from dashboard.charts import thin

    steps = list(range(1, 5001))
    losses = [1.0 / s for s in steps]
    xs, ys = thin(steps, losses, limit=600)
    assert len(xs) <= 601 and xs[-1] == 5000 and xs[0] == 1  # the newest step is always drawn
    assert all(y == 1.0 / x for x, y in zip(xs, ys))  # hover shows exact values, not averages
    assert thin(steps[:600], losses[:600]) == (steps[:600], losses[:600])  # short runs are drawn whole


def test_the_live_view_reruns_on_a_clock_only_while_no_run_trains_or_this_visitors_run_waits():
    """While a run trains, the chart's news (an evaluation, a plan change, the end) reruns the live view; its
    clock is then only a slow safety net. Loading, between a sweep's members, or queued, it looks more often."""
    from types import SimpleNamespace

    from dashboard.live import POLL_SECONDS, PREPARING_SECONDS, QUEUED_SECONDS, TRAINING_SECONDS, refresh_seconds

    def job(active: bool, status: str | None = None):
        run = None if status is None else SimpleNamespace(summary=lambda: {"status": status})
        return SimpleNamespace(active=active, run=run)

    assert refresh_seconds(job(True), []) == PREPARING_SECONDS == 1.0  # the backbone and the data load
    assert refresh_seconds(job(True, "running"), []) == TRAINING_SECONDS >= 30  # the news reruns it
    assert refresh_seconds(job(True, "finished"), []) == PREPARING_SECONDS  # a sweep's next member comes
    assert refresh_seconds(job(True, "running"), ["my queued run"]) == QUEUED_SECONDS <= 5
    assert refresh_seconds(job(False, "finished"), []) is None  # nothing changes without a click
    assert POLL_SECONDS <= 0.5  # the chart's own polling keeps a point within a second of its event


def test_change_heatmap_marks_frozen_rows_in_words_and_colours_the_rest_by_their_history():
    import math

    from dashboard.charts import FROZEN_GREY, change_heatmap

    history = {"embeddings": [0.0, 0.0], "layer.0": [0.004, 0.01], "layer.1": [0.0, 0.0], "head.topic": [0.2, 0.5]}
    fig = change_heatmap([5, 10], history, {"embeddings", "layer.1"}, {"layer.0": [1.5, 0.5], "head.topic": [2, 1]})
    trains, frozen = fig.data
    rows = ["embeddings (frozen)", "layer.0", "layer.1 (frozen)", "head.topic"]  # input at the bottom
    assert trains.y == frozen.y == tuple(rows)  # both span every row: plotly.js fails on disjoint ones
    assert [all(v is None for v in row) for row in trains.z] == [True, False, True, False]
    assert [all(v is None for v in row) for row in frozen.z] == [False, True, False, True]
    assert [any(cell == "frozen" for cell in row) for row in frozen.text] == [True, False, True, False]
    assert frozen.colorscale[0][1] == FROZEN_GREY and not frozen.showscale
    assert "relative change 0 exactly" in frozen.hovertext[2][0]
    squared = [v ** 2 for row in (trains.z[1], trains.z[3]) for v in row]  # the colour: square root of the change
    assert all(math.isclose(a, b) for a, b in zip(squared, [0.004, 0.01, 0.2, 0.5], strict=True))
    assert trains.hovertext[3][1] == "head.topic<br>step 10<br>relative change 50%<br>gradient norm 1"
    assert "square-root" in trains.colorbar.title.text and trains.colorbar.ticktext[-1] == "50%"


def test_the_colour_bar_names_zero_and_the_largest_change_with_no_two_labels_overlapping():
    import math

    from dashboard.charts import colour_ticks

    for largest in (0.001, 0.0123, 0.52, 2.4):
        ticks = colour_ticks(largest)
        assert ticks[0] == 0.0 and ticks[-1] == largest
        gaps = [math.sqrt(b) - math.sqrt(a) for a, b in zip(ticks, ticks[1:])]
        assert min(gaps) >= 0.1 * math.sqrt(largest)
