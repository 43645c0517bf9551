"""Saving and loading a run's weights (safetensors only), and predicting with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.model import MultiTaskModel
from core.runs import Run, RunError, atomic_write_json


def save_weights(model: MultiTaskModel, tokenizer, run: Run) -> None:
    """``backbone/`` loads with ``AutoModel.from_pretrained``; heads go to ``heads.safetensors``."""
    staging = run.path / ".backbone.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.backbone.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(run.backbone_dir, ignore_errors=True)
    staging.rename(run.backbone_dir)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.head_state().items()}
    tmp = run.path / ".heads.tmp"
    save_file(state, str(tmp))
    tmp.rename(run.heads_path)
    atomic_write_json(run.path / "heads.json", {"pooling": model.pooling, "labels": model.task_labels})


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_safe_weights(run: Run) -> None:
    """Refuse a run whose weights are not (only) safetensors: a pickle file can run code when loaded."""
    files = [*run.path.iterdir(), *run.backbone_dir.rglob("*")]  # not prefix_cache/: raw activations, not weights
    pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles or not any(run.backbone_dir.glob("*.safetensors")):
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
        backbone = AutoModel.from_pretrained(run.backbone_dir, use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(run.backbone_dir, trust_remote_code=False)
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
