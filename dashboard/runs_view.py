"""The history of runs, the what-if comparison, renaming and deleting."""

from __future__ import annotations

import time

import streamlit as st

from core.runs import RunError
from dashboard import access, charts, resources

KEYS = ["compare", "compare_metric", "compare_x", "compare_smoothing", "manage_run", "rename_to"]  # kept while closed
METRICS = {"accuracy": "validation accuracy", "macro_f1": "macro-F1", "loss": "validation loss",
           "train_loss": "training loss"}


def history_rows(runs) -> list[dict]:
    rows = []
    for run in runs:
        s = run.summary()
        params = s.get("params", {})
        pct = 100 * params["trainable"] / params["total"] if params.get("total") else None
        frozen = s.get("frozen", [])
        row = {"run": run.id, "name": s.get("name", run.id), "status": s.get("status"),
               "frozen": s.get("preset") or (", ".join(frozen) if frozen else "nothing"),
               "trainable %": round(pct, 1) if pct is not None else None}
        for task, m in s.get("tasks", {}).items():
            row[f"{task} acc"] = round(m["accuracy"], 3)
        row.update({"time (s)": s.get("wall_seconds"), "device": s.get("device"),
                    "started": time.strftime("%m-%d %H:%M", time.localtime(s.get("started_at", 0)))})
        rows.append(row)
    return rows


def compare_section() -> None:
    runs = resources.run_store().list()
    if not runs:
        st.info("No runs yet. Train one on the first tab; every run is kept here.")
        return
    st.dataframe(history_rows(runs), hide_index=True)
    by_id = {r.id: r for r in runs}
    finished = [r.id for r in runs if r.status in ("finished", "evaluated", "stopped")]
    st.session_state.setdefault("compare", finished[:2])
    st.session_state.compare = [r for r in st.session_state.compare if r in by_id]
    chosen = st.multiselect("Runs to compare (pick two or more)", list(by_id), key="compare",
                            format_func=lambda rid: by_id[rid].name)
    if len(chosen) < 2:
        st.caption("Pick at least two runs to overlay their curves.")
    if chosen:
        compare_runs([by_id[r] for r in chosen])
    manage_runs(by_id)


def compare_runs(runs) -> None:
    st.markdown("**What differs**")
    st.dataframe(difference_rows(runs), hide_index=True)
    c1, c2, c3 = st.columns(3)
    st.session_state.setdefault("compare_metric", "accuracy")
    st.session_state.setdefault("compare_smoothing", 0.0)
    c1.segmented_control("Metric", list(METRICS), key="compare_metric", format_func=METRICS.get)
    c2.radio("x axis", ["step", "epoch"], key="compare_x", horizontal=True)
    c3.slider("Smoothing", 0.0, 0.95, step=0.05, key="compare_smoothing")
    events = {r.name: r.events() for r in runs}
    tasks = sorted({t for ev in events.values() for t in charts.tasks_in(ev)})
    metric = st.session_state.compare_metric or "accuracy"
    for column, task in zip(st.columns(max(1, len(tasks))), tasks):
        column.plotly_chart(charts.compare_figure(events, task, metric, st.session_state.compare_x,
                                                  st.session_state.compare_smoothing), key=f"compare:{task}")


def difference_rows(runs) -> list[dict]:
    """Side by side: final metrics per task, and the settings that differ between the runs."""
    summaries = {r.name: r.summary() for r in runs}
    configs = {}
    for r in runs:
        try:
            configs[r.name] = r.config().to_dict()
        except ValueError:
            configs[r.name] = {}
    rows = []
    tasks = sorted({t for s in summaries.values() for t in s.get("tasks", {})})
    for task in tasks:
        for metric in ("accuracy", "macro_f1", "loss"):
            row = {"": f"{task} {metric}"}
            row.update({n: _fmt(s.get("tasks", {}).get(task, {}).get(metric)) for n, s in summaries.items()})
            rows.append(row)
    for key, getter in {
        "frozen parts": lambda s, c: ", ".join(s.get("frozen", [])) or "nothing",
        "trainable params": lambda s, c: f"{s.get('params', {}).get('trainable', 0):,}",
        "time (s)": lambda s, c: s.get("wall_seconds"),
        "examples/s": lambda s, c: s.get("examples_per_second"),
        "status": lambda s, c: s.get("status"),
        **{f"training.{k}": (lambda k: lambda s, c: c.get("training", {}).get(k))(k)
           for k in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "max_length", "seed")},
        "backbone": lambda s, c: c.get("backbone"),
        "init_from": lambda s, c: c.get("init_from"),
    }.items():
        values = {n: getter(summaries[n], configs[n]) for n in summaries}
        if key in ("frozen parts", "trainable params", "time (s)", "status") or len({str(v) for v in values.values()}) > 1:
            rows.append({"": key, **{n: str(v) for n, v in values.items()}})
    return rows


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def manage_runs(by_id) -> None:
    """Rename or delete one run, where ``access.may`` lets this visitor (their own runs; any with the
    teacher's passcode; anything on a one-person page)."""
    with st.expander("Rename or delete a run"):
        rid = st.selectbox("Run", list(by_id), key="manage_run", format_func=lambda r: by_id[r].name)
        owner = by_id[rid].summary().get("owner")
        may_rename, may_delete = access.allowed("rename", owner), access.allowed("delete", owner)
        new_name = st.text_input("New name", key="rename_to", disabled=not may_rename)
        c1, c2, c3 = st.columns(3)
        if c1.button("Rename", key="rename", disabled=not (may_rename and new_name.strip())):
            try:
                resources.run_store().rename(rid, new_name)
                st.rerun()
            except RunError as error:
                st.error(str(error))
        sure = c2.checkbox("I am sure", key="delete_sure", disabled=not may_delete)
        if c3.button("Delete", key="delete", disabled=not (may_delete and sure)):
            try:
                resources.run_store().delete(rid)
                st.session_state.delete_sure = False
                st.rerun()
            except RunError as error:
                st.error(str(error))
        for action, permitted in (("rename", may_rename), ("delete", may_delete)):
            if not permitted:
                st.caption(access.why_not(action))
