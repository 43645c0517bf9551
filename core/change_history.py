"""Reading a run's change map back (``core.changes`` records it): no torch here, so the page's
server, which never imports torch, can draw it."""

from __future__ import annotations

NO_CHANGE_MAP = "this run is from before the change map was recorded: train it again to see where it learned"


def final_rows(summary: dict) -> list[dict]:
    """A finished run's change per part, input to output: {part, frozen, relative_change, grad_norm}."""
    frozen = set(summary.get("frozen", []))
    return [{"part": part, "frozen": part in frozen, **figures} for part, figures in summary.get("change", {}).items()]


def history(events: list, figure: str = "relative_change") -> tuple[list[int], dict[str, list[float]]]:
    """From a run's events, the steps of its change records and each part's ``figure``
    (``relative_change`` or ``grad_norm``) at each of them: the columns and rows of the page's heatmap."""
    records = [e for e in events if getattr(e, "kind", None) == "change"]
    steps = [r.step for r in records]
    parts = list(records[-1].parts) if records else []
    return steps, {part: [r.parts.get(part, {}).get(figure, 0.0) for r in records] for part in parts}
