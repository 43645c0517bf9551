"""A sweep at a glance: accuracy against the number of frozen layers (mean and spread over seeds), what it
cost, how much of full fine-tuning's gain each depth recovers, and whether two variants really differ."""

from __future__ import annotations

import streamlit as st

from core.freezing import share_text
from core.runs import RunError
from dashboard import charts, resources
from dashboard.runs_view import verdict_lines

KEYS = ["sweep_view", "sweep_pair_a", "sweep_pair_b"]  # widget values kept while the tab is closed


def sweeps_section() -> None:
    from core.sweep import list_sweeps, sweep_results

    runs_dir = resources.run_store().root
    sweeps = list_sweeps(runs_dir)
    if not sweeps:
        st.info("No sweep yet. On the Train tab, open Sweep: the current setup at several freeze depths, "
                "each with a few seeds.")
        return
    by_id = {s["sweep_id"]: s for s in sweeps}
    chosen = st.selectbox("Sweep", list(by_id), key="sweep_view",
                          format_func=lambda sid: f"{by_id[sid]['name']} ({by_id[sid]['status']}, "
                                                  f"{by_id[sid]['n_done']} of {by_id[sid]['n_members']} runs)")
    try:
        results = sweep_results(runs_dir, chosen)
    except RunError as error:
        st.error(str(error))
        return
    table = results["table"] or []
    if not table:
        st.caption("No member has finished yet.")
        return
    draw_curves(results, table)
    draw_recovery(results)
    st.dataframe(table_rows(results), hide_index=True)
    verdict_for_pair(chosen, [row["variant"] for row in table])


def draw_curves(results: dict, table: list[dict]) -> None:
    n_layers = results["n_layers"]
    tasks = list(table[0]["tasks"])
    if any(row.get("depth") is not None for row in table):
        for column, task in zip(st.columns(len(tasks)), tasks):
            column.plotly_chart(charts.sweep_figure(table, task, n_layers, references(results, task)),
                                key=f"sweep:{task}")
        st.plotly_chart(charts.sweep_cost_figure(table, n_layers), key="sweep:cost")
    st.caption(charts.LEE_ET_AL)


def references(results: dict, task: str) -> dict[str, float]:
    """The sweep's floors for one task: always guessing the majority class, and the untrained model
    (everything frozen, heads at their random start)."""
    stored = results.get("reference") or {}
    names = {"majority_accuracy": "majority class", "untrained_accuracy": "untrained model"}
    return {label: stored[key][task] for key, label in names.items() if task in (stored.get(key) or {})}


def draw_recovery(results: dict) -> None:
    """One sentence per task: what the top-quarter depth keeps of full fine-tuning's gain."""
    recovery = results.get("recovery") or {}
    if not recovery:
        st.caption("Recovery needs both ends in the sweep: full fine-tuning (none, or depth 0) and all frozen "
                   "(the deepest depth, or scenario2).")
        return
    quarter = f"depth {charts.top_quarter_depth(results['n_layers'])}"
    for task, ratios in recovery["tasks"].items():
        point = ratios.get(quarter) if quarter in ratios else ratios.get("top_quarter")
        if point is not None:
            st.markdown(f"**{task}**: training only the top quarter recovers **{point:.0%}** of the gain from "
                        f"{recovery['all_frozen']} (all frozen) to {recovery['full']} (full fine-tuning).")


def table_rows(results: dict) -> list[dict]:
    recovery = (results.get("recovery") or {}).get("tasks", {})
    rows = []
    for row in results["table"]:
        out = {"variant": row["variant"], "trainable": f"{row['trainable']:,}",
               "trainable %": share_text(row["trainable_fraction"]),
               "train s (mean)": round(row["train_seconds_mean"], 1)}
        for task, m in row["tasks"].items():
            out[f"{task} acc"] = f"{m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f} (n={m['n_seeds']})"
            ratio = recovery.get(task, {}).get(row["variant"])
            if ratio is not None:
                out[f"{task} recovery"] = f"{ratio:.0%}"
        rows.append(out)
    return rows


def verdict_for_pair(sweep_id: str, variants: list[str]) -> None:
    if len(variants) < 2:
        return
    st.markdown("**Is this difference real?** Pick two variants of the sweep.")
    c1, c2 = st.columns(2)
    a = c1.selectbox("Variant A", variants, key="sweep_pair_a")
    b = c2.selectbox("Variant B", variants, index=len(variants) - 1, key="sweep_pair_b")
    if a != b:
        verdict_lines(f"{sweep_id}:{a}", f"{sweep_id}:{b}")
