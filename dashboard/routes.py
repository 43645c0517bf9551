"""Read-only HTTP routes served beside the page (``st.App``, see app.py): the live chart fetches a run's
new events here, without a Streamlit rerun, and loads its chart code (uPlot, dashboard/vendor) from here.

``GET /api/freeze-lab/runs/<run id>/events?offset=N``: the events appended to the run's metrics.jsonl
after byte N (``Run.events_since``) and the offset to ask from next, as JSON. The same rules as
Streamlit's own endpoints: the Host must be allowed, a cross-site Origin is refused, and while XSRF
protection is on (it is, in .streamlit/config.toml) the request must carry the page's XSRF token in
``X-Xsrftoken``. Only a run that exists in the runs folder is read, and only its events: an unknown run,
a bad offset, or a run whose folder or log leads outside the runs folder is answered with an error
status and one line, never with the contents of a file.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from streamlit.web.server.server_util import is_xsrf_enabled
from streamlit.web.server.starlette.starlette_app_utils import validate_xsrf_token
from streamlit.web.server.starlette.starlette_server_config import XSRF_COOKIE_NAME
from streamlit.web.server.starlette.starlette_websocket import _is_origin_allowed  # the websocket's own check

from core import events as ev
from core.runs import RunError, RunStore
from dashboard.settings import runs_dir

EVENTS_PATH = "/api/freeze-lab/runs/{run_id}/events"
UPLOT_PATH = "/api/freeze-lab/uplot.min.js"
UPLOT_FILE = Path(__file__).with_name("vendor") / "uPlot.iife.min.js"
NO_STORE = {"Cache-Control": "no-store"}


def refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def request_refusal(request: Request) -> JSONResponse | None:
    """Streamlit's own rules for its endpoints, applied to this one: None if the request may be answered."""
    if not _is_origin_allowed(request.headers.get("origin"), request.headers.get("host")):
        return refusal(403, "this origin may not read the page's runs")
    if is_xsrf_enabled() and not validate_xsrf_token(request.headers.get("x-xsrftoken"),
                                                      request.cookies.get(XSRF_COOKIE_NAME)):
        return refusal(403, "missing or wrong XSRF token")
    return None


def parse_offset(text: str | None) -> int:
    """The byte offset asked for; ValueError for anything but a whole number from 0 up."""
    offset = int(text if text is not None else "0")
    if offset < 0:
        raise ValueError
    return offset


def read_events(run_id: str, offset: int) -> dict:
    """The run's events since ``offset``; RunError if the run is not one of the runs folder's own."""
    store = RunStore(runs_dir())
    run = store.get(run_id, by_path=False)  # a validated id: no name escapes the folder
    root = store.root.resolve()
    if run.path.resolve().parent != root or root not in run.metrics_path.resolve().parents:
        raise RunError(f"no run {run_id!r} in {store.root}")  # a link that leads out is no run of this folder
    events, offset = run.events_since(offset)
    return {"events": [ev.to_dict(e) for e in events], "offset": offset}


async def run_events(request: Request) -> Response:
    refused = request_refusal(request)
    if refused is not None:
        return refused
    try:
        offset = parse_offset(request.query_params.get("offset"))
    except ValueError:
        return refusal(400, "offset must be a whole number of bytes, 0 or more")
    try:
        body = await run_in_threadpool(read_events, request.path_params["run_id"], offset)
    except RunError:
        return refusal(404, "no such run")
    return JSONResponse(body, headers=NO_STORE)


@functools.cache
def uplot_js() -> bytes:
    return UPLOT_FILE.read_bytes()


@functools.cache
def uplot_version() -> str:
    """The vendored uPlot's version, from its first line ('/*! https://github.com/leeoniya/uPlot (v1.6.32) */')."""
    match = re.search(rb"\(v([\d.]+)\)", uplot_js()[:200])
    return match.group(1).decode() if match else "unknown"


async def uplot_script(request: Request) -> Response:
    """Public code, like Streamlit's own scripts; cached by the browser (the URL names the version)."""
    return Response(uplot_js(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})


ROUTES = [Route(EVENTS_PATH, run_events, methods=["GET"]), Route(UPLOT_PATH, uplot_script, methods=["GET"])]
