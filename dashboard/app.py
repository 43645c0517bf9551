"""Freeze Lab: see what freezing does to a transformer.

``streamlit run dashboard/app.py``. This file only lays out the page; each section
lives in its own module and all modelling happens in ``core``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from dashboard import form, freeze_panel, inspect_view, live, resources, runs_view  # noqa: E402

st.set_page_config(page_title="Freeze Lab", page_icon="❄️", layout="wide")
form.init_state()
st.title("❄️ Freeze Lab")
st.caption("Pick a pretrained encoder, choose which parts are frozen, train two heads (topic and sentiment), "
           "watch them learn, then change one toggle and compare.")

train_tab, compare_tab, inspect_tab = st.tabs(["Train", "Compare runs", "Inspect a run"])
with train_tab:
    form.backbone_section()
    form.data_section()
    labels = form.task_labels()
    frozen, preset = freeze_panel.freeze_section(labels)
    form.settings_section()
    live.train_section(frozen, preset)
with compare_tab:
    runs_view.compare_section()
with inspect_tab:
    inspect_view.inspect_section()
st.session_state[resources.FIRST_RUN_DONE] = True
