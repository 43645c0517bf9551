"""The page in a real browser: Debian's chromium driven by playwright.

Skipped when chromium or playwright is missing, unless FREEZE_LAB_REQUIRE_BROWSER=1
(CI sets it, so there a missing browser fails instead of skipping).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from server import CHROMIUM, ROOT, browser, browser_page, fill_number, streamlit_server

NEED_BROWSER = os.environ.get("FREEZE_LAB_REQUIRE_BROWSER") == "1"
have_browser = Path(CHROMIUM).exists() and shutil.which("chromium") is not None
try:
    import playwright  # noqa: F401
except ImportError:
    have_browser = False
pytestmark = pytest.mark.skipif(not have_browser and not NEED_BROWSER,
                                reason="needs Debian's chromium and the playwright package")
ARTIFACTS = ROOT / "artifacts"

def use_backbone(page, folder: str, readout: str = "1,003,671") -> None:
    """Type a backbone folder, as a user would, and wait for its parameter readout (the tiny backbone's)."""
    backbone = page.get_by_label("Pretrained encoder", exact=True).and_(page.locator("input"))
    backbone.wait_for(timeout=60_000)
    backbone.fill(folder)
    backbone.press("Enter")
    page.get_by_text(readout).first.wait_for(timeout=60_000)


POINTS_JS = "() => [...document.querySelectorAll('.fl-live-plot')].map(p => p.series ? p.series['train loss'].x.length : 0)"


def test_preset_train_charts_stop_in_a_real_browser(tmp_path, tiny_bert):
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": tiny_bert,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        use_backbone(page, tiny_bert)
        page.get_by_role("button", name="Transfer learning").click()
        page.get_by_text("Transfer learning: freeze the lower k layers").first.wait_for(timeout=30_000)
        fill_number(page, "Epochs", 30)
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_function(f"() => ({POINTS_JS})().some(n => n > 0)", timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / "browser-training.png"), full_page=True)
        page.get_by_role("button", name="Stop", exact=True).click()
        page.get_by_text("stopped at step").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-stopped.png"), full_page=True)
        page.get_by_role("tab", name="Compare runs").click()  # a closed tab is computed when opened
        page.get_by_text("Runs to compare (pick two or more)").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Train").click()
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=30_000)
        embeddings = page.get_by_role("switch", name="embeddings", exact=True)
        assert embeddings.is_checked() and page.get_by_text("Transfer learning: freeze the lower k").count()
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["preset"] == "lower_k"
    assert summary["frozen"][:1] == ["embeddings"]
    assert (ARTIFACTS / "browser-stopped.png").stat().st_size > 10_000


def test_settings_keep_their_values_when_the_counts_arrive(tmp_path, monkeypatch):
    """Counts remembered from an earlier start arrive a moment after the first drawing. Rerunning the
    page from the polling fragment at that moment reset every widget to its minimum in chromium."""
    from core import anatomy

    cache = tmp_path / "cache"
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(cache))
    monkeypatch.setattr(anatomy, "describe_in_child", anatomy.describe)  # remember MiniLM's counts here
    anatomy.describe_cached("minilm", "mean")
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        page.get_by_text("22,568,071").first.wait_for(timeout=60_000)  # MiniLM's readout
        page.get_by_text("Device: cpu").or_(page.get_by_text("Device: cuda")).or_(
            page.get_by_text("Device: mps")).first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)

        def value(label: str) -> str:
            return page.get_by_label(label, exact=True).and_(page.locator("input")).input_value()

        assert value("Pretrained encoder") == "minilm"
        assert (value("Epochs"), value("Batch size"), value("Max length (tokens)")) == ("2", "32", "64")
        assert value("Learning rate (backbone)") == "5.0e-5"


SECRET_ROWS = "aws_secret_key,password\nAKIAEXAMPLE,hunter2\n"


def test_typed_paths_to_hidden_non_data_or_outside_files_are_refused_in_a_real_browser(tmp_path):
    """A visitor types paths to a credentials file in a hidden folder of the home folder, a project file
    that is not data, and a link from the project to a file outside it: each is refused in one line, and
    the page shows nothing of what they hold, nor where the link leads."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials.csv").write_text(SECRET_ROWS, encoding="utf-8")
    outside.mkdir()
    (outside / "creds.csv").write_text(SECRET_ROWS, encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    link = ARTIFACTS / f"link-{tmp_path.name}.csv"  # inside the project (artifacts/ is not tracked)
    link.symlink_to(outside / "creds.csv")
    typed_and_expected = [
        ("~/.aws/credentials.csv", "hidden files and folders (names starting with '.') are never read"),
        ("README.md", "not a data file; the page reads only .csv, .tsv, .json, .jsonl, .parquet files"),
        (f"artifacts/{link.name}", "outside the folders this page may read"),
    ]
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": "~", "HOME": str(home),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    try:
        with streamlit_server(env) as (url, _), browser_page() as page:
            page.goto(url)
            page.get_by_text("On this computer only (localhost)").first.wait_for(timeout=60_000)
            page.get_by_text("My own data", exact=True).click()
            page.get_by_text("Local path", exact=True).first.click()
            path_input = page.get_by_label("Path to a csv/tsv/json/jsonl/parquet file").first
            for typed, expected in typed_and_expected:
                path_input.fill(typed)
                path_input.press("Enter")
                page.get_by_text(f"{typed}: {expected}").first.wait_for(timeout=30_000)
                content = page.content()
                for leaked in ("aws_secret_key", "hunter2", "AKIAEXAMPLE", str(outside), "Text column"):
                    assert leaked not in content, f"{typed}: the page shows {leaked!r}"
            page.screenshot(path=str(ARTIFACTS / "browser-refused-paths.png"), full_page=True)
    finally:
        link.unlink()


def test_a_served_page_hides_local_paths_and_only_the_starter_or_the_teacher_stops_a_run(tmp_path, tiny_bert):
    """Served on 127.0.0.2 (not one of localhost, 127.0.0.1, ::1): no Local path without allowed folders, and a
    second browser context cannot stop the first context's run until it gives the teacher's passcode."""
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_BACKBONES": tiny_bert,
           "FREEZE_LAB_TEACHER_PASSCODE": "owl-42", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env, address="127.0.0.2") as (url, _), browser() as chromium:
        starter = chromium.new_context(viewport={"width": 1400, "height": 3000}).new_page()
        starter.goto(url)
        starter.get_by_text("Served to the network: visitors upload their data files").first.wait_for(timeout=60_000)
        starter.get_by_text("My own data", exact=True).click()
        starter.get_by_text("Upload a file", exact=True).first.wait_for(timeout=30_000)
        assert starter.get_by_text("Hub data set", exact=True).count() == 2  # one per task
        assert starter.get_by_text("Local path", exact=True).count() == 0
        starter.get_by_text("Built-in demo data", exact=True).click()
        starter.get_by_text("1,003,671").first.wait_for(timeout=60_000)  # the tiny backbone's readout
        epochs = starter.get_by_label("Epochs", exact=True).and_(starter.locator("input"))
        from playwright.sync_api import expect

        expect(epochs).to_have_count(1, timeout=30_000)  # the rerun after the data choice has settled
        epochs.fill("30")
        epochs.press("Enter")
        starter.wait_for_timeout(500)
        starter.get_by_role("button", name="Train", exact=True).click()
        starter.wait_for_function(f"() => ({POINTS_JS})().some(n => n > 0)", timeout=90_000)

        visitor = chromium.new_context(viewport={"width": 1400, "height": 3000}).new_page()
        visitor.goto(url)
        visitor.get_by_text("running").first.wait_for(timeout=60_000)
        stop = visitor.get_by_role("button", name="Stop", exact=True)
        assert stop.is_disabled()
        visitor.get_by_label("Teacher's passcode").fill("owl-4")
        visitor.get_by_role("button", name="Unlock", exact=True).click()
        visitor.get_by_text("Wrong passcode.").wait_for(timeout=30_000)
        assert stop.is_disabled()
        visitor.get_by_label("Teacher's passcode").fill("owl-42")
        visitor.get_by_role("button", name="Unlock", exact=True).click()
        visitor.get_by_text("Teacher mode").first.wait_for(timeout=30_000)
        expect(stop).to_have_count(1, timeout=30_000)  # the rerun has settled: the old, disabled Stop is gone
        stop.click()
        visitor.get_by_text("stopped at step").first.wait_for(timeout=60_000)
        visitor.screenshot(path=str(ARTIFACTS / "browser-teacher-stopped.png"), full_page=True)
    (run,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "stopped" and summary["owner"]


def test_a_two_member_sweep_runs_end_to_end_in_a_real_browser(tmp_path, tiny_bert):
    """Sweep: two presets with one seed each, followed live as 'member i of 2', then drawn in the Sweeps tab."""
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": tiny_bert,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        use_backbone(page, tiny_bert)
        fill_number(page, "Epochs", 1)
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Sweep", exact=True).click()
        page.get_by_text("presets", exact=True).click()
        presets = page.get_by_label("Presets", exact=True)
        presets.wait_for(timeout=30_000)
        presets.click()
        presets.press("Backspace")  # none, top_quarter, scenario2 -> none, top_quarter
        page.keyboard.press("Escape")
        seeds = page.get_by_label("Seeds per variant", exact=True)
        seeds.fill("1")
        seeds.press("Enter")
        start = page.get_by_role("button", name="Start sweep (2 runs)", exact=True)
        start.wait_for(timeout=30_000)
        start.click()
        page.get_by_text("member 1 of 2").first.wait_for(timeout=120_000)
        page.get_by_text("member 2 of 2").first.wait_for(timeout=240_000)
        page.screenshot(path=str(ARTIFACTS / "browser-sweep-running.png"), full_page=True)
        page.get_by_role("button", name="Train", exact=True).and_(page.locator(":not([disabled])")).wait_for(
            timeout=240_000)
        page.get_by_role("tab", name="Sweeps").click()
        page.get_by_text("Is this difference real?").first.wait_for(timeout=240_000)
        page.screenshot(path=str(ARTIFACTS / "browser-sweep-view.png"), full_page=True)
    (sweep,) = list((tmp_path / "runs" / "sweeps").iterdir())
    record = json.loads((sweep / "sweep.json").read_text(encoding="utf-8"))
    assert [(m["variant"], m["status"]) for m in record["members"]] == [("none", "finished"),
                                                                         ("top_quarter", "finished")]
    assert [row["variant"] for row in record["table"]] == ["none", "top_quarter"]


def test_plotly_js_draws_the_change_heatmap_with_frozen_rows_between_trained_ones(tmp_path):
    """The figure checks in AppTest only read the JSON; plotly.js itself once refused this chart (two
    heatmaps on different rows of one category axis) and drew an empty frame without a Python error."""
    from dashboard.charts import change_heatmap

    history = {"embeddings": [0.0, 0.0], "layer.0": [0.01, 0.02], "layer.1": [0.0, 0.0], "head.topic": [0.2, 0.4]}
    page_file = tmp_path / "heatmap.html"
    change_heatmap([4, 8], history, {"embeddings", "layer.1"}).write_html(page_file, include_plotlyjs=True)
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())
        page.locator(".hm").first.wait_for(timeout=10_000)
        assert errors == [] and page.locator(".hm").count() == 2  # both traces drawn
        assert page.get_by_text("layer.1 (frozen)").count() == 1 and page.get_by_text("frozen", exact=True).count() == 2


@contextmanager
def static_server(folder: Path):
    """A plain HTTP server over ``folder`` on localhost (a page with an origin, as the live chart has)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# Per live chart (one per task): the number of points of each series (train loss, validation loss, accuracy, F1).
LIVE_POINTS_JS = """() => Object.fromEntries([...document.querySelectorAll('.fl-live-plot')]
  .map(p => [p.dataset.task, Object.values(p.series || {}).map(s => s.x.length)]))"""


def stored_points(run_folder: Path) -> dict[str, list[int]]:
    """What the stored run holds, counted the way the live chart draws it."""
    events = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines()]
    tasks = sorted({e["task"] for e in events if e["kind"] == "step"})
    evals = [e for e in events if e["kind"] == "eval"]
    return {task: [sum(e["kind"] == "step" and e["task"] == task for e in events)]
            + [sum(task in e["tasks"] for e in evals)] * 3 for task in tasks}


def drawn_points(page, expected: dict, timeout: float) -> dict:
    """The live charts' point counts once they equal ``expected``, or as they are after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while (points := page.evaluate(LIVE_POINTS_JS)) != expected and time.time() < deadline:
        page.wait_for_timeout(250)
    return points


def test_the_live_chart_shows_every_step_as_the_stored_run_has_it_and_again_after_a_reload(tmp_path, tiny_bert):
    """The points arrive by appending (the first look shows fewer than the end), every step's point is there
    by the end, each trace has as many points as the stored run, and a reload draws the same."""
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": tiny_bert,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        use_backbone(page, tiny_bert)
        fill_number(page, "Epochs", 1)
        fill_number(page, "Evaluate every N steps", 20)
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_function(f"() => Object.values(({LIVE_POINTS_JS})()).some(c => c[0] > 0)", timeout=120_000)
        first_look = page.evaluate(LIVE_POINTS_JS)
        deadline = time.time() + 240
        while time.time() < deadline and '"finished"' not in "".join(
                p.read_text() for p in (tmp_path / "runs").glob("*/summary.json")):
            time.sleep(0.2)
        # The chart passes the run's end on as news, which reruns the live view at once: it need not wait
        # for the view's slow clock (live.TRAINING_SECONDS, 30 s, which a 5 s window misses 5 times in 6).
        page.get_by_text(": finished").first.wait_for(timeout=5_000)
        (run,) = list((tmp_path / "runs").iterdir())
        expected = stored_points(run)
        assert drawn_points(page, expected, 10) == expected
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                 if '"kind": "step"' in line]
        drawn_steps = page.evaluate("() => [...document.querySelectorAll('.fl-live-plot')]"
                                    ".flatMap(p => p.series['train loss'].x)")
        assert sorted(drawn_steps) == sorted(steps)  # every step's point, each once
        assert sum(c[0] for c in first_look.values()) < len(steps)  # it grew by appending
        page.screenshot(path=str(ARTIFACTS / "browser-live-chart.png"), full_page=True)
        page.reload()
        assert drawn_points(page, expected, 60) == expected
        assert errors == []


# Mounts live_chart.js in a blank page the way Streamlit does (``mount(data)``, again for new data), with a
# stand-in for the route: each poll takes the next of ``window.replies`` (or nothing new) and is noted in
# ``window.polls`` by its offset; the component's triggers go to ``window.news``.
MOUNT_LIVE_CHART_JS = """async ({src, data, first}) => {
  window.hidden = false;
  Object.defineProperty(document, "hidden", {get: () => window.hidden, configurable: true});
  window.polls = []; window.news = [];
  window.replies = [{events: first, offset: 100}];
  window.fetch = async (url) => {
    const offset = Number(new URL(url).searchParams.get("offset"));
    window.polls.push(offset);
    const body = window.replies.shift() || {events: [], offset};
    return {ok: true, status: 200, json: async () => body};
  };
  const module = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
  window.mount = (data) => module.default({data, parentElement: document.getElementById("root"),
                                           setTriggerValue: (name, value) => window.news.push([name, value])});
  window.mount(data);
}"""


@contextmanager
def live_chart_page(tmp_path, data: dict, first: list):
    """A browser page with live_chart.js mounted on ``data``, its first poll answered with ``first``."""
    from core.events import to_dict
    from dashboard.routes import UPLOT_FILE

    data = {**data, "uplot_url": "uplot.js"}
    shutil.copy(UPLOT_FILE, tmp_path / "uplot.js")
    (tmp_path / "index.html").write_text("<div id='root' style='width: 900px'></div>")
    with static_server(tmp_path) as url, browser_page() as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/index.html")
        page.evaluate(MOUNT_LIVE_CHART_JS, {"src": (ROOT / "dashboard" / "live_chart.js").read_text(encoding="utf-8"),
                                            "data": data, "first": [to_dict(e) for e in first]})
        yield page
        assert errors == []


def test_the_live_chart_appends_only_new_points_and_asks_nothing_while_the_tab_is_hidden(tmp_path):
    """live_chart.js alone, with the vendored uPlot and a stand-in for the route: new events become points
    (smoothed as Python smooths), a poll with nothing new draws nothing, plan changes become marks (not the
    plan the run started from), what the rest of the live view shows comes back as news, a hidden tab polls
    no more and a visible one again, and the end of the run ends the polling."""
    from core.events import ChangeEvent, EvalEvent, PlanEvent, StepEvent, to_dict
    from dashboard.charts import smooth
    from dashboard.live_chart import chart_data

    first = [PlanEvent(0, ["embeddings", "layer.0", "layer.1"]), StepEvent(1, 0.1, "topic", 2.0, 1e-4),
             StepEvent(2, 0.2, "sentiment", 1.0, 1e-4)]
    new = [StepEvent(3, 0.3, "topic", 1.0, 1e-4), EvalEvent(3, 0.3, {"topic": {"loss": 0.9, "accuracy": 0.5,
                                                                                "macro_f1": 0.4}}),
           ChangeEvent(3, {"layer.2": {"relative_change": 0.01, "grad_norm": 0.1}})]
    data = chart_data("run-1", ["topic", "sentiment"], "step", 0.5, poll_seconds=0.05)
    draws = "() => [...document.querySelectorAll('.fl-live-plot')].map(p => p.draws)"
    with live_chart_page(tmp_path, data, first) as page:
        page.wait_for_function("() => window.polls.length >= 4")
        assert page.evaluate("window.polls.slice(0, 3)") == [0, 100, 100]  # from the start, then from the end
        assert page.evaluate(draws) == [1, 1]  # one redraw per task chart; none for the empty polls
        assert page.locator(".fl-live-plot canvas").count() == 4  # per task, the loss and the scores panels
        page.evaluate("(events) => window.replies.push({events, offset: 200})", [to_dict(e) for e in new])
        page.wait_for_function("() => window.polls.includes(200)")
        topic = page.evaluate("() => document.querySelector('[data-task=topic]').series")
        assert topic["train loss"] == {"x": [1, 3], "y": smooth([2.0, 1.0], 0.5)}  # smoothed as Python does
        assert topic["validation loss"] == {"x": [3], "y": [0.9]}
        assert topic["accuracy"] == {"x": [3], "y": [0.5]} and topic["macro-F1"] == {"x": [3], "y": [0.4]}
        assert page.evaluate(draws) == [2, 1]  # one redraw more, for the one chart with new points
        assert page.evaluate("() => document.querySelector('[data-task=topic]').marks") == []  # the start plan
        # the first step (the run's setup is done), then an evaluation's change record: the view may change
        assert page.evaluate("window.news") == [["news", "training"], ["news", "change"]]
        plan = {"kind": "plan", "step": 4, "frozen": ["embeddings", "layer.0"]}
        page.evaluate("(events) => window.replies.push({events, offset: 300})", [plan])
        page.wait_for_function("() => window.polls.includes(300)")
        marks = page.evaluate("() => document.querySelector('[data-task=sentiment]').marks")
        assert marks == [{"x": 4, "frozen": ["embeddings", "layer.0"]}]
        assert page.evaluate(draws) == [3, 2]  # both task charts, with the mark
        assert page.get_by_text("step 4: embeddings, layer.0 frozen").count() == 1
        page.evaluate("() => { window.hidden = true; document.dispatchEvent(new Event('visibilitychange')); }")
        page.wait_for_timeout(200)
        hidden_polls = page.evaluate("window.polls.length")
        page.wait_for_timeout(500)
        assert page.evaluate("window.polls.length") == hidden_polls  # nothing asked while hidden
        page.evaluate("() => { window.hidden = false; document.dispatchEvent(new Event('visibilitychange')); }")
        page.wait_for_function(f"() => window.polls.length > {hidden_polls}")
        page.evaluate("() => window.replies.push({events: [{kind: 'state', state: 'finished'}], offset: 400})")
        page.wait_for_function("() => window.replies.length === 0")  # the last reply was read
        page.wait_for_timeout(300)
        ended = page.evaluate("window.polls.length")
        page.wait_for_timeout(500)
        assert page.evaluate("window.polls.length") == ended  # the run ended: no more polling
        assert page.evaluate("window.news") == [["news", "training"], ["news", "change"], ["news", "plan"],
                                                ["news", "finished"]]


def test_the_live_chart_stops_asking_once_the_page_says_the_run_ended(tmp_path):
    """A run whose process was killed logs no end; the page learns it from the run's summary and sends the
    chart ``ended``: the chart reads once more (what was logged last) and then asks no more."""
    from core.events import StepEvent, to_dict
    from dashboard.live_chart import chart_data

    data = chart_data("run-1", ["topic"], "step", 0.0, poll_seconds=0.05)
    with live_chart_page(tmp_path, data, [StepEvent(1, 0.1, "topic", 2.0, 1e-4)]) as page:
        page.wait_for_function("() => window.polls.length >= 3")  # no end logged: it goes on asking
        last = [to_dict(StepEvent(2, 0.2, "topic", 1.5, 1e-4))]
        page.evaluate("(events) => window.replies.push({events, offset: 200})", last)
        page.evaluate("(data) => window.mount(data)", {**data, "uplot_url": "uplot.js", "ended": True})
        page.wait_for_function("() => window.replies.length === 0")
        page.wait_for_timeout(300)
        asked = page.evaluate("window.polls.length")
        page.wait_for_timeout(500)
        assert page.evaluate("window.polls.length") == asked  # ended: no more polling
        assert page.evaluate("() => document.querySelector('[data-task=topic]').series['train loss'].x") == [1, 2]


def test_a_link_opens_the_same_toggles_settings_and_readout_in_a_fresh_browser(tmp_path, tiny_bert):
    """Set toggles and settings, read the address bar, open it in a new browser context (no session, no
    cookies): the same toggles and settings are set, and the parameter readout is identical."""
    import re

    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": tiny_bert,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def number(page, label: str):
        return page.get_by_label(label, exact=True).and_(page.locator("input"))

    def readout(page) -> tuple[str, str, str]:
        return (page.get_by_test_id("stMetricValue").first.inner_text(),
                page.get_by_test_id("stMetricDelta").first.inner_text(),
                page.locator("table").filter(has_text="trainable").first.inner_text())

    def state(page) -> dict:
        switches = {part: page.get_by_role("switch", name=part, exact=True).is_checked()
                    for part in ("embeddings", "layer.0", "layer.1", "layer.2", "head.topic", "head.sentiment")}
        values = {label: number(page, label).input_value() for label in ("Epochs", "Seed", "Batch size")}
        return {**switches, **values}

    with streamlit_server(env) as (url, _), browser() as chromium:
        first = chromium.new_context(viewport={"width": 1400, "height": 3000}).new_page()
        first.goto(url)
        use_backbone(first, tiny_bert)
        for label, value in (("Epochs", "3"), ("Seed", "5")):
            number(first, label).fill(value)
            number(first, label).press("Enter")
            first.wait_for_url(re.compile(f"{label.lower()}={value}"), timeout=30_000)
        for part in ("embeddings", "layer.1"):
            first.get_by_role("switch", name=part, exact=True).check(force=True)
            first.wait_for_url(re.compile(rf"frozen={re.escape(part)}"), timeout=30_000)
        link = first.url
        assert "epochs=3" in link and "seed=5" in link and "batch_size" not in link  # only what differs
        before = (state(first), readout(first))
        assert before[0]["embeddings"] and before[0]["layer.1"] and not before[0]["layer.0"]

        second = chromium.new_context(viewport={"width": 1400, "height": 3000}).new_page()
        second.goto(link)
        second.get_by_text(before[1][0], exact=True).first.wait_for(timeout=60_000)
        second.wait_for_timeout(1000)  # let the widgets settle
        assert (state(second), readout(second)) == before
        assert second.url == link  # opening the link writes the same link back
        second.screenshot(path=str(ARTIFACTS / "browser-link-opened.png"), full_page=True)
