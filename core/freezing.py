"""Freeze plans: which parts are frozen, how to apply that, and exact accounting.

Low-level primitives (``freeze``, ``unfreeze``, ``apply_plan``, ``count_parameters``)
stand on their own; the presets in ``core.presets`` only build plans. A plan may
name a part with a kind (``layer.3:bias``, see ``core.parts``): that part is frozen
except for its tensors of that kind, and the accounting counts them tensor by tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core import parts as part_names

if TYPE_CHECKING:  # torch is imported lazily so the page can start without it
    from torch import nn


KIND_JOIN = "+"  # joins the kinds one tensor has, in ``kind_counts``' keys: 'bias+norm'


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

    def in_order(self, names: list[str]) -> "FreezePlan":
        """The same plan listed in the model's part order (``<part>:<kind>`` beside its part); names the
        model lacks last, so that a check can name them."""
        order = {name: i for i, name in enumerate(names)}
        return FreezePlan(tuple(sorted(self.frozen, key=lambda p: order.get(part_names.split_kind(p)[0], len(order)))))

    def trainable_kinds(self, part: str) -> frozenset[str] | None:
        """What of ``part`` trains: None, all of it; an empty set, nothing (frozen whole); else the kinds
        of tensor that still train (``layer.3:bias`` and ``layer.3:norm``: its biases and LayerNorms)."""
        if part in self.frozen:
            return frozenset()
        kept = frozenset(kind for base, kind in map(part_names.split_kind, self.frozen) if base == part and kind)
        return kept or None


def check_plan(plan: FreezePlan, names: list[str]) -> None:
    unknown = [p for p in plan.frozen if part_names.split_kind(p)[0] not in names]
    if unknown:
        raise FreezeError(f"unknown part(s) {', '.join(unknown)}; valid parts: {', '.join(names)}")
    kinds = [p for p in plan.frozen if part_names.split_kind(p)[1] not in (None, *part_names.KINDS)]
    if kinds:
        raise FreezeError(f"unknown kind in {', '.join(kinds)}; write <part>:<kind> with a kind of "
                          + ", ".join(f"{k} ({words})" for k, words in part_names.KINDS.items()))


def set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trainable)


def is_norm(module: nn.Module) -> bool:
    """A LayerNorm, torch's or a model's own class of that name."""
    from torch import nn

    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def tensor_kinds(modules: list[nn.Module]) -> list[tuple[nn.Parameter, frozenset[str]]]:
    """Each tensor of a part once, with its kinds: ``bias`` (named bias), ``norm`` (a LayerNorm's)."""
    out, seen = [], set()
    for module in modules:
        for owner in module.modules():
            for name, parameter in owner.named_parameters(recurse=False):
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                kinds = {part_names.BIAS} if name == "bias" else set()
                kinds |= {part_names.NORM} if is_norm(owner) else set()
                out.append((parameter, frozenset(kinds)))
    return out


def apply_plan(model, plan: FreezePlan) -> dict:
    """Set ``requires_grad`` per part (per tensor where the plan names a kind) and return the accounting."""
    parts = model.parts()
    check_plan(plan, list(parts))
    for name, modules in parts.items():
        kept = plan.trainable_kinds(name)
        if kept:
            for parameter, kinds in tensor_kinds(modules):
                parameter.requires_grad_(bool(kinds & kept))
        else:
            set_trainable(modules, kept is None)
    return count_parameters(model)


def freeze(model, *names: str) -> None:
    """Freeze the named parts, leaving the others as they are."""
    for name in check_whole(model, names):
        set_trainable(model.parts()[name], False)


def unfreeze(model, *names: str) -> None:
    for name in check_whole(model, names):
        set_trainable(model.parts()[name], True)


def check_whole(model, names: tuple[str, ...]) -> tuple[str, ...]:
    """``freeze`` and ``unfreeze`` take whole parts; a kind belongs in a plan (``apply_plan``)."""
    check_plan(FreezePlan.of(names), list(model.parts()))
    kinded = [name for name in names if part_names.split_kind(name)[1]]
    if kinded:
        raise FreezeError(f"{', '.join(kinded)}: freeze and unfreeze take whole parts; name a kind in a plan")
    return names


def frozen_parts(model) -> list[str]:
    """Parts whose every parameter is frozen."""
    return [
        name
        for name, modules in model.parts().items()
        if all(not p.requires_grad for m in modules for p in m.parameters())
    ]


def partly_frozen_parts(model) -> list[str]:
    """Parts with some tensors frozen and some training (a kind kept, as BitFit keeps the biases)."""
    return [
        name
        for name, modules in model.parts().items()
        if len({p.requires_grad for m in modules for p in m.parameters()}) == 2
    ]


def kind_counts(model) -> dict[str, dict[str, int]]:
    """Per part, how many parameters are of each combination of kinds ('bias', 'norm', 'bias+norm';
    the rest is the part's total minus these): what the page needs to count a kept kind exactly."""
    out = {}
    for name, modules in model.parts().items():
        counts: dict[str, int] = {}
        for parameter, kinds in tensor_kinds(modules):
            if kinds:
                key = KIND_JOIN.join(sorted(kinds))
                counts[key] = counts.get(key, 0) + parameter.numel()
        out[name] = counts
    return out


def kept_count(counts: dict[str, int], kept: frozenset[str]) -> int:
    """From one part's ``kind_counts``, the parameters of any of the ``kept`` kinds."""
    return sum(n for key, n in counts.items() if set(key.split(KIND_JOIN)) & kept)


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


def trainable_under(model, plans: list[FreezePlan]) -> list[nn.Parameter]:
    """The parameters that train under any of ``plans``, in model order; the model is left as the first
    plan sets it (it is applied last)."""
    trains: set[int] = set()
    for plan in [*plans[1:], *plans[:1]]:
        apply_plan(model, plan)
        trains |= {id(p) for p in model.parameters() if p.requires_grad}
    return [p for p in model.parameters() if id(p) in trains]


def frozen_prefix_depth(plan: FreezePlan, n_layers: int) -> int:
    """How many layers form a frozen prefix together with the embeddings (-1: embeddings trainable).

    0 means only the embeddings are frozen; ``n_layers`` means the whole encoder stack. A part frozen
    except for a kind (``layer.3:bias``) still changes, so it ends the prefix.
    """
    if part_names.EMBEDDINGS not in plan.frozen:
        return -1
    depth = 0
    while depth < n_layers and part_names.layer(depth) in plan.frozen:
        depth += 1
    return depth
