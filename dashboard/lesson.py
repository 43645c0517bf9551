"""Lesson mode: a teacher's ``lesson`` section (``core.config.LessonConfig``), from a link or a setup
file. The page shows its title, hides or locks the sections it names, asks its question before Train,
keeps the student's guess with the run (the summary's ``lesson`` entry, ``core.runs.Run.record_guess``)
and, once the run has ended, shows the guess beside what the runs measured, with the compare verdict
where another run of the lesson tried a different setup.

A lesson is a way to teach, not a lock against the student: the link can be edited. The teacher's
limits (``dashboard.access``) are what a visitor cannot get around.
"""

from __future__ import annotations

import streamlit as st

from core.compare import DONE  # the statuses whose accuracies a comparison reads
from core.config import LessonConfig
from core.presets import PRESETS
from dashboard import access, resources

LESSON, GUESS = "_lesson", "lesson_guess"  # the active lesson; the widget key of the student's answer
SECTION_NAMES = {"backbone": "1. Backbone", "data": "2. Data", "freeze": "3. Freeze", "settings": "4. Settings"}


def start(lesson: LessonConfig | None) -> None:
    """Make a lesson the page's (None: leave lesson mode); a new lesson asks its question afresh."""
    if lesson != st.session_state.get(LESSON):
        st.session_state.pop(GUESS, None)
    st.session_state[LESSON] = lesson


def active() -> LessonConfig | None:
    return st.session_state.get(LESSON)


def hidden(section: str) -> bool:
    return (lesson := active()) is not None and section in lesson.hide


def locked(section: str) -> bool:
    return (lesson := active()) is not None and section in lesson.lock


def header() -> None:
    """The lesson's title, and what the teacher hid or locked."""
    lesson = active()
    if lesson is None:
        return
    st.header(lesson.title)
    parts = [f"{', '.join(SECTION_NAMES[s] for s in lesson.hide)} hidden" if lesson.hide else "",
             f"{', '.join(SECTION_NAMES[s] for s in lesson.lock)} set by the teacher (shown, not editable)"
             if lesson.lock else ""]
    st.caption("Lesson mode. " + "; ".join(p for p in parts if p) + ("." if any(parts) else ""))


def ask() -> str | None:
    """The lesson's question before Train; the student's guess, or None while there is none (Train waits)."""
    lesson = active()
    if lesson is None or not lesson.ask:
        return None
    st.markdown(f"**Before you train:** {lesson.ask}")
    if lesson.choices:
        if st.session_state.get(GUESS) not in lesson.choices:
            st.session_state.pop(GUESS, None)
        guess = st.radio("Your guess", lesson.choices, index=None, key=GUESS)
    else:
        guess = st.text_input("Your guess", key=GUESS, max_chars=200).strip() or None
    if guess is None:
        st.caption("Make your guess to train: it is kept with the run and shown beside the answer.")
    return guess


def needs_guess() -> bool:
    """Whether Train must wait for a guess."""
    lesson = active()
    return lesson is not None and bool(lesson.ask) and not st.session_state.get(GUESS)


def setup_name(run) -> str:
    """A run's freeze setup in a few words: its preset (with k or the head), else its frozen parts."""
    summary = run.summary()
    try:
        freeze = run.config().freeze
    except ValueError:
        freeze = None
    if preset := summary.get("preset"):
        title = PRESETS[preset].title.split(":")[0] if preset in PRESETS else preset
        extra = f" (k = {freeze.k})" if freeze and preset == "lower_k" else (
            f" (head.{freeze.head})" if freeze and preset == "scenario3" else "")
        return title + extra
    frozen = summary.get("frozen") or []
    return f"frozen: {', '.join(frozen)}" if frozen else "nothing frozen"


def lesson_runs(title: str, before: float) -> list:
    """Finished runs of the lesson with this title, newest first, started before ``before``."""
    runs = []
    for run in resources.run_store().list():
        summary = run.summary()
        if (summary.get("lesson") or {}).get("title") == title and summary.get("status") in DONE \
                and summary.get("started_at", 0) < before:
            runs.append(run)
    return runs


def answer(run) -> None:
    """After a lesson's run: the guess beside what it measured, and beside the verdict against the latest
    earlier run of the lesson with another setup (``core.compare``). On a served page only its starter sees
    it there: the live view shows every visitor the run that trained last."""
    summary = run.summary()
    entry = summary.get("lesson")
    if not entry or summary.get("status") not in DONE:
        return
    if access.served() and summary.get("owner") != access.visitor_id():
        return
    st.markdown(f"**{entry['title']}**" + (f" — {entry['ask']}" if entry.get("ask") else ""))
    guess_column, answer_column = st.columns(2)
    guess_column.markdown(f"Your guess: **{entry.get('guess') or '(none)'}**")
    scores = ", ".join(f"{task} {m['accuracy']:.1%}" for task, m in summary.get("tasks", {}).items())
    answer_column.markdown(f"This run ({setup_name(run)}): accuracy {scores}.")
    lines = comparison_lines(str(run.path.parent), run.id, folder_stamp(run))
    if not lines:
        answer_column.caption("Train the other setup too, and the answer compares the two here.")
    for line in lines:
        answer_column.markdown(line)


def folder_stamp(run) -> tuple[int, int]:
    """What the comparison is worked out again after: this run's summary changing, or a run added or removed."""
    return run.summary_path.stat().st_mtime_ns, sum(1 for _ in run.path.parent.iterdir())


@st.cache_data(max_entries=16, show_spinner=False)
def comparison_lines(runs_root: str, run_id: str, stamp: tuple) -> list[str]:
    """The verdict against the latest earlier run of the lesson with another setup; none without one. Once
    per run and state of the folder: the answer is drawn on every rerun, and this reads every run's record
    and two runs' predictions."""
    from core.runs import RunStore

    run = RunStore(runs_root).get(run_id)
    summary = run.summary()
    mine = sorted(summary.get("frozen") or [])
    other = next((r for r in lesson_runs(summary["lesson"]["title"], summary.get("started_at", 0))
                  if sorted(r.summary().get("frozen") or []) != mine), None)
    return [] if other is None else verdict_lines(other, run)


def verdict_lines(a, b) -> list[str]:
    """Per task: both accuracies and whether the difference is real (core.compare's verdict)."""
    from core.compare import compare
    from core.runs import RunError

    try:
        result = compare(resources.run_store(), a.id, b.id)
    except RunError as error:
        return [str(error).capitalize() + "."]
    lines = []
    for task, r in result["tasks"].items():
        paired = r["paired"]
        verdict, p_value = (paired["verdict"], paired["p_value"]) if paired.get("p_value") is not None else (
            r["verdict"], r["p_value"])
        p_text = f", p = {p_value:.3g}" if p_value is not None else ""
        lines.append(f"{task}: {setup_name(a)} {r['a']:.1%}, {setup_name(b)} {r['b']:.1%} — the difference is "
                     f"**{verdict}**{p_text}.")
    return lines


def guesses(runs) -> None:
    """On the comparison: the guesses kept with lesson runs, beside the verdict and the curves."""
    lines = []
    for run in runs:
        entry = run.summary().get("lesson") or {}
        if entry.get("guess"):
            lines.append(f"- {run.name} ({setup_name(run)}): asked *{entry.get('ask')}* — "
                         f"guessed **{entry['guess']}**")
    if lines:
        st.markdown("**Guesses kept with these runs**\n" + "\n".join(lines))
