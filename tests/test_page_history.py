"""The history on the page (AppTest): filtered by tag, preset, status and backbone, and a run's note and
tags set from the page into its folder."""

from __future__ import annotations

import pytest

from page_helpers import new_app, open_tab, stop_every_job


@pytest.fixture
def runs(tmp_path, monkeypatch, tiny_bert):
    """Three runs with a record and no training: finished scenario2 on minilm (tagged baseline), stopped
    custom on another backbone, finished with nothing frozen on the tiny backbone."""
    from core.config import parse_config
    from core.runs import RunStore

    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", tiny_bert)
    store = RunStore(tmp_path / "runs")
    made = {}
    for name, config, status in (("frozen", {"freeze": {"preset": "scenario2"}}, "finished"),
                                 ("custom", {"backbone": "other/model", "freeze": {"parts": ["embeddings"]}},
                                  "stopped"),
                                 ("plain", {"backbone": tiny_bert}, "finished")):
        run = store.create(parse_config({"name": name, **config}))
        run.update_summary(status=status, started_at=len(made) + 1.0)
        made[name] = run
    made["frozen"].annotate(add=["baseline"])
    yield made
    stop_every_job()


def history(at) -> list[str]:
    """The names in the history table, top to bottom."""
    return list(next(d.value for d in at.dataframe if "run" in d.value.columns)["name"])


def compare_tab(tiny_bert):
    at = new_app(tiny_bert)
    at.session_state["compare"] = []  # no comparison drawn: these runs have no curves
    return open_tab(at, "Compare runs")


def test_the_history_filters_by_tag_preset_status_and_backbone(runs, tiny_bert):
    at = compare_tab(tiny_bert)
    assert not at.exception
    assert history(at) == ["plain", "custom", "frozen"]  # newest first
    assert at.multiselect(key="history_tag").options == ["baseline"]
    assert at.multiselect(key="history_preset").options == ["custom", "none", "scenario2"]
    at.multiselect(key="history_tag").set_value(["baseline"]).run()
    assert history(at) == ["frozen"]
    assert any("1 of 3 run(s) shown" in c.value for c in at.caption)
    at.multiselect(key="history_tag").set_value([]).run()
    at.multiselect(key="history_status").set_value(["finished"]).run()
    assert history(at) == ["plain", "frozen"]
    at.multiselect(key="history_backbone").set_value(["minilm"]).run()  # across facets: all must match
    assert history(at) == ["frozen"]
    at.multiselect(key="history_status").set_value([]).run()
    at.multiselect(key="history_backbone").set_value([]).run()
    at.multiselect(key="history_preset").set_value(["custom", "none"]).run()  # within one: any
    assert history(at) == ["plain", "custom"]
    assert at.multiselect(key="compare").options == ["plain", "custom"]  # the runs to compare follow the filter
    at.multiselect(key="history_preset").set_value([]).run()
    at.multiselect(key="compare").set_value([runs["frozen"].id]).run()
    at.multiselect(key="history_preset").set_value(["custom"]).run()  # a chosen run the filter hides stays chosen
    assert at.multiselect(key="compare").options == ["custom", "frozen"]
    assert at.multiselect(key="compare").value == [runs["frozen"].id]


def test_a_note_and_tags_set_on_the_page_are_saved_with_the_run(runs, tiny_bert):
    at = compare_tab(tiny_bert)
    at.selectbox(key="notes_run").set_value(runs["frozen"].id).run()
    assert at.text_area(key="notes_text").value == ""
    assert at.multiselect(key="notes_tags").value == ["baseline"]  # filled with what is saved
    at.text_area(key="notes_text").set_value("heads only: fast, and nearly as good")
    at.multiselect(key="notes_tags").set_value(["Lesson-1"])  # a new tag, typed; baseline removed
    next(b for b in at.button if b.label == "Save note and tags").click().run()
    assert not at.exception and not at.error
    assert runs["frozen"].notes() == {"note": "heads only: fast, and nearly as good", "tags": ["lesson-1"]}
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    row = table[table["name"] == "frozen"].iloc[0]
    assert row["tags"] == "lesson-1" and row["note"] == "heads only: fast, and nearly as good"
    assert at.multiselect(key="history_tag").options == ["lesson-1"]

    at.selectbox(key="notes_run").set_value(runs["plain"].id).run()  # another run: its own (empty) record
    assert at.text_area(key="notes_text").value == "" and at.multiselect(key="notes_tags").value == []
    at.multiselect(key="notes_tags").set_value(["two words"])
    next(b for b in at.button if b.label == "Save note and tags").click().run()
    assert any("invalid tag 'two words'" in e.value for e in at.error)  # one line, and nothing saved
    assert runs["plain"].notes() == {"note": "", "tags": []}


def test_the_readout_shows_a_heads_only_share_as_small_not_zero(tmp_path, monkeypatch, tiny_bert):
    from page_helpers import ready, rerun_until, trainable

    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", tiny_bert)
    at = rerun_until(new_app(tiny_bert), ready, timeout=240)  # counted in a child
    total = trainable(at)
    at.button(key="preset:scenario2").click().run()
    heads = trainable(at)
    assert 0 < heads < total / 1000  # a share that "0%" would misstate
    assert at.metric[0].delta == f"{100 * heads / total:.2g}% of {total:,}"  # two significant digits, not 0%
    stop_every_job()
