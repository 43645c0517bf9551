"""The page in a real browser: Debian's chromium driven by playwright.

Skipped when chromium or playwright is missing, unless FREEZE_LAB_REQUIRE_BROWSER=1
(CI sets it, so there a missing browser fails instead of skipping).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from server import CHROMIUM, ROOT, browser_page, streamlit_server

NEED_BROWSER = os.environ.get("FREEZE_LAB_REQUIRE_BROWSER") == "1"
have_browser = Path(CHROMIUM).exists() and shutil.which("chromium") is not None
try:
    import playwright  # noqa: F401
except ImportError:
    have_browser = False
pytestmark = pytest.mark.skipif(not have_browser and not NEED_BROWSER,
                                reason="needs Debian's chromium and the playwright package")
ARTIFACTS = ROOT / "artifacts"

POINTS_JS = "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => (p.data && p.data[0] ? p.data[0].x.length : 0))"


def test_preset_train_charts_stop_in_a_real_browser(tmp_path, tiny_bert):
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_ALLOWED_DIRS": tiny_bert,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        backbone = page.get_by_label("Pretrained encoder", exact=True).and_(page.locator("input"))
        backbone.wait_for(timeout=60_000)
        backbone.fill(tiny_bert)
        backbone.press("Enter")
        page.get_by_text("1,003,671").first.wait_for(timeout=60_000)  # the tiny backbone's readout
        page.get_by_role("button", name="Transfer learning").click()
        page.get_by_text("Transfer learning: freeze the lower k layers").first.wait_for(timeout=30_000)
        epochs = page.get_by_label("Epochs", exact=True).and_(page.locator("input"))
        epochs.fill("30")
        epochs.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_function(f"() => ({POINTS_JS})().some(n => n > 0)", timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / "browser-training.png"), full_page=True)
        page.get_by_role("button", name="Stop", exact=True).click()
        page.get_by_text("stopped at step").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-stopped.png"), full_page=True)
        page.get_by_role("tab", name="Compare runs").click()  # a closed tab is computed when opened
        page.get_by_text("Runs to compare (pick two or more)").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Train").click()
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=30_000)
        embeddings = page.get_by_role("switch", name="embeddings", exact=True)
        assert embeddings.is_checked() and page.get_by_text("Transfer learning: freeze the lower k").count()
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["preset"] == "lower_k"
    assert summary["frozen"][:1] == ["embeddings"]
    assert (ARTIFACTS / "browser-stopped.png").stat().st_size > 10_000


def test_settings_keep_their_values_when_the_counts_arrive(tmp_path, monkeypatch):
    """Counts remembered from an earlier start arrive a moment after the first drawing. Rerunning the
    page from the polling fragment at that moment reset every widget to its minimum in chromium."""
    from core import anatomy

    cache = tmp_path / "cache"
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(cache))
    monkeypatch.setattr(anatomy, "describe_in_child", anatomy.describe)  # remember MiniLM's counts here
    anatomy.describe_cached("minilm", "mean")
    env = {"FREEZE_LAB_RUNS_DIR": str(tmp_path / "runs"), "FREEZE_LAB_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        page.get_by_text("22,568,071").first.wait_for(timeout=60_000)  # MiniLM's readout
        page.get_by_text("Device: cpu").or_(page.get_by_text("Device: cuda")).or_(
            page.get_by_text("Device: mps")).first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)

        def value(label: str) -> str:
            return page.get_by_label(label, exact=True).and_(page.locator("input")).input_value()

        assert value("Pretrained encoder") == "minilm"
        assert (value("Epochs"), value("Batch size"), value("Max length (tokens)")) == ("2", "32", "64")
        assert value("Learning rate (backbone)") == "5.0e-5"
