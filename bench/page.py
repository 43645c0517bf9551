"""Page benchmark: start-up, event-to-point latency, and the page's cost to training speed.

    python3 bench/page.py [--epochs 1] [--backbone minilm]

Prints a table and writes bench/results/page.json. Needs Debian's chromium and playwright.
Measures, on this machine:
1. seconds from launching the server until the freeze toggles are interactive in a browser;
2. seconds from a step's event (its timestamp in metrics.jsonl) until the point is in the chart;
3. examples/s of the same config trained from the page and from ``python -m core train``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from server import browser_page, streamlit_server  # noqa: E402

MAX_X_JS = """() => { const p = document.querySelector('.js-plotly-plot');
  if (!p || !p.data || !p.data[0] || !p.data[0].x.length) return -1;
  return Math.max(...p.data[0].x); }"""


def page_run(args, runs: Path) -> dict:
    env = {"FREEZE_LAB_RUNS_DIR": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    seen: dict[int, float] = {}
    with streamlit_server(env) as (url, launched), browser_page() as page:
        answered = time.time()
        page.goto(url)
        toggle = page.get_by_role("switch", name="layer.0", exact=True)  # visually hidden input behind the toggle
        toggle.wait_for(state="attached", timeout=120_000)
        while not toggle.is_enabled():
            time.sleep(0.02)
        interactive = time.time()
        epochs = page.get_by_label("Epochs", exact=True).and_(page.locator("input"))
        epochs.fill(str(args.epochs))
        epochs.press("Enter")
        every = page.get_by_label("Evaluate every N steps", exact=True).and_(page.locator("input"))
        every.fill("0")
        every.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Train", exact=True).click()
        page.get_by_text("Loading the backbone and the data").or_(page.get_by_text("training on")).first.wait_for(
            timeout=60_000)
        deadline = time.time() + args.timeout
        while time.time() < deadline:
            top = page.evaluate(MAX_X_JS)
            now = time.time()
            if top is not None and top >= 0 and int(top) not in seen:
                seen[int(top)] = now
            if page.get_by_text(": finished").count():
                break
            time.sleep(0.2)
        page.screenshot(path=str(ROOT / "bench" / "results" / "page-finished.png"))
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first_task = next(e["task"] for e in steps if e["kind"] == "step")
    event_time = {e["step"]: e["time"] for e in steps if e["kind"] == "step" and e["task"] == first_task}
    latencies = [seen[s] - event_time[s] for s in seen if s in event_time]
    return {"startup_to_interactive_s": interactive - launched, "health_to_interactive_s": interactive - answered,
            "latency_s": latencies, "points_seen": len(latencies), "summary": summary}


def cli_run(args, runs: Path) -> dict:
    config = runs.parent / "cli.yaml"
    config.write_text(f"backbone: {args.backbone}\ntraining:\n  epochs: {args.epochs}\n  eval_every: 0\n")
    subprocess.run([sys.executable, "-m", "core", "train", "--config", str(config), "--runs-dir", str(runs),
                    "--quiet"], cwd=ROOT, check=True, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                                          "PATH": "/usr/bin:/bin"})
    run = next(runs.iterdir())
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.backbone != "minilm":
        raise SystemExit("the page run uses the page's default backbone; keep --backbone minilm")
    with tempfile.TemporaryDirectory() as tmp:
        page = page_run(args, Path(tmp) / "page-runs")
        cli = cli_run(args, Path(tmp) / "cli-runs")
    lat = sorted(page["latency_s"])
    result = {
        "startup_to_interactive_s": round(page["startup_to_interactive_s"], 2),
        "health_to_interactive_s": round(page["health_to_interactive_s"], 2),
        "event_to_point_median_s": round(statistics.median(lat), 3) if lat else None,
        "event_to_point_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
        "event_to_point_max_s": round(lat[-1], 3) if lat else None,
        "points_measured": len(lat),
        "page_examples_per_second": page["summary"]["examples_per_second"],
        "cli_examples_per_second": cli["examples_per_second"],
    }
    result["page_vs_cli_speed"] = round(result["page_examples_per_second"] / result["cli_examples_per_second"], 3)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "page.json").write_text(json.dumps(result, indent=2))
    print(f"{'measure':<36} {'value':>10}  target")
    targets = {"startup_to_interactive_s": "<= 5 s", "event_to_point_median_s": "<= 1 s",
               "event_to_point_p90_s": "<= 1 s", "page_vs_cli_speed": ">= 0.95"}
    for key, value in result.items():
        print(f"{key:<36} {value!s:>10}  {targets.get(key, '')}")


if __name__ == "__main__":
    main()
