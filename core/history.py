"""Filtering the history of runs by tag, preset, status and backbone.

The page's history table and ``python -m core runs`` ask a run the same questions here, so both list
the same runs for the same filter. Within one facet any chosen value matches (status finished or
stopped); across facets all must (finished *and* tagged baseline). An empty choice filters nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from core.presets import plan_label
from core.runs import Run

FACETS = ("tag", "preset", "status", "backbone")


def preset_of(run: Run, summary: dict) -> str:
    """The freeze preset the run used; 'custom' for parts picked by hand, 'none' for neither. A finished
    run's summary says so; a running one's config does (read only then: YAML is the slow part)."""
    if "frozen" in summary:
        return plan_label(summary.get("preset"), summary["frozen"])
    try:
        freeze = run.config().freeze
    except ValueError:
        return "unknown"
    return plan_label(freeze.preset, freeze.parts)


def facets(run: Run) -> dict[str, list[str]]:
    """What the run can be found by: its tags (any number), and its one preset, status and backbone."""
    summary = run.summary()
    backbone = summary.get("backbone")
    if not backbone:
        try:
            backbone = run.config().backbone
        except ValueError:
            backbone = "unknown"
    return {"tag": run.tags, "preset": [preset_of(run, summary)], "status": [summary.get("status", "unknown")],
            "backbone": [backbone]}


def matches(found: dict[str, list[str]], wanted: dict[str, Collection[str]]) -> bool:
    return all(not values or set(found[facet]) & set(values) for facet, values in wanted.items())


def select(runs: Iterable[Run], wanted: dict[str, Collection[str]]) -> list[Run]:
    """The runs that match every facet with a choice in ``wanted`` (keys from FACETS), in the given order."""
    unknown = set(wanted) - set(FACETS)
    if unknown:
        raise ValueError(f"unknown history filter {sorted(unknown)}: use {', '.join(FACETS)}")
    return [run for run in runs if matches(facets(run), wanted)]


def choices(runs: Iterable[Run]) -> dict[str, list[str]]:
    """Per facet, the values the runs have, sorted: what a filter can offer."""
    found: dict[str, set[str]] = {facet: set() for facet in FACETS}
    for run in runs:
        for facet, values in facets(run).items():
            found[facet].update(values)
    return {facet: sorted(values) for facet, values in found.items()}
