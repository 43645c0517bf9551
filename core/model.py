"""The multi-task model: one shared backbone, a pooling step, one head per task.

Read it top to bottom: ``encode`` turns tokens into one vector per sentence,
``forward`` runs the head of the task the batch belongs to.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from core import parts
from core.backbones import BackboneParts, discover_parts


class TaskHead(nn.Module):
    """Dropout then a linear classifier; keeps the label names it predicts."""

    def __init__(self, hidden_size: int, labels: list[str], dropout: float):
        super().__init__()
        self.labels = list(labels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: nn.Module, task_labels: dict[str, list[str]], pooling: str, dropout: float):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.hidden_size = backbone.config.hidden_size if hasattr(backbone.config, "hidden_size") else backbone.config.dim
        self.heads = nn.ModuleDict({task: TaskHead(self.hidden_size, labels, dropout)
                                    for task, labels in task_labels.items()})

    @property
    def task_labels(self) -> dict[str, list[str]]:
        return {task: head.labels for task, head in self.heads.items()}

    def backbone_parts(self) -> BackboneParts:
        return discover_parts(self.backbone)

    def parts(self) -> dict[str, list[nn.Module]]:
        """Every freezable part by name, in order from input to output."""
        named = self.backbone_parts().named()
        named.update({parts.head(task): [head] for task, head in self.heads.items()})
        return named

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pooler_output=None) -> torch.Tensor:
        if self.pooling == "cls":
            return pooler_output if pooler_output is not None else hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds=None) -> torch.Tensor:
        """One vector per sentence. ``inputs_embeds`` feeds cached activations (see core.cache)."""
        if inputs_embeds is not None:
            out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        else:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return self.pool(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None))

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds=None,
                backbone_grad: bool = True):
        """The task's logits. ``backbone_grad=False``: the backbone runs without gradients, so this
        batch's loss can update only the head (a task with ``trains_backbone: false``)."""
        with nullcontext() if backbone_grad else torch.no_grad():
            pooled = self.encode(input_ids, attention_mask, inputs_embeds)
        return self.heads[task](pooled)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"{task}.{k}": v for task, head in self.heads.items() for k, v in head.state_dict().items()}
