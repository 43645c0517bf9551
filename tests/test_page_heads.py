"""The page on a frozen head and on a task kept out of the backbone: one sentence each, the config
says it, and comparisons mark the frozen head's curve."""

from __future__ import annotations


from dashboard.charts import group_figure
from dashboard.freeze_panel import task_outlook
from page_helpers import new_app, ready, rerun_until
from test_page import page_env  # noqa: F401  (the page's fixture: its runs folder, uploads and allowed folders)

PARTS = ["embeddings", "layer.0", "layer.1", "head.topic", "head.sentiment"]


def test_outlooks_say_what_happens_to_each_task():
    both = {"topic": True, "sentiment": True}
    scenario3 = task_outlook("topic", {"head.topic"}, PARTS, both)
    assert "head is fixed" in scenario3 and "backbone under it still changes" in scenario3
    assert "its own loss, through the fixed head and sentiment" in scenario3 and "up or down" in scenario3
    assert task_outlook("sentiment", {"head.topic"}, PARTS, both) is None  # nothing to say about it
    kept_out = task_outlook("topic", {"head.topic"}, PARTS, {"topic": False, "sentiment": True})
    assert "trained by sentiment)" in kept_out
    nobody = task_outlook("topic", {"head.topic"}, PARTS, {"topic": False, "sentiment": False})
    assert "stays where it starts" in nobody
    all_frozen = task_outlook("topic", {"embeddings", "layer.0", "layer.1", "head.topic"}, PARTS, both)
    assert "stays where it starts" in all_frozen
    head_only = task_outlook("sentiment", set(), PARTS, {"topic": True, "sentiment": False})
    assert "trains only its head" in head_only and "trained by topic" in head_only


def test_the_page_explains_scenario3_and_writes_trains_backbone(page_env, tiny_bert):
    at = rerun_until(new_app(tiny_bert), ready)
    at.session_state["preset_head"] = "topic"
    at.button(key="preset:scenario3").click().run()
    assert any(i.value.startswith("topic: its head is fixed, but the backbone under it still changes")
               for i in at.info)
    at.checkbox(key="trains_backbone:topic").uncheck().run()
    assert any("trained by sentiment)" in i.value for i in at.info)
    at.checkbox(key="trains_backbone:sentiment").uncheck().run()
    assert any("No task's loss trains the backbone" in w.value for w in at.warning)
    assert not at.exception


def test_the_config_names_the_demo_tasks_only_when_one_is_kept_out(monkeypatch):
    import streamlit as st

    from dashboard import form, page_settings

    state = type("State", (dict,), {"__getattr__": dict.__getitem__})({**page_settings.widget_defaults(),
                                                                       "backbone": "minilm"})
    monkeypatch.setattr(st, "session_state", state)
    monkeypatch.setattr(form, "selected_backbone", lambda: "minilm")
    assert form.current_config([], None).tasks is None  # the default demo config stays as it was
    state["trains_backbone:sentiment"] = False
    config = form.current_config(["head.topic"], None)
    assert {n: (t.train, t.trains_backbone) for n, t in config.tasks.items()} == {
        "topic": ("demo", True), "sentiment": ("demo", False)}


def test_a_frozen_heads_curve_is_dashed_and_labelled():
    events = [type("E", (), {"kind": "eval", "step": s, "epoch": s / 4, "final": False,
                             "tasks": {"topic": {"accuracy": a, "loss": 1.0, "macro_f1": a}}})()
              for s, a in ((2, 0.3), (4, 0.5))]
    fig = group_figure({"scenario3": [events], "none": [events]}, "topic", "accuracy", fixed_head={"scenario3"})
    lines = {t.name: t.line.dash for t in fig.data}
    assert lines == {"scenario3 (head.topic frozen)": "dash", "none": "solid"}
