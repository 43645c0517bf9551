"""Helpers for driving the page headless with Streamlit's AppTest."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "page.py")  # the page (app.py serves it with its routes)


def new_app(backbone: str, fresh_server: bool = True):
    """An AppTest of the page with a given backbone. ``fresh_server`` clears the process-wide
    caches, as a server restart would; without it the page is a second tab on the same server."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    if fresh_server:
        from core.child import stop_children

        stop_children()  # the last server's probes (counting parts, finding the device) end with it
        st.cache_resource.clear()
        st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["backbone"] = backbone
    return at.run()


@contextmanager
def served_page(address: str = "0.0.0.0"):
    """The page as if started with ``--server.address <address>``."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        yield
    finally:
        config.set_option("server.address", before)


def ready(at) -> bool:
    """The page has drawn its parameter readout: the backbone's parts are counted."""
    return len(at.metric) > 0


def open_tab(at, label: str):
    """Select a tab, as a click would: only the open tab's content runs (the Train tab always does)."""
    at.session_state["tab"] = label
    return at.run()


def rerun_until(at, condition, timeout: float = 90.0, pause: float = 0.5):
    """Rerun the page until ``condition(at)`` holds, as a user's browser would keep refreshing."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition(at):
            return at
        time.sleep(pause)
        at.run()
    raise AssertionError("the page never reached the expected state")


def trainable(at) -> int:
    return int(at.metric[0].value.replace(",", ""))


def frozen_toggles(at) -> set[str]:
    return {t.label for t in at.toggle if t.value and (t.label.startswith(("layer.", "head.")) or t.label in
                                                        ("embeddings", "pooler"))}


def stop_every_job(timeout: float = 120) -> None:
    """A test's teardown: empty the queue, stop what trains, and wait for it (the next test gets a free device)."""
    from dashboard.resources import job_manager

    manager = job_manager()
    for job in manager.waiting():
        manager.stop(job)
    manager.stop()
    job = manager.current()
    if job is not None:
        job.wait(timeout)


def live_chart_data(at) -> dict | None:
    """What the page sent its live chart (dashboard/live_chart.py): figures per task, offset, options."""
    import json

    charts = [c for c in at.get("bidi_component") if c.proto.component_name == "freeze_lab.live_chart"]
    return json.loads(charts[0].proto.json) if charts else None
