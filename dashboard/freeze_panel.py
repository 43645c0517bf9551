"""Step 3: what is frozen. One toggle per part, the presets with their reasoning,
a live parameter readout and a picture of the model coloured by state."""

from __future__ import annotations

import html
import math

import streamlit as st

from core import parts as part_names
from core.anatomy import head_kinds, head_parameters, outline, readout, remembered_description
from core.freezing import FreezeError, FreezePlan, share_text
from core.layer_rates import part_rates
from core.presets import PRESETS, preset_plan
from core.schedules import next_plan, nothing_to_change
from dashboard import resources, sharing
from dashboard.charts import percent
from dashboard.form import selected_backbone
from dashboard.page_settings import (KEEPS, NO_SCHEDULE, PRESET_HEAD, PRESET_K, SCHEDULE_KEYS, SETTINGS, bounds,
                                     toggle_key, trains_backbone_key)

FROZEN_COLOR, PARTLY_COLOR, TRAINABLE_COLOR = "#9db4d6", "#e3c77b", "#f7a35c"


def current_parts(labels: dict[str, list[str]]) -> tuple[list[str], dict | None, str | None]:
    """Part names, the backbone's description with the heads added once known (``with_heads``), and a
    load error if the backbone is unusable."""
    pooling = st.session_state.pooling
    try:
        backbone = selected_backbone()
    except ValueError as error:
        return [], None, str(error)
    info = remembered_description(backbone, pooling)  # a file read: known at once after the first time
    described = resources.once_drawn(resources.backbone_description, backbone, pooling) if info is None else None
    if described is not None and described.done:
        if described.error:
            return [], None, described.error
        info = described.value
    if info is not None:
        described = with_heads(info, labels)
        return list(described["parts"]), described, None
    out = outline(backbone, pooling)
    return (part_names.all_parts(out.n_layers, out.has_pooler, list(labels)) if out else []), None, None


def with_heads(info: dict, labels: dict[str, list[str]]) -> dict:
    """The description's parameter counts (``parts``) and kind counts (``kinds``), with the heads'."""
    heads = {part_names.head(t): len(names) for t, names in labels.items()}
    return {"parts": {**info["parts"], **{h: head_parameters(info["hidden_size"], n) for h, n in heads.items()}},
            "kinds": {**info["kinds"], **{h: head_kinds(n) for h, n in heads.items()}}}


def frozen_now(parts: list[str]) -> list[str]:
    """The plan the toggles say: each frozen part, named with every kind it keeps training (``layer.3:bias``)."""
    keeps = st.session_state.get(KEEPS) or []
    toggled = [p for p in parts if st.session_state.get(toggle_key(p), False)]
    return [part_names.with_kind(p, kind) for p in toggled for kind in keeps] if keeps else toggled


def apply_preset(name: str, parts: list[str]) -> None:
    """Button callback: set every toggle, and the kinds frozen parts keep training, from the preset's plan."""
    try:
        plan = preset_plan(name, parts, k=st.session_state.get("preset_k"), head=st.session_state.get("preset_head"))
    except FreezeError as error:
        st.session_state["_preset_error"] = str(error)
        return
    for part in parts:
        st.session_state[toggle_key(part)] = plan.trainable_kinds(part) is not None
    st.session_state[KEEPS] = [k for k in part_names.KINDS if any(part_names.split_kind(p)[1] == k
                                                                       for p in plan.frozen)]
    st.session_state["_preset"] = {"preset": name, "k": st.session_state.get("preset_k") if name == "lower_k" else None,
                                   "head": st.session_state.get("preset_head") if name == "scenario3" else None}


def matching_preset(parts: list[str]) -> dict | None:
    """The last applied preset, if the toggles still say exactly what it set."""
    chosen = st.session_state.get("_preset")
    if not chosen:
        return None
    try:
        plan = preset_plan(chosen["preset"], parts, k=chosen.get("k"), head=chosen.get("head"))
    except FreezeError:
        return None
    return chosen if set(plan.frozen) == set(frozen_now(parts)) else None


def freeze_section(labels: dict[str, list[str]], hidden: bool = False,
                   locked: bool = False) -> tuple[list[str], dict | None, list[str]]:
    """Draw step 3; return the frozen parts, the matching preset (for the run's record) and every part.
    A lesson may hide it (the toggles keep the setup's values, undrawn) or lock it (drawn, not editable)."""
    tasks = list(labels)
    if not hidden:
        st.subheader("3. Freeze")
    parts, described, error = current_parts(labels)
    if error:
        st.error(f"This backbone cannot be used: {error}")
        return [], None, []
    if not parts:
        st.info("Reading the backbone's parts...")
        poll_counts()
        return [], None, []
    sharing.apply_pending_freeze(parts)  # a link's or a setup file's toggles, now that the parts are known
    if hidden:
        resources.keep_state([toggle_key(p) for p in parts] + [trains_backbone_key(t) for t in tasks]
                             + [PRESET_K, PRESET_HEAD, KEEPS, *SCHEDULE_KEYS])
        return frozen_now(parts), matching_preset(parts), parts
    presets_row(parts, tasks, locked)
    toggles_grid(parts, locked)
    frozen = frozen_now(parts)
    kind = st.session_state.schedule_kind
    if kind != NO_SCHEDULE and next_plan(kind, FreezePlan.of(frozen), parts) is None:
        st.error(nothing_to_change(kind))  # training would refuse it too (core.schedules.plan_changes)
    if described:
        readout_panel(described, set(frozen))
    else:
        st.fragment(run_every=0.5)(readout_when_counted)(labels, set(frozen))
    st.html(model_picture(parts, set(frozen), st.session_state.pooling))
    trains = {task: bool(st.session_state.get(trains_backbone_key(task), True)) for task in tasks}
    for task in tasks:
        if outlook := task_outlook(task, set(frozen), parts, trains):
            st.info(outlook)
    if not any(trains.values()) and any(p not in frozen for p in part_names.backbone(parts)):
        st.warning("No task's loss trains the backbone: its trainable parts will stay as they are, and only "
                   "the heads learn.")
    if not any(FreezePlan.of(frozen).trainable_kinds(p) != frozenset() for p in parts):
        st.info("Everything is frozen: nothing can learn, so Train will only evaluate the current weights "
                "(scenario 1). Start from a finished run to evaluate a trained model.")
    return frozen, matching_preset(parts), parts


def task_outlook(task: str, frozen: set[str], parts: list[str], trains: dict[str, bool]) -> str | None:
    """One sentence on what training will do to a task whose head is frozen or whose loss stays out of the
    backbone (scenario 3's point: a fixed head on a backbone that others move); None otherwise."""
    head = part_names.head(task)
    backbone_trains = any(p not in frozen for p in part_names.backbone(parts))
    movers = [t for t, on in trains.items() if on] if backbone_trains else []
    if head not in frozen:
        if trains.get(task, True) or len(movers) == 0:
            return None
        return (f"{task}: its loss trains only its head; the backbone under it still changes (trained by "
                f"{' and '.join(movers)}), so that head learns on moving features.")
    if not movers:
        return (f"{task}: its head is fixed and nothing moves the backbone under it, so its accuracy stays "
                "where it starts.")
    by = " and ".join("its own loss, through the fixed head" if t == task else t for t in movers)
    return (f"{task}: its head is fixed, but the backbone under it still changes (trained by {by}), so its "
            "accuracy can still move, up or down.")


def readout_when_counted(labels: dict[str, list[str]], frozen: set[str]) -> None:
    """Poll the count in the background and draw the readout here when it is known. The page itself is
    not rerun from this fragment: an st.rerun() a moment after the first drawing, while the browser
    was still mounting the widgets, reset every setting to its widget's minimum (seen in chromium)."""
    described = resources.once_drawn(resources.backbone_description, selected_backbone(), st.session_state.pooling)
    if described is None or not described.done:
        st.caption("Loading the backbone to count its parameters...")
    elif described.error:
        st.error(f"This backbone cannot be used: {described.error}")
    else:
        readout_panel(with_heads(described.value, labels), frozen)


def poll_counts() -> None:
    """Draw the polling fragment. In a whole-page run it must not rerun the page itself: that would drop
    a click made in the same run (Train pressed while the counts load); its next tick does it instead."""
    st.session_state["_page_run"] = True
    try:
        st.fragment(run_every=0.5)(wait_for_counts)()
    finally:
        st.session_state["_page_run"] = False


def wait_for_counts() -> None:
    """Poll the background load; redraw the whole page once the parts are known (a hub model without a
    local config.json: loading it takes seconds, so the page is long drawn by then)."""
    described = resources.once_drawn(resources.backbone_description, selected_backbone(), st.session_state.pooling)
    if described is not None and described.done and not st.session_state.get("_page_run"):
        st.rerun()
    st.caption("Loading the backbone to count its parameters...")


def presets_row(parts: list[str], tasks: list[str], locked: bool = False) -> None:
    n_layers = part_names.count_layers(parts)
    st.session_state.setdefault("preset_k", max(1, n_layers * 2 // 3))
    if st.session_state.get("preset_head") not in tasks:
        st.session_state["preset_head"] = tasks[-1] if tasks else None
    st.caption("Presets set the toggles below; any toggle can then be changed by hand.")
    columns = st.columns(len(PRESETS))
    for column, preset in zip(columns, PRESETS.values()):
        with column:
            st.button(preset.title.split(":")[0], key=f"preset:{preset.name}", on_click=apply_preset,
                      args=(preset.name, parts), use_container_width=True, help=preset.title, disabled=locked)
            if preset.needs == "k":
                st.number_input("k", bounds(PRESET_K)[0], n_layers, key=PRESET_K, disabled=locked,
                                help="how many lower layers to freeze")
            if preset.needs == "head":
                st.selectbox("head", tasks, key=PRESET_HEAD, disabled=locked, help="which task's head to freeze")
            with st.popover("Why?", use_container_width=True):
                st.markdown(f"**{preset.title}**\n\n**Freezes:** {preset.what}\n\n**What it means:** {preset.effect}"
                            f"\n\n**Advantages:** {preset.benefit}\n\n**When to use:** {preset.when}")
    if message := st.session_state.pop("_preset_error", None):
        st.error(message)
    chosen = matching_preset(parts)
    if chosen:
        p = PRESETS[chosen["preset"]]
        st.success(f"**{p.title}** — {p.effect} *Advantages:* {p.benefit} *When:* {p.when}")


def toggles_grid(parts: list[str], locked: bool = False) -> None:
    backbone, heads = part_names.backbone(parts), part_names.heads(parts)
    st.markdown("**Frozen parts** (on = frozen)")
    for row in (backbone[i:i + 7] for i in range(0, len(backbone), 7)):
        for column, part in zip(st.columns(7), row):
            column.toggle(part, key=toggle_key(part), disabled=locked)
    for column, part in zip(st.columns(7), heads):
        column.toggle(part, key=toggle_key(part), disabled=locked)
        column.checkbox("its loss trains the backbone", key=trains_backbone_key(part_names.head_task(part)),
                        disabled=locked,
                        help="Off: this task's loss updates only its own head (nothing, if the head is frozen); "
                             "its data is still evaluated. Config: tasks.<task>.trains_backbone.")
    keeps, kind, every, unit = st.columns([3, 2, 1, 1])
    keeps.multiselect("Frozen parts still train their", SETTINGS[KEEPS].choices, key=KEEPS, disabled=locked,
                      format_func=part_names.KINDS.get,
                      help="Freeze by kind of tensor: a frozen part keeps training these (BitFit keeps the biases). "
                           "Config: freeze.parts with <part>:<kind>, e.g. layer.3:bias.")
    kind.selectbox("Plan over time", SETTINGS["schedule_kind"].choices, key="schedule_kind", disabled=locked,
                   help="gradual_unfreeze (ULMFiT): unfreeze the highest frozen layer every N units. "
                        "progressive_freeze: freeze the lowest trainable layer every N units. Config: freeze.schedule.")
    fixed = locked or st.session_state.schedule_kind == NO_SCHEDULE
    every.number_input("every", *bounds("schedule_every"), key="schedule_every", disabled=fixed)
    unit.selectbox("unit", SETTINGS["schedule_unit"].choices, key="schedule_unit", disabled=fixed)


def readout_panel(described: dict, frozen: set[str]) -> None:
    figures = readout(described["parts"], frozen, described["kinds"])
    s = st.session_state
    rates = part_rates(list(described["parts"]), s.learning_rate, s.head_learning_rate, s.layer_lr_decay)
    c1, c2 = st.columns([1, 2])
    share = share_text(figures["trainable"] / max(1, figures["total"]))
    c1.metric("Trainable parameters", f"{figures['trainable']:,}", f"{share} of {figures['total']:,}",
              delta_color="off")
    with c2:
        st.html(parts_table(figures["by_part"], rates))


def state_words(figures: dict) -> str:
    """A part's state in the readout: 'frozen', 'trainable', or 'partly trainable: biases'."""
    if figures["state"] == "partly":
        return f"partly trainable: {figures['keeps']}"
    return "frozen" if figures["state"] == "frozen" else "trainable"


def parts_table(by_part: dict[str, dict], rates: dict[str, float]) -> str:
    """Trainable and total parameters per part, its state and its learning rate (core.layer_rates), as a
    small scrolling HTML table: a dataframe here would load pandas and pyarrow (about 1.5 s) before the
    first page could be drawn."""
    cell = 'style="padding:2px 10px;text-align:right"'
    rows = "".join(
        f'<tr><td style="padding:2px 10px">{html.escape(name)}</td><td {cell}>{v["trainable"]:,}</td>'
        f'<td {cell}>{v["total"]:,}</td><td style="padding:2px 10px">{html.escape(state_words(v))}</td>'
        f'<td {cell}>{rates[name]:.2e}</td></tr>' for name, v in by_part.items())
    head = "".join(f'<th style="padding:2px 10px;text-align:left">{h}</th>'
                   for h in ("part", "trainable", "total", "state", "learning rate"))
    return (f'<div style="max-height:180px;overflow-y:auto;font:13px sans-serif"><table style="border-collapse:'
            f'collapse;width:100%"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')


def model_picture(parts: list[str], frozen: set[str], pooling: str, moved: dict[str, float] | None = None) -> str:
    """The model as a row of blocks from input to heads: frozen in blue, trainable in orange, and each
    block also says so in words (no emoji, which some systems cannot draw, and not colour alone). With
    ``moved`` (a run's final relative change per part) each block also says how far it moved, with a bar
    on the heatmap's square-root scale; a frozen block says it stayed exactly where it was."""
    largest = max((moved or {}).values(), default=0.0)
    plan = FreezePlan.of(frozen)

    def block(part: str) -> str:
        kept = plan.trainable_kinds(part)
        state, color = (("trains", TRAINABLE_COLOR) if kept is None else ("frozen", FROZEN_COLOR) if not kept else
                        (f"partly: {part_names.kinds_in_words(kept)} train", PARTLY_COLOR))
        extra = "" if moved is None else moved_line(kept == frozenset(), moved.get(part, 0.0), largest)
        return (f'<div title="{html.escape(part)}: {state}" style="background:{color};border-radius:6px;'
                f'padding:6px 8px;margin:2px;font:12px sans-serif;text-align:center;min-width:54px">'
                f'<b>{html.escape(part)}</b><br><span style="font-size:11px">{state}</span>{extra}</div>')

    backbone = "".join(block(p) for p in part_names.backbone(parts))
    heads = "".join(block(p) for p in part_names.heads(parts))
    arrow = '<div style="align-self:center;font:18px sans-serif">&#8594;</div>'
    pool = f'<div style="align-self:center;font:12px sans-serif;padding:0 6px">{html.escape(pooling)} pooling</div>'
    legend = (f'<div style="font:12px sans-serif;margin-top:4px">input &#8594; output. <span style="background:'
              f'{FROZEN_COLOR};padding:1px 6px">frozen: kept as it is</span> <span style="background:'
              f'{PARTLY_COLOR};padding:1px 6px">partly: frozen but for a kind of tensor</span> <span style="background:'
              f'{TRAINABLE_COLOR};padding:1px 6px">trains: updated by training</span></div>')
    return (f'<div style="display:flex;flex-wrap:wrap;align-items:stretch">{backbone}{arrow}{pool}{arrow}'
            f'<div style="display:flex;flex-direction:column">{heads}</div></div>{legend}')


def moved_line(is_frozen: bool, change: float, largest: float) -> str:
    """A block's 'moved 2.1%' and a bar as long as the square root of its share of the largest change."""
    if is_frozen:
        return '<br><span style="font-size:11px">frozen: 0 exactly</span>'
    width = 100 * math.sqrt(change / largest) if largest > 0 else 0.0
    return (f'<br><span style="font-size:11px">moved {percent(change)}</span><div style="background:#fff;'
            f'height:4px;border-radius:2px;margin-top:2px"><div style="background:#333;height:4px;'
            f'border-radius:2px;width:{width:.0f}%"></div></div>')
