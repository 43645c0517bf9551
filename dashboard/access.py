"""Serving a classroom: what a visitor may read, start and change.

A page on loopback (``localhost``, ``127.0.0.1``, ``::1``) is one person's: without a
teacher's passcode everything works as on any desktop tool. Any other address is
*served*: typed local paths are off unless the teacher allowed folders, names typed
for the hub are checked as names, and a run belongs to the browser session that
started it. Stopping, renaming or deleting someone else's run takes the teacher's
passcode (``FREEZE_LAB_TEACHER_PASSCODE`` or the Streamlit secret ``teacher_passcode``),
entered once per session, compared in constant time, never stored or printed.

The rules themselves (``may``, ``check_limits``, ``check_hub_name``) are plain
functions of their inputs, so they can be tested without a page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass

import streamlit as st

from dashboard.settings import ALLOWED_DIRS, extra_allowed_dirs, names_local_path

LOOPBACK = ("localhost", "127.0.0.1", "::1")
PASSCODE_ENV, PASSCODE_SECRET = "FREEZE_LAB_TEACHER_PASSCODE", "teacher_passcode"
HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
VISITOR, TEACHER = "_visitor", "_teacher"  # session keys: this session's id, and whether it gave the passcode
FAILURES, MAX_TRIES = "_teacher_failures", 10  # wrong passcodes given in this session, and how many may be
LIMIT_ENV = {"epochs": "FREEZE_LAB_MAX_EPOCHS", "train_examples": "FREEZE_LAB_MAX_TRAIN_EXAMPLES",
             "max_length": "FREEZE_LAB_MAX_LENGTH", "sweep_runs": "FREEZE_LAB_MAX_SWEEP_RUNS"}
SERVED_SWEEP_RUNS = 8  # a served page's default: one visitor's sweep must not hold the device for the lesson
BACKBONES_ENV = "FREEZE_LAB_ALLOWED_BACKBONES"


# ---- where the page is served ---------------------------------------------------------------------

def is_served(address: str | None) -> bool:
    """True unless the server listens on loopback only. No address means every interface."""
    return (address or "").strip().strip("[]").lower() not in LOOPBACK


def served() -> bool:
    return is_served(st.get_option("server.address"))


def local_paths_offered() -> bool:
    """A served page reads typed paths only from folders the teacher listed."""
    return not served() or bool(extra_allowed_dirs())


def mode_line() -> str:
    if not served():
        return ("On this computer only (localhost): data files can be uploaded or typed as paths in the project, "
                f"uploads and {ALLOWED_DIRS} folders.")
    if local_paths_offered():
        return (f"Served to the network: visitors upload data files or type paths inside the project, uploads and "
                f"{ALLOWED_DIRS} folders; runs can be stopped by whoever started them"
                + (" or the teacher." if passcode() else "."))
    return ("Served to the network: visitors upload their data files (typed paths are off); runs can be stopped "
            "by whoever started them" + (" or the teacher." if passcode() else "."))


def check_hub_name(text: str, what: str) -> str:
    """A name typed by a visitor of a served page, for the hub: ``name`` or ``owner/name``, never a path
    (not even one that merely names something on the server's disk)."""
    name = text.strip()
    if not HUB_NAME.fullmatch(name) or ".." in name or names_local_path(name):
        raise ValueError(f"{what} {text!r}: on a shared page, give a hub name such as 'owner/name'; "
                         "paths are not read")
    return name


# ---- who may change what --------------------------------------------------------------------------

def passcode() -> str | None:
    """The teacher's passcode, from the environment or Streamlit's secrets; None when none is set."""
    value = os.environ.get(PASSCODE_ENV)
    if not value:
        try:
            value = st.secrets.get(PASSCODE_SECRET)
        except (FileNotFoundError, KeyError):  # no secrets file: StreamlitSecretNotFoundError is one
            value = None
    return str(value) if value else None


def passcode_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def visitor_id() -> str:
    """This browser session's id (a digest of a random token that never leaves the server)."""
    if VISITOR not in st.session_state:
        st.session_state[VISITOR] = hashlib.sha256(secrets.token_bytes(32)).hexdigest()[:24]
    return st.session_state[VISITOR]


def is_teacher() -> bool:
    return bool(st.session_state.get(TEACHER)) and passcode() is not None


def may(action: str, run_owner: str | None, visitor: str, teacher: bool, passcode_set: bool,
        served_page: bool) -> bool:
    """Whether ``visitor`` may ``stop``, ``rename``, ``reevaluate`` or ``delete`` a run started by ``run_owner``.

    One person's page (loopback, no passcode): anything. Otherwise the teacher may do anything; a starter
    may stop, rename and re-evaluate their own run, and delete it only where a teacher could undo nothing anyway
    (a passcode is set); nobody deletes on a served page without a passcode."""
    if teacher or (not passcode_set and not served_page):
        return True
    own = run_owner is not None and run_owner == visitor
    if action in ("stop", "rename", "reevaluate"):
        return own
    if action == "delete":
        return own and passcode_set
    raise ValueError(f"unknown action {action!r}")


def allowed(action: str, run_owner: str | None) -> bool:
    """``may`` for this session on this page."""
    return may(action, run_owner, visitor_id(), is_teacher(), passcode() is not None, served())


def why_not(action: str) -> str:
    if served() and passcode() is None and action == "delete":
        return "On a shared page without a teacher's passcode, runs cannot be deleted."
    return f"Only the person who started this run, or the teacher with the passcode, can {action} it."


def teacher_unlock() -> None:
    """Callback of the passcode form: compare, remember only the outcome, and forget what was typed. Each
    wrong try waits a second longer (at most MAX_TRIES per session), so guessing takes long."""
    expected, given = passcode(), st.session_state.get("teacher_passcode_input", "")
    st.session_state["teacher_passcode_input"] = ""
    failures = st.session_state.get(FAILURES, 0)
    if failures >= MAX_TRIES:
        st.session_state["_teacher_message"] = "Too many wrong passcodes in this session."
        return
    st.session_state[TEACHER] = bool(expected and given and passcode_matches(given, expected))
    if not st.session_state[TEACHER]:
        st.session_state[FAILURES] = failures + 1
        time.sleep(min(failures + 1, 5))
    st.session_state["_teacher_message"] = "Teacher mode on." if st.session_state[TEACHER] else "Wrong passcode."


def teacher_panel() -> None:
    """In the sidebar, only where a passcode is set."""
    if passcode() is None:
        return
    with st.sidebar:
        st.markdown("**Teacher**")
        if is_teacher():
            st.caption("Teacher mode: you may stop, rename and delete any run; the epoch, example and length "
                       "limits do not apply to you.")
            return
        st.text_input("Teacher's passcode", type="password", key="teacher_passcode_input")
        st.button("Unlock", key="teacher_unlock", on_click=teacher_unlock)
        if message := st.session_state.pop("_teacher_message", None):
            st.caption(message)


# ---- limits for visitors --------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """What a visitor's setup may ask for; None: no limit."""

    epochs: int | None = None
    train_examples: int | None = None  # per task
    max_length: int | None = None
    sweep_runs: int | None = None  # runs in one sweep or one repeat
    backbones: tuple[str, ...] | None = None  # None: any backbone
    problem: str = ""  # a limit the teacher set that is not a number: nothing trains until it is fixed

    def describe(self) -> str:
        parts = [f"at most {self.epochs} epoch(s)" if self.epochs else "",
                 f"{self.train_examples:,} training examples per task" if self.train_examples else "",
                 f"max length {self.max_length}" if self.max_length else "",
                 f"{self.sweep_runs} runs per sweep" if self.sweep_runs else "",
                 f"backbones {', '.join(self.backbones)}" if self.backbones else ""]
        return "; ".join(p for p in parts if p)


def read_limits(environ: dict, served_page: bool) -> Limits:
    """The teacher's limits from the environment. The backbones default to the packaged MiniLM on a served
    page; ``*`` allows any. A value that is not a number becomes ``problem``, which refuses every setup."""
    numbers, problems = {}, []
    for field, variable in LIMIT_ENV.items():
        text = environ.get(variable, "").strip()
        if text.isdigit() and int(text) > 0:
            numbers[field] = int(text)
        elif text:
            problems.append(f"{variable}={text!r} is not a whole number above 0; the teacher must fix it and "
                            "restart the page")
    listed = [b.strip() for b in environ.get(BACKBONES_ENV, "").split(",") if b.strip()]
    backbones = None if listed == ["*"] else tuple(listed) if listed else ("minilm",) if served_page else None
    if served_page:
        numbers.setdefault("sweep_runs", SERVED_SWEEP_RUNS)
    return Limits(**numbers, backbones=backbones, problem="; ".join(problems))


def limits() -> Limits:
    return read_limits(dict(os.environ), served())


def check_limits(limits: Limits, config, train_counts: dict[str, int | None], backbone: str | None = None,
                 runs: int = 1) -> None:
    """Refuse (ValueError, one line) a setup beyond the limits. ``train_counts``: training examples per task
    (None: not known, e.g. a run from before the count was kept); ``backbone``: where the weights come from
    in the end (a warm start's first run's backbone); ``runs``: how many runs a sweep or repeat queues."""
    training = config.training
    if limits.problem:
        raise ValueError(limits.problem)
    if limits.backbones is not None and backbone is not None and backbone not in limits.backbones:
        raise ValueError(f"backbone {backbone!r} is not offered on this page; choose one of "
                         f"{', '.join(limits.backbones)}")
    if limits.epochs and training.epochs > limits.epochs:
        raise ValueError(f"epochs {training.epochs} is over this page's limit of {limits.epochs} ({LIMIT_ENV['epochs']})")
    if limits.max_length and training.max_length > limits.max_length:
        raise ValueError(f"max length {training.max_length} is over this page's limit of {limits.max_length} "
                         f"({LIMIT_ENV['max_length']})")
    if limits.sweep_runs and runs > limits.sweep_runs:
        raise ValueError(f"{runs} runs in one go is over this page's limit of {limits.sweep_runs} "
                         f"({LIMIT_ENV['sweep_runs']}); pick fewer variants or seeds")
    for task, count in train_counts.items():
        if limits.train_examples and count is None:
            raise ValueError(f"task {task}: this run does not say how many training examples it used, so it "
                             "cannot be repeated within this page's limits")
        if limits.train_examples and count > limits.train_examples:
            raise ValueError(f"task {task} has {count:,} training examples, over this page's limit of "
                             f"{limits.train_examples:,}; set 'Max training examples' to {limits.train_examples:,} "
                             "or fewer")
