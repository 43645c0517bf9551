"""Freeze plans: which parts are frozen, how to apply that, and exact accounting.

Low-level primitives (``freeze``, ``unfreeze``, ``apply_plan``, ``count_parameters``)
stand on their own; the presets in ``core.presets`` only build plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily so the page can start without it
    from torch import nn


class FreezeError(ValueError):
    """A plan that names parts the model does not have."""


@dataclass(frozen=True)
class FreezePlan:
    """The set of frozen part names; everything else trains."""

    frozen: tuple[str, ...] = ()

    @classmethod
    def of(cls, parts) -> "FreezePlan":
        return cls(tuple(dict.fromkeys(parts)))

    def union(self, other: "FreezePlan") -> "FreezePlan":
        return FreezePlan.of([*self.frozen, *other.frozen])


def check_plan(plan: FreezePlan, part_names: list[str]) -> None:
    unknown = [p for p in plan.frozen if p not in part_names]
    if unknown:
        raise FreezeError(f"unknown part(s) {', '.join(unknown)}; valid parts: {', '.join(part_names)}")


def set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trainable)


def apply_plan(model, plan: FreezePlan) -> dict:
    """Set ``requires_grad`` per part from the plan and return the accounting."""
    parts = model.parts()
    check_plan(plan, list(parts))
    for name, modules in parts.items():
        set_trainable(modules, name not in plan.frozen)
    return count_parameters(model)


def freeze(model, *part_names: str) -> None:
    """Freeze the named parts, leaving the others as they are."""
    parts = model.parts()
    check_plan(FreezePlan.of(part_names), list(parts))
    for name in part_names:
        set_trainable(parts[name], False)


def unfreeze(model, *part_names: str) -> None:
    parts = model.parts()
    check_plan(FreezePlan.of(part_names), list(parts))
    for name in part_names:
        set_trainable(parts[name], True)


def frozen_parts(model) -> list[str]:
    """Parts whose every parameter is frozen."""
    return [
        name
        for name, modules in model.parts().items()
        if all(not p.requires_grad for m in modules for p in m.parameters())
    ]


def count_parameters(model) -> dict:
    """Trainable and total parameters per part and overall; parts never share a tensor."""
    by_part, seen = {}, set()
    for name, modules in model.parts().items():
        tensors = [p for m in modules for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in tensors)
        by_part[name] = {
            "total": sum(p.numel() for p in tensors),
            "trainable": sum(p.numel() for p in tensors if p.requires_grad),
        }
    total = sum(v["total"] for v in by_part.values())
    trainable = sum(v["trainable"] for v in by_part.values())
    return {"total": total, "trainable": trainable, "by_part": by_part}


def share_text(fraction: float | None) -> str | None:
    """A trainable share (trainable / total) as people read it: the one format for the page, the CLI
    and the model card. A small share stays small and never reads 0 while something trains (2,695 of
    22.6M: '0.012%'); '100%' only when nothing is frozen. None stays None (no total known).
    """
    if fraction is None:
        return None
    percent = 100 * fraction
    if percent in (0, 100):
        return f"{percent:.0f}%"
    if percent < 0.001:
        return "<0.001%"
    if percent < 1:
        return f"{percent:.2g}%"
    return ">99.9%" if percent >= 99.95 else f"{percent:.1f}%"


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def frozen_prefix_depth(plan: FreezePlan, n_layers: int) -> int:
    """How many layers form a frozen prefix together with the embeddings (-1: embeddings trainable).

    0 means only the embeddings are frozen; ``n_layers`` means the whole encoder stack.
    """
    from core import parts

    if parts.EMBEDDINGS not in plan.frozen:
        return -1
    depth = 0
    while depth < n_layers and parts.layer(depth) in plan.frozen:
        depth += 1
    return depth
