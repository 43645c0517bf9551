"""Plotly figures built from a run's events; pure functions, so they are easy to test.

The same functions draw a live run and a stored one: both are the events of
``metrics.jsonl``.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

MAX_POINTS = 600  # per line: plenty for its shape; thousands would make every live refresh slow to draw
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


def task_figure(events, task: str, x: str = "step", smoothing: float = 0.0) -> dict:
    """Loss (train per step, validation) above, validation accuracy and macro-F1 below.

    A plain figure dict rather than ``make_subplots``: the live view builds two of these every second,
    and ``make_subplots`` took about 40 ms each where this takes about 1 ms."""
    steps, epochs, losses = step_losses(events, task)
    ev = evaluations(events, task)
    xs, ys = thin(steps if x == "step" else epochs, smooth(losses, smoothing))
    data = [
        {"type": "scatter", "x": xs, "y": ys, "name": "train loss", "mode": "lines",
         "line": {"color": PALETTE[0]}, "xaxis": "x", "yaxis": "y"},
        {"type": "scatter", "x": ev[x], "y": ev["loss"], "name": "validation loss", "mode": "lines+markers",
         "line": {"color": PALETTE[1]}, "xaxis": "x", "yaxis": "y"},
        {"type": "scatter", "x": ev[x], "y": ev["accuracy"], "name": "accuracy", "mode": "lines+markers",
         "line": {"color": PALETTE[2]}, "marker": {"size": 9}, "xaxis": "x2", "yaxis": "y2"},
        {"type": "scatter", "x": ev[x], "y": ev["macro_f1"], "name": "macro-F1", "mode": "lines+markers",
         "line": {"color": PALETTE[3], "dash": "dot"},  # open markers: accuracy stays visible beneath them
         "marker": {"symbol": "diamond-open", "size": 9}, "xaxis": "x2", "yaxis": "y2"},
    ]
    title = {"xref": "paper", "yref": "paper", "x": 0.5, "xanchor": "center", "yanchor": "bottom",
             "showarrow": False, "font": {"size": 16}}
    layout = {
        "xaxis": {"domain": [0, 1], "anchor": "y", "matches": "x2", "showticklabels": False},
        "yaxis": {"domain": [0.57, 1], "anchor": "x"},
        "xaxis2": {"domain": [0, 1], "anchor": "y2", "title": {"text": x}},
        "yaxis2": {"domain": [0, 0.43], "anchor": "x2", "range": [0, 1.02]},
        "annotations": [{**title, "text": f"{task}: loss", "y": 1},
                        {**title, "text": f"{task}: validation accuracy and macro-F1", "y": 0.43}],
        "height": 430, "margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.15},
    }
    return {"data": data, "layout": layout}


def compare_figure(runs: dict[str, list], task: str, metric: str, x: str = "step",
                   smoothing: float = 0.0) -> go.Figure:
    """One line per run: ``metric`` is 'train_loss' or an evaluation metric (accuracy, macro_f1, loss)."""
    fig = go.Figure()
    for i, (name, events) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        if metric == "train_loss":
            steps, epochs, losses = step_losses(events, task)
            xs, ys = thin(steps if x == "step" else epochs, smooth(losses, smoothing))
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines", line={"color": color}))
        else:
            ev = evaluations(events, task)
            fig.add_trace(go.Scatter(x=ev[x], y=ev[metric], name=name, mode="lines+markers", line={"color": color}))
    titles = {"train_loss": "training loss", "loss": "validation loss", "accuracy": "validation accuracy",
              "macro_f1": "validation macro-F1"}
    fig.update_layout(title=f"{task}: {titles.get(metric, metric)}", height=360, hovermode="x unified",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=x,
                      legend={"orientation": "h", "y": -0.2})
    return fig


def confusion_figure(labels: list[str], matrix: list[list[int]], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix,
                               texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", height=360,
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
