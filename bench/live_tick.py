"""A live-view tick's cost on the server, early in a run and late in a long one.

    python3 bench/live_tick.py [--sizes 100,20000] [--repeat 50]

Writes a synthetic metrics.jsonl of N events in the proportions of a real run (per step a step event
and a progress event, an evaluation and a change record every 50 steps, two tasks), then times one tick:

- before: ``Run.events()``, the whole file parsed again (the live view before issue 15 also built both
  task figures from it each tick, in plotly: with those, 0.82 ms at 100 events and 519 ms at 20,000,
  docs/page-speed.md);
- after, page: ``EventLog.update()`` (``Run.events_since``: only the appended lines are parsed), what the
  live view's fragment reads when it reruns;
- after, route: what ``/api/freeze-lab/runs/<id>/events`` does for the live chart's poll:
  ``events_since`` from the last offset and the new events as JSON.

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
        before = timed(run.events, run, step, repeat)
        run, step = write_run(Path(tmp) / "page", n_events)
        log = EventLog(run)
        log.update()  # the first look at a run reads it whole, once
        page = timed(log.update, run, step, repeat)
        run, step = write_run(Path(tmp) / "route", n_events)
        offset = run.metrics_path.stat().st_size

        def poll() -> None:
            nonlocal offset
            new, offset = run.events_since(offset)
            json.dumps({"events": [ev.to_dict(e) for e in new], "offset": offset})

        route = timed(poll, run, step, repeat)
        first_look = timed(EventLog(run).update, run, step, 1)  # a reload: the whole log once
    return {"events": n_events, "before_tick_ms": before, "page_tick_ms": page, "route_poll_ms": route,
            "first_look_ms": first_look}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,20000", help="event counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=50, help="ticks timed per case (the median is printed)")
    args = parser.parse_args()
    rows = [measure(int(n), args.repeat) for n in args.sizes.split(",")]
    print(f"{'events':>7} {'before: events()':>17} {'after: EventLog':>16} {'after: route poll':>18} "
          f"{'first look':>11}   (ms, median)")
    for r in rows:
        print(f"{r['events']:>7} {r['before_tick_ms']:>17.2f} {r['page_tick_ms']:>16.2f} {r['route_poll_ms']:>18.3f} "
              f"{r['first_look_ms']:>11.2f}")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "live_tick.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
