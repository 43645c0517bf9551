"""A live-view tick's cost on the server, early in a run and late in a long one.

    python3 bench/live_tick.py [--sizes 100,20000] [--repeat 50]

Writes a synthetic metrics.jsonl of N events in the proportions of a real run (per step a step event
and a progress event, an evaluation and a change record every 50 steps, two tasks), then times one tick:

- before: ``Run.events()`` (the whole file parsed again) and the two task figures built from it,
  serialized as ``st.plotly_chart`` sends them;
- after, page: ``EventLog.update()`` (``Run.events_since``: only the appended lines are parsed) and the
  same figures, for a tick that redraws (the live view's fragment);
- after, route: what ``/api/runs/<id>/events`` does for the live chart's poll: ``events_since`` from the
  last offset and the new events as JSON.

Each tick has one new step (two events) appended before it, as the trainer would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import events as ev  # noqa: E402
from core.runs import EventLog, Run  # noqa: E402
from dashboard import charts  # noqa: E402

TASKS = ("topic", "sentiment")
PARTS = ["embeddings", *(f"layer.{i}" for i in range(6)), "head.topic", "head.sentiment"]


def step_events(step: int) -> list:
    task = TASKS[step % 2]
    out = [ev.StepEvent(step, step / 1000, task, 1.0 / (1 + step / 100), 5e-5),
           ev.ProgressEvent(step, 10**6, step / 1000, 40.0, 100.0)]
    if step % 50 == 0:
        metrics = {"loss": 0.5, "accuracy": 0.8, "macro_f1": 0.78, "confusion": [[1, 0], [0, 1]], "labels": ["a", "b"]}
        out.append(ev.EvalEvent(step, step / 1000, {t: metrics for t in TASKS}))
        out.append(ev.ChangeEvent(step, {p: {"relative_change": 0.01, "grad_norm": 0.1} for p in PARTS}))
    return out


def write_run(folder: Path, n_events: int) -> tuple[Run, int]:
    """A run whose log holds about ``n_events`` events; the last step written."""
    run = Run(folder)
    folder.mkdir(parents=True)
    lines, step = [], 0
    while len(lines) < n_events:
        step += 1
        lines += [json.dumps(ev.to_dict(e)) for e in step_events(step)]
    run.metrics_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return run, step


def figures(events) -> str:
    return json.dumps([charts.task_figure(events, task, "step", 0.6) for task in TASKS])


def timed(tick, run: Run, step: int, repeat: int) -> float:
    """Median milliseconds of ``tick()``, each after one more step is appended."""
    times = []
    for i in range(repeat):
        for event in step_events(step + i + 1):
            run.append_event(event)
        start = time.perf_counter()
        tick()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(n_events: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run, step = write_run(Path(tmp) / "before", n_events)
        before = timed(lambda: figures(run.events()), run, step, repeat)
        run, step = write_run(Path(tmp) / "page", n_events)
        log = EventLog(run)
        log.update()  # the first look at a run reads it whole, once
        page = timed(lambda: figures(log.update()), run, step, repeat)
        run, step = write_run(Path(tmp) / "route", n_events)
        offset = run.metrics_path.stat().st_size

        def poll() -> None:
            nonlocal offset
            new, offset = run.events_since(offset)
            json.dumps({"events": [ev.to_dict(e) for e in new], "offset": offset})

        route = timed(poll, run, step, repeat)
        parse_all = timed(run.events, run, step, repeat)
        parse_new = timed(EventLog(run).update, run, step, 1)  # a first look: the whole log once
    return {"events": n_events, "before_tick_ms": before, "page_tick_ms": page, "route_poll_ms": route,
            "events()_ms": parse_all, "first_look_ms": parse_new}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,20000", help="event counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=50, help="ticks timed per case (the median is printed)")
    args = parser.parse_args()
    rows = [measure(int(n), args.repeat) for n in args.sizes.split(",")]
    print(f"{'events':>7} {'before: events()+figures':>25} {'after: EventLog+figures':>24} "
          f"{'after: route poll':>18} {'events() alone':>15} {'first look':>11}   (ms, median)")
    for r in rows:
        print(f"{r['events']:>7} {r['before_tick_ms']:>25.2f} {r['page_tick_ms']:>24.2f} {r['route_poll_ms']:>18.3f} "
              f"{r['events()_ms']:>15.2f} {r['first_look_ms']:>11.2f}")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "live_tick.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
