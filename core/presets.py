"""The freezing presets: the seed document's three scenarios, its transfer-learning
strategy, and more. Each builds a FreezePlan from the model's part names and
carries a short explanation written for a class to read. ``bitfit`` and
``norms_only`` freeze by kind of tensor rather than by layer: their plans name each
backbone part with the kind that keeps training (``layer.3:bias``, ``core.parts``).
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
            "bitfit",
            "BitFit: train only the biases",
            "Every weight matrix and embedding table of the backbone; its bias terms (LayerNorm's included) "
            "and both heads train.",
            "Each layer keeps what it computes but may shift where its units switch on: a small, even nudge "
            "spread over the whole backbone instead of a large change to a few layers.",
            "Ben Zaken, Ravfogel & Goldberg (2021) found that training only the biases (about 0.1% of BERT's "
            "parameters) comes close to full fine-tuning on small and medium data sets.",
            "Small data, or many tasks sharing one backbone: each task's change is just its biases.",
        ),
        Preset(
            "norms_only",
            "LayerNorm only",
            "Every tensor of the backbone except its LayerNorm weights and biases; those and both heads train.",
            "Each layer may rescale and shift its normalised features, but not change what they are.",
            "An even smaller budget than BitFit; it shows how much re-scaling features alone recovers.",
            "A cheap probe of a backbone on a new domain, or a baseline for the other small budgets.",
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


KIND_PRESETS = {"bitfit": parts.BIAS, "norms_only": parts.NORM}  # preset -> the kind its backbone keeps training


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
    if name in KIND_PRESETS:
        return FreezePlan.of([parts.with_kind(part, KIND_PRESETS[name]) for part in backbone])
    raise FreezeError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")


def plan_label(preset: str | None, parts_named) -> str:
    """What a freeze section is called in run ids and the history: its preset, else 'custom' for parts
    picked by hand, else 'none'."""
    return preset or ("custom" if parts_named else "none")


def plan_from_config(freeze_config, part_names: list[str]) -> FreezePlan:
    """A config's freeze section as a plan: its preset's parts plus any listed parts."""
    plan = FreezePlan()
    if freeze_config.preset:
        plan = preset_plan(freeze_config.preset, part_names, k=freeze_config.k, head=freeze_config.head)
    return plan.union(FreezePlan.of(freeze_config.parts)).in_order(part_names)
