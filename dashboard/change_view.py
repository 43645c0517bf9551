"""Where learning happened, for a live run and a stored one: the model picture with how far each part
moved, and the heatmap of the change per part at every evaluation. Both read the run's change events,
so the live view grows a column at each evaluation and a stored run draws the same picture."""

from __future__ import annotations

import streamlit as st

from core import changes, parts as part_names
from core.presets import plan_from_config
from dashboard import charts
from dashboard.freeze_panel import model_picture


def frozen_and_pooling(run, parts: list[str]) -> tuple[set[str], str]:
    """The run's frozen parts (from its summary once it has ended, its config's freeze plan while it
    trains) and its pooling, for the row labels and the picture."""
    summary = run.summary()
    try:
        config = run.config()
        planned = plan_from_config(config.freeze, parts).frozen
        partly = summary.get("partly_frozen", [])  # a part frozen but for a kind: named as its plan names it
        frozen = planned if "frozen" not in summary else [
            *summary["frozen"], *(p for p in planned if part_names.split_kind(p)[0] in partly)]
    except (OSError, ValueError):  # a config that cannot be read (or planned): the summary may still say
        return set(summary.get("frozen", [])), "mean"
    return set(frozen), config.pooling


def change_section(run, events: list, key: str) -> None:
    """The picture and the heatmap; a run before its first evaluation says when they come, an old run
    without change events says so (``changes.NO_CHANGE_MAP``)."""
    steps, moved = changes.history(events)
    if not steps:
        status = run.summary().get("status", "running")
        if status == "running":
            st.caption("The change map appears at the first evaluation.")
        elif status != "failed":  # a run that failed before its first evaluation has said why above
            st.info(changes.NO_CHANGE_MAP)
        return
    _, grad_norms = changes.history(events, "grad_norm")
    frozen, pooling = frozen_and_pooling(run, list(moved))
    for plan in (e for e in events if e.kind == "plan"):  # a freeze schedule: frozen means frozen all along
        frozen &= set(plan.frozen)
    st.html(model_picture(list(moved), frozen, pooling, {part: values[-1] for part, values in moved.items()}))
    st.plotly_chart(charts.change_heatmap(steps, moved, frozen, grad_norms, charts.plan_marks(events)), key=key)
