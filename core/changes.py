"""Where learning happened: per part, how far its weights moved and how hard they were pushed.

For every part (``core.parts``: embeddings, each layer, pooler, each head) a record holds

- ``relative_change``: ‖w − w₀‖ / ‖w₀‖ over all of the part's tensors, against a copy
  of the weights taken when the run started. The comparison is exact: a tensor that
  was never updated subtracts to exact zeros, so a frozen part reads exactly ``0.0``,
  a proof rather than a rounding.
- ``grad_norm``: the mean over the steps since the last record of the part's gradient
  L2 norm, before clipping (0.0 for a part that got no gradient).

The starting copy is held once, flat, in float32 (exact for fp32, bf16 and fp16
weights), where ``core.cache.choose_storage`` puts large tensors: on the GPU only
when it takes a small share of the free memory, else in CPU memory, else in a
memory-mapped file in the run folder, removed when the run ends. The trainer records
at every evaluation and at the end; ``metrics.jsonl`` gets ``change`` events and
``summary.json`` the last record; ``core.change_history`` reads them back.
"""

from __future__ import annotations

from pathlib import Path

import torch

START_FILE = "change_start.bin"  # the memory-mapped starting weights, while a run needs them


class ChangeMap:
    """The starting weights of every part, and the gradient norms summed since the last record."""

    def __init__(self, model, device: torch.device, folder: Path | None = None):
        from core.cache import choose_storage

        self.parts: dict[str, list[torch.nn.Parameter]] = {}
        seen: set[int] = set()
        for name, modules in model.parts().items():  # parts never share a tensor (count_parameters)
            tensors = [p for m in modules for p in m.parameters() if id(p) not in seen]
            seen.update(id(p) for p in tensors)
            self.parts[name] = tensors
        numel = sum(p.numel() for tensors in self.parts.values() for p in tensors)
        self.storage = choose_storage(numel * 4, torch.device(device), folder is not None)
        self.path = folder / START_FILE if self.storage == "mmap" else None
        self.start = self.allocate(numel, device)
        self.megabytes = round(numel * 4 / 2**20, 1)
        self.slices: dict[str, list[slice]] = {}
        offset = 0
        for name, tensors in self.parts.items():
            self.slices[name] = []
            for p in tensors:
                self.start[offset:offset + p.numel()] = p.detach().reshape(-1).to(self.start.device, torch.float32)
                self.slices[name].append(slice(offset, offset + p.numel()))
                offset += p.numel()
        self.start_norms = {name: self.norm([self.start[s] for s in self.slices[name]]) for name in self.parts}
        self.grad_sums = {name: torch.zeros((), device=device) for name in self.parts}
        self.grad_steps = 0

    def allocate(self, numel: int, device) -> torch.Tensor:
        if self.storage == "mmap":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return torch.from_file(str(self.path), shared=True, size=numel, dtype=torch.float32)
        return torch.empty(numel, dtype=torch.float32, device=device if self.storage == "gpu" else "cpu")

    @staticmethod
    def norm(tensors: list[torch.Tensor]) -> float:
        return torch.nn.utils.get_total_norm(tensors).item() if tensors else 0.0

    def add_gradients(self, scale: float = 1.0) -> None:
        """After backward: add each part's gradient norm (times ``scale``: undo a clipping already done)."""
        for name, tensors in self.parts.items():
            grads = [p.grad for p in tensors if p.grad is not None]
            if grads:
                self.grad_sums[name] += torch.nn.utils.get_total_norm(grads) * scale
        self.grad_steps += 1

    def record(self) -> dict[str, dict[str, float]]:
        """{part: {relative_change, grad_norm}} now; the gradient sums start again from zero."""
        with torch.no_grad():  # a `with` block, not the decorator: mutmut skips decorated functions
            return self._record()

    def _record(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, tensors in self.parts.items():
            moved = self.norm([p.detach().reshape(-1).to(self.start.device, torch.float32) - self.start[s]
                               for p, s in zip(tensors, self.slices[name])])
            start = self.start_norms[name]
            grad = self.grad_sums[name].item() / self.grad_steps if self.grad_steps else 0.0
            out[name] = {"relative_change": moved / start if start else moved, "grad_norm": grad}
            self.grad_sums[name].zero_()
        self.grad_steps = 0
        return out

    def close(self) -> None:
        """Free the starting copy (and delete its memory-mapped file)."""
        self.start = torch.empty(0)
        if self.path is not None:
            self.path.unlink(missing_ok=True)
