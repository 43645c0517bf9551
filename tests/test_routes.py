"""The live chart's route on the real server (``streamlit run dashboard/app.py``): it answers the page with a
run's new events, and refuses an unknown run, a bad offset, a path that leads out of the runs folder, a
request without the page's XSRF token, and a cross-site origin, each with an error status and none of a
file's contents."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from core.events import StateEvent, StepEvent, to_dict
from core.runs import Run
from server import streamlit_server

SECRET = "hunter2-do-not-serve"


def run_folder(folder, message: str = "training on cpu") -> Run:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"run_id": folder.name, "status": "running"}))
    run = Run(folder)
    run.append_event(StateEvent("started", message))
    run.append_event(StepEvent(1, 0.1, "topic", 1.5, 1e-4))
    return run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over a runs folder with one run, one link to a run folder outside it, and one run whose log
    is a link to a file outside; the XSRF cookie the page would have."""
    tmp = tmp_path_factory.mktemp("routes")
    runs = tmp / "runs"
    run = run_folder(runs / "20260101-000000-ok")
    outside = run_folder(tmp / "outside" / "20260101-000000-secret", message=SECRET)
    (runs / "linked").symlink_to(outside.path, target_is_directory=True)
    leaky = runs / "leaky-log"
    leaky.mkdir()
    (leaky / "summary.json").write_text(json.dumps({"run_id": "leaky-log", "status": "running"}))
    (leaky / "metrics.jsonl").symlink_to(outside.metrics_path)
    env = {"FREEZE_LAB_RUNS_DIR": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _):
        with urllib.request.urlopen(f"{url}/_stcore/health") as response:
            cookie = response.headers["Set-Cookie"].split(";")[0]  # _streamlit_xsrf=...
        yield url, cookie, run


def get(url: str, path: str, cookie: str | None, origin: str | None = None, token: str | None = None) -> tuple[int, str]:
    """GET with the page's cookie and, unless another ``token`` is given, its XSRF token as the page sends it."""
    headers = {}
    if cookie:
        headers |= {"Cookie": cookie, "X-Xsrftoken": token or cookie.split("=", 1)[1]}
    if origin:
        headers["Origin"] = origin
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_route_serves_a_runs_events_once_from_an_offset(served):
    url, cookie, run = served
    status, body = get(url, f"/api/freeze-lab/runs/{run.id}/events?offset=0", cookie, origin=url)
    assert status == 200
    answer = json.loads(body)
    assert answer["events"] == [to_dict(e) for e in run.events()]
    assert answer["offset"] == run.metrics_path.stat().st_size
    status, body = get(url, f"/api/freeze-lab/runs/{run.id}/events?offset={answer['offset']}", cookie)
    assert (status, json.loads(body)) == (200, {"events": [], "offset": answer["offset"]})


@pytest.mark.parametrize("path, expected", [
    ("/api/freeze-lab/runs/20990101-000000-none/events?offset=0", 404),  # no such run
    ("/api/freeze-lab/runs/20260101-000000-ok/events?offset=-1", 400),
    ("/api/freeze-lab/runs/20260101-000000-ok/events?offset=abc", 400),
    ("/api/freeze-lab/runs/linked/events?offset=0", 404),  # a run folder that is a link out of the runs folder
    ("/api/freeze-lab/runs/leaky-log/events?offset=0", 404),  # a log that is a link out of the runs folder
    ("/api/freeze-lab/runs/../outside/events?offset=0", None),
    ("/api/freeze-lab/runs/%2e%2e%2foutside%2f20260101-000000-secret/events?offset=0", None),
    ("/api/freeze-lab/runs/.hidden/events?offset=0", 404),
])
def test_the_route_refuses_unknown_runs_bad_offsets_and_paths_outside_the_runs_folder(served, path, expected):
    url, cookie, _ = served
    status, body = get(url, path, cookie)
    assert status == expected if expected else 400 <= status < 500
    assert SECRET not in body and '"events"' not in body


def test_the_route_wants_the_pages_xsrf_token_and_origin(served):
    url, cookie, run = served
    path = f"/api/freeze-lab/runs/{run.id}/events?offset=0"
    assert get(url, path, None)[0] == 403  # no token
    assert get(url, path, cookie, token="2|00000000|00000000|0")[0] == 403  # not the cookie's token
    status, body = get(url, path, cookie, origin="http://evil.example")
    assert status == 403 and "training on cpu" not in body
    assert get(url, path, cookie, origin=url)[0] == 200


def test_the_vendored_uplot_is_served_for_the_live_chart_under_its_version(served):
    from dashboard.live_chart import chart_data
    from dashboard.routes import uplot_version

    url, _, _ = served
    address = chart_data("run-1", ["topic"], "step", 0.0, 0.5)["uplot_url"]
    assert address.endswith(f"?v={uplot_version()}") and uplot_version() == "1.6.32"  # a new copy, a new URL
    with urllib.request.urlopen(f"{url}{address}") as response:
        assert response.status == 200 and b"var uPlot=" in response.read()
        assert "immutable" in response.headers["Cache-Control"]
