"""Freeze schedules: a freeze plan that changes while the run trains (``freeze.schedule``).

``gradual_unfreeze`` (ULMFiT): start from the config's plan; every ``every`` epochs (or
steps) the highest unit that is not wholly trainable unfreezes. ``progressive_freeze``
(Composer's LayerFreezing, AutoFreeze): every ``every`` units the lowest unit that still
trains freezes whole, so the frozen prefix grows, and with it what the frozen-prefix
cache saves.

Units, from input to output: the embeddings, then each layer; the pooler goes with the
top layer. The heads are no unit: they train unless the plan freezes them.

``plan_changes`` lists every change of a run before it starts, as (step, plan): the
step is how many training steps have run when the new plan takes effect. The trainer
applies them; ``prepare`` refuses a schedule that would change nothing. No torch here.
"""

from __future__ import annotations

from core import parts
from core.freezing import FreezeError, FreezePlan

GRADUAL_UNFREEZE, PROGRESSIVE_FREEZE = "gradual_unfreeze", "progressive_freeze"


def units(names: list[str]) -> list[list[str]]:
    """The parts a schedule moves together, from input to output."""
    out = [[parts.EMBEDDINGS], *([layer] for layer in parts.layers(names))]
    if parts.POOLER in names:
        out[-1] = [*out[-1], parts.POOLER]
    return out


def next_plan(kind: str, plan: FreezePlan, names: list[str]) -> FreezePlan | None:
    """The plan after one change, or None when there is nothing left to unfreeze (or freeze)."""
    if kind == GRADUAL_UNFREEZE:
        unit = next((u for u in reversed(units(names)) if any(plan.trainable_kinds(p) is not None for p in u)), None)
        added = []
    else:
        unit = next((u for u in units(names) if any(plan.trainable_kinds(p) != frozenset() for p in u)), None)
        added = unit or []
    if unit is None:
        return None
    kept = [name for name in plan.frozen if parts.split_kind(name)[0] not in unit]  # a kept kind goes too
    return FreezePlan.of([*kept, *added]).in_order(names)


def change_steps(every: int, unit: str, steps_per_epoch: int, total_steps: int) -> list[int]:
    """The steps after which the plan changes: every ``every`` epochs or steps, before the run ends."""
    stride = every * (steps_per_epoch if unit == "epoch" else 1)
    return list(range(stride, total_steps, stride)) if stride > 0 else []


def plan_changes(schedule, plan: FreezePlan, names: list[str], steps_per_epoch: int,
                 total_steps: int) -> list[tuple[int, FreezePlan]]:
    """Every change of plan the schedule makes in this run, in order; a FreezeError (one line) for a schedule
    that would change nothing. ``schedule``: the config's ``freeze.schedule`` (None: no changes)."""
    if schedule is None:
        return []
    if next_plan(schedule.kind, plan, names) is None:
        raise FreezeError(nothing_to_change(schedule.kind))
    changes = []
    for step in change_steps(schedule.every, schedule.unit, steps_per_epoch, total_steps):
        plan = next_plan(schedule.kind, plan, names)
        if plan is None:
            break
        changes.append((step, plan))
    if not changes:
        length = f"{total_steps // steps_per_epoch}-epoch" if schedule.unit == "epoch" else f"{total_steps}-step"
        units_word = schedule.unit + ("s" if schedule.every != 1 else "")
        raise FreezeError(f"freeze.schedule: every {schedule.every} {units_word} never comes in this {length} "
                          f"run, so the plan would never change; choose a smaller every")
    return changes


def nothing_to_change(kind: str) -> str:
    if kind == GRADUAL_UNFREEZE:
        return ("freeze.schedule: gradual_unfreeze has nothing to unfreeze: the plan freezes neither the embeddings "
                "nor any layer; start from a plan that freezes some, such as scenario2")
    return ("freeze.schedule: progressive_freeze has nothing to freeze: the plan already freezes the embeddings and "
            "every layer; start from a plan that trains some, such as none or lower_k")
