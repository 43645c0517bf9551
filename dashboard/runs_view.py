"""The history of runs (filtered by tag, preset, status and backbone; a note and tags per run), the what-if
comparison, renaming and deleting."""

from __future__ import annotations

import json
import re
import time
from functools import partial

import streamlit as st

from core import child
from core.adapters import describe as adapter_line
from core import parts as part_names
from core.freezing import share_text
from core.runs import MAX_NOTE_CHARS, RunError
from dashboard import access, charts, lesson, resources

FILTERS = {"tag": "Tags", "preset": "Preset", "status": "Status", "backbone": "Backbone"}  # core.history.FACETS
KEYS = ["compare", "compare_metric", "compare_x", "compare_smoothing", "compare_pair_a", "compare_pair_b",
        "compare_cost", "flips_a", "flips_b", "repeat_group", "repeat_seeds", "manage_run",
        "rename_to", "download_run", "notes_run", "notes_text", "notes_tags",
        *(f"history_{facet}" for facet in FILTERS)]  # kept while closed
NOTES_FOR = "_notes_for"  # the run whose saved note and tags the note widgets were last filled with
FLIPS_SHOWN = 200  # rows of a task's flips table; the four cells count every example
METRICS = {"accuracy": "validation accuracy", "macro_f1": "macro-F1", "loss": "validation loss",
           "train_loss": "training loss"}


def device_text(summary: dict) -> str | None:
    """The device a run trained on, and how many processes shared the run (``accelerate launch``)."""
    processes = summary.get("world_size", 1)
    return f"{summary.get('device')} × {processes} processes" if processes > 1 else summary.get("device")


def processes_note(summary: dict) -> str | None:
    """For a run trained by several processes: what that means for its record; None for one process."""
    processes = summary.get("world_size", 1)
    if processes <= 1:
        return None
    return (f"Trained by {processes} processes ({summary.get('device')}, accelerate launch): each step's batch was "
            "split over them and their gradients averaged; the metrics are over the whole validation set.")


def history_rows(runs) -> list[dict]:
    rows = []
    for run in runs:
        s = run.summary()
        params = s.get("params", {})
        frozen = s.get("frozen", [])
        notes = run.notes()
        row = {"run": run.id, "name": s.get("name", run.id), "tags": ", ".join(notes["tags"]),
               "status": s.get("status"), "backbone": s.get("backbone"),
               "frozen": (s.get("preset") or (", ".join(frozen) if frozen else "nothing"))
               + (f" + LoRA rank {s['adapter']['r']}" if s.get("adapter") else ""),
               "trainable": params.get("trainable"),
               "trainable %": share_text(params["trainable"] / params["total"] if params.get("total") else None)}
        for task, m in s.get("tasks", {}).items():
            row[f"{task} acc"] = round(m["accuracy"], 3)
        row.update({"time (s)": s.get("wall_seconds"), "disk (MB)": round(run.disk_bytes() / 2**20, 1),
                    "weights": s.get("weights", "full" if run.has_weights() else "none"), "device": device_text(s),
                    "started": time.strftime("%m-%d %H:%M", time.localtime(s.get("started_at", 0))),
                    "note": notes["note"]})
        rows.append(row)
    return rows


def history_filter(runs) -> list:
    """Four multiselects (core.history's facets) over the history; an empty one filters nothing."""
    from core.history import choices, select

    offered = choices(runs)
    for column, (facet, label) in zip(st.columns(len(FILTERS)), FILTERS.items()):
        key = f"history_{facet}"
        if key in st.session_state:  # a value no run has any more (a tag removed, a run deleted) is not kept
            st.session_state[key] = [v for v in st.session_state[key] if v in offered[facet]]
        column.multiselect(label, offered[facet], key=key, placeholder="any")
    return select(runs, {facet: st.session_state[f"history_{facet}"] for facet in FILTERS})


def compare_section() -> None:
    every_run = resources.run_store().list()
    if not every_run:
        st.info("No runs yet. Train one on the first tab; every run is kept here.")
        return
    shown = history_filter(every_run)
    rows = history_rows(shown)
    st.dataframe(rows, hide_index=True)
    st.caption(f"{len(rows)} of {len(every_run)} run(s) shown, {sum(r['disk (MB)'] for r in rows):,.1f} MB on "
               "disk. Old runs can drop their weights and keep their record (below).")
    by_id = {r.id: r for r in every_run}
    finished = [r.id for r in every_run if r.status in ("finished", "evaluated", "stopped")]
    st.session_state.setdefault("compare", finished[:2])
    st.session_state.compare = [r for r in st.session_state.compare if r in by_id]
    offered = [r.id for r in shown] + [r for r in st.session_state.compare if r not in {s.id for s in shown}]
    chosen = st.multiselect("Runs to compare (pick two or more)", offered, key="compare",
                            format_func=lambda rid: by_id[rid].name)
    if len(chosen) < 2:
        st.caption("Pick at least two runs to overlay their curves.")
    if chosen:
        compare_runs([by_id[r] for r in chosen], every_run)
    notes_editor(by_id)
    manage_runs(by_id)
    download_runs(by_id)


def notes_editor(by_id) -> None:
    """A run's note and tags (core.runs.Run.annotate), filled with what is saved whenever another run is picked.
    Who may rename a run may write its note."""
    with st.expander("Note and tags"):
        rid = st.selectbox("Run", list(by_id), key="notes_run", format_func=lambda r: by_id[r].name)
        run = by_id[rid]
        saved = run.notes()
        if st.session_state.get(NOTES_FOR) != rid:
            st.session_state.notes_text, st.session_state.notes_tags = saved["note"], saved["tags"]
            st.session_state[NOTES_FOR] = rid
        every_tag = sorted({t for r in by_id.values() for t in r.tags} | set(st.session_state.notes_tags))
        permitted = access.allowed("rename", run.summary().get("owner"))
        st.text_area("Note", key="notes_text", max_chars=MAX_NOTE_CHARS, disabled=not permitted,
                     placeholder="What you tried and what you saw")
        tags = st.multiselect("Tags", every_tag, key="notes_tags", accept_new_options=True, disabled=not permitted,
                              placeholder="Pick a tag or type a new one",
                              help="One word each (letters, digits, '.', ':', '+', '-', '_'); stored lower-case.")
        if st.button("Save note and tags", key="notes_save", disabled=not permitted):
            try:
                run.annotate(st.session_state.notes_text, add=[t for t in tags if t not in saved["tags"]],
                             remove=[t for t in saved["tags"] if t not in tags])
            except RunError as error:
                st.error(str(error))
                return
            st.session_state.pop(NOTES_FOR)  # fill the widgets again with what was saved (tags lower-cased)
            st.rerun()
        if not permitted:
            st.caption(access.why_not("rename"))


def setup_key(run) -> str:
    """What makes runs repeats of one setup: the same config but for the name and the seed, and the same
    frozen parts (however the freeze section spelled them)."""
    try:
        config = run.config().to_dict()
    except ValueError:
        return run.id
    config.pop("name", None)
    config.pop("freeze", None)
    training = config["training"]
    training["data_seed"] = training["seed"] if training.get("data_seed") is None else training["data_seed"]
    training.pop("seed")  # data_seed is the effective one: null means "the seed", as in core.data
    return json.dumps([config, sorted(run.summary().get("frozen", []))], sort_keys=True)


def group_runs(runs) -> dict[str, list]:
    """Runs of the same setup (seeds of one sweep variant, or repeats) under one name, in the given order."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(setup_key(run), []).append(run)
    named = {}
    for members in groups.values():
        name = re.sub(r" seed \d+$", "", members[0].name) if len(members) > 1 else members[0].name
        while name in named:
            name += "'"
        named[name] = members
    return named


def references(runs) -> dict[str, dict[str, float]]:
    """Per task, the floors a trained model should clear: always guessing the validation set's most common
    class (from a confusion matrix: no model needed), and, for runs of a sweep, the untrained model the
    sweep measured (everything frozen, heads at their random start)."""
    from core.runs import RunError
    from core.sweep import load_sweep

    out: dict[str, dict[str, float]] = {}
    for run in runs:
        summary = run.summary()
        for task, m in summary.get("tasks", {}).items():
            if m.get("confusion") and task not in out:
                out[task] = {"majority class": max(map(sum, m["confusion"])) / max(1, sum(map(sum, m["confusion"])))}
        if summary.get("sweep"):
            try:
                untrained = load_sweep(resources.run_store().root, summary["sweep"]).get("reference", {}).get(
                    "untrained_accuracy") or {}
            except RunError:
                untrained = {}
            for task, value in untrained.items():
                out.setdefault(task, {}).setdefault("untrained model", value)
    return out


def fixed_heads(groups: dict[str, list], task: str) -> set[str]:
    """The groups whose runs all froze this task's head (their curves are marked)."""
    head = part_names.head(task)
    return {name for name, members in groups.items() if all(head in r.summary().get("frozen", []) for r in members)}


def compare_runs(runs, every_run) -> None:
    groups = group_runs(runs)
    st.markdown("**What differs**")
    st.dataframe(difference_rows(runs), hide_index=True)
    st.caption("Save this table as CSV with the download icon of its toolbar (point at the table), and a chart "
               "as PNG with the camera of its toolbar.")
    if len(groups) >= 2:
        verdict_for(groups)
    lesson.guesses(runs)
    c1, c2, c3 = st.columns(3)
    st.session_state.setdefault("compare_metric", "accuracy")
    st.session_state.setdefault("compare_smoothing", 0.0)
    c1.segmented_control("Metric", list(METRICS), key="compare_metric", format_func=METRICS.get)
    c2.radio("x axis", ["step", "epoch"], key="compare_x", horizontal=True)
    c3.slider("Smoothing", 0.0, 0.95, step=0.05, key="compare_smoothing")
    events = {name: [r.events() for r in members] for name, members in groups.items()}
    tasks = sorted({t for runs_events in events.values() for ev in runs_events for t in charts.tasks_in(ev)})
    metric = st.session_state.compare_metric or "accuracy"
    floors = references(runs)
    for column, task in zip(st.columns(max(1, len(tasks))), tasks):
        column.plotly_chart(charts.group_figure(events, task, metric, st.session_state.compare_x,
                                                st.session_state.compare_smoothing, floors.get(task),
                                                fixed_heads(groups, task)),
                            key=f"compare:{task}")
    cost_benefit(groups, tasks)
    if len(runs) >= 2:
        prediction_flips(runs)
    repeat_with_seeds(groups, every_run)


def verdict_for(groups: dict[str, list]) -> None:
    """Is the difference between two of the chosen setups real? (core.compare, for the pair picked here)."""
    names = list(groups)
    st.markdown("**Is this difference real?**")
    if len(names) > 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Setup A", names, key="compare_pair_a")
        b = c2.selectbox("Setup B", names, index=1, key="compare_pair_b")
    else:
        a, b = names
    if a != b:
        verdict_lines(",".join(r.id for r in groups[a]), ",".join(r.id for r in groups[b]), a, b)


def verdict_lines(a: str, b: str, name_a: str = "A", name_b: str = "B") -> None:
    """Both questions in plain words, and a table with the figures; a pair that cannot be compared says why."""
    from core.compare import compare

    try:
        result = compare(resources.run_store(), a, b)
    except RunError as error:  # CompareError is one: different tasks or validation data, unfinished runs
        st.caption(str(error).capitalize() + ".")
        return
    rows = []
    for task, r in result["tasks"].items():
        paired = r["paired"]
        rows.append({"task": task, name_a: f"{r['a']:.3f}", name_b: f"{r['b']:.3f}",
                     f"{name_b} − {name_a}": f"{r['difference']:+.3f}",
                     "setting or seed?": r["verdict"] + (f" (p = {r['p_value']:.3g})" if r["p_value"] is not None else ""),
                     "differ on this data?": (f"{paired['verdict']} (p = {paired['p_value']:.3g})"
                                              if paired.get("p_value") is not None else "-")})
    st.dataframe(rows, hide_index=True)
    one_each = len(result["a"]["runs"]) == len(result["b"]["runs"]) == 1
    if one_each:
        st.caption("With one run a side two questions are asked. *Do these two models differ on this data?* "
                   "McNemar's exact test on the same validation examples. *Is that the setting or the luck of the "
                   "seed?* Only repeats can tell: use *Repeat with more seeds* below.")
    else:
        st.caption("Setting or seed: Welch's t-test on the per-seed accuracies. 'real' means p < 0.05: chance "
                   "alone would rarely give a difference this large.")


def cost_benefit(groups: dict[str, list], tasks: list[str]) -> None:
    """Accuracy against training time or trainable share, one point per setup, with the Pareto front."""
    cost = st.radio("Cost", ["training time (s)", "trainable %"], key="compare_cost", horizontal=True)
    points = {}
    for name, members in groups.items():
        summaries = [r.summary() for r in members if r.summary().get("tasks")]
        if summaries:
            points[name] = summaries
    if not points:
        return
    for column, task in zip(st.columns(max(1, len(tasks))), tasks):
        names = [n for n, ss in points.items() if all(task in s["tasks"] for s in ss)]
        if not names:
            continue
        accuracy = [sum(s["tasks"][task]["accuracy"] for s in points[n]) / len(points[n]) for n in names]
        if cost == "trainable %":
            names = [n for n in names if points[n][0].get("params", {}).get("total")]
            accuracy = [sum(s["tasks"][task]["accuracy"] for s in points[n]) / len(points[n]) for n in names]
            costs = [100 * points[n][0]["params"]["trainable"] / points[n][0]["params"]["total"] for n in names]
        else:
            costs = [sum(s.get("train_seconds", 0.0) for s in points[n]) / len(points[n]) for n in names]
        column.plotly_chart(charts.pareto_figure(names, costs, accuracy, task, cost), key=f"pareto:{task}")


def prediction_flips(runs) -> None:
    """The validation examples two of the chosen runs label differently (core.flips), for the pair picked here."""
    from core.flips import NoPredictions

    by_id = {r.id: r for r in runs}
    ids = list(by_id)
    with st.expander("Prediction flips"):
        if len(ids) > 2:
            for key in ("flips_a", "flips_b"):  # a run no longer chosen is not kept as a pick
                if st.session_state.get(key) not in ids:
                    st.session_state.pop(key, None)
            c1, c2 = st.columns(2)
            a = c1.selectbox("Run A", ids, key="flips_a", format_func=lambda r: by_id[r].name)
            b = c2.selectbox("Run B", ids, index=1, key="flips_b", format_func=lambda r: by_id[r].name)
        else:
            a, b = ids
        if a == b:
            st.caption("Pick two different runs.")
            return
        try:
            result = cached_flips(str(resources.run_store().root), a, b, stamp(by_id[a]) + stamp(by_id[b]))
        except NoPredictions as error:
            offer_reevaluation(by_id[error.run_id], error.why)
            return
        except RunError as error:  # CompareError: different tasks or validation data, unfinished runs
            st.caption(f"{str(error)[0].upper()}{str(error)[1:]}.")
            return
        st.caption(f"A is {by_id[a].name}, B is {by_id[b].name}. A flip is an example the two label differently.")
        for task, r in result["tasks"].items():
            flips_table(task, r)


def stamp(run) -> tuple[int, int]:
    """When the run's summary and predictions last changed: what the cached flips are read again after."""
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in (run.summary_path, run.predictions_path))


@st.cache_data(max_entries=16, show_spinner=False)
def cached_flips(runs_root: str, a: str, b: str, stamps: tuple) -> dict:
    """core.flips.flips, computed once per pair and version of their files: its texts are read from the data."""
    from core.flips import flips
    from core.runs import RunStore

    return flips(RunStore(runs_root), a, b, FLIPS_SHOWN)


def flips_table(task: str, r: dict) -> None:
    """One task: the four cells, B's confusion matrix minus A's, and the flipped examples."""
    st.markdown(f"**{task}**: {r['n_flips']} of {r['n_examples']} validation examples flip")
    st.dataframe([{"both right": r["both_right"], "both wrong": r["both_wrong"], "only A right": r["only_a"],
                   "only B right": r["only_b"]}], hide_index=True)
    st.dataframe([{"true \\ predicted": label, **dict(zip(r["labels"], row))}
                  for label, row in zip(r["labels"], r["confusion_difference"])], hide_index=True)
    st.caption("B's confusion matrix minus A's: + where B puts more examples, − where fewer.")
    if r["note"]:
        st.caption(f"{r['note'][0].upper()}{r['note'][1:]}.")
    if not r["flips"]:
        st.caption("No example flips: the two runs label every one alike.")
        return
    st.dataframe([{"#": f["index"], "text": f["text"], "true": f["true"], "A": f["a"], "A confidence":
                   f["confidence_a"], "B": f["b"], "B confidence": f["confidence_b"]} for f in r["flips"]],
                 hide_index=True)
    if len(r["flips"]) < r["n_flips"]:
        st.caption(f"The first {len(r['flips'])} of {r['n_flips']}; `python -m core flips` lists them all.")


def offer_reevaluation(run, why: str) -> None:
    """A run without usable predictions: say so, and offer to predict its validation data again."""
    st.warning(f"Run {run.name} {why}, so its flips cannot be listed.")
    if not run.has_weights():
        st.caption(f"It has no saved weights ({run.summary().get('weights', 'none')}), so it cannot be "
                   "re-evaluated.")
        return
    permitted = access.allowed("reevaluate", run.summary().get("owner"))
    if st.button("Re-evaluate", key="flips_reevaluate", disabled=not permitted,
                 help="Predict its validation data again with its saved weights (python -m core reevaluate)"):
        with st.spinner(f"Re-evaluating {run.name}..."):
            try:
                child.run_core("reevaluate", run.id, "--runs-dir", str(resources.run_store().root))
            except ValueError as error:  # the child's one line: data changed, device busy, weights unreadable
                st.error(f"Cannot re-evaluate {run.name}: {error}")
                return
        st.rerun()
    if not permitted:
        st.caption(access.why_not("reevaluate"))


def repeat_with_seeds(groups: dict[str, list], every_run) -> None:
    """One click queues the same setup again with seeds that no run of it has used (a sweep of one variant)."""
    from dashboard.live import start_training_config

    with st.expander("Repeat with more seeds"):
        st.caption("Seeds change the heads' start, the batch order and dropout, not the data: the spread "
                   "between repeats shows how much of a difference is luck.")
        name = st.selectbox("Setup", list(groups), key="repeat_group")
        extra = st.number_input("New seeds", 1, 10, 2, key="repeat_seeds")
        if st.button("Queue the repeats", key="repeat_start"):
            key = setup_key(groups[name][0])
            try:
                config, request = repeat_request([r for r in every_run if setup_key(r) == key], int(extra))
            except ValueError as error:  # a config that no longer reads
                st.session_state["_train_error"] = f"cannot repeat {name}: {error}"
            else:
                counts = groups[name][0].summary().get("train_examples") or {t: None for t in config.task_names}
                start_training_config(config, request, counts if config.tasks else {}, runs=int(extra))
            if message := st.session_state.pop("_train_error", None):
                st.error(message)
            else:
                st.success(f"Queued {extra} more run(s) of {name}; they train on the Train tab's live view.")


def repeat_request(members: list, extra: int):
    """The base config (seeds after the largest any of ``members`` used, the same data) and the sweep options
    for ``extra`` repeats."""
    from core.config import parse_config

    first = members[0]
    data = first.config().to_dict()
    seeds = [r.config().training.seed for r in members]
    training = data["training"]
    training["data_seed"] = training.get("data_seed") if training.get("data_seed") is not None else training["seed"]
    training["seed"] = max(seeds) + 1
    data["name"] = re.sub(r" seed \d+$", "", first.name)[:60]
    return parse_config(data), {"presets": freeze_spec(first), "seeds": extra}


def freeze_spec(run) -> str:
    """The run's freeze section as a sweep variant: its preset, or its frozen parts."""
    freeze, frozen = run.config().freeze, run.summary().get("frozen", [])
    if freeze.preset and not freeze.parts:
        return {"lower_k": f"lower_k:{freeze.k}", "scenario3": f"scenario3:{freeze.head}"}.get(freeze.preset,
                                                                                              freeze.preset)
    return "parts:" + "+".join(frozen) if frozen else "none"


def difference_rows(runs) -> list[dict]:
    """Side by side: final metrics per task, and the settings that differ between the runs."""
    summaries = {r.name: r.summary() for r in runs}
    configs = {}
    for r in runs:
        try:
            configs[r.name] = r.config().to_dict()
        except ValueError:
            configs[r.name] = {}
    rows = []
    tasks = sorted({t for s in summaries.values() for t in s.get("tasks", {})})
    for task in tasks:
        for metric in ("accuracy", "macro_f1", "loss"):
            row = {"": f"{task} {metric}"}
            row.update({n: _fmt(s.get("tasks", {}).get(task, {}).get(metric)) for n, s in summaries.items()})
            rows.append(row)
    for key, getter in {
        "frozen parts": lambda s, c: ", ".join(s.get("frozen", [])) or "nothing",
        "trainable params": lambda s, c: f"{s.get('params', {}).get('trainable', 0):,}",
        "adapter": lambda s, c: adapter_line(s["adapter"]) if s.get("adapter") else "none",
        "time (s)": lambda s, c: s.get("wall_seconds"),
        "examples/s": lambda s, c: s.get("examples_per_second"),
        "status": lambda s, c: s.get("status"),
        **{f"training.{k}": (lambda k: lambda s, c: c.get("training", {}).get(k))(k)
           for k in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "layer_lr_decay", "max_length",
                     "seed")},
        "backbone": lambda s, c: c.get("backbone"),
        "init_from": lambda s, c: c.get("init_from"),
    }.items():
        values = {n: getter(summaries[n], configs[n]) for n in summaries}
        if key in ("frozen parts", "trainable params", "time (s)", "status") or len({str(v) for v in values.values()}) > 1:
            rows.append({"": key, **{n: str(v) for n, v in values.items()}})
    return rows


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def manage_runs(by_id) -> None:
    """Rename or delete one run, where ``access.may`` lets this visitor (their own runs; any with the
    teacher's passcode; anything on a one-person page)."""
    with st.expander("Rename or delete a run"):
        rid = st.selectbox("Run", list(by_id), key="manage_run", format_func=lambda r: by_id[r].name)
        owner = by_id[rid].summary().get("owner")
        may_rename, may_delete = access.allowed("rename", owner), access.allowed("delete", owner)
        new_name = st.text_input("New name", key="rename_to", disabled=not may_rename)
        c1, c2, c3 = st.columns(3)
        if c1.button("Rename", key="rename", disabled=not (may_rename and new_name.strip())):
            try:
                resources.run_store().rename(rid, new_name)
                st.rerun()
            except RunError as error:
                st.error(str(error))
        sure = c2.checkbox("I am sure", key="delete_sure", disabled=not may_delete)
        if c3.button("Delete", key="delete", disabled=not (may_delete and sure)):
            try:
                resources.run_store().delete(rid)
                st.session_state.delete_sure = False
                st.rerun()
            except RunError as error:
                st.error(str(error))
        if by_id[rid].has_weights() and st.button("Delete the weights, keep the record", key="delete_weights",
                                                  disabled=not may_delete,
                                                  help="Frees the disk; metrics, summary and config stay, so the "
                                                       "run is still listed and compared. It can no longer be a "
                                                       "warm start or be tried."):
            try:
                resources.run_store().delete_weights(rid)
                st.rerun()
            except RunError as error:
                st.error(str(error))
        for action, permitted in (("rename", may_rename), ("delete", may_delete)):
            if not permitted:
                st.caption(access.why_not(action))


def download_runs(by_id) -> None:
    """One finished run as a zip (core.export): its model folder, heads, record and a model card. The zip is
    built only when the button is pressed (Streamlit runs the callable then, on a thread of its own), so a
    page that lists runs reads no weights; what can be checked without building it is checked here."""
    from core.export import EXPORTABLE, check_exportable, export_bytes, zip_root

    finished = [rid for rid, run in by_id.items() if run.status in EXPORTABLE]
    with st.expander("Download a run"):
        if not finished:
            st.caption("No finished run yet.")
            return
        rid = st.selectbox("Run", finished, key="download_run", format_func=lambda r: by_id[r].name)
        run = by_id[rid]
        try:
            check_exportable(run)
        except RunError as error:
            st.caption(str(error).capitalize() + ".")
            return
        st.download_button("Download run (.zip)", data=partial(export_bytes, run), file_name=f"{zip_root(run)}.zip",
                           mime="application/zip", key="download_zip", on_click="ignore",
                           help="The Hugging Face model folder (safetensors), the heads and their labels, the "
                                "config, summary and metrics, and a model card saying how to load them.")
        if run.summary().get("weights") == "changed":
            st.caption("This run stored only what training changed: its model is rebuilt on its base for the zip, "
                       "which takes a few seconds.")
