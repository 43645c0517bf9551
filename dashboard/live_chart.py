"""The live chart of a training run: per task, the loss above and validation accuracy and macro-F1 below
(the traces, names and colours of ``charts.task_figure``), extended in the browser as the run's events arrive.

A custom component (``st.components.v2``, in the page itself, no iframe) gets only the tasks, the options
and where to read from. Its JavaScript (live_chart.js) fetches the run's events from the page's read-only
route (routes.py), from offset 0 at first (so a reload or a second tab draws the whole run), then only
what was appended since, and draws them with uPlot (canvas; vendored in dashboard/vendor). A new point
costs the browser a small request and one canvas redraw, not a Streamlit rerun; a poll with nothing new
draws nothing. Python's data changes only with the run or an option (x axis, smoothing), and only then is
the chart drawn afresh. The first step, an evaluation's change record, a plan change or the end of the run
comes back as the component's "news" trigger, which reruns the fragment the chart is drawn in (live.py),
so that needs no clock.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import charts, routes

VENDOR = Path(__file__).with_name("vendor")
CSS = VENDOR.joinpath("uPlot.min.css").read_text(encoding="utf-8") + """
.fl-live-status { font-size: 0.9rem; color: rgba(49, 51, 63, 0.75); min-height: 1.4rem; }
.fl-live-bar { width: 100%; height: 0.5rem; accent-color: #2f6fde; }
.fl-live-grid { display: grid; gap: 1rem; }
.fl-live-plot { min-width: 0; }
.fl-live-plot .u-title { font-size: 1rem; font-weight: 500; }
.fl-live-marks { font-size: 0.8rem; color: rgba(49, 51, 63, 0.75); }
"""

COMPONENT = st.components.v2.component(
    "freeze_lab.live_chart", js=Path(__file__).with_name("live_chart.js").read_text(encoding="utf-8"), css=CSS,
    isolate_styles=False)  # uPlot's legend and cursor are styled from the page's head


def chart_data(run_id: str, tasks: list[str], x_axis: str, smoothing: float, poll_seconds: float,
               ended: bool = False) -> dict:
    """What the component starts from: the tasks, the options, the colours, and the route to poll.
    ``ended``: the run's summary says it is over (the chart reads once more, then stops asking), which also
    ends the polling for a run whose process was killed before it could log its end."""
    return {
        "run": run_id, "tasks": tasks, "x": x_axis, "smoothing": smoothing, "ended": ended,
        "colors": charts.PALETTE[:4], "plan_color": charts.PLAN_COLOR,
        "events_url": routes.EVENTS_PATH.format(run_id=run_id),
        "uplot_url": f"{routes.UPLOT_PATH}?v={routes.uplot_version()}",
        "poll_ms": round(1000 * poll_seconds),
    }


def live_chart(run_id: str, tasks: list[str], x_axis: str, smoothing: float, poll_seconds: float, ended: bool,
               key: str) -> None:
    COMPONENT(key=key, data=chart_data(run_id, tasks, x_axis, smoothing, poll_seconds, ended))
