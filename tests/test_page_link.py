"""The setup in the link, the setup file in and out, and lesson mode, on the page (AppTest)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import yaml

from page_helpers import APP, frozen_toggles, new_app, ready, rerun_until, served_page, stop_every_job, trainable

LESSON_LINK = {"lesson.title": "Does freezing the lower layers hurt?", "lesson.hide": ["backbone", "settings"],
               "lesson.lock": "freeze", "lesson.ask": "Which will score higher on sentiment?",
               "lesson.choices": ["full fine-tuning", "lower 2 frozen", "about the same"]}


@pytest.fixture
def page_env(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FREEZE_LAB_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", os.pathsep.join([str(tmp_path), tiny_bert]))
    for variable in ("FREEZE_LAB_MAX_EPOCHS", "FREEZE_LAB_MAX_TRAIN_EXAMPLES", "FREEZE_LAB_MAX_LENGTH",
                     "FREEZE_LAB_ALLOWED_BACKBONES", "FREEZE_LAB_TEACHER_PASSCODE"):
        monkeypatch.delenv(variable, raising=False)
    yield SimpleNamespace(root=tmp_path, runs=tmp_path / "runs", backbone=tiny_bert)
    stop_every_job()


def open_link(params: dict, fresh_server: bool = True):
    """A new browser tab opened on a link: an AppTest whose first run sees these query parameters.
    ``fresh_server`` clears the process-wide caches (the job manager keeps its runs folder), as a restart would."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    if fresh_server:
        from core.child import stop_children

        stop_children()
        st.cache_resource.clear()
        st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    return at.run()


def notes(at) -> str:
    return "\n".join(w.value for w in at.warning if w.value.startswith("This setup was opened with changes"))


def settings_of(at) -> dict:
    keys = ("backbone", "epochs", "batch_size", "learning_rate", "seed", "max_length", "trains_backbone:sentiment")
    return {key: at.session_state[key] for key in keys}


def readout(at) -> tuple:
    return at.metric[0].value, at.metric[0].delta, [h.value for h in at.get("html") if "<table" in h.value]


def export_text(at) -> str:
    (code,) = [c for c in at.code if c.language == "yaml"]
    return code.value


# ---- the setup in the link ----------------------------------------------------------------------------

def test_a_link_holds_only_what_differs_and_opens_the_same_setup(page_env):
    at = rerun_until(new_app(page_env.backbone), ready)
    assert set(at.query_params) == {"backbone"}  # everything else at its default: a short link
    at.number_input(key="epochs").set_value(3).run()
    at.number_input(key="learning_rate").set_value(1e-4).run()
    at.toggle(key="freeze:embeddings").set_value(True).run()
    at.toggle(key="freeze:layer.1").set_value(True).run()
    at.checkbox(key="trains_backbone:sentiment").set_value(False).run()
    link = dict(at.query_params)
    assert link == {"backbone": page_env.backbone, "epochs": "3", "learning_rate": "0.0001",
                    "trains_backbone:sentiment": "false", "frozen": ["embeddings", "layer.1"]}

    opened = rerun_until(open_link(link, fresh_server=False), ready)  # a second tab on the same server
    assert not opened.exception and not notes(opened)
    assert settings_of(opened) == settings_of(at)
    assert frozen_toggles(opened) == frozen_toggles(at) == {"embeddings", "layer.1"}
    assert readout(opened) == readout(at)
    assert dict(opened.query_params) == link  # opening it writes the same link back


def test_a_preset_travels_by_name_and_sets_the_same_toggles(page_env):
    at = rerun_until(new_app(page_env.backbone), ready)
    at.session_state["preset_k"] = 2
    at.button(key="preset:lower_k").click().run()
    assert {k: v for k, v in at.query_params.items() if k.startswith("preset")} == {"preset": "lower_k",
                                                                                    "preset_k": "2"}
    assert "frozen" not in at.query_params  # the preset says it
    opened = rerun_until(open_link(dict(at.query_params)), ready)
    assert frozen_toggles(opened) == {"embeddings", "layer.0", "layer.1"}
    assert any("Transfer learning" in s.value for s in opened.success)  # the preset is recognised as applied
    assert trainable(opened) == trainable(at)


def test_a_bad_or_stale_link_opens_the_page_with_notes_naming_each_key(page_env):
    at = rerun_until(open_link({"backbone": page_env.backbone, "epochs": "500", "batch_size": "lots",
                                "colour": "red", "frozen": ["embeddings", "layer.9"], "pooling": "max",
                                "upload:topic": "reviews.csv", "data_mode": "own", "preset": "lower_k",
                                "lesson.title": "x", "lesson.hide": "everything", "warm_start": "gone-run"}), ready)
    assert not at.exception
    text = notes(at)
    for expected in ("epochs=500 is out of range (1 to 100); using the default",
                     "batch_size='lots' is not a whole number; using the default",
                     "unknown link key 'colour' ignored",
                     "pooling='max' is not one of mean, cls",
                     "frozen: this backbone has no part layer.9; left out",
                     "task topic: its file (reviews.csv) was uploaded, and files cannot travel in a link",
                     "preset lower_k needs k",
                     "warm_start: no finished run 'gone-run' with weights on this page",
                     "lesson.hide.0: Input should be 'backbone', 'data', 'freeze' or 'settings'"):
        assert expected in text, expected
    assert (at.session_state["epochs"], at.session_state["batch_size"], at.session_state["pooling"]) == (2, 32, "mean")
    assert frozen_toggles(at) == {"embeddings"}  # the known part is kept
    assert at.session_state["data_mode"] == "My own data"
    assert not any(h.value == "Does freezing the lower layers hurt?" for h in at.header)
    at.button(key="dismiss_setup_notes").click().run()
    assert not notes(at)


def test_a_link_naming_a_backbone_that_cannot_load_says_so_and_keeps_its_toggles(page_env):
    missing = str(page_env.root / "no-such-model")
    at = rerun_until(open_link({"backbone": missing, "frozen": "embeddings", "epochs": "3"}),
                     lambda a: any("cannot be used" in e.value for e in a.error))
    assert not at.exception
    assert at.button(key="train").disabled  # the link's toggles wait for a backbone that loads
    assert at.query_params["frozen"] == "embeddings"  # ... and stay in the link meanwhile
    at.text_input(key="backbone").set_value(page_env.backbone).run()
    at = rerun_until(at, ready)
    assert frozen_toggles(at) == {"embeddings"} and not at.button(key="train").disabled


def test_a_link_cannot_pass_the_teachers_limits(page_env, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_MAX_EPOCHS", "3")
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_BACKBONES", f"minilm,{page_env.backbone}")
    at = rerun_until(open_link({"backbone": "bert-base-uncased", "epochs": "50"}),
                     lambda a: len(a.toggle) > 0)
    text = notes(at)
    assert "epochs=50 is over this page's limit of 3; using 3" in text
    assert "backbone 'bert-base-uncased' is not offered on this page; using the default" in text
    assert at.session_state["epochs"] == 3 and at.session_state["backbone"] == "minilm"


def test_a_link_carries_a_schedule_layer_lr_decay_the_kinds_kept_and_the_lora_switch(page_env):
    from core.config import parse_config_text

    at = rerun_until(new_app(page_env.backbone), ready)
    at.number_input(key="layer_lr_decay").set_value(0.8).run()
    at.toggle(key="freeze:embeddings").set_value(True).run()
    at.toggle(key="freeze:layer.0").set_value(True).run()
    at.multiselect(key="frozen_keeps").set_value(["bias"]).run()
    at.selectbox(key="schedule_kind").set_value("gradual_unfreeze").run()
    at.number_input(key="schedule_every").set_value(2).run()
    at.selectbox(key="schedule_unit").set_value("step").run()
    at.toggle(key="also_lora").set_value(True).run()
    link = dict(at.query_params)
    assert link == {"backbone": page_env.backbone, "layer_lr_decay": "0.8", "schedule_kind": "gradual_unfreeze",
                    "schedule_every": "2", "schedule_unit": "step", "also_lora": "true",
                    "frozen": ["embeddings:bias", "layer.0:bias"]}

    opened = rerun_until(open_link(link), ready)
    assert not opened.exception and not notes(opened)
    keys = ("layer_lr_decay", "schedule_kind", "schedule_every", "schedule_unit", "frozen_keeps", "also_lora")
    assert {k: opened.session_state[k] for k in keys} == {k: at.session_state[k] for k in keys}
    assert frozen_toggles(opened) == {"embeddings", "layer.0"} and readout(opened) == readout(at)
    config = parse_config_text(export_text(opened), "setup.yaml")
    assert config.training.layer_lr_decay == 0.8
    assert config.freeze.schedule.model_dump() == {"kind": "gradual_unfreeze", "every": 2, "unit": "step"}
    assert config.freeze.parts == ["embeddings:bias", "layer.0:bias"]
    assert dict(opened.query_params) == link

    bad = rerun_until(open_link({"backbone": page_env.backbone, "schedule_kind": "sometimes", "layer_lr_decay": "2",
                                 "frozen": "layer.0", "frozen_keeps": ["bias", "weights"]}), ready)
    text = notes(bad)
    assert "schedule_kind='sometimes' is not one of fixed, gradual_unfreeze, progressive_freeze" in text
    assert "layer_lr_decay=2.0 is out of range" in text
    assert "frozen_keeps: no kind weights" in text
    assert bad.session_state["frozen_keeps"] == ["bias"] and frozen_toggles(bad) == {"layer.0"}


def test_a_setup_file_brings_its_schedule_and_kinds_and_names_the_adapter_it_leaves_out(page_env):
    from core.config import parse_config_text

    text = (f"backbone: {page_env.backbone}\n"
            "freeze:\n  parts: [embeddings:norm, layer.1:norm]\n"
            "  schedule: {kind: progressive_freeze, every: 3, unit: step}\n"
            "training: {layer_lr_decay: 0.5}\n")
    at = rerun_until(new_app("minilm"), lambda a: len(a.toggle) > 0)
    at.file_uploader(key="setup_file").upload("setup.yaml", text.encode(), "application/x-yaml").run()
    at = rerun_until(at, lambda a: ready(a) and a.session_state["backbone"] == page_env.backbone)
    assert not notes(at)
    state = at.session_state
    assert (state["schedule_kind"], state["schedule_every"], state["schedule_unit"]) == ("progressive_freeze", 3,
                                                                                         "step")
    assert state["layer_lr_decay"] == 0.5 and state["frozen_keeps"] == ["norm"]
    assert frozen_toggles(at) == {"embeddings", "layer.1"}

    lora = f"backbone: {page_env.backbone}\nadapter: {{r: 4}}\n"  # a schedule and an adapter do not go together
    at.file_uploader(key="setup_file").upload("lora.yaml", lora.encode(), "application/x-yaml").run()
    at = rerun_until(at, ready)
    assert "adapter: the page sets no adapters of its own" in notes(at)
    assert state["schedule_kind"] == "fixed" and parse_config_text(export_text(at), "lora.yaml").adapter is None


# ---- the setup file ------------------------------------------------------------------------------------

def test_download_load_download_gives_the_same_file_and_the_same_page(page_env):
    from core.config import parse_config_text

    at = rerun_until(new_app(page_env.backbone), ready)
    at.number_input(key="seed").set_value(7).run()
    at.number_input(key="batch_size").set_value(16).run()
    at.session_state["preset_k"] = 2
    at.button(key="preset:lower_k").click().run()
    at.checkbox(key="trains_backbone:topic").set_value(False).run()
    exported = export_text(at)
    config = parse_config_text(exported, "setup.yaml")  # what python -m core train --config reads
    training, freeze = config.training, config.freeze
    assert (training.seed, training.batch_size, freeze.preset, freeze.k) == (7, 16, "lower_k", 2)

    fresh = rerun_until(new_app("minilm"), lambda a: len(a.toggle) > 0)
    fresh.file_uploader(key="setup_file").upload("setup.yaml", exported.encode(), "application/x-yaml").run()
    fresh = rerun_until(fresh, lambda a: ready(a) and a.session_state["backbone"] == page_env.backbone)
    assert any(s.value.startswith("Loaded setup.yaml") for s in fresh.success)
    assert not notes(fresh)
    assert export_text(fresh) == exported
    assert settings_of(fresh) == settings_of(at) and frozen_toggles(fresh) == frozen_toggles(at)


@pytest.mark.parametrize("text, message", [
    ("training:\n  epochs: 0\n", "invalid config: training.epochs: Input should be greater than or equal to 1"),
    ("training: [1\n", "bad.yaml: YAML syntax error at line 2, column 1"),
    ("lesson:\n  title: t\n  hide: [everything]\n", "invalid config: lesson.hide.0: Input should be 'backbone'"),
    ("lesson:\n  title: t\n  quiz: yes\n", "invalid config: lesson.quiz: unknown key"),
    ("homework: 1\n", "invalid config: homework: unknown key"),
])
def test_a_bad_setup_file_gets_the_configs_one_line_message_and_changes_nothing(page_env, text, message):
    at = rerun_until(new_app(page_env.backbone), ready)
    at.number_input(key="epochs").set_value(4).run()
    at.file_uploader(key="setup_file").upload("bad.yaml", text.encode(), "application/x-yaml").run()
    assert any(e.value.startswith(message) and "\n" not in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["epochs"] == 4 and not at.exception


# ---- lesson mode ---------------------------------------------------------------------------------------

def test_lesson_mode_hides_and_locks_what_it_names_and_keeps_the_guess_with_the_run(page_env):
    link = {"backbone": page_env.backbone, "epochs": "1", "eval_every": "0", "preset": "lower_k", "preset_k": "2",
            **LESSON_LINK}
    at = rerun_until(open_link(link), ready)
    assert not at.exception and not notes(at)
    assert [h.value for h in at.header] == ["Does freezing the lower layers hurt?"]
    headers = [h.value for h in at.subheader]
    assert "1. Backbone" not in headers and "4. Settings" not in headers  # hidden
    assert "2. Data" in headers and "3. Freeze" in headers
    assert not [w for w in [*at.number_input, *at.text_input] if w.key in ("epochs", "seed", "backbone")]
    assert all(t.disabled for t in at.toggle if t.key.startswith("freeze:"))  # locked: shown, not editable
    assert at.button(key="preset:none").disabled
    assert frozen_toggles(at) == {"embeddings", "layer.0", "layer.1"}
    assert not at.radio(key="data_mode").disabled
    assert at.button(key="train").disabled  # the question comes first
    at.radio(key="lesson_guess").set_value("lower 2 frozen").run()
    assert not at.button(key="train").disabled
    assert at.session_state["epochs"] == 1  # hidden, still set
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: any("Your guess: **lower 2 frozen**" in m.value for m in a.markdown), timeout=180)
    (run,) = list(page_env.runs.iterdir())
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["lesson"] == {"title": "Does freezing the lower layers hurt?",
                                 "ask": "Which will score higher on sentiment?",
                                 "choices": ["full fine-tuning", "lower 2 frozen", "about the same"],
                                 "guess": "lower 2 frozen"}
    assert summary["preset"] == "lower_k" and summary["frozen"] == ["embeddings", "layer.0", "layer.1"]
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert config["lesson"]["title"] == "Does freezing the lower layers hurt?"
    assert dict(at.query_params)["lesson.title"] == "Does freezing the lower layers hurt?"  # the link keeps it


def test_every_example_lesson_opens_offline_on_the_packaged_defaults(page_env):
    from pathlib import Path

    from core.config import load_config

    lessons = sorted((Path(__file__).resolve().parents[1] / "examples" / "lessons").glob("*.yaml"))
    assert len(lessons) == 3
    for path in lessons:
        config = load_config(path)
        assert config.backbone == "minilm" and config.tasks is None and config.lesson.ask
        at = rerun_until(new_app("minilm"), ready)
        at.file_uploader(key="setup_file").upload(path.name, path.read_bytes(), "application/x-yaml").run()
        at = rerun_until(at, ready)
        assert not at.exception and not notes(at), (path.name, notes(at))
        assert [h.value for h in at.header] == [config.lesson.title]
        assert at.button(key="train").disabled  # until the guess


def test_a_hidden_freeze_section_still_freezes_what_the_lesson_set(page_env):
    at = rerun_until(open_link({"backbone": page_env.backbone, "preset": "scenario2", "lesson.title": "Heads only",
                                "lesson.hide": "freeze"}), lambda a: len(a.code) > 0)
    assert "3. Freeze" not in [h.value for h in at.subheader]  # nothing of it is drawn
    assert not [t for t in at.toggle if t.key.startswith("freeze:")]
    assert not at.button(key="train").disabled  # no question asked: Train is ready
    freeze = yaml.safe_load(export_text(at))["freeze"]
    assert freeze["preset"] == "scenario2" and freeze["parts"] == ["embeddings", "layer.0", "layer.1", "layer.2"]
    at.number_input(key="epochs").set_value(3).run()  # another run of the page: the hidden toggles keep their values
    assert yaml.safe_load(export_text(at))["freeze"] == freeze


def test_after_a_second_lesson_run_the_guess_stands_beside_the_compare_verdict(page_env):
    from core.config import parse_config
    from core.training import run_experiment

    lesson = {key.split(".", 1)[1]: value for key, value in LESSON_LINK.items() if key != "lesson.lock"}
    first = run_experiment(parse_config({"backbone": page_env.backbone, "lesson": lesson,
                                         "freeze": {"preset": "lower_k", "k": 2},
                                         "training": {"epochs": 1, "eval_every": 0}}), page_env.runs)
    first.record_guess(parse_config({"lesson": lesson}).lesson, "about the same")
    at = rerun_until(open_link({"backbone": page_env.backbone, "epochs": "1", "eval_every": "0",
                                **{k: v for k, v in LESSON_LINK.items() if k != "lesson.lock"}}), ready)
    at.button(key="preset:none").click().run()  # the other setup: full fine-tuning
    at.radio(key="lesson_guess").set_value("full fine-tuning").run()
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: any("the difference is" in m.value for m in a.markdown), timeout=180)
    lines = [m.value for m in at.markdown]
    assert "Your guess: **full fine-tuning**" in lines
    verdict = next(line for line in lines if line.startswith("sentiment: Transfer learning (k = 2)"))
    assert "Train everything" in verdict and ("**real**" in verdict or "**within noise**" in verdict)


def show_answer(run_folder: str, visitor: str) -> None:
    """A page that only draws a lesson run's answer, for the visitor named (AppTest.from_function)."""
    from pathlib import Path

    import streamlit as st

    from core.runs import Run
    from dashboard import access, lesson

    st.session_state[access.VISITOR] = visitor
    lesson.answer(Run(Path(run_folder)))


def test_on_a_served_page_only_the_runs_starter_sees_its_lesson_answer(page_env):
    """The live view shows every visitor the run that trained last; a student's guess stays the student's."""
    from streamlit.testing.v1 import AppTest

    from core.config import parse_config
    from core.training import run_experiment

    lesson = {key.split(".", 1)[1]: value for key, value in LESSON_LINK.items() if key != "lesson.lock"}
    run = run_experiment(parse_config({"backbone": page_env.backbone, "lesson": lesson,
                                       "training": {"epochs": 1, "eval_every": 0}}), page_env.runs)
    run.record_guess(parse_config({"lesson": lesson}).lesson, "about the same")
    run.update_summary(owner="the-starter")

    def guesses_seen(visitor: str) -> list[str]:
        at = AppTest.from_function(show_answer, args=(str(run.path), visitor)).run()
        assert not at.exception
        return [m.value for m in at.markdown if m.value.startswith("Your guess")]

    with served_page():
        assert guesses_seen("the-starter") == ["Your guess: **about the same**"]
        assert guesses_seen("another-student") == []
    assert guesses_seen("another-student") == ["Your guess: **about the same**"]  # a one-person page shows it


def test_a_lesson_that_hides_the_data_step_but_needs_an_upload_says_why_it_cannot_train(page_env):
    at = rerun_until(open_link({"backbone": page_env.backbone, "data_mode": "own", "upload:topic": "reviews.csv",
                                "lesson.title": "Bring your own reviews", "lesson.hide": "data"}), ready)
    at.button(key="train").click().run()
    assert [e.value for e in at.error] == [
        "this lesson hides the Data step but names no data this page can read (an upload is each visitor's own): "
        "the teacher should point the lesson at the demo data or a file in an allowed folder"]
    assert not list(page_env.runs.glob("*"))  # nothing started
