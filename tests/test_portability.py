"""Windows and macOS: what this Linux machine can show of them.

The CLI runs where ``fcntl``, ``os.nice``, Linux's scheduler calls and ``chrt``/``nice`` are missing
(as on Windows); the device lock is filelock's; helper children get a low priority without a shell
tool; every text file and pipe names UTF-8 (Windows would use its code page).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

import core.child
from conftest import ROOT
from core.child import child_env, cache_dir, core_command, lower_priority, run_core
from core.locks import lock_path
from core.runs import Run, RunStore

BUSY = "error: another run is already training on cpu; wait for it or stop it"

# Loaded before the project in every interpreter started with it on PYTHONPATH: what Windows lacks.
WINDOWS_LIKE = """
import os, sys
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
for name in ("nice", "sched_setscheduler", "SCHED_IDLE"):
    if hasattr(os, name):
        delattr(os, name)
"""


@pytest.fixture
def windows_like_env(tmp_path) -> dict[str, str]:
    """child_env() for interpreters without fcntl, os.nice or the Linux scheduler calls, on a PATH
    that has neither chrt nor nice."""
    boot, empty_bin = tmp_path / "boot", tmp_path / "bin"
    boot.mkdir()
    empty_bin.mkdir()
    (boot / "sitecustomize.py").write_text(WINDOWS_LIKE, encoding="utf-8")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(boot), env["PYTHONPATH"]])
    env["PATH"] = str(empty_bin)
    # Without fcntl, filelock falls back to soft locks for every library, the datasets cache's included: a
    # soft lock waits while its file exists, and the fcntl locks of this suite's other tests leave theirs in
    # the shared cache. (On Windows real msvcrt locks are used.) So these children get a cache of their own.
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets-cache")
    return env


def python(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, encoding="utf-8",
                          timeout=timeout)


def test_the_cli_path_works_without_fcntl_nice_or_chrt(windows_like_env, small_config, tiny_bert, tmp_path):
    probe = python(windows_like_env, "-c", "import os, shutil\ntry:\n    import fcntl\nexcept ImportError:\n"
                   "    print('no fcntl')\nprint(hasattr(os, 'nice'), hasattr(os, 'sched_setscheduler'), "
                   "shutil.which('nice'), shutil.which('chrt'))")
    assert probe.stdout.split("\n")[:2] == ["no fcntl", "False False None None"], probe.stderr  # the bootstrap works

    described = python(windows_like_env, "-m", "core", "describe", "--backbone", tiny_bert, "--json")
    assert described.returncode == 0, described.stderr[-2000:]
    assert json.loads(described.stdout)["total"] > 0

    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(small_config(tiny_bert).to_dict()), encoding="utf-8")
    runs = tmp_path / "runs"
    trained = python(windows_like_env, "-m", "core", "train", "--config", str(config), "--runs-dir", str(runs),
                     "--quiet")
    assert trained.returncode == 0, trained.stderr[-2000:]  # filelock's soft lock here; msvcrt's on Windows
    run = Run(Path(trained.stdout.strip().splitlines()[-1]))
    assert run.status == "finished" and run.has_weights()

    listed = python(windows_like_env, "-m", "core", "runs", "--runs-dir", str(runs), "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [(run.id, "finished")]

    # the page's route: a low-priority helper child, started by a parent that lacks the same things
    page = python(windows_like_env, "-c", "import sys\nfrom core.child import run_core\n"
                  "print(run_core('runs', '--runs-dir', sys.argv[1], '--json'), end='')", str(runs))
    assert page.returncode == 0, page.stderr[-2000:]
    assert json.loads(page.stdout) == json.loads(listed.stdout)


def test_two_trainers_started_at_once_on_one_device_the_second_is_refused(small_config, tiny_bert, tmp_path):
    """Two CLI trainers race for the cpu: one trains, the other gets the usual one-line refusal."""
    from filelock import FileLock, Timeout

    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(small_config(tiny_bert, training={"epochs": 100, "device": "cpu"}).to_dict()),
                      encoding="utf-8")
    runs = tmp_path / "runs"
    logs = [tmp_path / f"trainer-{i}.log" for i in (1, 2)]
    trainers = []
    for log in logs:
        with log.open("w", encoding="utf-8") as handle:
            trainers.append(subprocess.Popen(core_command("train", "--config", str(config), "--runs-dir", str(runs),
                                                          "--quiet"), cwd=ROOT, env=child_env(),
                                             stdout=handle, stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 240
        while all(t.poll() is None for t in trainers) and time.time() < deadline:
            time.sleep(0.2)
        (loser,) = [i for i, t in enumerate(trainers) if t.poll() is not None]
        winner = 1 - loser
        assert trainers[loser].returncode == 2
        assert logs[loser].read_text(encoding="utf-8").strip().splitlines()[-1] == BUSY
        with pytest.raises(Timeout):  # the winner holds filelock's lock on the device
            FileLock(lock_path("cpu"), blocking=False).acquire()
        (run,) = RunStore(runs).list()
        run.request_stop()
        assert trainers[winner].wait(120) == 1
    finally:
        for t in trainers:
            t.kill()
            t.wait()
    assert run.status == "stopped" and run.has_weights()
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [run.id]  # the refused one made no run


# ---- low priority without chrt or nice ---------------------------------------------------------------

@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle scheduling class")
def test_on_linux_a_helper_child_gets_the_idle_scheduling_class(sleeper):
    lower_priority(sleeper)
    assert os.sched_getscheduler(sleeper) == os.SCHED_IDLE


def test_without_linux_scheduling_psutil_gives_the_lowest_priority(sleeper, monkeypatch):
    monkeypatch.delattr(os, "sched_setscheduler", raising=False)  # as on macOS and Windows
    lower_priority(sleeper)
    assert psutil.Process(sleeper).nice() == (psutil.IDLE_PRIORITY_CLASS if os.name == "nt" else 19)


def test_a_priority_that_cannot_be_changed_is_no_error(sleeper, monkeypatch):
    def refuse(self, value=None):
        raise psutil.AccessDenied(self.pid)

    monkeypatch.delattr(os, "sched_setscheduler", raising=False)
    monkeypatch.setattr(psutil.Process, "nice", refuse)
    lower_priority(sleeper)  # the child runs on, at normal priority
    assert psutil.pid_exists(sleeper)


def test_run_core_lowers_its_childs_priority(monkeypatch):
    lowered = []
    monkeypatch.setattr(core.child, "lower_priority", lowered.append)
    assert "scenario1" in run_core("presets")
    assert len(lowered) == 1 and lowered[0] != os.getpid()


# ---- the OS's cache folder ----------------------------------------------------------------------------

def test_remembered_counts_live_in_the_os_cache_folder_unless_the_variable_says(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("FREEZE_LAB_CACHE_DIR")
    monkeypatch.setattr(platformdirs, "user_cache_path", lambda app, appauthor: tmp_path / "os-cache" / app)
    assert cache_dir() == tmp_path / "os-cache" / "freeze-lab"
    monkeypatch.setenv("FREEZE_LAB_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


# ---- text files name their encoding ---------------------------------------------------------------------

# callable name -> (position of its mode argument, default mode); "read_text"/"write_text" are text-only
OPENERS = {"open": (1, "r"), "fdopen": (1, "r"), "NamedTemporaryFile": (0, "w+b"), "TemporaryFile": (0, "w+b"),
           "SpooledTemporaryFile": (1, "w+b")}
TEXT_ONLY = {"read_text": 0, "write_text": 1}  # the position of their encoding argument


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def lacks_encoding(call: ast.Call) -> bool:
    """A call that opens text (a file, a pipe) without naming its encoding."""
    name, keywords = call_name(call), {k.arg: k.value for k in call.keywords}
    if "encoding" in keywords:
        return False
    if name in TEXT_ONLY:
        return len(call.args) <= TEXT_ONLY[name]
    if name in OPENERS:
        receiver = call.func.value.id if isinstance(call.func, ast.Attribute) and isinstance(
            call.func.value, ast.Name) else None
        if name == "open" and receiver == "os":
            return False  # a descriptor, not a text file
        position, default = OPENERS[name]
        if name == "open" and isinstance(call.func, ast.Attribute) and receiver != "io":
            position = 0  # Path.open(mode, buffering, encoding)
        return not binary_mode(call, position, default) and len(call.args) <= position + 2  # encoding by position
    text = keywords.get("text", keywords.get("universal_newlines"))
    return isinstance(text, ast.Constant) and text.value is True  # subprocess pipes in the locale's encoding


def binary_mode(call: ast.Call, position: int, default: str) -> bool:
    keywords = {k.arg: k.value for k in call.keywords}
    mode = keywords.get("mode", call.args[position] if len(call.args) > position else ast.Constant(default))
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value


def unnamed_encodings(source: str, filename: str = "<snippet>") -> list[str]:
    return [f"{filename}:{node.lineno}: {ast.unparse(node)}" for node in ast.walk(ast.parse(source, filename))
            if isinstance(node, ast.Call) and lacks_encoding(node)]


BAD = """
open(p)
open(p, "w")
open(p, mode="a+")
path.open()
path.open("w")
path.read_text()
path.write_text("x")
os.fdopen(fd, "w")
tempfile.NamedTemporaryFile("w")
subprocess.run(cmd, text=True)
subprocess.Popen(cmd, universal_newlines=True)
open(p, mode)
"""
GOOD = """
open(p, encoding="utf-8")
open(p, "w", encoding="utf-8")
open(p, "rb")
open(p, mode="a+b")
path.open("wb")
path.open(encoding="utf-8", newline="")
path.read_text(encoding="utf-8")
path.read_bytes()
path.write_text("x", encoding="utf-8")
path.write_text("x", "utf-8")
os.open(p, os.O_RDWR)
os.fdopen(fd, "rb")
tempfile.NamedTemporaryFile()
tempfile.NamedTemporaryFile("w", encoding="utf-8")
subprocess.run(cmd, capture_output=True)
subprocess.run(cmd, text=True, encoding="utf-8")
"""


def test_the_encoding_check_tells_text_from_binary():
    assert [line.split(": ", 1)[1] for line in unnamed_encodings(BAD)] == [
        "open(p)", "open(p, 'w')", "open(p, mode='a+')", "path.open()", "path.open('w')", "path.read_text()",
        "path.write_text('x')", "os.fdopen(fd, 'w')", "tempfile.NamedTemporaryFile('w')",
        "subprocess.run(cmd, text=True)", "subprocess.Popen(cmd, universal_newlines=True)",
        "open(p, mode)"]  # a mode it cannot read counts as text
    assert unnamed_encodings(GOOD) == []


def test_every_text_file_and_pipe_in_core_and_dashboard_names_its_encoding():
    files = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(files) > 20
    found = [hit for path in files for hit in unnamed_encodings(path.read_text(encoding="utf-8"),
                                                                 str(path.relative_to(ROOT)))]
    assert found == []


# ---- paths typed on the page --------------------------------------------------------------------------

@pytest.mark.parametrize("name, is_path", [
    ("C:\\Users\\ana\\models\\bert", True), ("D:/models/bert", True), ("\\\\server\\share\\bert", True),
    ("/home/ana/bert", True), (".\\models\\bert", True), ("~/bert", True),
    ("sentence-transformers/all-MiniLM-L6-v2", False), ("minilm", False),
])
def test_windows_paths_are_paths_and_hub_ids_are_not(name, is_path, monkeypatch):
    """So a typed C:\\ path gets the page's allowed-folder check like a typed /path does."""
    import pathlib

    import core.backbones

    monkeypatch.setattr(core.backbones, "PurePath", pathlib.PureWindowsPath)
    assert core.backbones.typed_as_path(name) is is_path


# ---- renames while a reader has the file open (Windows) ------------------------------------------------

def flaky_replace(monkeypatch, failures: int) -> list:
    """os.replace refused ``failures`` times, as Windows does while another process reads the target."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) <= failures:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_summary_rewrite_waits_for_a_reader_on_windows(tmp_path, monkeypatch):
    import core.runs

    path = tmp_path / "summary.json"
    path.write_text('{"status": "running"}', encoding="utf-8")
    monkeypatch.setattr(core.runs, "REPLACE_TRIES", 20)  # the Windows setting
    calls = flaky_replace(monkeypatch, failures=2)
    core.runs.atomic_write_json(path, {"status": "stopped"})
    assert len(calls) == 3 and json.loads(path.read_text(encoding="utf-8")) == {"status": "stopped"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_elsewhere_a_refused_rename_fails_at_once_and_keeps_the_old_file(tmp_path, monkeypatch):
    import core.runs

    path = tmp_path / "summary.json"
    path.write_text('{"status": "running"}', encoding="utf-8")
    monkeypatch.setattr(core.runs, "REPLACE_TRIES", 1)
    calls = flaky_replace(monkeypatch, failures=1)
    with pytest.raises(PermissionError):
        core.runs.atomic_write_json(path, {"status": "stopped"})
    assert len(calls) == 1 and json.loads(path.read_text(encoding="utf-8")) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
