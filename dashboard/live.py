"""Train, Stop, and the live view of the current run, read from the run's folder (the same record a
reload, a restart or a comparison reads).

The charts are a live chart (live_chart.py) that appends each new point in the browser from the page's
route, with no Streamlit rerun. The rest of the view (status, queue, where learning happened) is an
``st.fragment``. While a run trains it is rerun when the chart passes on news (an evaluation, a plan
change, the end of the run), not on a clock: each rerun makes Streamlit's frontend redraw the page's
elements, which costs training CPU time when both share the CPU (docs/page-speed.md)."""

from __future__ import annotations

import streamlit as st

from core import parts as part_names
from core.adapters import describe as adapter_line
from core.presets import PRESETS
from core.locks import BusyError
from dashboard import access, change_view, charts, lesson, live_chart, resources, sharing
from dashboard.form import current_config, origin_backbone, train_counts
from dashboard.page_settings import bounds

# How often the live chart asks for new points. A poll with nothing new costs a small request and no
# drawing, so it is frequent enough for a point to show within a second of its event on any device.
POLL_SECONDS = 0.5
# How often the rest of the live view reruns on its own. While nothing trains yet (the backbone and the
# data load, or a sweep moves to its next member) it soon has something to show. While this visitor's run
# waits in the queue, its position moves. While a run trains, the chart's news reruns it; the slow clock
# only catches what the chart cannot see (a run whose process ended without a last event, another
# visitor's queued run).
PREPARING_SECONDS = 1.0
QUEUED_SECONDS = 5.0
TRAINING_SECONDS = 30.0


def refresh_seconds(job, mine_waiting: list) -> float | None:
    """The live view's rerun interval, or None when nothing will change without a click."""
    if not (job.active or mine_waiting):
        return None
    if job.run is None or job.run.summary().get("status", "running") != "running":
        return PREPARING_SECONDS
    return QUEUED_SECONDS if mine_waiting else TRAINING_SECONDS


def train_section(frozen: list[str], preset: dict | None, parts: list[str]) -> None:
    """Train and Stop, the chart options, then the live view. Only the live view refreshes while a run
    is active (its chart on its own, the rest when the chart has news), so it holds no more than the status,
    the queue, the charts and the change map (a button or an option changed reruns the page).

    One run trains at a time; Train while another trains puts this visitor's run in the queue. Stop is
    offered to whoever may stop the run that trains (its starter, the teacher, or anyone on a one-person
    page: ``access.may``); a waiting run can be cancelled by its starter."""
    st.subheader("5. Train and watch")
    manager = resources.job_manager()
    job = manager.current()
    active = job is not None and job.active
    mine_waiting = manager.waiting(access.visitor_id())
    st.session_state["_drawn"] = page_signature(job, mine_waiting)
    may_stop = active and access.allowed("stop", job.owner)
    lesson.ask()
    waits = lesson.needs_guess() or sharing.PENDING_FREEZE in st.session_state  # a guess; a link's toggles
    c1, c2, c3 = st.columns([1, 1, 4])
    if c1.button("Train", type="primary", disabled=bool(mine_waiting) or waits, key="train", use_container_width=True,
                 help="A run is training: yours waits in the queue and starts when it ends." if active else None):
        start_training(frozen, preset, parts=parts)
        if "_train_error" not in st.session_state:
            st.rerun()  # drawn again with the new run: the live view starts refreshing
    if c2.button("Stop", disabled=not may_stop, key="stop", use_container_width=True,
                 help=None if may_stop or not active else access.why_not("stop")):
        if access.allowed("stop", job.owner):  # checked again: the run may have changed since the drawing
            manager.stop(job)
    if mine_waiting and c2.button("Cancel my queued run", key="cancel_queued", use_container_width=True):
        manager.stop(mine_waiting[0])
        st.rerun()
    with c1.popover("Sweep", use_container_width=True, disabled=bool(mine_waiting) or not parts or waits):
        sweep_form(frozen, preset, parts)
    st.toggle(LORA_SWITCH, key="also_lora",
              help="After this plan's run, train LoRA adapters on every layer of the frozen backbone, their rank "
                   "chosen so that as many parameters train as in this plan (adapter r: auto). Compare runs then "
                   "shows both side by side, with their trainable counts.")
    if message := st.session_state.pop("_train_error", None):
        st.error(message)
    if job is None:
        c3.caption("No run yet. Press Train; the charts appear here as it learns.")
        return
    o1, o2 = c3.columns(2)
    o1.radio("x axis", ["step", "epoch"], key="x_axis", horizontal=True)
    o2.slider("Smoothing", 0.0, 0.95, key="smoothing", step=0.05, help="Moving average of the training loss.")
    st.fragment(run_every=refresh_seconds(job, mine_waiting))(live_view)()


def page_signature(job, mine_waiting: list) -> tuple:
    """What the buttons and the refresh were drawn for: when it changes (a run ended, the next one began, a
    run's folder appeared, a sweep moved to its next member), redraw the page."""
    run_status = job.run.summary().get("status", "running") if job and job.run else None
    return id(job), bool(job and job.active), len(mine_waiting), job and job.run and job.run.id, run_status


def start_training(frozen: list[str], preset: dict | None, sweep: dict | None = None,
                   parts: list[str] | None = None) -> None:
    """One run, or a sweep of the current setup (``python -m core sweep`` options), for this visitor; with the
    LoRA switch on, a run of LoRA at the same budget queued right behind the one run."""
    try:
        config = current_config(frozen, preset)
        then = [lora_run(config, frozen, parts or [])] if sweep is None and st.session_state.get("also_lora") else []
    except ValueError as error:  # ConfigError is a ValueError
        st.session_state["_train_error"] = str(error)
        return
    guess = st.session_state.get(lesson.GUESS) if config.lesson is not None and config.lesson.ask else None
    start_training_config(config, sweep, train_counts(), runs=sweep_size(sweep) if sweep else 1 + len(then),
                          then=then, guess=guess)


LORA_SWITCH = "Also train LoRA at this budget"


def lora_run(config, frozen: list[str], parts: list[str]):
    """The config of the LoRA run the switch queues (core.adapters.matched_lora_config), or a one-line refusal."""
    from core.adapters import matched_lora_config
    from core.config import ConfigError

    if parts and set(parts) <= set(frozen):
        raise ConfigError(f"{LORA_SWITCH}: this plan trains nothing, so there is no budget to match; unfreeze a "
                          "part or turn the switch off")
    if config.adapter is not None:
        raise ConfigError(f"{LORA_SWITCH}: this setup already trains adapters")
    return matched_lora_config(config)


def start_training_config(config, sweep: dict | None = None, counts: dict[str, int | None] | None = None,
                          runs: int = 1, then: list | None = None, guess: str | None = None) -> None:
    """Start (or queue) a config for this visitor, within the page's limits; a refusal goes to _train_error.
    ``then``: configs queued right behind it (JobManager.start); ``guess``: the student's answer to the
    config's lesson question, kept with the first run."""
    try:
        if not access.is_teacher():
            access.check_limits(access.limits(), config, counts or {}, origin_backbone(config), runs)
        resources.job_manager().start(config, owner=access.visitor_id(), sweep=sweep, then=then or [], guess=guess)
    except (ValueError, BusyError) as error:
        st.session_state["_train_error"] = str(error)


SWEEP_PRESETS = list(PRESETS)  # lower_k and scenario3 take the k and the head chosen under Freeze


def sweep_form(frozen: list[str], preset: dict | None, parts: list[str]) -> None:
    """The current setup at several freeze depths or presets, each with several seeds: one queue of runs."""
    if not parts:
        return
    n_layers = part_names.count_layers(parts)
    if st.session_state.get("_sweep_layers") != n_layers:  # another backbone: offer all of its depths again
        st.session_state["_sweep_layers"] = n_layers
        st.session_state["sweep_depths"] = list(range(n_layers + 1))
    st.markdown("Train the current setup once per freeze depth (or preset) and seed. Depth k freezes the "
                "embeddings and the lower k layers.")
    st.radio("Vary", ["freeze depth", "presets"], key="sweep_kind", horizontal=True)
    if st.session_state.sweep_kind == "freeze depth":
        st.multiselect("Depths (frozen lower layers)", list(range(n_layers + 1)), key="sweep_depths")
    else:
        st.multiselect("Presets", SWEEP_PRESETS, key="sweep_presets",
                       help="lower_k and scenario3 use the k and the head chosen under Freeze.")
    st.number_input("Seeds per variant", *bounds("sweep_seeds"), key="sweep_seeds",
                    help="Repeats with seeds seed, seed+1, ...: the spread between them says whether a "
                         "difference is the setting or luck.")
    request = sweep_request()
    count = sweep_size(request)
    if st.button(f"Start sweep ({count} runs)", key="sweep_start", disabled=count == 0, type="primary"):
        start_training(frozen, preset, request)
        if "_train_error" not in st.session_state:
            st.rerun()


def sweep_request() -> dict:
    """The popover's choices as ``python -m core sweep`` options."""
    s = st.session_state
    if s.sweep_kind == "freeze depth":
        return {"depths": ",".join(str(d) for d in sorted(s.sweep_depths)), "seeds": int(s.sweep_seeds)}
    specs = {"lower_k": f"lower_k:{s.get('preset_k')}", "scenario3": f"scenario3:{s.get('preset_head')}"}
    return {"presets": ",".join(specs.get(p, p) for p in s.sweep_presets), "seeds": int(s.sweep_seeds)}


def sweep_size(request: dict) -> int:
    variants = [v for v in (request.get("depths") or request.get("presets") or "").split(",") if v]
    return len(variants) * request["seeds"]


def live_view() -> None:
    manager = resources.job_manager()
    job = manager.current()
    if job is None:
        return
    status_line(job, st)
    queue_line(manager)
    if job.run is not None:
        lesson.answer(job.run)  # above the charts, where a student looks when the run ends
        draw_run(job.run)
    if st.session_state.get("_drawn") != page_signature(job, manager.waiting(access.visitor_id())):
        st.rerun()  # a run ended or the next began: refresh the buttons and the history


def queue_line(manager) -> None:
    """Where this visitor's waiting run stands, and how many wait in all."""
    waiting = manager.waiting()
    if not waiting:
        return
    mine = manager.waiting(access.visitor_id())
    if mine:
        position = manager.position(mine[0])
        st.info(f"Your run waits in the queue: position {position} of {len(waiting)}. It starts on its own "
                "when the runs before it end.")
    else:
        st.caption(f"{len(waiting)} run(s) wait in the queue.")


def sweep_line(job, where) -> None:
    """Which member of a sweep is training: 'member i of n'."""
    if job.sweep is None:
        return
    record = read_sweep(job.sweep_folder)
    if record is None:
        where.caption("Sweep: loading the backbone and the data, and computing the shared frozen prefix...")
        return
    members = record["members"]
    started = sum(m["status"] != "not started" for m in members)
    current = next((m for m in members if m["status"] == "running"), None)
    what = f" ({current['variant']}, seed {current['seed']})" if current else ""
    where.markdown(f"**Sweep {record['name']}**: member {max(started, 1)} of {len(members)}{what}. "
                   "Stop ends the member that trains and the rest of the sweep; finished members are kept.")


def read_sweep(folder) -> dict | None:
    """The sweep's record, or None before it exists (or mid-write on a file system without atomic renames)."""
    from core.runs import RunError
    from core.sweep import load_sweep

    try:
        return load_sweep(folder.parent.parent, folder.name) if folder else None
    except RunError:
        return None


def status_line(job, where) -> None:
    sweep_line(job, where)
    if job.state == "preparing":
        where.info("Loading the backbone and the data..." + (" (stopping)" if job.stop_requested else ""))
    elif job.state == "error":
        where.error(f"The run could not start: {job.error}")
    elif job.run is None and job.error:  # stopped while it was still loading
        where.warning(job.error.capitalize() + ".")
    elif job.run is not None:
        summary = job.run.summary()
        status = summary.get("status", "running")
        text = f"Run **{job.run.id}**: {status}"
        if summary.get("message"):
            text += f" — {summary['message']}"
        if status == "failed":
            where.error(text)
        elif status in ("stopped", "interrupted"):
            where.warning(text)
        elif status == "running":
            where.info(text + (" (stopping after this step)" if job.stop_requested else ""))
        else:
            where.success(text)


def cache_note(cache: dict | None) -> str:
    """One sentence on the frozen-prefix cache: what it holds, and its one semantic difference."""
    if not cache:
        return ""
    if cache.get("used"):
        where = f" on {cache['storage']}" if cache.get("storage") else ""
        return (f"Frozen prefix cached (embeddings + {cache.get('depth')} layers{where}): "
                f"{cache.get('semantics') or 'the cached part runs without dropout'}.")
    return f"Frozen prefix not cached: {cache.get('reason')}." if cache.get("reason") else ""


def draw_run(run) -> None:
    events = resources.event_log(str(run.path)).update()
    notes = [e.message for e in events if e.kind == "state" and e.state == "started" and e.message]
    summary = run.summary()
    if notes:
        st.caption(notes[-1] + ". " + cache_note(summary.get("cache")))
    if summary.get("adapter"):
        st.caption(adapter_line(summary["adapter"]) + ".")
    live_chart.live_chart(run.id, run_tasks(run, events), st.session_state.x_axis, st.session_state.smoothing,
                          POLL_SECONDS, ended=summary.get("status", "running") not in ("running", "unknown"),
                          key="live:chart")
    with st.expander("Where learning happened", expanded=True):
        change_view.change_section(run, events, key="live:change")


def run_tasks(run, events: list) -> list[str]:
    """The run's tasks, from its config (so the charts are there before the first step), else its events."""
    try:
        return run.config().task_names
    except (OSError, ValueError):
        return charts.tasks_in(events)
