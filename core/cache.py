"""Caching the frozen prefix: compute it once per example, reuse it every epoch.

A frozen prefix (the embeddings plus layers 0..d-1) computes the same function on
every epoch. The first time an example is seen, the prefix runs once (model in eval
mode, no gradients) and its output is stored: the hidden states that layer d
consumes, one ``(tokens, hidden)`` slice per example, unpadded. After that, batches
pad those slices and run only layers d..n-1, the pooling and the heads. With the
whole backbone frozen (and the pooler frozen or absent) the pooled vector is stored
instead, so later epochs run the heads alone.

Semantics: cached activations come from the frozen prefix in eval mode, so dropout
inside the frozen layers is off; without the cache it is on while training. With
dropout off both paths give the same logits (tests/test_cache.py).

Running "from layer d" is generic: for one forward the backbone's embeddings module
is swapped for a passthrough that returns the given ``inputs_embeds``, the layer
list is sliced to layers d.., and ``MultiTaskModel.encode`` is called with the
cached states. The first batch the cache builds is checked against the full
forward; an architecture where the two differ is reported and trains normally.

Storage: GPU memory when it fits, else CPU memory, else a memory-mapped file in the
run folder (removed when the run ends). The key of each stored split is the data
(token ids), the tokenizer settings and the frozen prefix (depth and a fingerprint
of its weights); a change to any of them invalidates it.

Shared across a sweep: ``SharedPrefix`` runs the pristine backbone once over a
sweep's data and keeps the input of every layer its members need, under the same
keys. A run's cache borrows a store whose key matches instead of building it (and
still checks its first batch against its own full forward); there is one path for
"cached prefix or full model", ``FrozenPrefixCache.logits``. Depth 0 (only the
embeddings frozen) stays uncached there too: replaying from the embeddings' output
saves only an embedding lookup.
"""

from __future__ import annotations

import copy
import hashlib
import time
from array import array
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from core import parts as part_names
from core.freezing import FreezePlan, frozen_parts, frozen_prefix_depth, partly_frozen_parts

SEMANTIC_NOTE = ("cached activations come from the frozen layers in eval mode, so dropout inside the frozen "
                 "layers is off (without the cache it is on while training); turn training.cache_frozen_prefix "
                 "off to keep it")
GPU_SHARE = 0.25  # at most this share of free GPU memory goes to the cache
RAM_SHARE = 0.5  # at most this share of available CPU memory, else a memory-mapped file
CHECK_ATOL = {torch.float32: 1e-4}  # self-check tolerance; reduced precision gets DEFAULT_ATOL
DEFAULT_ATOL = 5e-2


class _Captured(Exception):
    """Raised by the capture hook to skip the layers above the prefix."""


class _Passthrough(nn.Module):
    """Stands in for the embeddings: returns the ``inputs_embeds`` it is given, under any argument name."""

    def forward(self, *args, **kwargs):
        value = kwargs.get("inputs_embeds")
        if value is None:
            value = next((a for a in [*args, *kwargs.values()]
                          if torch.is_tensor(a) and a.is_floating_point() and a.dim() == 3), None)
        if value is None:
            raise RuntimeError("cached prefix: the embeddings were called without inputs_embeds")
        return value


def decide(model, enabled: bool = True, trains: bool = True) -> dict:
    """Whether this model's freeze state can be cached: {'depth', 'kind', 'reason', 'notes'}.

    kind: 'hidden' (states entering the first trainable layer), 'last_hidden' (the whole
    stack is frozen but a trainable pooler runs on top) or 'pooled' (only heads run).
    reason is empty when the cache can be used.
    """
    parts = model.backbone_parts()
    n = len(parts.layers)
    frozen = frozen_parts(model)  # frozen whole: a part that keeps a kind (BitFit's biases) still changes
    depth = frozen_prefix_depth(FreezePlan.of(frozen), n)
    backbone_frozen = part_names.backbone(frozen)
    partly = part_names.backbone(partly_frozen_parts(model))
    above = [p for p in part_names.layers(backbone_frozen) if part_names.layer_index(p) >= max(depth, 0)]
    notes = []
    if above and depth >= 0:
        notes.append(f"{', '.join(above)} frozen above a trainable layer: computed every step")
    out = {"depth": depth, "n_layers": n, "kind": None, "reason": "", "notes": notes}
    if not enabled:
        out["reason"] = "turned off (training.cache_frozen_prefix is false)"
    elif not trains:
        out["reason"] = "nothing trains: the run evaluates once, so there is nothing to reuse"
    elif depth < 0 and part_names.EMBEDDINGS in partly:
        out["reason"] = ("the embeddings are only partly frozen (a kept kind, such as BitFit's biases, trains), so "
                         "every layer's input changes each step; training runs normally")
    elif depth < 0:
        out["reason"] = ("nothing in the backbone is frozen" if not backbone_frozen else
                         f"the frozen parts ({', '.join(backbone_frozen)}) are not a prefix: the embeddings train, "
                         "so every layer's input changes each step; training runs normally")
    elif depth == 0:
        out["reason"] = "only the embeddings are frozen: storing their output would save almost no time"
    elif depth < n:
        out["kind"] = "hidden"
    elif parts.pooler is None or part_names.POOLER in frozen or model.pooling != "cls":
        out["kind"] = "pooled"
    else:
        out["kind"] = "last_hidden"
    return out


def prefix_modules(model, depth: int) -> list[nn.Module]:
    parts = model.backbone_parts()
    modules = [*parts.embeddings, *parts.layers[:depth]]
    if depth >= len(parts.layers) and parts.pooler is not None and part_names.POOLER in frozen_parts(model):
        modules.append(parts.pooler)
    return modules


def prefix_fingerprint(model, depth: int) -> str:
    """A hash of every weight and buffer the frozen prefix computes with."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"depth={depth};pooling={model.pooling}".encode())
    seen = set()
    for module in prefix_modules(model, depth):
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(settings: str, depth: int, kind: str, fingerprint: str, ids: list[list[int]]) -> str:
    """The key of one split's stored prefix output: settings, depth, kind, prefix weights and data."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{settings}|depth={depth}|kind={kind}|prefix={fingerprint}|".encode())
    digest.update(data_fingerprint(ids).encode())
    return digest.hexdigest()


def choose_storage(need: int, device: torch.device, can_map: bool) -> str:
    """GPU memory if ``need`` bytes fit, else CPU memory, else a memory-mapped file (if there is a folder)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need <= GPU_SHARE * free:
            return "gpu"
    import psutil

    if need <= RAM_SHARE * psutil.virtual_memory().available or not can_map:
        return "cpu"
    return "mmap"


def layer_input(args, kwargs):
    """The hidden states a layer is called with, positional or by keyword."""
    return args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))


def data_fingerprint(ids: list[list[int]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(array("q", [len(x) for x in ids]).tobytes())
    digest.update(array("q", [t for x in ids for t in x]).tobytes())
    return digest.hexdigest()


class _Store:
    """One split's cached activations: a flat tensor plus offsets, filled lazily."""

    def __init__(self, key: str, ids: list[list[int]], kind: str, storage: str, path: Path | None, device):
        self.key, self.ids, self.kind, self.storage, self.path, self.device = key, ids, kind, storage, path, device
        self.lengths = [len(x) for x in ids]
        self.offsets = [0]
        for n in self.lengths:
            self.offsets.append(self.offsets[-1] + n)
        self.filled = [False] * len(ids)
        self.data: torch.Tensor | None = None
        self.settings = ""
        self.borrowed = False

    def view(self, ids: list[list[int]]) -> "_Store":
        """The same stored states for another run's (equal) token ids; releasing it frees nothing."""
        view = copy.copy(self)
        view.ids, view.path, view.borrowed = ids, None, True
        return view

    def rows_needed(self) -> int:
        return len(self.ids) if self.kind == "pooled" else self.offsets[-1]

    @torch.inference_mode(False)  # a normal tensor even when first filled during evaluation
    def allocate(self, width: int, dtype: torch.dtype) -> None:
        shape = (self.rows_needed(), width)
        if self.storage == "mmap":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            numel = shape[0] * shape[1]
            self.data = torch.from_file(str(self.path), shared=True, size=numel, dtype=dtype).view(shape)
        else:
            device = self.device if self.storage == "gpu" else "cpu"
            self.data = torch.empty(shape, dtype=dtype, device=device)

    def put(self, rows: list[int], values: torch.Tensor) -> None:
        """values: (B, width) pooled, or (B, W, width) padded states of these rows."""
        if self.data is None:
            self.allocate(values.shape[-1], values.dtype)
        target = self.data.device
        values = values.to(target)
        for i, r in enumerate(rows):
            if self.kind == "pooled":
                self.data[r] = values[i]
            else:
                self.data[self.offsets[r]:self.offsets[r + 1]] = values[i, :self.lengths[r]]
            self.filled[r] = True

    def get(self, rows: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, attention mask) for these rows, padded to the longest, on ``device``."""
        width = max(self.lengths[r] for r in rows)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            mask[i, :self.lengths[r]] = 1
        if self.kind == "pooled":
            index = torch.tensor(rows, dtype=torch.long, device=self.data.device)
            return self.data.index_select(0, index).to(device), mask.to(device)
        out = self.data.new_zeros((len(rows), width, self.data.shape[1]))
        for i, r in enumerate(rows):
            out[i, :self.lengths[r]] = self.data[self.offsets[r]:self.offsets[r + 1]]
        return out.to(device, non_blocking=True), mask.to(device)

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else self.data.numel() * self.data.element_size()

    def release(self) -> None:
        self.data = None
        if self.path is not None and self.path.exists():
            self.path.unlink()


class FrozenPrefixCache:
    """Per-run cache of the frozen prefix's output, for training and evaluation batches.

    ``logits(task, name, ids, rows)`` returns the logits for those rows of a split,
    building what is missing first; it returns None when the cache is not in use, and
    the caller then runs the model as usual.
    """

    def __init__(self, model, forward=None, *, enabled: bool = True, trains: bool = True,
                 splits: dict[str, list[list[int]]] | None = None, settings: dict | None = None,
                 folder: str | Path | None = None, device="cpu", autocast=None, storage: str | None = None,
                 verify: bool = True, shared: SharedPrefix | None = None):
        self.model = model  # the unwrapped MultiTaskModel, whose modules are swapped while replaying
        self.forward = forward or model  # what to call (e.g. the accelerate-prepared model)
        self.settings = dict(settings or {})  # tokenizer settings, max_length, backbone source...
        self.folder = Path(folder) / "prefix_cache" if folder is not None else None
        self.device = torch.device(device)
        self.autocast = autocast or nullcontext
        self.forced_storage = storage
        self.verify = verify
        self.shared = shared  # a sweep's SharedPrefix: stores whose key matches are borrowed, not built
        self.stores: dict[str, _Store] = {}
        self.stats = {"prefix_batches": 0, "prefix_examples": 0, "hit_examples": 0, "invalidations": 0}
        self.build_seconds = 0.0
        self.checked = False
        self.enabled = enabled
        self.trains = trains
        self._decide()
        self.storage = self.choose_storage(splits or {}) if self.active else None

    # -- the decision and the key --------------------------------------------------------
    def _decide(self) -> None:
        decision = decide(self.model, self.enabled, self.trains)
        self.parts = self.model.backbone_parts()
        self.depth, self.kind = decision["depth"], decision["kind"]
        self.reason, self.notes = decision["reason"], decision["notes"]
        self.active = self.kind is not None
        self.fingerprint = prefix_fingerprint(self.model, self.depth) if self.active else None
        self._signature = self.weights_signature()

    def weights_signature(self) -> tuple:
        """Cheap change detector: identity, version counter and trainability of each prefix tensor."""
        if self.depth is None or self.depth < 0:
            return ()
        parts = self.model.backbone_parts()
        frozen = tuple(frozen_parts(self.model))
        tensors = [t for m in prefix_modules(self.model, self.depth) for t in [*m.parameters(), *m.buffers()]]
        return (frozen, len(parts.layers), self.model.pooling,
                *((id(t), t._version, t.data_ptr(), t.requires_grad) for t in tensors))

    def settings_signature(self) -> str:
        return ";".join(f"{k}={self.settings[k]}" for k in sorted(self.settings))

    def key(self, ids: list[list[int]]) -> str:
        return cache_key(self.settings_signature(), self.depth, self.kind, self.fingerprint, ids)

    def revalidate(self) -> bool:
        """Drop everything stored if the frozen prefix changed (depth or weights). True if it did."""
        if self.weights_signature() == self._signature:
            return False
        old = (self.depth, self.kind, self.fingerprint)
        self._decide()
        if (self.depth, self.kind, self.fingerprint) == old:
            return False
        self.invalidate()
        if self.active and self.storage is None:
            self.storage = self.choose_storage({})
        self.checked = False
        return True

    def invalidate(self) -> None:
        if self.stores:
            self.stats["invalidations"] += 1
        self.release()

    def release(self) -> None:
        for store in self.stores.values():
            store.release()
        self.stores.clear()

    # -- storage -------------------------------------------------------------------------
    def choose_storage(self, splits: dict[str, list[list[int]]]) -> str:
        """GPU memory if it fits, else CPU memory, else a memory-mapped file (fp32 estimate)."""
        if self.forced_storage:
            return self.forced_storage
        rows = sum(len(ids) if self.kind == "pooled" else sum(len(x) for x in ids) for ids in splits.values())
        return choose_storage(rows * self.model.hidden_size * 4, self.device, self.folder is not None)

    def store(self, name: str, ids: list[list[int]]) -> _Store:
        """The store for one split; rebuilt if its key (data, settings, prefix) changed."""
        store = self.stores.get(name)
        settings = self.settings_signature()
        if store is not None and store.ids is ids and store.settings == settings:
            return store
        key = self.key(ids)
        if store is not None:
            if store.key == key:
                store.ids, store.settings = ids, settings
                return store
            self.stats["invalidations"] += 1
            store.release()
        borrowed = self.shared.lookup(key) if self.shared is not None else None
        if borrowed is not None:
            store = borrowed.view(ids)
        else:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
            path = self.folder / f"{safe}.bin" if self.storage == "mmap" else None
            store = _Store(key, ids, self.kind, self.storage, path, self.device)
        store.settings = settings
        self.stores[name] = store
        return store

    # -- building ------------------------------------------------------------------------
    def build(self, store: _Store, rows: list[int]) -> None:
        """Run the frozen prefix (eval mode, no dropout, no gradients) on these rows and store it."""
        began = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            input_ids, mask = self.collate([store.ids[r] for r in rows])
            with torch.no_grad(), self.autocast():
                values, reference = self.capture(input_ids, mask, check=self.verify and not self.checked)
                if reference is not None:
                    self.check(values, mask, reference)
            if self.active:
                store.put(rows, values)
                self.stats["prefix_batches"] += 1
                self.stats["prefix_examples"] += len(rows)
        finally:
            self.model.train(was_training)
            self.build_seconds += time.perf_counter() - began

    def check_borrowed(self, store: _Store, rows: list[int]) -> None:
        """The self-check for states a sweep computed: this run's own full forward must agree with them."""
        was_training = self.model.training
        self.model.eval()
        try:
            values, mask = store.get(rows, self.device)
            input_ids, _ = self.collate([store.ids[r] for r in rows])
            with torch.no_grad(), self.autocast():
                self.check(values, mask, self.model.encode(input_ids, mask))
        finally:
            self.model.train(was_training)

    def collate(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        from core.batching import collate

        pad = self.settings.get("pad_id", 0)
        input_ids, mask = collate(ids, pad if isinstance(pad, int) else 0)
        return input_ids.to(self.device), mask.to(self.device)

    def capture(self, input_ids, mask, check: bool):
        """The prefix's output for one batch, and (if check) the full model's pooled output."""
        if self.kind == "pooled":
            return self.model.encode(input_ids, mask), None
        if self.kind == "last_hidden":
            hidden = self.model.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return hidden, (self.model.encode(input_ids, mask) if check else None)
        layer = self.parts.layers[self.depth]
        captured = {}

        def hook(module, args, kwargs):
            captured["h"] = layer_input(args, kwargs)
            if not check:
                raise _Captured

        handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            reference = self.model.encode(input_ids, mask)
        except _Captured:
            reference = None
        finally:
            handle.remove()
        if not torch.is_tensor(captured.get("h")):
            self.disable(f"could not find the input of layer {self.depth} in {self.model_type()}")
            return None, None
        return captured["h"], reference

    def check(self, values, mask, reference) -> None:
        """The first batch: does replaying from the stored states give the full model's output?"""
        self.checked = True
        if values is None:
            return
        try:
            replayed = self.encode_from(values, mask)
        except Exception as error:  # an architecture the generic replay does not fit
            self.disable(f"cannot run {self.model_type()} from layer {self.depth} "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:120]})")
            return
        diff = (replayed.float() - reference.float()).abs().max().item()
        atol = CHECK_ATOL.get(values.dtype, DEFAULT_ATOL) * max(1.0, reference.float().abs().max().item())
        if not diff <= atol:
            self.disable(f"the cached path does not reproduce {self.model_type()}'s output "
                         f"(max difference {diff:.2g})")

    def disable(self, why: str) -> None:
        self.active = False
        self.reason = f"{why}; training runs normally"
        self.release()

    def model_type(self) -> str:
        return self.model.backbone.config.model_type

    # -- running from the cache ----------------------------------------------------------
    @contextmanager
    def from_layer(self, depth: int):
        """Within this block the backbone starts at layer ``depth`` and takes its input as inputs_embeds."""
        backbone, parts = self.model.backbone, self.parts
        swaps = []  # (owner, attribute, original)

        def swap(path: str, replacement) -> None:
            owner_path, _, attribute = path.rpartition(".")
            owner = backbone.get_submodule(owner_path) if owner_path else backbone
            swaps.append((owner, attribute, getattr(owner, attribute)))
            setattr(owner, attribute, replacement)

        paths = {id(m): p for p, m in backbone.named_modules()}
        layer_owner = parts.layer_path.rpartition(".")[0]
        try:
            swap(paths[id(parts.embeddings[0])], _Passthrough())
            swap(parts.layer_path, nn.ModuleList(parts.layers[depth:]))
            for name, child in list(backbone.named_children()):  # e.g. ELECTRA's embeddings_project
                if name in parts.extra_embedding_modules and not parts.layer_path.startswith(name + "."):
                    swap(name, nn.Identity())
            owner = backbone.get_submodule(layer_owner) if layer_owner else backbone
            if depth > 0 and isinstance(getattr(owner, "conv", None), nn.Module):  # DeBERTa-v2: after layer 0
                swap(f"{layer_owner}.conv" if layer_owner else "conv", None)
            yield
        finally:
            for owner, attribute, original in reversed(swaps):
                setattr(owner, attribute, original)

    def encode_from(self, values: torch.Tensor, mask: torch.Tensor, forward=None) -> torch.Tensor:
        """Pooled vectors from stored prefix output (no heads)."""
        if self.kind == "pooled":
            return values
        if self.kind == "last_hidden":
            pooler = self.parts.pooler
            return self.model.pool(values, mask, pooler(values) if pooler is not None else None)
        with self.from_layer(self.depth):
            return self.model.encode(None, mask, inputs_embeds=values)

    def logits(self, task: str, name: str, ids: list[list[int]], rows: list[int], backbone_grad: bool = True):
        """Logits for ``rows`` of the split ``ids`` (stored as ``name``); None if the cache is off.

        backbone_grad=False: the layers above the prefix run without gradients (only the head learns)."""
        if not self.active:
            return None
        store = self.store(name, ids)
        if store.borrowed and self.verify and not self.checked:
            self.check_borrowed(store, rows)
            if not self.active:
                return None
        missing = [r for r in rows if not store.filled[r]]
        if missing:
            self.build(store, missing)
            if not self.active:
                return None
        self.stats["hit_examples"] += len(rows) - len(missing)
        values, mask = store.get(rows, self.device)
        with self.replaying():
            return self.forward(task, None, mask, inputs_embeds=values, backbone_grad=backbone_grad)

    @contextmanager
    def replaying(self):
        """Within this block the model's forward takes the stored prefix output as ``inputs_embeds``: the
        backbone starts at layer ``depth`` ('hidden'), or the model's ``encode`` is the replay from the stored
        output ('pooled', 'last_hidden'). Every kind goes through ``forward``: under several processes that is
        DDP's, which reduces the gradients only of a backward whose forward it ran."""
        if self.kind == "hidden":
            with self.from_layer(self.depth):
                yield
            return
        self.model.encode = lambda input_ids, mask, inputs_embeds=None: self.encode_from(inputs_embeds, mask)
        try:
            yield
        finally:
            del self.model.encode  # the class's encode again

    # -- reporting and cleanup -----------------------------------------------------------
    def info(self) -> dict:
        """What the run summary's ``cache`` field holds, for the page and the CLI."""
        used = self.active
        return {
            "enabled": self.enabled, "used": used, "reason": self.reason, "depth": self.depth,
            "n_layers": len(self.parts.layers), "kind": self.kind if used else None,
            "storage": self.storage if used else None,
            "shared": used and any(s.borrowed for s in self.stores.values()),
            "mb": round(sum(s.nbytes for s in self.stores.values()) / 2**20, 3),
            "build_seconds": round(self.build_seconds, 2), **self.stats,
            "notes": self.notes, "semantics": SEMANTIC_NOTE if used else "",
        }

    def close(self) -> dict:
        """Free the stored activations (and delete a memory-mapped file); returns the final info."""
        info = self.info()
        self.release()
        if self.folder is not None and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        return info


class SharedPrefix:
    """A sweep's frozen prefixes, computed once for all its members.

    Every member of a sweep starts from the same pretrained backbone and reads the
    same data, so at a given depth they all compute the same frozen prefix. One
    forward pass of the pristine backbone per split (eval mode, no gradients), with a
    pre-hook on every layer, yields the input of each layer at once, plus the pooled
    vector. They are stored under exactly the key a run's FrozenPrefixCache computes,
    so a member borrows a store only when its settings, depth, kind, prefix weights
    and data all agree; anything else (a warm start, changed weights) builds its own.
    Each member still runs the usual self-check on its first batch.
    """

    def __init__(self, model, splits: dict[str, list[list[int]]], settings: dict, needs: dict[tuple[int, str], str],
                 folder: str | Path | None = None, device="cpu", autocast=None, batch_size: int = 64,
                 pooled_for: tuple[str, ...] = ()):
        """needs: {(depth, kind): prefix fingerprint} for every depth the sweep's members cache.

        pooled_for: splits whose pooled vectors are also kept (float32, CPU), e.g. the validation
        splits, so the sweep reads its untrained reference off this pass instead of a run of its own.
        """
        self.model, self.splits, self.needs = model, splits, dict(needs)
        self.pooled_for = set(pooled_for)
        self.pooled: dict[str, torch.Tensor] = {}  # split name -> (rows, hidden), in the split's row order
        self.settings = ";".join(f"{k}={settings[k]}" for k in sorted(settings))  # as settings_signature()
        self.pad_id = settings.get("pad_id", 0)
        self.folder = Path(folder) / "prefix_cache" if folder is not None else None
        self.device = torch.device(device)
        self.autocast = autocast or nullcontext
        self.batch_size = batch_size
        self.stores: dict[str, _Store] = {}  # by cache key
        self.storage: str | None = None
        self.build_seconds = 0.0

    def lookup(self, key: str) -> _Store | None:
        return self.stores.get(key)

    def build(self, stop=None) -> None:
        """One pass over every split; fills a store per (split, depth). A set ``stop`` ends it early."""
        names = [n for n in self.splits if self.needs or n in self.pooled_for]
        if not names:
            return
        began = time.perf_counter()
        tokens = sum(len(x) for ids in self.splits.values() for x in ids)
        rows = sum(len(ids) for ids in self.splits.values())
        hidden = self.model.hidden_size
        need = sum((rows if kind == "pooled" else tokens) * hidden * 4 for _, kind in self.needs)
        self.storage = choose_storage(need, self.device, self.folder is not None)
        was_training = self.model.training
        self.model.to(self.device).eval()  # the probe's model, freed after the pass: it may move
        try:
            for name in names:
                self.build_split(name, self.splits[name], stop)
        finally:
            self.model.train(was_training)
            self.build_seconds += time.perf_counter() - began
        self.model = None  # built: the model may be freed

    def build_split(self, name: str, ids: list[list[int]], stop=None) -> None:
        from core.batching import collate

        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        stores = {}
        for depth, kind in self.needs:
            path = self.folder / f"{safe}-{kind}-{depth}.bin" if self.storage == "mmap" else None
            key = cache_key(self.settings, depth, kind, self.needs[(depth, kind)], ids)
            stores[(depth, kind)] = self.stores[key] = _Store(key, ids, kind, self.storage, path, self.device)
        order = sorted(range(len(ids)), key=lambda r: len(ids[r]))  # similar lengths: little padding
        for start in range(0, len(order), self.batch_size):
            if stop is not None and stop.is_set():  # the sweep stops before its first member
                return
            rows = order[start:start + self.batch_size]
            input_ids, mask = collate([ids[r] for r in rows], self.pad_id if isinstance(self.pad_id, int) else 0)
            with torch.no_grad(), self.autocast():
                outputs = self.forward_all(input_ids.to(self.device), mask.to(self.device))
            for (depth, kind), store in stores.items():
                store.put(rows, outputs[kind if kind != "hidden" else depth])
            if name in self.pooled_for:
                pooled = self.pooled.setdefault(name, torch.zeros((len(ids), self.model.hidden_size)))
                pooled[rows] = outputs["pooled"].float().cpu()

    def forward_all(self, input_ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """{layer index: its input, 'last_hidden': the stack's output, 'pooled': the pooled vector}."""
        layers = self.model.backbone_parts().layers
        captured: dict = {}
        handles = [layer.register_forward_pre_hook(
            lambda module, args, kwargs, i=i: captured.__setitem__(i, layer_input(args, kwargs)), with_kwargs=True)
            for i, layer in enumerate(layers)]
        try:
            out = self.model.backbone(input_ids=input_ids, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        captured["last_hidden"] = out.last_hidden_state
        captured["pooled"] = self.model.pool(out.last_hidden_state, mask, getattr(out, "pooler_output", None))
        return captured

    def info(self) -> dict:
        return {"depths": sorted({d for d, _ in self.needs}), "storage": self.storage,
                "mb": round(sum(s.nbytes for s in self.stores.values()) / 2**20, 3),
                "examples": sum(len(ids) for ids in self.splits.values()),
                "build_seconds": round(self.build_seconds, 2)}

    def close(self) -> None:
        """Free every store and delete memory-mapped files."""
        for store in self.stores.values():
            store.release()
        self.stores.clear()
        self.pooled.clear()
        self.pooled.clear()
        if self.folder is not None and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
