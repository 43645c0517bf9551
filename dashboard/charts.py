"""Plotly figures built from a run's events; pure functions, so they are easy to test.

The same functions draw a live run and a stored one: both are the events of
``metrics.jsonl``.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from core import parts as part_names
from core.freezing import FreezePlan
from core.presets import PRESETS, preset_plan

MAX_POINTS = 600  # per line: plenty for its shape; thousands would make a compared chart slow to draw
PALETTE = ["#2f6fde", "#e4572e", "#29a35a", "#9b5de5", "#f3a712", "#17bebb", "#8d6a9f", "#c1292e"]


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (TensorBoard style); weight 0 returns the values."""
    if not weight:
        return list(values)
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Every k-th point, and always the last, so that a line has at most about ``limit`` points;
    every point shown is a real value (hover stays exact), and the newest step is always drawn."""
    if len(xs) <= limit:
        return xs, ys
    keep = list(range(0, len(xs), math.ceil(len(xs) / limit)))
    if keep[-1] != len(xs) - 1:
        keep.append(len(xs) - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]


def step_losses(events, task: str) -> tuple[list[int], list[float], list[float]]:
    """Steps, epochs and training losses of one task."""
    rows = [e for e in events if e.kind == "step" and e.task == task]
    return [e.step for e in rows], [e.epoch for e in rows], [e.loss for e in rows]


def evaluations(events, task: str) -> dict[str, list]:
    rows = [e for e in events if e.kind == "eval" and task in e.tasks]
    return {
        "step": [e.step for e in rows], "epoch": [e.epoch for e in rows],
        "loss": [e.tasks[task]["loss"] for e in rows], "accuracy": [e.tasks[task]["accuracy"] for e in rows],
        "macro_f1": [e.tasks[task]["macro_f1"] for e in rows],
    }


def tasks_in(events) -> list[str]:
    seen = []
    for e in events:
        names = [e.task] if e.kind == "step" else list(e.tasks) if e.kind == "eval" else []
        seen += [n for n in names if n not in seen]
    return seen


PLAN_COLOR = "#666666"


def plan_marks(events, x: str = "step") -> list[tuple[float, str]]:
    """Where a freeze schedule changed the plan (its ``plan`` events after the first, which is the plan it
    started from): (x in steps or epochs, what changed, e.g. 'layer.2 joins')."""
    epochs = {e.step: e.epoch for e in events if e.kind == "step"}
    plans = [e for e in events if e.kind == "plan"]
    marks = []
    for before, after in zip(plans, plans[1:]):
        where = after.step if x == "step" else epochs.get(after.step)
        if where is not None:
            marks.append((where, plan_change_words(before.frozen, after.frozen)))
    return marks


def plan_change_words(before: list[str], after: list[str]) -> str:
    """'layer.2 joins' (now trains whole), 'layer.0 freezes' (now frozen whole), from two plans' frozen names."""
    def states(names: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            part, kind = part_names.split_kind(name)
            out[part] = "frozen" if kind is None or out.get(part) == "frozen" else "partly"
        return out

    old, new = states(before), states(after)
    joins = [p for p in old if p not in new]
    freezes = [p for p, state in new.items() if state == "frozen" and old.get(p) != "frozen"]
    return ", ".join([*(f"{p} joins" for p in joins), *(f"{p} freezes" for p in freezes)]) or "plan changes"


def confusion_figure(labels: list[str], matrix: list[list[int]], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix,
                               texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", height=360,
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


# ---- where learning happened ------------------------------------------------------------------------

FROZEN_GREY = "#d4d4d4"
CHANGE_TICKS = [0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]  # relative changes named on the colour bar


def percent(value: float) -> str:
    """A relative change as a percentage with three significant digits: 0.0213 -> '2.13%'."""
    return f"{100 * value:.3g}%"


def change_heatmap(steps: list[int], history: dict[str, list[float]], frozen: set[str] | list[str],
                   grad_norms: dict[str, list[float]] | None = None,
                   marks: list[tuple[float, str]] | None = None) -> go.Figure:
    """Part (input at the bottom, heads at the top, as the layers stack) by step, coloured by the square root
    of the relative change, so a layer that moved 0.1% still shows beside a head that moved 50%. Frozen parts
    read exactly 0: a second, grey trace draws them and says "frozen" in the row label, a cell and the hover.
    Both traces span every row, blank (None) where the other draws: plotly.js fails to draw heatmaps that
    share a category axis with different rows. ``marks`` (``plan_marks``): where a freeze schedule changed
    the plan, a dashed line, so a layer that joins is seen to start moving there."""
    plan = FreezePlan.of(frozen)
    labels = [f"{part} (frozen)" if part in frozen else f"{part} (partly frozen)" if plan.trainable_kinds(part)
              else part for part in history]
    moving = {part: part not in frozen for part in history}
    largest = max((v for part in history if moving[part] for v in history[part]), default=0.0) or 1.0
    ticks = colour_ticks(largest)
    blank = [None] * len(steps)
    middle = len(steps) // 2
    colour = [[math.sqrt(v) for v in values] if moving[p] else blank for p, values in history.items()]
    colour_bar = {"title": {"text": "relative change<br>‖w−w₀‖/‖w₀‖<br>(square-root scale)"},
                  "tickvals": [math.sqrt(t) for t in ticks], "ticktext": [percent(t) for t in ticks]}
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        x=steps, y=labels, z=colour, zmin=0.0, zmax=math.sqrt(largest), colorscale="Viridis", colorbar=colour_bar,
        name="trains", xgap=1, ygap=2, hoverongaps=False, hoverinfo="text",
        hovertext=[change_hover(p, steps, values, (grad_norms or {}).get(p)) if moving[p] else blank
                   for p, values in history.items()]))
    fig.add_trace(go.Heatmap(
        x=steps, y=labels, z=[blank if moving[p] else [0.0] * len(steps) for p in history], zmin=0.0, zmax=1.0,
        colorscale=[[0, FROZEN_GREY], [1, FROZEN_GREY]], showscale=False, name="frozen", xgap=1, ygap=2,
        hoverongaps=False, texttemplate="%{text}",
        text=[["frozen" if i == middle and not moving[p] else "" for i in range(len(steps))] for p in history],
        hovertext=[blank if moving[p] else [f"{p}: frozen<br>step {s}<br>relative change 0 exactly" for s in steps]
                   for p in history], hoverinfo="text"))
    for at, words in marks or []:
        fig.add_vline(x=at, line={"color": PLAN_COLOR, "dash": "dash", "width": 1}, annotation_text=words,
                      annotation_position="top left", annotation_font_size=11)
    fig.update_layout(title="Where learning happened: how far each part moved from its start", xaxis_title="step",
                      height=120 + 28 * len(history), margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def colour_ticks(largest: float) -> list[float]:
    """Relative changes to name on the square-root colour bar, from 0 to the largest, at least a tenth of
    the bar apart so that no two labels overlap."""
    ticks = [0.0]
    for tick in [*(t for t in CHANGE_TICKS if t < largest), largest]:
        if math.sqrt(tick) - math.sqrt(ticks[-1]) >= 0.1 * math.sqrt(largest):
            ticks.append(tick)
        elif tick == largest:
            ticks[-1] = largest  # the top of the bar is always named
    return ticks


def change_hover(part: str, steps: list[int], changes: list[float], grads: list[float] | None) -> list[str]:
    grad_lines = [f"<br>gradient norm {g:.3g}" for g in grads] if grads else [""] * len(steps)
    return [f"{part}<br>step {s}<br>relative change {percent(v)}{g}" for s, v, g in zip(steps, changes, grad_lines)]


# ---- sweeps and comparisons -------------------------------------------------------------------------

LEE_ET_AL = PRESETS["top_quarter"].benefit  # the finding the sweep view's top-quarter mark stands for


def top_quarter_depth(n_layers: int) -> int:
    """How many lower layers the top_quarter preset freezes, from the preset itself."""
    return part_names.count_layers(preset_plan("top_quarter", part_names.all_parts(n_layers, False, [])).frozen)


def sweep_figure(table: list[dict], task: str, n_layers: int, references: dict[str, float] | None = None) -> go.Figure:
    """Accuracy (mean over seeds, error bars: one standard deviation) against the number of frozen layers,
    with the top-quarter point marked and reference lines (the majority class, the untrained model)."""
    rows = sorted((r for r in table if r.get("depth") is not None and task in r["tasks"]), key=lambda r: r["depth"])
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[r["depth"] for r in rows], y=[r["tasks"][task]["accuracy_mean"] for r in rows], mode="lines+markers",
        name="accuracy (mean of seeds)", line={"color": PALETTE[0]},
        error_y={"type": "data", "array": [r["tasks"][task]["accuracy_std"] for r in rows], "visible": True},
        customdata=[r["tasks"][task]["n_seeds"] for r in rows],
        hovertemplate="%{x} frozen layers<br>accuracy %{y:.3f}<br>%{customdata} seed(s)<extra></extra>"))
    quarter = top_quarter_depth(n_layers)
    fig.add_vline(x=quarter, line={"dash": "dash", "color": PALETTE[2]},
                  annotation_text="top quarter trains", annotation_position="top")
    add_references(fig, references)
    fig.update_layout(title=f"{task}: accuracy against frozen layers", height=360, xaxis_title="frozen lower layers",
                      yaxis_title="validation accuracy", margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"dtick": 1, "range": [-0.5, n_layers + 0.5]}, showlegend=False)
    return fig


def add_references(fig: go.Figure, references: dict[str, float] | None) -> None:
    """Dotted horizontal lines, each named where it ends: the floors a trained model should clear."""
    for name, value in (references or {}).items():
        fig.add_hline(y=value, line={"dash": "dot", "color": "#888"}, annotation_text=name,
                      annotation_position="bottom right")


def sweep_cost_figure(table: list[dict], n_layers: int) -> go.Figure:
    """Training time (bars) and trainable share (line, right axis) against the number of frozen layers."""
    rows = sorted((r for r in table if r.get("depth") is not None), key=lambda r: r["depth"])
    depths = [r["depth"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=depths, y=[r["train_seconds_mean"] for r in rows], name="training time (s)",
                         marker={"color": PALETTE[1]}, opacity=0.6))
    fig.add_trace(go.Scatter(x=depths, y=[100 * r["trainable_fraction"] for r in rows], name="trainable %",
                             mode="lines+markers", yaxis="y2", line={"color": PALETTE[3]}))
    fig.update_layout(title="cost against frozen layers", height=360, xaxis_title="frozen lower layers",
                      yaxis={"title": "training time (s)"}, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis2={"title": "trainable %", "overlaying": "y", "side": "right", "rangemode": "tozero"},
                      xaxis={"dtick": 1, "range": [-0.5, n_layers + 0.5]}, legend={"orientation": "h", "y": -0.2})
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both counts (lower cost, higher accuracy), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figure(names: list[str], costs: list[float], accuracies: list[float], task: str,
                  cost_title: str) -> go.Figure:
    """Accuracy against cost, one point per run or group, with the Pareto front drawn."""
    front = pareto_front(list(zip(costs, accuracies)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=costs, y=accuracies, mode="markers+text", text=names, textposition="top center",
                             marker={"size": 10, "color": PALETTE[0]}, name="runs",
                             hovertemplate="%{text}<br>%{x}<br>accuracy %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[costs[i] for i in front], y=[accuracies[i] for i in front], mode="lines",
                             line={"color": PALETTE[1], "dash": "dash"}, name="Pareto front"))
    fig.update_layout(title=f"{task}: accuracy against {cost_title}", height=360, xaxis_title=cost_title,
                      yaxis_title="validation accuracy", margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def mean_band(series: list[tuple[list, list]]) -> tuple[list, list, list, list]:
    """x, mean, low and high (one standard deviation) over several runs' (x, y) lines, at every x some run
    has (seeds of one setup evaluate at the same steps; a run that stopped early simply ends sooner)."""
    by_run = [dict(zip(xs, ys)) for xs, ys in series]
    xs_all = sorted({x for run in by_run for x in run})
    means, lows, highs = [], [], []
    for x in xs_all:
        values = [run[x] for run in by_run if x in run]
        mean = sum(values) / len(values)
        spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        means.append(mean)
        lows.append(mean - spread)
        highs.append(mean + spread)
    return xs_all, means, lows, highs


def group_figure(groups: dict[str, list[list]], task: str, metric: str, x: str = "step", smoothing: float = 0.0,
                 references: dict[str, float] | None = None, fixed_head: set[str] = frozenset()) -> go.Figure:
    """One line per group of runs (the mean; a band of one standard deviation where a group has several
    seeds), and dotted reference lines (e.g. the majority class) on accuracy charts. Groups in
    ``fixed_head`` froze this task's head: their line is dashed and says so, since whatever it does
    comes from the backbone moving under a fixed head."""
    fig = go.Figure()
    for i, (name, runs) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        series = []
        for events in runs:
            if metric == "train_loss":
                steps, epochs, losses = step_losses(events, task)
                series.append((steps if x == "step" else epochs, smooth(losses, smoothing)))
            else:
                ev = evaluations(events, task)
                series.append((ev[x], ev[metric]))
        xs, means, lows, highs = mean_band(series)
        xs_shown, means_shown = thin(xs, means) if metric == "train_loss" else (xs, means)
        label = f"{name} ({len(runs)} seeds)" if len(runs) > 1 else name
        if name in fixed_head:
            label += f" (head.{task} frozen)"
        if len(runs) > 1:
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", line={"width": 0},
                                     fillcolor=color, opacity=0.2, hoverinfo="skip", showlegend=False))
        mode = "lines" if metric == "train_loss" else "lines+markers"
        fig.add_trace(go.Scatter(x=xs_shown, y=means_shown, name=label, mode=mode,
                                 line={"color": color, "dash": "dash" if name in fixed_head else "solid"}))
        for at, words in plan_marks(runs[0], x) if runs else []:  # a freeze schedule's changes, in its colour
            fig.add_vline(x=at, line={"color": color, "dash": "dot", "width": 1}, annotation_text=words,
                          annotation_font={"size": 10, "color": color}, annotation_position="top left")
    if metric == "accuracy":
        add_references(fig, references)
    titles = {"train_loss": "training loss", "loss": "validation loss", "accuracy": "validation accuracy",
              "macro_f1": "validation macro-F1"}
    fig.update_layout(title=f"{task}: {titles.get(metric, metric)}", height=360, hovermode="x unified",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=x,
                      legend={"orientation": "h", "y": -0.2})
    return fig
