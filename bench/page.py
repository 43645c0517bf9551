"""Page benchmark: start-up, event-to-point latency, and the page's cost to training speed.

    python3 bench/page.py [--epochs 1] [--starts 5] [--page-root PATH]

Prints a table and writes bench/results/page.json. Needs Debian's chromium and playwright.
Measures, on this machine:
1. seconds from launching the server until the freeze toggles and preset buttons are interactive in a
   browser (median of ``--starts`` fresh servers; the browser is already running, as a user's would be;
   MiniLM's parameter counts and the device are remembered first, as after any earlier start; Python
   keeps its bytecode cache, as it does by default);
2. seconds from a step's event (its timestamp in metrics.jsonl) until the point is in the chart;
3. examples/s of the same config trained from the page and from ``python -m core train``;
4. chromium's CPU-seconds per 30 s of training, watched and unwatched (psutil, over chromium's whole
   process tree, from the first event of the run to its end).

``--page-root`` serves the page of another checkout (e.g. a worktree of an older commit, for a "before"
row) with this benchmark; the CLI run is always this checkout's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from server import browser_page, fill_number, streamlit_server  # noqa: E402

# Runs in the page: every 50 ms, note the wall-clock time (ms since the epoch, the clock the trainer's
# event times use) at which each step first appears in the first chart's training-loss line, and that
# chart's task. The live chart (live_chart.js) keeps its series on its element; the page before issue 15
# drew plotly figures, whose first trace is the training loss (for a "before" row with --page-root).
WATCH_POINTS_JS = """() => { window._seen = {}; window._task = null; setInterval(() => {
  const live = document.querySelector('.fl-live-plot'), p = document.querySelector('.js-plotly-plot');
  const xs = live && live.series ? live.series['train loss'].x : p && p.data && p.data[0] ? p.data[0].x : null;
  if (!xs) return;
  window._task = (live || p).dataset.task || null;
  const now = Date.now();
  for (const step of xs) if (!(step in window._seen)) window._seen[step] = now; }, 50); }"""


def probes_done(timeout: float = 60) -> None:
    """Wait until the last server's probes (``python -m core describe/device``, which outlive it by a few
    seconds) have ended, so that one start-up is not timed while another's probe still runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and subprocess.run(["pgrep", "-f", "-m core (describe|device)"],
                                                    capture_output=True).returncode == 0:
        time.sleep(0.2)


def remember_probes() -> None:
    """What a page started before on this machine has remembered: MiniLM's counts and the device."""
    from core.anatomy import describe_cached
    from core.child import device_label

    describe_cached("minilm", "mean")
    device_label()


def startup(runs: Path, root: Path = ROOT) -> dict:
    """Seconds from launching the server until the freeze toggles and preset buttons can be used.

    The browser is started first, so its own start-up is not counted."""
    probes_done()
    env = {"FREEZE_LAB_RUNS_DIR": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with browser_page() as page, streamlit_server(env, keep_bytecode=True, root=root) as (url, launched):
        answered = time.time()
        page.goto(url)
        toggle = page.get_by_role("switch", name="layer.0", exact=True)  # visually hidden input behind the toggle
        preset = page.get_by_role("button", name="Scenario 1", exact=True)
        for control in (toggle, preset):
            control.wait_for(state="attached", timeout=120_000)
            while not control.is_enabled():
                time.sleep(0.02)
        interactive = time.time()
        page.get_by_text("Trainable parameters").first.wait_for(timeout=120_000)
        counted = time.time()
    return {"answered_s": answered - launched, "interactive_s": interactive - launched, "counts_s": counted - launched}


class ChromiumClock:
    """CPU-seconds (user + system) spent by chromium's processes, the browser and every renderer, GPU and
    utility process it starts (all descendants of this process named chrom*), between ``start`` and
    ``stop``. Sampled as it goes, so a renderer that ends in between still counts up to its last sample."""

    def __init__(self):
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.started = self.stopped = 0.0

    @staticmethod
    def now() -> dict[int, float]:
        seen = {}
        for process in psutil.Process().children(recursive=True):
            try:
                if process.name().lower().startswith("chrom"):
                    times = process.cpu_times()
                    seen[process.pid] = times.user + times.system
            except psutil.Error:  # it ended meanwhile
                continue
        return seen

    def start(self) -> None:
        self.first = self.last = self.now()
        self.started = time.time()

    def sample(self) -> None:
        self.last = {**self.last, **self.now()}

    def stop(self) -> None:
        self.sample()
        self.stopped = time.time()

    def per_30s(self) -> float:
        spent = sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())
        return round(30 * spent / max(self.stopped - self.started, 1e-9), 2)


def page_run(args, runs: Path, watch: bool = True) -> dict:
    """Train the default config from the page; note when each step's point shows up in the chart, and
    chromium's CPU time from the run's first event to its end.

    ``watch=False`` leaves the page once Train is pressed (the run goes on in the server's child):
    what is left is the cost of the page's machinery alone, without a browser drawing charts."""
    env = {"FREEZE_LAB_RUNS_DIR": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    seen: dict[int, float] = {}
    charted_task = None
    clock = ChromiumClock()
    with browser_page() as page, streamlit_server(env, root=args.page_root) as (url, _):
        page.goto(url)
        page.get_by_text("Trainable parameters").first.wait_for(timeout=120_000)
        fill_number(page, "Epochs", args.epochs)
        fill_number(page, "Evaluate every N steps", 0)
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Train", exact=True).click()
        if watch:
            page.evaluate(WATCH_POINTS_JS)
        deadline = time.time() + args.timeout
        while time.time() < deadline and not list(runs.glob("*/metrics.jsonl")):  # it has begun training
            time.sleep(0.2)
        clock.start()
        if not watch:
            page.goto("about:blank")
        while time.time() < deadline and not finished(runs):
            time.sleep(0.5)
            clock.sample()
        clock.stop()
        while watch and time.time() < deadline and not page.get_by_text(": finished").count():
            time.sleep(0.5)
        if watch:
            page.wait_for_timeout(1500)  # the last points' latency is measured too
            seen = {int(float(step)): ms / 1000 for step, ms in page.evaluate("() => window._seen").items()}
            charted_task = page.evaluate("() => window._task")
            page.screenshot(path=str(ROOT / "bench" / "results" / "page-finished.png"))
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    task = charted_task or next(e["task"] for e in steps if e["kind"] == "step")
    event_time = {e["step"]: e["time"] for e in steps if e["kind"] == "step" and e["task"] == task}
    latencies = [seen[s] - event_time[s] for s in seen if s in event_time]
    return {"latency_s": latencies, "summary": summary, "chromium_cpu_s_per_30s": clock.per_30s()}


def finished(runs: Path) -> bool:
    summaries = list(runs.glob("*/summary.json"))
    return bool(summaries) and json.loads(summaries[0].read_text()).get("status") not in ("running", None)


def cli_run(args, runs: Path) -> dict:
    config = runs.parent / "cli.yaml"
    config.write_text(f"backbone: {args.backbone}\ntraining:\n  epochs: {args.epochs}\n  eval_every: 0\n")
    subprocess.run([sys.executable, "-m", "core", "train", "--config", str(config), "--runs-dir", str(runs),
                    "--quiet"], cwd=ROOT, check=True, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                                          "PATH": "/usr/bin:/bin", **lock_dir()})
    run = next(runs.iterdir())
    return json.loads((run / "summary.json").read_text())


def lock_dir() -> dict[str, str]:
    """FREEZE_LAB_LOCK_DIR, if set, for the CLI run too: on a machine shared with other people's runs, a
    private lock folder keeps this benchmark's runs from waiting for theirs (the page's server inherits it)."""
    return {"FREEZE_LAB_LOCK_DIR": os.environ["FREEZE_LAB_LOCK_DIR"]} if "FREEZE_LAB_LOCK_DIR" in os.environ else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--starts", type=int, default=5, help="server starts to time (the median is reported)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--page-root", type=Path, default=ROOT,
                        help="the checkout whose page is served (default: this one)")
    args = parser.parse_args()
    if args.backbone != "minilm":
        raise SystemExit("the page run uses the page's default backbone; keep --backbone minilm")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    remember_probes()
    with tempfile.TemporaryDirectory() as tmp:
        starts = [startup(Path(tmp) / f"start-{i}", args.page_root) for i in range(args.starts)]
        print("start-ups:", starts, flush=True)
        page = page_run(args, Path(tmp) / "page-runs")
        print("page:", page["summary"]["examples_per_second"], "examples/s", flush=True)
        unwatched = page_run(args, Path(tmp) / "unwatched-runs", watch=False)
        cli = cli_run(args, Path(tmp) / "cli-runs")
    lat = sorted(page["latency_s"])
    interactive = sorted(s["interactive_s"] for s in starts)
    result = {} if not starts else {
        "startup_to_interactive_median_s": round(statistics.median(interactive), 2),
        "startup_to_interactive_all_s": [round(x, 2) for x in interactive],
        "startup_server_answered_median_s": round(statistics.median(s["answered_s"] for s in starts), 2),
        "startup_to_parameter_counts_median_s": round(statistics.median(s["counts_s"] for s in starts), 2),
    }
    result |= {
        "page_root": str(args.page_root),
        "load_average_at_end": [round(x, 2) for x in psutil.getloadavg()],
        "event_to_point_median_s": round(statistics.median(lat), 3) if lat else None,
        "event_to_point_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
        "event_to_point_max_s": round(lat[-1], 3) if lat else None,
        "points_measured": len(lat),
        "page_examples_per_second": page["summary"]["examples_per_second"],
        "cli_examples_per_second": cli["examples_per_second"],
        "page_unwatched_examples_per_second": unwatched["summary"]["examples_per_second"],
        "chromium_cpu_s_per_30s_watched": page["chromium_cpu_s_per_30s"],
        "chromium_cpu_s_per_30s_unwatched": unwatched["chromium_cpu_s_per_30s"],
        "page_wall_s": page["summary"]["wall_seconds"],
        "cli_wall_s": cli["wall_seconds"],
    }
    result["page_vs_cli_speed"] = round(result["page_examples_per_second"] / result["cli_examples_per_second"], 3)
    result["page_unwatched_vs_cli_speed"] = round(
        result["page_unwatched_examples_per_second"] / result["cli_examples_per_second"], 3)
    (ROOT / "bench" / "results" / "page.json").write_text(json.dumps(result, indent=2))
    print(f"{'measure':<38} {'value':>10}  target")
    targets = {"startup_to_interactive_median_s": "<= 5 s", "event_to_point_median_s": "<= 1 s",
               "event_to_point_p90_s": "<= 1 s", "page_vs_cli_speed": ">= 0.90",
               "page_unwatched_vs_cli_speed": ">= 0.97"}
    for key, value in result.items():
        print(f"{key:<38} {value!s:>10}  {targets.get(key, '')}")


if __name__ == "__main__":
    main()
