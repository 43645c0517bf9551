"""Freeze Lab: ``streamlit run dashboard/app.py``.

Serves the page (page.py) and, beside it on the same server, the read-only routes its live chart reads
from (routes.py): ``streamlit run`` finds the ``st.App`` below and runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from dashboard.routes import ROUTES  # noqa: E402

app = st.App("page.py", routes=ROUTES)
