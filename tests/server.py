"""Start the real Streamlit server on a free localhost port, for browser tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict[str, str], timeout: float = 60.0, keep_bytecode: bool = False,
                     address: str = "127.0.0.1", root: Path = ROOT):
    """Yield (url, launch time); the server is stopped afterwards. ``keep_bytecode`` lets Python write and
    reuse its bytecode cache even where the environment says not to (as Python does by default).
    ``address``: another loopback address such as 127.0.0.2 makes the page count itself as served.
    ``root``: the checkout whose page is served (a benchmark may serve an older one)."""
    port = free_port()
    env = {**os.environ, **env}
    if keep_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.address", address, "--server.headless", "true"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://{address}:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() - started > timeout:
                out = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"streamlit did not start: {out[-2000:]}")
            time.sleep(0.1)
        yield url, started
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def browser():
    """Debian's chromium through playwright; ``browser.new_context()`` is a second visitor."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def browser_page():
    with browser() as launched:
        yield launched.new_page(viewport={"width": 1400, "height": 3000})


def fill_number(page, label: str, value) -> None:
    """Type a value into the page's number input with exactly this label, and commit it (Enter)."""
    box = page.get_by_label(label, exact=True).and_(page.locator("input"))
    box.fill(str(value))
    box.press("Enter")
