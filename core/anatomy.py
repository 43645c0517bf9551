"""What a backbone is made of, for a page that must answer fast.

``outline`` reads only ``config.json`` (no torch), so the freeze controls can be
drawn at once; ``describe`` loads the model once and counts parameters per part
(the page runs it in a child process and remembers the answer on disk);
``readout`` turns those counts and a set of frozen parts into the trainable figures
without touching a model, so a toggle updates the numbers instantly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from core import parts
from core.backbones import resolve_source
from core.child import cache_dir, read_remembered, remember
from core.freezing import FreezePlan, kept_count


@dataclass(frozen=True)
class Outline:
    model_type: str
    n_layers: int
    hidden_size: int
    has_pooler: bool


def outline(backbone: str, pooling: str) -> Outline | None:
    """Part layout from a local config.json; None when only the hub knows (use ``describe``)."""
    try:
        config_file = Path(resolve_source(backbone)) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    layers = config.get("num_hidden_layers") or config.get("n_layers")
    hidden = config.get("hidden_size") or config.get("dim")
    if not layers or not hidden:
        return None
    pooler = pooling == "cls" and config.get("model_type") in ("bert", "roberta", "xlm-roberta", "mpnet")
    return Outline(config.get("model_type", "?"), int(layers), int(hidden), pooler)


DESCRIPTION_KEYS = ("model_type", "hidden_size", "n_layers", "parts", "kinds", "extra_embedding_modules")


def head_parameters(hidden_size: int, n_labels: int) -> int:
    return hidden_size * n_labels + n_labels


def head_kinds(n_labels: int) -> dict[str, int]:
    """A head's ``kind_counts``: its classifier's bias (core.freezing)."""
    return {parts.BIAS: n_labels}


def describe(backbone: str, pooling: str) -> dict:
    """Load the backbone once and count its parameters per part (heads excluded)."""
    from core.backbones import load_backbone
    from core.freezing import count_parameters, kind_counts
    from core.model import MultiTaskModel

    backbone_model, _ = load_backbone(backbone, pooling)
    model = MultiTaskModel(backbone_model, {}, pooling, 0.0)  # no heads: their size depends on the data
    parts = model.backbone_parts()
    counts = {name: c["total"] for name, c in count_parameters(model)["by_part"].items()}
    return {"model_type": backbone_model.config.model_type, "hidden_size": model.hidden_size,
            "n_layers": len(parts.layers), "parts": counts, "kinds": kind_counts(model),
            "extra_embedding_modules": parts.extra_embedding_modules}


def describe_in_child(backbone: str, pooling: str) -> dict:
    """``describe`` run by the CLI in a child process, so that the caller never imports torch."""
    from core.child import run_core

    data = json.loads(run_core("describe", "--backbone", backbone, "--pooling", pooling, "--json"))
    return {key: data[key] for key in DESCRIPTION_KEYS}


def folder_fingerprint(backbone: str, pooling: str) -> str | None:
    """A key that changes whenever a local model folder's config or weights change; None for hub ids."""
    folder = Path(resolve_source(backbone))
    if not (folder / "config.json").is_file():
        return None
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([str(folder.resolve()), pooling, stats])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def remembered_path(backbone: str, pooling: str) -> Path | None:
    """Where ``describe_cached`` keeps this exact folder's description; None for hub ids."""
    key = folder_fingerprint(backbone, pooling)
    return cache_dir() / f"describe-{key}.json" if key else None


def remembered_description(backbone: str, pooling: str) -> dict | None:
    """A description ``describe_cached`` stored earlier for this exact folder, or None (also for one
    stored by an older version, without every key)."""
    remembered = read_remembered(remembered_path(backbone, pooling))
    return remembered if isinstance(remembered, dict) and set(DESCRIPTION_KEYS) <= set(remembered) else None


def describe_cached(backbone: str, pooling: str) -> dict:
    """``describe_in_child``, remembered on disk for local folders, so a restarted page has its
    parameter counts at once instead of loading the model again."""
    remembered = remembered_description(backbone, pooling)
    if remembered is not None:
        return remembered
    info = describe_in_child(backbone, pooling)
    remember(remembered_path(backbone, pooling), info)
    return info


def readout(part_counts: dict[str, int], frozen: set[str], kinds: dict[str, dict[str, int]] | None = None) -> dict:
    """Trainable and total per part and overall, and each part's state ('trains', 'frozen', or 'partly':
    frozen but for a kept kind), for a set of frozen part names (``layer.3:bias`` among them); ``kinds``:
    ``describe``'s kind counts, which make a partly trainable part's count exact."""
    plan = FreezePlan.of(frozen)
    by_part = {}
    for name, n in part_counts.items():
        kept = plan.trainable_kinds(name)
        trainable = n if kept is None else kept_count((kinds or {}).get(name, {}), kept)
        state = "trains" if kept is None else "partly" if kept else "frozen"
        by_part[name] = {"total": n, "trainable": trainable, "state": state,
                         "keeps": parts.kinds_in_words(kept or ())}
    total = sum(part_counts.values())
    trainable = sum(v["trainable"] for v in by_part.values())
    return {"total": total, "trainable": trainable, "by_part": by_part}
