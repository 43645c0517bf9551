"""Freeze Lab's headless engine: models, freezing, data, training and the run store.

Nothing here imports streamlit or plotly; the page in ``dashboard/`` renders what
this package emits and stores.
"""

from core.config import ExperimentConfig, load_config, parse_config  # noqa: F401
from core.freezing import FreezePlan, apply_plan, count_parameters, freeze, unfreeze  # noqa: F401
from core.presets import PRESETS, preset_plan  # noqa: F401
from core.runs import Run, RunStore  # noqa: F401
