"""The page's sweep view and the compare verdict (AppTest, tiny backbone): a sweep of two depths with two seeds
is drawn against the number of frozen layers; Compare groups the seeds of a setup, says whether a difference
is real, draws the cost/benefit front, and queues repeats with new seeds."""

from __future__ import annotations

import pytest

from page_helpers import new_app, open_tab, rerun_until, stop_every_job


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_bert, small_data):
    """A finished sweep: depth 0 and depth 3 (of 3) of the tiny backbone, two seeds each."""
    from core.config import parse_config
    from core.sweep import run_sweep

    runs = tmp_path_factory.mktemp("swept") / "runs"
    locks = tmp_path_factory.mktemp("swept-locks")  # the per-test lock folder is not set up yet here
    base = parse_config({"name": "depths", "backbone": tiny_bert,
                         "tasks": {task: {**small_data, "label_column": task} for task in ("topic", "sentiment")},
                         "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "eval_every": 0}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREEZE_LAB_LOCK_DIR", str(locks))
        record = run_sweep(base, [0, 3], seeds=2, runs_dir=runs)
    assert record["status"] == "finished"
    return runs, record


@pytest.fixture
def page_env(swept, monkeypatch, tiny_bert):
    runs, record = swept
    monkeypatch.setenv("FREEZE_LAB_RUNS_DIR", str(runs))
    monkeypatch.setenv("FREEZE_LAB_ALLOWED_DIRS", tiny_bert)
    yield runs, record
    stop_every_job()


def charts_by_key(at) -> dict:
    return {c.key: c.proto.spec for c in at.get("plotly_chart")}


def test_the_sweep_view_draws_accuracy_against_frozen_layers_with_the_spread_over_seeds(page_env, tiny_bert):
    runs, record = page_env
    at = open_tab(new_app(tiny_bert), "Sweeps")
    assert not at.exception
    charts = charts_by_key(at)
    assert {"sweep:topic", "sweep:sentiment", "sweep:cost"} <= set(charts)
    assert '"error_y"' in charts["sweep:topic"] and "top quarter trains" in charts["sweep:topic"]
    assert "majority class" in charts["sweep:topic"] and "trainable %" in charts["sweep:cost"]
    untrained = record["reference"]["untrained_accuracy"]["topic"]  # everything frozen, heads at random start
    assert "untrained model" in charts["sweep:topic"] and 0 <= untrained <= 1
    table = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert list(table["variant"]) == ["depth 0", "depth 3"]
    mean = record["table"][0]["tasks"]["topic"]["accuracy_mean"]
    assert table["topic acc"][0].startswith(f"{mean:.3f} ± ") and table["topic acc"][0].endswith("(n=2)")
    assert any("Lee, Tang & Lin (2019)" in c.value for c in at.caption)
    verdict = next(d.value for d in at.dataframe if "setting or seed?" in d.value.columns)
    assert set(verdict["task"]) == {"topic", "sentiment"}
    assert all(v.split(" ")[0] in ("real", "within") for v in verdict["setting or seed?"])


def test_compare_groups_seeds_says_if_a_difference_is_real_and_draws_the_front(page_env, tiny_bert):
    runs, record = page_env
    at = new_app(tiny_bert)
    at.session_state["compare"] = [m["run_id"] for m in record["members"]]
    at = open_tab(at, "Compare runs")
    assert not at.exception
    charts = charts_by_key(at)
    assert "depths depth 0 (2 seeds)" in charts["compare:topic"]  # one mean line with its band per setup
    assert '"fill":"toself"' in charts["compare:topic"].replace(" ", "")
    assert "Pareto front" in charts["pareto:topic"]
    assert "majority class" in charts["compare:topic"] and "untrained model" in charts["compare:topic"]
    verdict = next(d.value for d in at.dataframe if "setting or seed?" in d.value.columns)
    assert list(verdict.columns[:3]) == ["task", "depths depth 0", "depths depth 3"]
    assert all(p == "-" for p in verdict["differ on this data?"])  # several seeds a side: the seed test answers
    one_each = [record["members"][0]["run_id"], record["members"][1]["run_id"]]  # depth 0 and 3, seed 0
    at.session_state["compare"] = one_each
    at.run()
    verdict = next(d.value for d in at.dataframe if "setting or seed?" in d.value.columns)
    assert all(v == "too few runs" for v in verdict["setting or seed?"])
    assert all(p.split(" ")[0] in ("real", "within") for p in verdict["differ on this data?"])  # McNemar
    assert any("Do these two models differ on this data?" in c.value for c in at.caption)


def test_repeat_with_more_seeds_queues_the_same_setup_with_new_seeds(page_env, tiny_bert, monkeypatch):
    from dashboard.resources import job_manager

    runs, record = page_env
    monkeypatch.setenv("FREEZE_LAB_TRAIN_IN_PROCESS", "1")
    at = new_app(tiny_bert)
    at.session_state["compare"] = [record["members"][1]["run_id"]]  # depth 3, seed 0
    at = open_tab(at, "Compare runs")
    at.number_input(key="repeat_seeds").set_value(1).run()
    at.button(key="repeat_start").click().run()
    assert not at.exception and not at.error
    job = job_manager().current()
    assert job is not None and job.sweep == {"presets": "lower_k:3", "seeds": 1}
    assert job.wait(240) and job.state == "done"
    new = job.run.config()
    assert new.training.seed == 1 + max(m["seed"] for m in record["members"] if m["variant"] == "depth 3")
    assert new.freeze.preset == "lower_k" and new.freeze.k == 3
    assert job.run.summary()["status"] == "finished"


def test_the_page_reads_sweeps_and_verdicts_without_importing_torch():
    """The server never imports torch: the Sweeps tab, the verdict, the live view and Inspect (the change map
    through core.change_history) read JSON, and must stay importable without it."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys; import core.sweep, core.compare, core.jobs, dashboard.sweeps_view, dashboard.runs_view, "
            "dashboard.live, dashboard.inspect_view, dashboard.freeze_panel, dashboard.form; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_sweep_form_offers_every_depth_of_the_backbone_in_use(page_env, tiny_bert):
    at = new_app("nosuchowner/nosuchmodel")  # parts unknown: the form must not shrink the depths
    at.session_state["backbone"] = tiny_bert
    at = rerun_until(at.run(), lambda a: any(b.key == "sweep_start" for b in a.button))
    assert at.multiselect(key="sweep_depths").value == [0, 1, 2, 3]
    assert at.button(key="sweep_start").label == "Start sweep (8 runs)"  # 4 depths x 2 seeds
