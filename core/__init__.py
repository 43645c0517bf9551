"""Freeze Lab's headless engine: models, freezing, data, training and the run store.

Nothing here imports streamlit or plotly; the page in ``dashboard/`` renders what
this package emits and stores. Importing ``core`` is cheap: torch and transformers
load only when a module that needs them is imported.
"""
