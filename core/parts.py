"""Part names: the one home of the convention every module speaks.

A model is cut into parts that are frozen or trained as a whole, named from input to
output: ``embeddings``, ``layer.<i>`` (encoder layers, 0 at the bottom), ``pooler``
(only when the backbone has one) and ``head.<task>``. Freeze plans, presets, the
cache, the change map and the page all build and read names through these functions
instead of formatting or splitting strings themselves. No torch here: the page uses it.

A part with a kind, ``<part>:<kind>`` (``layer.3:bias``, ``embeddings:norm``), names a
part that is frozen except for its tensors of that kind, which keep training: the
budget BitFit and LayerNorm-only tuning spend. The kinds are ``bias`` (every bias,
LayerNorm's included) and ``norm`` (LayerNorm weights and biases). A part named with
two kinds trains both; a part also named plainly is frozen whole.
"""

from __future__ import annotations

from typing import Iterable

EMBEDDINGS = "embeddings"
POOLER = "pooler"
LAYER_PREFIX = "layer."
HEAD_PREFIX = "head."
KIND_SEPARATOR = ":"
BIAS, NORM = "bias", "norm"
KINDS = {BIAS: "biases", NORM: "LayerNorms"}  # kind -> what it keeps training, in words


def layer(index: int) -> str:
    return f"{LAYER_PREFIX}{index}"


def head(task: str) -> str:
    return f"{HEAD_PREFIX}{task}"


def with_kind(part: str, kind: str) -> str:
    """``layer.3``, ``bias`` -> ``layer.3:bias``: the part frozen except for its biases."""
    return f"{part}{KIND_SEPARATOR}{kind}"


def split_kind(name: str) -> tuple[str, str | None]:
    """``layer.3:bias`` -> (``layer.3``, ``bias``); a plain part name -> (name, None)."""
    part, separator, kind = name.partition(KIND_SEPARATOR)
    return (part, kind) if separator else (name, None)


def kinds_in_words(kinds) -> str:
    """{norm, bias} -> 'biases and LayerNorms' (in the order of ``KINDS``)."""
    return " and ".join(KINDS[k] for k in KINDS if k in kinds)


def is_layer(name: str) -> bool:
    return name.startswith(LAYER_PREFIX) and name[len(LAYER_PREFIX):].isdigit()


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


def layer_index(name: str) -> int:
    """``layer.3`` -> 3; a ValueError for a name that is no layer."""
    if not is_layer(name):
        raise ValueError(f"{name!r} is not a layer part")
    return int(name[len(LAYER_PREFIX):])


def head_task(name: str) -> str:
    """``head.topic`` -> ``topic``; a ValueError for a name that is no head."""
    if not is_head(name):
        raise ValueError(f"{name!r} is not a head part")
    return name[len(HEAD_PREFIX):]


def layers(names: Iterable[str]) -> list[str]:
    return [name for name in names if is_layer(name)]


def heads(names: Iterable[str]) -> list[str]:
    return [name for name in names if is_head(name)]


def backbone(names: Iterable[str]) -> list[str]:
    """Every part that is not a head: embeddings, layers, pooler."""
    return [name for name in names if not is_head(name)]


def count_layers(names: Iterable[str]) -> int:
    return len(layers(names))


def all_parts(n_layers: int, has_pooler: bool, tasks: Iterable[str]) -> list[str]:
    """Every part of a model, in order from input to output."""
    return [EMBEDDINGS, *(layer(i) for i in range(n_layers)), *([POOLER] if has_pooler else []),
            *(head(task) for task in tasks)]
