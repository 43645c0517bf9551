"""Freeze Lab's page: see what freezing does to a transformer.

Served by ``streamlit run dashboard/app.py`` (the page and its read-only routes). This file only lays out
the page; each section lives in its own module and all modelling happens in ``core``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from dashboard import (access, form, freeze_panel, inspect_view, lesson, live, resources, runs_view,  # noqa: E402
                       sharing, sweeps_view)

# A material icon, not an emoji: checking an emoji compiles a large regular expression on the first run.
st.set_page_config(page_title="Freeze Lab", page_icon=":material/ac_unit:", layout="wide")
sharing.read_link()  # before any widget: a link's setup, once per session
form.init_state()
st.title("❄️ Freeze Lab")
st.caption("Pick a pretrained encoder, choose which parts are frozen, train two heads (topic and sentiment), "
           "watch them learn, then change one toggle and compare.")
st.caption(access.mode_line())
access.teacher_panel()
notes = st.container()  # filled last: a link's freeze section is checked only once the parts are known
lesson.header()

# Only the open tab's content runs (on_change="rerun"), except Train: it is always drawn, so its settings
# and its live view survive a visit to the other tabs, whose widgets keep their values through keep_state.
train_tab, compare_tab, sweeps_tab, inspect_tab = st.tabs(["Train", "Compare runs", "Sweeps", "Inspect a run"],
                                                          key="tab", on_change="rerun")
with train_tab:
    # A lesson may hide a section (its settings keep their values, undrawn) or lock it (drawn, disabled).
    for section, draw in (("backbone", form.backbone_section), ("data", form.data_section)):
        if lesson.hidden(section):
            resources.keep_state(sharing.section_keys(section))
        else:
            draw(locked=lesson.locked(section))
    if lesson.hidden("data"):
        form.hidden_data_sources()
    labels = form.task_labels()
    frozen, preset, parts = freeze_panel.freeze_section(labels, lesson.hidden("freeze"), lesson.locked("freeze"))
    if lesson.hidden("settings"):
        resources.keep_state(sharing.section_keys("settings"))
    else:
        form.settings_section(locked=lesson.locked("settings"))
    sharing.share_panel(frozen, preset)
    live.train_section(frozen, preset, parts)
for tab, draw, keys in ((compare_tab, runs_view.compare_section, runs_view.KEYS),
                        (sweeps_tab, sweeps_view.sweeps_section, sweeps_view.KEYS),
                        (inspect_tab, inspect_view.inspect_section, inspect_view.KEYS)):
    with tab:
        if tab.open:
            draw()
        else:
            resources.keep_state(keys)
with notes:
    sharing.notes_box()
sharing.write_link(parts, frozen, preset)  # after every widget has settled
st.session_state[resources.FIRST_RUN_DONE] = True
