"""Take the README's screenshots again: ``python3 docs/images/screenshots.py`` (offline, a few minutes on a CPU).

Two runs of the packaged MiniLM on the demo data are trained with the CLI into a temporary runs folder and
tagged; then the page is served (tests/server.py) and Debian's chromium (playwright) photographs the Train
tab while a third run trains, and the Compare runs tab once it has finished. The PNGs are reduced to a
palette to stay small.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from server import browser, streamlit_server  # noqa: E402

OUT = Path(__file__).resolve().parent
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
RUNS = [  # name, freeze section, epochs, tags
    ("heads only", "{preset: scenario2}", 3, ["baseline"]),
    ("lower 4 frozen", "{preset: lower_k, k: 4}", 1, ["lesson"]),
]


def core(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def train_runs(runs_dir: Path) -> None:
    """The CLI's runs, each trained once: a name already in ``runs_dir`` is kept as it is, and a run the
    page trained on an earlier call is removed."""
    from core.runs import RunStore

    store = RunStore(runs_dir)
    for run in store.list():
        if run.name not in {name for name, *_ in RUNS} or run.status != "finished":
            store.delete(run.id)
    kept = {run.name for run in store.list()}
    for name, freeze, epochs, tags in RUNS:
        if name in kept:
            continue
        config = Path(tempfile.gettempdir()) / f"freeze-lab-{name.replace(' ', '-')}.yaml"
        config.write_text(f"name: {name}\nfreeze: {freeze}\ntraining: {{epochs: {epochs}, eval_every: 10}}\n")
        folder = Path(core("train", "--config", str(config), "--runs-dir", str(runs_dir), "--quiet"))
        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        core("runs", folder.name, *tag_args, "--runs-dir", str(runs_dir))


def small_png(path: Path) -> None:
    """A 256-colour palette PNG: the page's flat colours survive, the file shrinks several times."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def top(page, text: str) -> float:
    return page.get_by_text(text, exact=True).first.bounding_box()["y"]


def clip(page, name: str, y0: float, y1: float) -> None:
    """Photograph the band from y0 to y1 of a page tall enough to need no scrolling."""
    page.screenshot(path=str(OUT / name), clip={"x": 60, "y": y0 - 12, "width": 1160, "height": y1 - y0 + 24})
    small_png(OUT / name)


def live_charts_bottom(page) -> float:
    """The bottom of the live chart's row of task charts (their legends included)."""
    box = page.locator(".fl-live-grid").bounding_box()
    return box["y"] + box["height"]


def shoot(url: str) -> None:
    with browser() as launched:
        page = launched.new_page(viewport={"width": 1280, "height": 4000})  # tall: every section in view
        page.goto(url)
        page.get_by_role("button", name="Scenario 2", exact=True).click(timeout=120_000)
        page.get_by_text("Scenario 2: freeze the backbone").first.wait_for(timeout=60_000)
        page.mouse.move(0, 0)  # no tooltip over the buttons
        page.wait_for_timeout(1000)
        clip(page, "train.png", top(page, "3. Freeze"), top(page, "4. Settings") - 20)
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_function("() => [...document.querySelectorAll('.fl-live-plot')]"
                               ".some(p => p.series && p.series.accuracy.x.length > 2)", timeout=600_000)
        page.wait_for_timeout(1500)
        start = top(page, "5. Train and watch")
        clip(page, "live.png", start, live_charts_bottom(page))
        page.get_by_text(": finished").first.wait_for(timeout=900_000)
        page.get_by_role("tab", name="Compare runs").click()
        page.get_by_text("Runs to compare (pick two or more)").wait_for(timeout=60_000)
        page.get_by_text("What differs", exact=True).wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
        clip(page, "compare.png", top(page, "Tags"), top(page, "What differs") - 16)


def main() -> None:
    """``--runs-dir DIR`` keeps the CLI's runs there and reuses them on the next call."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, help="keep (and reuse) the trained runs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or Path(scratch) / "runs"
        train_runs(runs_dir)
        with streamlit_server({**ENV, "FREEZE_LAB_RUNS_DIR": str(runs_dir)}, timeout=120) as (url, _):
            shoot(url)


if __name__ == "__main__":
    main()
