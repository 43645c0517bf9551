"""The freezing presets: the seed document's three scenarios, its transfer-learning
strategy, and two more. Each builds a FreezePlan from the model's part names and
carries a short explanation written for a class to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import parts
from core.freezing import FreezeError, FreezePlan


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    what: str  # what it freezes
    effect: str  # what that means for learning
    benefit: str  # why one would do it
    when: str  # when to choose it
    needs: str | None = None  # "k" or "head"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "scenario1",
            "Scenario 1: freeze everything",
            "Every part: embeddings, all layers, the pooler and both heads.",
            "Nothing learns. The run measures how well the current weights already do on this data; "
            "it evaluates instead of training.",
            "Costs one pass over the validation data and cannot overfit.",
            "A quick check of a model you already trained (start from a finished run) on new data, "
            "or a baseline before any training.",
        ),
        Preset(
            "scenario2",
            "Scenario 2: freeze the backbone",
            "The embeddings and every transformer layer (and the pooler); both heads train.",
            "The pretrained language knowledge stays exactly as it was; only the small classifiers on top adapt.",
            "Cheap and stable: few trainable parameters, little risk of damaging what the backbone knows.",
            "Moderate amounts of data, or when you need a fast, dependable result.",
        ),
        Preset(
            "scenario3",
            "Scenario 3: freeze one head",
            "One task's head; the backbone and the other head train.",
            "The frozen task keeps its classifier, while the shared backbone and the other head keep learning.",
            "Lets you push one lagging task without spending effort on a task that already does well.",
            "One task has more data or works well already (start from a finished run so the frozen head "
            "has learned something). Watch the frozen task: the backbone it reads from still moves.",
            needs="head",
        ),
        Preset(
            "lower_k",
            "Transfer learning: freeze the lower k layers",
            "The embeddings and layers 0 to k-1; the upper layers and both heads train.",
            "Lower layers hold general patterns of language (words, syntax); upper layers hold more abstract, "
            "task-shaped features, so those are the ones worth adapting.",
            "Keeps general knowledge intact while the model still specialises; fewer parameters to update.",
            "The default strategy for transfer learning: most tasks, most data sizes.",
            needs="k",
        ),
        Preset(
            "top_quarter",
            "Tune the top quarter",
            "The embeddings and the lower three quarters of the layers.",
            "Only the top quarter of the layers and the heads adapt.",
            "Lee, Tang & Lin (2019) found that tuning only the top quarter keeps about 90% of full fine-tuning's "
            "quality at a fraction of the trainable parameters.",
            "When compute or memory is tight but you still want the backbone to adapt.",
        ),
        Preset(
            "none",
            "Train everything",
            "Nothing.",
            "Every weight adapts to your data (full fine-tuning).",
            "Usually the best accuracy when there is enough data.",
            "Enough data and compute; the reference the other presets are compared against.",
        ),
    ]
}


def preset_plan(name: str, part_names: list[str], k: int | None = None, head: str | None = None) -> FreezePlan:
    """Build the plan for a preset, given the model's part names (from ``model.parts()``)."""
    layers, backbone, heads = parts.layers(part_names), parts.backbone(part_names), parts.heads(part_names)
    if name == "none":
        return FreezePlan()
    if name == "scenario1":
        return FreezePlan.of(part_names)
    if name == "scenario2":
        return FreezePlan.of(backbone)
    if name == "scenario3":
        if parts.head(head) not in heads:
            raise FreezeError(f"scenario3 needs one of the heads {', '.join(map(parts.head_task, heads))}, "
                              f"not {head!r}")
        return FreezePlan.of([parts.head(head)])
    if name == "lower_k":
        if k is None or not 0 <= k <= len(layers):
            raise FreezeError(f"lower_k needs k between 0 and {len(layers)} (the number of layers), not {k}")
        return FreezePlan.of([parts.EMBEDDINGS, *layers[:k]])
    if name == "top_quarter":
        keep = max(1, round(len(layers) / 4))
        return FreezePlan.of([parts.EMBEDDINGS, *layers[: len(layers) - keep]])
    raise FreezeError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")


def plan_from_config(freeze_config, part_names: list[str]) -> FreezePlan:
    """A config's freeze section as a plan: its preset's parts plus any listed parts."""
    plan = FreezePlan()
    if freeze_config.preset:
        plan = preset_plan(freeze_config.preset, part_names, k=freeze_config.k, head=freeze_config.head)
    plan = plan.union(FreezePlan.of(freeze_config.parts))
    return FreezePlan.of([p for p in part_names if p in plan.frozen] + [p for p in plan.frozen if p not in part_names])
