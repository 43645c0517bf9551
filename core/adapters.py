"""LoRA at a freeze plan's budget: low-rank adapters through peft, on the layers a plan names.

The config's ``adapter`` section puts peft's LoRA layers on the named projections (``targets``) of
the layers the freeze plan leaves trainable (``layers: trainable``) or of every layer (``all``).
Those layers keep their own weights frozen; the adapters train, with the heads and whatever else the
plan leaves trainable. peft injects the adapters in place, inside each layer, so a layer's adapter
tensors belong to that layer's part and the usual accounting (``count_parameters``) stays exact.

``r: auto`` spends the budget of another freeze section (``match``): a LoRA adapter on a projection
of ``in`` to ``out`` features holds ``r * (in + out)`` parameters, so the trainable count is linear
in ``r`` and the closest rank is found by rounding, before any adapter exists.

At the end a run saves the adapter with peft's ``save_pretrained`` (``adapter/``) and the backbone
with the adapters merged (``merged_backbone``), so ``backbone/`` loads as a plain ``AutoModel``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core import parts as part_names
from core.config import AdapterConfig, ConfigError, ExperimentConfig, parse_config
from core.freezing import FreezePlan, apply_plan, count_parameters

if TYPE_CHECKING:  # torch and peft load with a model; the page reads the reports without them
    from torch import nn

ADAPTER_NAME = "default"  # peft's name for a model's one adapter


@dataclass
class Adapter:
    """The adapters a run trains: peft's model around the backbone (for saving) and what to report."""

    peft_model: nn.Module  # peft.PeftModel; the backbone it wraps is the MultiTaskModel's own, adapted in place
    paths: list[str]  # the adapted projections' module paths in the backbone
    report: dict  # what summary.json's "adapter" holds

    def changed_tensors(self, backbone: nn.Module) -> set[str]:
        """The merged backbone's tensors that training could change: each adapted projection's weight
        (LoRA adds nothing to a bias) and every trainable tensor outside the adapters."""
        prefix = lora_prefix()
        others = {name for name, p in backbone.named_parameters() if p.requires_grad and prefix not in name}
        return {f"{path}.weight" for path in self.paths} | others

    def tensors(self) -> list[nn.Parameter]:
        """The adapters' own tensors (``lora_A``, ``lora_B``): what ``adapter.learning_rate`` trains."""
        prefix = lora_prefix()
        return [p for name, p in self.peft_model.named_parameters() if prefix in name]

    def merged_backbone(self) -> nn.Module:
        """A copy of the backbone with the adapters merged into its weights: a plain transformers model.
        The training model keeps its adapters (the run's summary still reads them)."""
        return copy.deepcopy(self.peft_model).merge_and_unload()

    def save(self, folder) -> None:
        """peft's own adapter folder (adapter_config.json and adapter_model.safetensors)."""
        self.peft_model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)


LORA_RATE_FACTOR = 10  # the page's LoRA run: its adapters' rate against the backbone's (matched_lora_config)


def lora_prefix() -> str:
    """The name peft gives every LoRA tensor (``lora_A``, ``lora_B``...)."""
    from peft.tuners.lora import LoraModel

    return LoraModel.prefix


def adapted_layers(adapter: AdapterConfig, plan: FreezePlan, part_list: list[str]) -> list[int]:
    """The indices of the layers that carry adapters; a one-line ConfigError when there are none."""
    layers = part_names.layers(part_list)
    chosen = layers if adapter.layers == "all" else [p for p in layers if p not in plan.frozen]
    if not chosen:
        raise ConfigError("adapter.layers: trainable, but the freeze plan leaves no layer trainable; use "
                          "layers: all, or freeze fewer layers")
    return [part_names.layer_index(p) for p in chosen]


def projection_names(layer: nn.Module) -> list[str]:
    """The linear modules of one layer, by their path inside it (what a target may name)."""
    from torch import nn

    return [name for name, module in layer.named_modules() if isinstance(module, nn.Linear)]


def matches(name: str, target: str) -> bool:
    """peft's rule for a list of target_modules: the whole name, or its end after a dot."""
    return name == target or name.endswith(f".{target}")


def target_paths(model, layers: list[int], targets: list[str]) -> list[str]:
    """The full module paths of the targeted projections in the adapted layers; an unknown target is
    named with the module names the layers do have."""
    parts = model.backbone_parts()
    names = projection_names(parts.layers[layers[0]])
    unknown = [t for t in targets if not any(matches(name, t) for name in names)]
    if unknown:
        raise ConfigError(f"adapter.targets: the backbone's layers have no linear module named "
                          f"{', '.join(map(repr, unknown))}; they have {', '.join(names)}")
    return [f"{parts.layer_path}.{i}.{name}" for i in layers for name in projection_names(parts.layers[i])
            if any(matches(name, t) for t in targets)]


def parameters_per_rank(backbone: nn.Module, paths: list[str]) -> int:
    """How many adapter parameters one unit of rank adds: ``in + out`` per adapted projection."""
    modules = [backbone.get_submodule(path) for path in paths]
    return sum(m.in_features + m.out_features for m in modules)


def closest_rank(budget: int, without_adapters: int, per_rank: int) -> int:
    """The rank whose trainable count, ``without_adapters + r * per_rank``, is closest to ``budget`` (1 at least)."""
    return max(1, round((budget - without_adapters) / per_rank))


def freeze_adapted(model, plan: FreezePlan, layers: list[int]) -> dict:
    """The plan, then the adapted layers' own weights frozen and their adapters trainable; the accounting."""
    apply_plan(model, plan)
    prefix = lora_prefix()
    layer_modules = model.backbone_parts().layers
    for i in layers:
        for name, parameter in layer_modules[i].named_parameters():
            parameter.requires_grad_(prefix in name)
    return count_parameters(model)


def matched_budget(adapter: AdapterConfig, model, part_list: list[str]) -> int:
    """The trainable count of the ``match`` freeze section on this model."""
    from core.presets import plan_from_config

    budget = apply_plan(model, plan_from_config(adapter.match, part_list))["trainable"]
    if budget == 0:
        raise ConfigError("adapter.match: that freeze section trains nothing (0 parameters), so there is no "
                          "budget for the adapters to match")
    return budget


def attach(config: ExperimentConfig, model, plan: FreezePlan) -> Adapter:
    """Add the config's adapters to ``model`` in place, set what trains, and say what was done."""
    from peft import LoraConfig, get_peft_model

    adapter = config.adapter
    part_list = list(model.parts())
    layers = adapted_layers(adapter, plan, part_list)
    paths = target_paths(model, layers, adapter.targets)
    budget = matched_budget(adapter, model, part_list) if adapter.r == "auto" else None
    rank = adapter.r
    if budget is not None:
        without_adapters = freeze_adapted(model, plan, layers)["trainable"]  # no adapter exists yet
        rank = closest_rank(budget, without_adapters, parameters_per_rank(model.backbone, paths))
    lora = LoraConfig(r=rank, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, target_modules=paths,
                      bias="none")
    with warnings.catch_warnings():  # peft reads a transformers attribute that is deprecated, harmlessly
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model.backbone, lora, adapter_name=ADAPTER_NAME)
    params = freeze_adapted(model, plan, layers)
    report = {"kind": adapter.kind, "r": rank, "r_auto": budget is not None, "alpha": adapter.alpha,
              "dropout": adapter.dropout, "targets": adapter.targets, "layers": layers, "modules": len(paths),
              "adapter_parameters": sum(p.numel() for n, p in model.backbone.named_parameters()
                                        if lora_prefix() in n),
              "trainable": params["trainable"],
              "matched": None if budget is None else {"freeze": adapter.match.model_dump(mode="json"),
                                                      "trainable": budget}}
    return Adapter(peft_model, paths, report)


def describe(report: dict) -> str:
    """One line for the CLI and the page: the rank, where the adapters are, and both counts when matched."""
    text = (f"LoRA rank {report['r']} on {', '.join(report['targets'])} of {layer_span(report['layers'])} "
            f"({report['adapter_parameters']:,} adapter parameters)")
    matched = report.get("matched")
    if matched:
        gap = report["trainable"] / matched["trainable"] - 1
        text += (f"; rank chosen to match {plan_label(matched['freeze'])}: {report['trainable']:,} trainable "
                 f"against its {matched['trainable']:,} ({gap:+.2%})")
    return text


def layer_span(layers: list[int]) -> str:
    """'layers 0-5', 'layers 1, 3', 'layer 2'."""
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]}"
    return ("layers " if len(layers) > 1 else "layer ") + ", ".join(map(str, layers))


def plan_label(freeze: dict) -> str:
    """A freeze section in a few words: 'lower_k 4', 'scenario2', 'layer.0, layer.1'."""
    preset = freeze.get("preset")
    words = [f"{preset} {freeze['k']}" if preset == "lower_k" else
             f"{preset} {freeze['head']}" if preset == "scenario3" else preset] if preset else []
    listed = freeze.get("parts") or []
    if listed and not words:
        words.append(", ".join(listed) if len(listed) <= 3 else f"{len(listed)} frozen parts")
    return " + ".join(words) or "nothing frozen"


def matched_lora_config(config: ExperimentConfig) -> ExperimentConfig:
    """The page's "Also train LoRA at this budget": the same experiment with the backbone frozen (and any head
    the plan freezes), LoRA on every layer, its rank matched to this config's freeze section, and the
    adapters at ten times the backbone's learning rate (training.learning_rate is at most 1e-2, so this stays
    within adapter.learning_rate's bound): at the backbone's own
    rate a matched rank's alpha / r scaling leaves them barely moving (bench/README.md, MiniLM)."""
    data = config.to_dict()
    freeze = data["freeze"]
    frozen_heads = [p for p in freeze.get("parts", []) if part_names.is_head(p)]
    if freeze.get("preset") == "scenario3" and freeze.get("head"):
        frozen_heads.append(part_names.head(freeze["head"]))
    data["name"] = f"LoRA at the budget of {plan_label(freeze)}"[:80]
    data["freeze"] = {"preset": "scenario2", "parts": list(dict.fromkeys(frozen_heads))}
    data["adapter"] = {"kind": "lora", "r": "auto", "layers": "all", "match": freeze,
                       "learning_rate": LORA_RATE_FACTOR * config.training.learning_rate}
    return parse_config(data)
